"""Station firmware: a pure core (``core/``) wrapped by thin drivers (``drivers/``)."""

AGENT_VERSION = "0.1.0"
