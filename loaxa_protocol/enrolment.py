"""Zero-touch enrolment on the wire: claim codes and the sealed answer a station receives.

A new station generates an X25519 key pair and sends only the public half with its
one-time claim code. When a technician approves it, the server seals the station's
config (broker password, trusted keys) to that public key as a libsodium sealed box
(X25519 with a fresh ephemeral key, XSalsa20-Poly1305; both public keys bind the nonce),
through PyNaCl, which a station has anyway for signatures. Whoever reads the server's
answer without the station's private key, including a second holder of the printed
claim code, learns nothing; the private key never leaves the station.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from nacl import public
from nacl.exceptions import CryptoError
from pydantic import BaseModel, ConfigDict, Field

from loaxa_protocol.envelope import _b64d, _b64e
from loaxa_protocol.errors import LoaxaError

CLAIM_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O, 1/I: a code is read off a sticker and typed once."""
CLAIM_GROUPS = 4
CLAIM_GROUP_LEN = 4
"""16 symbols of 32: 80 bits, far beyond guessing at a rate-limited endpoint."""
CLAIM_PATTERN = re.compile(rf"^[{CLAIM_ALPHABET}]{{{CLAIM_GROUPS * CLAIM_GROUP_LEN}}}$")
PUBLIC_KEY_PATTERN = r"^[A-Za-z0-9_-]{43}$"
"""A raw 32-byte X25519 public key in unpadded base64url."""


class EnrolmentError(LoaxaError):
    """An enrolment request, claim code or sealed answer is not what it must be."""


def new_claim_code() -> str:
    """A fresh code, printed in groups: ``K7QM-3XHD-9PWA-TC4N``."""
    symbols = "".join(secrets.choice(CLAIM_ALPHABET) for _ in range(CLAIM_GROUPS * CLAIM_GROUP_LEN))
    groups = [symbols[i : i + CLAIM_GROUP_LEN] for i in range(0, len(symbols), CLAIM_GROUP_LEN)]
    return "-".join(groups)


def normalise_claim_code(text: str) -> str | None:
    """The code as stored (upper case, no dashes or spaces); None when it cannot be one."""
    compact = re.sub(r"[\s-]", "", text).upper()
    return compact if CLAIM_PATTERN.match(compact) else None


def claim_digest(text: str) -> str:
    """What the server stores: sha256 of the normalised code (the code itself never)."""
    compact = normalise_claim_code(text) or text
    return hashlib.sha256(compact.encode("ascii", "replace")).hexdigest()


class EnrolmentAsk(BaseModel):
    """``POST /api/v1/enrolment/requests`` and ``…/poll``: who asks, with which claim."""

    model_config = ConfigDict(extra="forbid")

    claim_code: str = Field(min_length=1, max_length=64, description="the one-time code")
    public_key: str = Field(
        pattern=PUBLIC_KEY_PATTERN, description="the station's X25519 public key, base64url"
    )
    hostname: str = Field(default="", max_length=100, description="shown to the technician")


class SealedBox(BaseModel):
    """The station's config sealed to its key; only its private key opens it."""

    model_config = ConfigDict(extra="forbid")

    sealed: str = Field(
        description="libsodium crypto_box_seal output (ephemeral key + box), base64url"
    )


def key_fingerprint(public_key: str) -> str:
    """Short and stable: what a technician compares between the page and the station's log."""
    return hashlib.sha256(public_key.encode("ascii")).hexdigest()[:12]


def new_station_key() -> public.PrivateKey:
    return public.PrivateKey.generate()


def public_key_text(key: public.PrivateKey) -> str:
    return _b64e(bytes(key.public_key))


def private_key_bytes(key: public.PrivateKey) -> bytes:
    return bytes(key)


def load_private_key(raw: bytes) -> public.PrivateKey:
    try:
        return public.PrivateKey(raw)
    except (ValueError, TypeError) as exc:
        raise EnrolmentError(f"not an X25519 private key: {exc}") from exc


def seal(public_key: str, plaintext: bytes) -> SealedBox:
    """Encrypt ``plaintext`` so that only the holder of ``public_key``'s private half reads it."""
    try:
        recipient = public.PublicKey(_b64d(public_key))
        # libsodium refuses a low-order point (the shared secret would be all zeros).
        sealed = public.SealedBox(recipient).encrypt(plaintext)
    except (ValueError, TypeError, CryptoError) as exc:
        raise EnrolmentError(f"not a usable X25519 public key: {exc}") from exc
    return SealedBox(sealed=_b64e(bytes(sealed)))


def is_usable_public_key(public_key: str) -> bool:
    """Whether a config can be sealed to this key (checked when a station first asks)."""
    try:
        seal(public_key, b"")
    except EnrolmentError:
        return False
    return True


def open_box(private_key: public.PrivateKey, box: SealedBox) -> bytes:
    """The plaintext, or :class:`EnrolmentError` when the box was not sealed to this key."""
    try:
        return public.SealedBox(private_key).decrypt(_b64d(box.sealed))
    except (CryptoError, ValueError, TypeError) as exc:
        raise EnrolmentError("the sealed answer does not open with this station's key") from exc
