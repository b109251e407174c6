"""One exception root for the project, one subclass per subsystem.

Drivers catch these at their boundary and turn them into inputs or HTTP errors; a
bare ``Exception`` escaping a driver is a bug.
"""


class LoaxaError(Exception):
    """Root of every error Loaxa raises on purpose."""


class ConfigError(LoaxaError):
    """A settings, node-config or schedule file is wrong; the message says where."""


class AudioError(LoaxaError):
    """Audio could not be decoded, measured, normalised or encoded."""


class FetchError(LoaxaError):
    """Audio could not be downloaded or failed its hash check."""


class RelayError(LoaxaError):
    """The amplifier relay board is missing, unplugged or answered nonsense."""


class StorageError(LoaxaError):
    """Local persistent state could not be written or read back."""
