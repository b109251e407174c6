"""Signed station releases: a manifest of wheels, signed by the release key.

A release is the station's wheels (``./scripts/build-station DIR``) and a manifest that
names each file with its sha256 and size. The manifest travels as a signed envelope of
the same shape as every other message (``v``, ``kid``, ``payload``, ``sig``), but it is
signed by the *release* key, whose only purpose is ``release``: neither the plan key
(which the server holds online) nor the alert key can make a station install code. The
release key can stay on a build machine; the server only stores what it signed.

A manifest carries no expiry and no addressee: the same signed bytes serve every
station for as long as the release is rolled out. Which station installs it, and when,
is said by the server's ``update`` command, which is signed, addressed and
replay-checked like every command.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING

from nacl.exceptions import BadSignatureError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from loaxa_protocol.envelope import Keyring, SigningKey

RELEASE_PURPOSE = "release"
MAX_MANIFEST_BYTES = 64 * 1024
VERSION_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,62}$"
WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.whl$")


class ReleaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="a wheel's file name, no directory")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(gt=0, le=200 * 1024 * 1024)

    @field_validator("name")
    @classmethod
    def _wheel(cls, value: str) -> str:
        if not WHEEL_NAME.fullmatch(value) or value.startswith("."):
            raise ValueError(f"{value!r} is not a wheel file name")
        return value


class ReleaseManifest(BaseModel):
    """What a release holds; the station installs ``loaxa-node==version`` from ``files``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(default="release", pattern="^release$")
    version: str = Field(pattern=VERSION_PATTERN, description="loaxa-node's version")
    created_at: datetime
    files: list[ReleaseFile] = Field(min_length=1, max_length=100)

    @field_validator("files")
    @classmethod
    def _unique(cls, files: list[ReleaseFile]) -> list[ReleaseFile]:
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            raise ValueError("a file is named twice")
        if not any(n.startswith("loaxa_node-") for n in names):
            raise ValueError("no loaxa_node wheel in the release")
        return files

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_manifest(manifest: ReleaseManifest, key: SigningKey) -> str:
    """The signed manifest (JSON text); only a key for ``release`` may sign one."""
    if RELEASE_PURPOSE not in key.purposes:
        raise ValueError(f"key {key.kid} may not sign releases")
    payload = manifest.model_dump_json().encode()
    envelope = {
        "v": 1,
        "kid": key.kid,
        "payload": _b64e(payload),
        "sig": _b64e(key.private_key.sign(payload)),
    }
    return json.dumps(envelope, separators=(",", ":"))


def open_manifest(signed: str, keyring: Keyring) -> ReleaseManifest | str:
    """The manifest if a trusted release key signed it, else a one-line reason; never raises."""
    if len(signed) > MAX_MANIFEST_BYTES:
        return "manifest too large"
    try:
        envelope = json.loads(signed)
        if not isinstance(envelope, dict) or envelope.get("v") != 1:
            return "not a version-1 envelope"
        kid = envelope["kid"]
        payload, signature = _b64d(envelope["payload"]), _b64d(envelope["sig"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        return f"unreadable manifest envelope: {exc}"
    trusted = keyring.keys.get(kid) if isinstance(kid, str) else None
    if trusted is None:
        return f"key id {kid!r} is not trusted"
    if RELEASE_PURPOSE not in trusted.purposes:
        return f"key {kid} may not sign releases"
    try:
        trusted.public_key.verify(payload, signature)
    except (BadSignatureError, ValueError):
        return f"manifest signature does not match key {kid}"
    try:
        return ReleaseManifest.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"manifest invalid at {where}: {first['msg']}"
