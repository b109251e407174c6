"""The server's secrets: its Ed25519 signing key, its message sequence and the URL HMAC key.

All three live under ``<data_dir>/keys`` (mode 0600) and survive restarts, because
stations pin the public key in their config, refuse any sequence they have already
seen (replay protection) and fetch audio by URLs signed days earlier.

With several server replicas (PostgreSQL) the keys are read from the shared data dir
and the sequence is drawn from the database instead of the file
(``server.cluster.sequence``): a second process with its own file would reuse numbers
and stations would refuse its plans.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from loaxa_protocol import KeyEntry, SigningKey
from loaxa_protocol.durable import write_atomically
from loaxa_protocol.errors import StorageError
from server.settings import Settings

log = logging.getLogger(__name__)

KEY_PURPOSE = "plan"
KEY_PURPOSES = frozenset({"plan", "command", "trust", "live_start", "live_stop"})
ALERT_PURPOSES = frozenset({"alert", "alert_cancel"})
SIGNING_KEY_FILE = "server_ed25519.pem"
ALERT_KEY_FILE = "province_alert_ed25519.pem"
RETIRED_DIR = "retired"
SEQUENCE_FILE = "sequence.json"
URL_SECRET_FILE = "url_secret"


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        write_atomically(path, data, mode=0o600)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from exc


def load_signing_key(
    keys_dir: Path,
    file_name: str = SIGNING_KEY_FILE,
    purpose: str = KEY_PURPOSE,
    purposes: frozenset[str] = KEY_PURPOSES,
) -> SigningKey:
    """A signing key kept in ``keys_dir``, generated on first start."""
    path = keys_dir / file_name
    if path.exists():
        return SigningKey.from_pem(path.read_bytes(), purpose, purposes)
    key = SigningKey.generate(purpose, purposes)
    _write_private(path, key.to_pem())
    log.info("generated signing key %s in %s", key.kid, path)
    return key


def _entry(key: SigningKey, valid_until: datetime | None = None) -> KeyEntry:
    return KeyEntry(
        kid=key.kid,
        public_key=key.public_b64,
        purposes=sorted(key.purposes),
        valid_until=valid_until,
    )


def release_entry(public_b64: str | None) -> KeyEntry | None:
    """The trusted-key entry of the release key, from its public half (settings)."""
    if public_b64 is None:
        return None
    from loaxa_protocol.envelope import key_id_for
    from loaxa_protocol.release import RELEASE_PURPOSE

    try:
        raw = base64.urlsafe_b64decode(public_b64 + "=" * (-len(public_b64) % 4))
    except ValueError as exc:
        raise ValueError("release_public_key is not base64url") from exc
    if len(raw) != 32:
        raise ValueError("release_public_key is not a raw Ed25519 public key (32 bytes)")
    return KeyEntry(
        kid=key_id_for(raw, RELEASE_PURPOSE), public_key=public_b64, purposes=[RELEASE_PURPOSE]
    )


def load_retired(keys_dir: Path) -> list[KeyEntry]:
    """Public halves of rotated-out plan keys, still honoured until their ``valid_until``."""
    folder = keys_dir / RETIRED_DIR
    if not folder.is_dir():
        return []
    return [KeyEntry.model_validate_json(p.read_text()) for p in sorted(folder.glob("*.json"))]


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


class SequenceSource(Protocol):
    """Hands out the server's strictly increasing message sequence numbers."""

    def next(self, now_ms: int | None = None) -> int: ...


def file_ceiling(path: Path) -> int:
    """The highest number a file sequence may have used (0 without a file)."""
    if not path.exists():
        return 0
    try:
        return int(json.loads(path.read_text())["ceiling"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{path}: unreadable sequence state: {exc}") from exc


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
        self._last = file_ceiling(path)
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


def _sequence(path: Path, engine: Engine | None) -> SequenceSource:
    if engine is None or engine.dialect.name == "sqlite":
        return Sequence(path)  # one process: the file lease, no database write per message
    from server.cluster.sequence import DatabaseSequence

    # Seeded above anything the file sequence of a single-process past handed out.
    return DatabaseSequence(engine, floor=file_ceiling(path))


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


class ServerKeys:
    """The server's keys. The plan key can be rotated while the server runs."""

    def __init__(
        self,
        keys_dir: Path,
        signing_key: SigningKey,
        alert_key: SigningKey,
        sequence: SequenceSource,
        urls: UrlSigner,
        release_key: KeyEntry | None = None,
    ) -> None:
        self._dir = keys_dir
        self._signing_key = signing_key
        self.alert_key = alert_key
        self.sequence = sequence
        self.urls = urls
        self.release_key = release_key
        """the public half of the release key (its private half never lives here)"""
        self._retired = load_retired(keys_dir)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings, engine: Engine | None = None) -> ServerKeys:
        """The keys from the data dir; the sequence from ``engine`` when it is PostgreSQL."""
        keys_dir = settings.keys_dir
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(
            keys_dir,
            signing_key=load_signing_key(keys_dir),
            # The province's alert key. It lives here until provinces run their own
            # signer; stations trust it for alerts only, whatever else it is used for.
            alert_key=load_signing_key(keys_dir, ALERT_KEY_FILE, "alert", ALERT_PURPOSES),
            sequence=_sequence(keys_dir / SEQUENCE_FILE, engine),
            urls=UrlSigner(load_url_secret(settings), settings.public_url),
            release_key=release_entry(settings.release_public_key),
        )

    @property
    def signing_key(self) -> SigningKey:
        with self._lock:
            return self._signing_key

    def reload(self) -> bool:
        """Read the plan key and the retired keys again; True when the plan key changed.

        Replicas share the keys directory: when one rotates, the others are told through
        the change feed (``server.cluster.feed``) and read the new key here, no restart.
        """
        path = self._dir / SIGNING_KEY_FILE
        try:  # never generate here: a missing file is a volume away, not a first start
            signing_key = SigningKey.from_pem(path.read_bytes(), KEY_PURPOSE, KEY_PURPOSES)
            retired = load_retired(self._dir)
        except (OSError, ValueError) as exc:
            log.error("cannot read the keys again from %s, keeping them: %s", self._dir, exc)
            return False
        with self._lock:
            changed = signing_key.kid != self._signing_key.kid
            self._signing_key, self._retired = signing_key, retired
        if changed:
            log.warning("plan key %s read from %s (rotated by a peer)", signing_key.kid, self._dir)
        return changed

    def next_seq(self) -> int:
        return self.sequence.next()

    def trusted_entries(self, now: datetime) -> list[KeyEntry]:
        """Every key a station should trust now: what configs and trust updates carry."""
        with self._lock:
            retired = [k for k in self._retired if k.valid_until and k.valid_until > now]
            entries = [_entry(self._signing_key), _entry(self.alert_key), *retired]
        return entries if self.release_key is None else [*entries, self.release_key]

    def rotate_signing_key(self, now: datetime, grace: timedelta) -> tuple[SigningKey, SigningKey]:
        """Replace the plan key; the old one stays trusted for ``grace``. Returns (old, new).

        Only the public half of the old key is kept: nothing can be signed with it any
        more, yet stations and the intrusion watch can still check what it signed.
        """
        with self._lock:
            old = self._signing_key
            new = SigningKey.generate(KEY_PURPOSE, KEY_PURPOSES)
            retired = _entry(old, now + grace)
            path = self._dir / RETIRED_DIR / f"{old.kid}.json"
            _write_private(path, retired.model_dump_json().encode())
            _write_private(self._dir / SIGNING_KEY_FILE, new.to_pem())
            self._retired.append(retired)
            self._signing_key = new
        log.warning(
            "rotated plan key %s -> %s; old key honoured until %s",
            old.kid,
            new.kid,
            retired.valid_until,
        )
        return old, new
