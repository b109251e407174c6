"""Ed25519 signed envelopes: seal on the server, open on the station.

The signature covers the exact payload bytes, which travel base64-encoded inside a
small JSON envelope, so no canonical-JSON rules are needed: a verifier checks the
bytes it received, then parses them. Every refusal has its own reason code so that
stations can report *why* they refused (docs/protocol.md lists them).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pydantic import TypeAdapter, ValidationError

from loaxa_protocol.messages import (
    Alert,
    AlertCancel,
    Command,
    KeyEntry,
    LiveStart,
    LiveStop,
    Plan,
    SignedMessage,
    TrustUpdate,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

AnySigned = Plan | Command | TrustUpdate | Alert | AlertCancel | LiveStart | LiveStop

MAX_ENVELOPE_BYTES = 1024 * 1024
CLOCK_TOLERANCE = timedelta(minutes=5)
_MESSAGE = TypeAdapter(SignedMessage)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id_for(public_raw: bytes, purpose: str) -> str:
    """A stable, readable key id: purpose plus a fingerprint of the raw public key."""
    return f"{purpose}-{hashlib.sha256(public_raw).hexdigest()[:12]}"


def _public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key with its key id and the message types it may sign.

    Only the server signs. It keeps its keys as PKCS#8 PEM through ``cryptography``
    (imported here on first use), which a station never loads: it only verifies, with
    libsodium (PyNaCl, :class:`Keyring`), at a fifth of the memory.
    """

    kid: str
    private_key: Ed25519PrivateKey
    purposes: frozenset[str]

    @classmethod
    def generate(cls, purpose: str = "plan", purposes: frozenset[str] | None = None) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        return cls(key_id_for(_public_raw(key), purpose), key, purposes or frozenset({purpose}))

    @classmethod
    def from_pem(
        cls, pem: bytes, purpose: str, purposes: frozenset[str] | None = None
    ) -> SigningKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return cls(key_id_for(_public_raw(key), purpose), key, purposes or frozenset({purpose}))

    def to_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_b64(self) -> str:
        return _b64e(_public_raw(self.private_key))


def seal(message: AnySigned, key: SigningKey) -> bytes:
    """Serialise, sign and wrap a message; the result is the MQTT payload."""
    if message.type not in key.purposes:
        raise ValueError(f"key {key.kid} may not sign {message.type} messages")
    payload = message.model_dump_json().encode()
    envelope = {
        "v": 1,
        "kid": key.kid,
        "payload": _b64e(payload),
        "sig": _b64e(key.private_key.sign(payload)),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


class RejectReason(enum.StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_PURPOSE = "wrong_purpose"
    EXPIRED = "expired"
    RETIRED_KEY = "retired_key"
    FROM_FUTURE = "from_future"
    REPLAYED = "replayed"
    WRONG_STATION = "wrong_station"


@dataclass(frozen=True)
class TrustedKey:
    kid: str
    public_key: VerifyKey
    purposes: frozenset[str]
    public_b64: str
    valid_until: datetime | None = None


@dataclass
class Keyring:
    """The public keys a station trusts, each limited to some message types."""

    keys: dict[str, TrustedKey] = field(default_factory=dict)

    def add(
        self,
        kid: str,
        public_b64: str,
        purposes: frozenset[str] | set[str],
        valid_until: datetime | None = None,
    ) -> None:
        """Trust a key; raises ``ValueError`` if it is not a raw Ed25519 public key."""
        try:
            public_key = VerifyKey(_b64d(public_b64))
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ValueError(f"key {kid!r} is not a raw Ed25519 public key") from exc
        self.keys[kid] = TrustedKey(kid, public_key, frozenset(purposes), public_b64, valid_until)

    def entries(self) -> list[KeyEntry]:
        return [
            KeyEntry(
                kid=k.kid,
                public_key=k.public_b64,
                purposes=sorted(k.purposes),
                valid_until=k.valid_until,
            )
            for k in self.keys.values()
        ]

    @classmethod
    def from_entries(cls, entries: list[KeyEntry]) -> Keyring:
        ring = cls()
        for entry in entries:
            ring.add(entry.kid, entry.public_key, set(entry.purposes), entry.valid_until)
        return ring

    @classmethod
    def of(cls, *signing_keys: SigningKey) -> Keyring:
        ring = cls()
        for key in signing_keys:
            ring.add(key.kid, key.public_b64, key.purposes)
        return ring


@dataclass(frozen=True)
class Verified:
    message: AnySigned
    kid: str
    digest: str
    """sha256 of the signed payload bytes: identifies this exact message."""


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    detail: str
    sender: str | None = None
    seq: int | None = None


def open_envelope(
    raw: bytes,
    keyring: Keyring,
    now: datetime,
    accept_to: frozenset[str] | set[str],
    *,
    check_expiry: bool = True,
) -> Verified | Rejected:
    """Check signature, key, purpose, validity window and addressee; never raises.

    Replay (the sequence) is checked separately by :class:`ReplayGuard`, because the
    station must decide whether a same-sequence copy is a harmless retained duplicate.
    ``check_expiry=False`` is only for re-reading a plan this station already accepted
    (from its own disk after a reboot): a programme must outlive a long outage, and the
    key that signed it may have been retired since.
    """
    if len(raw) > MAX_ENVELOPE_BYTES:
        return Rejected(RejectReason.MALFORMED, f"envelope of {len(raw)} bytes exceeds limit")
    try:
        envelope = json.loads(raw)
        if not isinstance(envelope, dict) or envelope.get("v") != 1:
            return Rejected(RejectReason.MALFORMED, "not a version-1 envelope")
        kid, payload_b64, sig_b64 = envelope["kid"], envelope["payload"], envelope["sig"]
        payload, signature = _b64d(payload_b64), _b64d(sig_b64)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        return Rejected(RejectReason.MALFORMED, f"unreadable envelope: {exc}")

    trusted = keyring.keys.get(kid) if isinstance(kid, str) else None
    if trusted is None:
        return Rejected(RejectReason.UNKNOWN_KEY, f"key id {kid!r} is not trusted")
    try:
        trusted.public_key.verify(payload, signature)
    except (BadSignatureError, ValueError):  # a signature of the wrong length, too
        return Rejected(RejectReason.BAD_SIGNATURE, f"signature does not match key {kid}")

    try:
        message = _MESSAGE.validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return Rejected(
            RejectReason.MALFORMED, f"signed payload invalid at {where}: {first['msg']}"
        )

    sender, seq = message.sender, message.seq
    if message.type not in trusted.purposes:
        return Rejected(
            RejectReason.WRONG_PURPOSE, f"key {kid} may not sign {message.type}", sender, seq
        )
    if check_expiry and trusted.valid_until is not None and now >= trusted.valid_until:
        detail = f"key {kid} was retired at {trusted.valid_until.isoformat()}"
        return Rejected(RejectReason.RETIRED_KEY, detail, sender, seq)
    if check_expiry and now >= message.expires_at:
        return Rejected(
            RejectReason.EXPIRED, f"expired at {message.expires_at.isoformat()}", sender, seq
        )
    if message.issued_at > now + CLOCK_TOLERANCE:
        return Rejected(
            RejectReason.FROM_FUTURE, f"issued at {message.issued_at.isoformat()}", sender, seq
        )
    if message.to not in accept_to or (
        isinstance(message, Plan) and message.station_id not in accept_to
    ):
        return Rejected(RejectReason.WRONG_STATION, f"addressed to {message.to!r}", sender, seq)
    return Verified(message, kid, hashlib.sha256(payload).hexdigest())


class Freshness(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    REPLAYED = "replayed"


@dataclass
class ReplayGuard:
    """Last accepted (sequence, digest) per sender and message type.

    A message with the last accepted sequence *and* the same bytes is a duplicate
    (MQTT retained copies, QoS 1 redelivery) and is ignored quietly; any other
    sequence that is not newer is a replay and is refused. Types are tracked apart so
    that accepting a command never makes the retained plan look replayed.
    """

    last: dict[str, tuple[int, str]] = field(default_factory=dict)

    @staticmethod
    def _key(verified: Verified) -> str:
        return f"{verified.message.sender}/{verified.message.type}"

    def last_seq(self, verified: Verified) -> int | None:
        previous = self.last.get(self._key(verified))
        return None if previous is None else previous[0]

    def check(self, verified: Verified) -> Freshness:
        seq = verified.message.seq
        previous = self.last.get(self._key(verified))
        if previous is None or seq > previous[0]:
            return Freshness.NEW
        if previous == (seq, verified.digest):
            return Freshness.DUPLICATE
        return Freshness.REPLAYED

    def record(self, verified: Verified) -> None:
        self.last[self._key(verified)] = (verified.message.seq, verified.digest)

    def to_json(self) -> dict[str, list[int | str]]:
        return {key: [seq, digest] for key, (seq, digest) in self.last.items()}

    @classmethod
    def from_json(cls, data: dict[str, list[int | str]]) -> ReplayGuard:
        return cls({key: (int(v[0]), str(v[1])) for key, v in data.items()})
