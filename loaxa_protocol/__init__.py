"""The Loaxa wire protocol, shared by the server and the station firmware.

Everything that crosses the broker is defined here and nowhere else: topic names,
message models and the signed envelope. It imports neither paho nor FastAPI so a
third-party vendor (or a test) can use it on its own. ``docs/protocol.md`` is the
human-readable form of this package.
"""

from loaxa_protocol.envelope import (
    Freshness,
    Keyring,
    Rejected,
    RejectReason,
    ReplayGuard,
    SigningKey,
    Verified,
    open_envelope,
    seal,
)
from loaxa_protocol.messages import (
    PROTOCOL_VERSION,
    Alert,
    AlertCancel,
    AlertSeverity,
    AudioRef,
    Command,
    CommandReply,
    Event,
    EventKind,
    Health,
    InlineAudio,
    KeyEntry,
    Plan,
    PlanItem,
    Priority,
    Status,
    StatusState,
    StreamRef,
    TrustUpdate,
)

__all__ = [
    "PROTOCOL_VERSION",
    "Alert",
    "AlertCancel",
    "AlertSeverity",
    "AudioRef",
    "Command",
    "CommandReply",
    "Event",
    "EventKind",
    "Freshness",
    "Health",
    "InlineAudio",
    "KeyEntry",
    "Keyring",
    "Plan",
    "PlanItem",
    "Priority",
    "RejectReason",
    "Rejected",
    "ReplayGuard",
    "SigningKey",
    "Status",
    "StatusState",
    "StreamRef",
    "TrustUpdate",
    "Verified",
    "open_envelope",
    "seal",
]
