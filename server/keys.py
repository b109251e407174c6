"""The server's secrets: its Ed25519 signing key, its message sequence and the URL HMAC key.

All three live under ``<data_dir>/keys`` (mode 0600) and survive restarts, because
stations pin the public key in their config, refuse any sequence they have already
seen (replay protection) and fetch audio by URLs signed days earlier.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from loaxa_protocol import SigningKey
from loaxa_protocol.errors import StorageError
from server.settings import Settings

log = logging.getLogger(__name__)

KEY_PURPOSE = "plan"
KEY_PURPOSES = frozenset({"plan", "command"})
SIGNING_KEY_FILE = "server_ed25519.pem"
SEQUENCE_FILE = "sequence.json"
URL_SECRET_FILE = "url_secret"


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc}") from exc


def load_signing_key(keys_dir: Path) -> SigningKey:
    """The plan/command signing key, generated on first start."""
    path = keys_dir / SIGNING_KEY_FILE
    if path.exists():
        return SigningKey.from_pem(path.read_bytes(), KEY_PURPOSE, KEY_PURPOSES)
    key = SigningKey.generate(KEY_PURPOSE, KEY_PURPOSES)
    _write_private(path, key.to_pem())
    log.info("generated signing key %s in %s", key.kid, path)
    return key


def load_url_secret(settings: Settings) -> bytes:
    """The configured URL secret, else one generated once and kept in the keys dir."""
    if settings.url_secret is not None:
        return settings.url_secret.get_secret_value().encode()
    path = settings.keys_dir / URL_SECRET_FILE
    if path.exists():
        return path.read_bytes().strip()
    secret = secrets.token_urlsafe(32).encode()
    _write_private(path, secret)
    return secret


class Sequence:
    """Per-sender monotonic sequence: ``max(last + 1, now in unix ms)``.

    Using the clock keeps numbers strictly increasing even if this file is lost along
    with the whole data dir (a restore from an old backup): the new sequence starts at
    the current time, above anything the server sent before. To avoid an fsync per
    message, the file records a *lease* ceiling; after a restart numbering resumes above
    the ceiling, so a crash can only skip numbers, never reuse them.
    """

    def __init__(self, path: Path, lease: int = 10_000) -> None:
        self._path = path
        self._lease = lease
        self._lock = threading.Lock()
        self._last = 0
        if path.exists():
            try:
                self._last = int(json.loads(path.read_text())["ceiling"])
            except (ValueError, KeyError, TypeError) as exc:
                raise StorageError(f"{path}: unreadable sequence state: {exc}") from exc
        self._ceiling = self._last

    def next(self, now_ms: int | None = None) -> int:
        with self._lock:
            clock = time.time_ns() // 1_000_000 if now_ms is None else now_ms
            value = max(self._last + 1, clock)
            if value > self._ceiling:
                ceiling = value + self._lease
                _write_private(self._path, json.dumps({"ceiling": ceiling}).encode())
                self._ceiling = ceiling
            self._last = value
            return value


@dataclass(frozen=True)
class UrlSigner:
    """Expiring HMAC-SHA256 signatures over ``"<audio_id>|<exp>"`` for audio downloads.

    A URL, not a station credential, authorises the download, so it works from any
    HTTP client (curl on the Pi, a CDN later) and leaks only one file for a while.
    """

    secret: bytes
    public_url: str

    def signature(self, audio_id: int, exp: int) -> str:
        message = f"{audio_id}|{exp}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def sign_url(self, audio_id: int, ttl: timedelta, now: datetime) -> str:
        exp = int((now + ttl).timestamp())
        sig = self.signature(audio_id, exp)
        return f"{self.public_url}/api/v1/audio/{audio_id}/content?exp={exp}&sig={sig}"

    def check_url(self, audio_id: int, exp: int, sig: str, now: datetime) -> bool:
        if exp <= now.timestamp():
            return False
        return hmac.compare_digest(self.signature(audio_id, exp), sig)


@dataclass(frozen=True)
class ServerKeys:
    signing_key: SigningKey
    sequence: Sequence
    urls: UrlSigner

    @classmethod
    def load(cls, settings: Settings) -> ServerKeys:
        keys_dir = settings.keys_dir
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(
            signing_key=load_signing_key(keys_dir),
            sequence=Sequence(keys_dir / SEQUENCE_FILE),
            urls=UrlSigner(load_url_secret(settings), settings.public_url),
        )

    def next_seq(self) -> int:
        return self.sequence.next()
