"""Live sessions on the server: open, sign, fan frames out, stop, archive.

Theory of operation (docs/live.md):

1. ``create`` — the API has resolved the targets to stations and checked that the actor
   may go live in every area they lie in. A session gets a random 8-byte id and a
   32-byte secret; each station's frame key is derived from the secret
   (:func:`loaxa_protocol.live.new_key`), so a station can check frames for itself
   only. The browser receives a one-time token for the WebSocket.
2. ``open`` — the WebSocket presented its token: a signed ``LiveStart`` carrying the
   station's key goes to each station's ``live`` topic, QoS 1 and retained (a station
   that reconnects mid-session joins it).
3. ``frame`` — every Opus packet from the browser is numbered by the server, tagged
   per station and published QoS 0 (a late frame is worth nothing: the station
   conceals it), and appended to the session's Ogg Opus recording.
4. ``stop`` — by the operator, a closed WebSocket or the maximum length: a signed
   ``LiveStop`` (QoS 1), then the retained start is cleared; the recording goes
   through the upload pipeline and becomes an audio asset.

Station as-run: each station reports ``live_started`` / ``live_ended`` events with
item id ``live-<session>``; :meth:`LiveService.as_run` reads them back.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from loaxa_protocol import AudioRef, LiveStart, LiveStop, seal, topics
from loaxa_protocol.errors import LoaxaError
from loaxa_protocol.live import ALLOWED_SAMPLES, MAX_OPUS_BYTES, Frame, key_text, new_key, pack
from server.audit.log import record_audit
from server.auth.actor import SYSTEM, Actor
from server.db import session_scope
from server.fleet.bus import Bus
from server.keys import ServerKeys
from server.live.archive import OggOpusWriter
from server.live.models import LiveSession
from server.models import StationEvent

log = logging.getLogger(__name__)

SENDER = "server"
TOKEN_TTL = timedelta(seconds=60)
CONTROL_TTL = timedelta(minutes=5)


class LiveError(LoaxaError):
    """A live session that cannot be created, opened or fed; the message says why."""


Archiver = Callable[[Path, str, Actor], int | None]
"""Turns a finished recording into an audio asset; returns its id (None: not kept)."""


@dataclass
class OnAir:
    """A session the server is running (memory only: a restart ends it)."""

    session_id: str
    secret: bytes
    token_sha256: str
    token_expires: datetime
    station_ids: list[str]
    ends_by: datetime
    actor: Actor
    title: str
    keys: dict[str, bytes] = field(default_factory=dict)
    opened: bool = False
    frames: int = 0
    archive: OggOpusWriter | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: bool = False


class LiveService:
    def __init__(
        self,
        engine: Engine,
        keys: ServerKeys,
        bus: Bus,
        clock: Callable[[], datetime],
        work_dir: Path,
        max_length: timedelta,
        chime: Callable[[datetime], AudioRef | None] = lambda _now: None,
        archiver: Archiver | None = None,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._bus = bus
        self._clock = clock
        self._work_dir = work_dir
        self.max_length = max_length
        self._chime = chime
        self._archiver = archiver
        self._lock = threading.Lock()
        self._on_air: dict[str, OnAir] = {}
        self.archiving: dict[str, threading.Thread] = {}

    # ------------------------------------------------------------ sessions

    def create(
        self,
        session: Session,
        actor: Actor,
        station_ids: set[str],
        targets: dict[str, list[str]],
        title: str,
        source_ip: str | None = None,
    ) -> tuple[LiveSession, str]:
        """Record a session for ``station_ids`` (authorised by the caller); returns it and
        the one-time WebSocket token."""
        if not station_ids:
            raise LiveError("targets: no registered station is reached")
        now = self._clock()
        with self._lock:
            busy = {
                s: other.session_id
                for other in self._on_air.values()
                for s in other.station_ids
                if s in station_ids and not other.stopped
            }
            if busy:
                station, other = sorted(busy.items())[0]
                raise LiveError(f"station {station} is already on air (live session {other})")
            session_id = secrets.token_hex(8)
            token = secrets.token_urlsafe(24)
            on_air = OnAir(
                session_id=session_id,
                secret=secrets.token_bytes(32),
                token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                token_expires=now + TOKEN_TTL,
                station_ids=sorted(station_ids),
                ends_by=now + self.max_length,
                actor=actor,
                title=title,
            )
            on_air.keys = {s: new_key(on_air.secret, session_id, s) for s in on_air.station_ids}
            self._on_air[session_id] = on_air
        row = LiveSession(
            id=session_id,
            title=title,
            created_by=actor.name,
            created_at=now,
            targets=targets,
            station_ids=on_air.station_ids,
            ends_by=on_air.ends_by,
        )
        session.add(row)
        record_audit(
            session, actor, "live.create", "live", session_id,
            after={"stations": on_air.station_ids, "title": title}, source_ip=source_ip,
        )  # fmt: skip
        session.commit()
        session.refresh(row)
        return row, token

    def open(self, session_id: str, token: str) -> OnAir:
        """Check the one-time token, then send every station its signed start."""
        now = self._clock()
        with self._lock:
            on_air = self._on_air.get(session_id)
            digest = hashlib.sha256(token.encode()).hexdigest()
            if (
                on_air is None
                or on_air.stopped
                or not secrets.compare_digest(digest, on_air.token_sha256)
            ):
                raise LiveError(f"live session {session_id}: unknown, over or wrong token")
            if on_air.opened or now > on_air.token_expires:
                raise LiveError(f"live session {session_id}: the token was used or expired")
            on_air.opened = True
        self._work_dir.mkdir(parents=True, exist_ok=True)
        on_air.archive = OggOpusWriter(self._work_dir / f"live-{session_id}.opus")
        chime = self._chime(now)
        for station_id in on_air.station_ids:
            start = LiveStart(
                sender=SENDER,
                seq=self._keys.next_seq(),
                issued_at=now,
                expires_at=on_air.ends_by,
                to=station_id,
                session_id=session_id,
                frame_key=key_text(on_air.keys[station_id]),
                ends_by=on_air.ends_by,
                chime=chime,
                title=on_air.title[:200],
            )
            payload = seal(start, self._keys.signing_key)
            self._bus.publish(topics.live(station_id), payload, qos=1, retain=True)
        with session_scope(self._engine) as session:
            row = session.get(LiveSession, session_id)
            if row is not None:
                row.started_at = now
                session.add(row)
        log.info("live session %s on air to %s", session_id, ", ".join(on_air.station_ids))
        return on_air

    def frame(self, on_air: OnAir, capture_ms: int, samples: int, opus: bytes) -> bool:
        """Fan one Opus packet out; False when the session is over (stop it)."""
        if samples not in ALLOWED_SAMPLES or not 0 < len(opus) <= MAX_OPUS_BYTES:
            raise LiveError(f"not an Opus frame: {samples} samples, {len(opus)} bytes")
        if self._clock() >= on_air.ends_by:
            return False
        with on_air.lock:
            if on_air.stopped:
                return False
            seq = on_air.frames
            on_air.frames += 1
            if on_air.archive is not None:
                on_air.archive.add(opus, samples)
        frame = Frame(on_air.session_id, seq, capture_ms, samples, opus)
        for station_id in on_air.station_ids:
            payload = pack(frame, on_air.keys[station_id])
            self._bus.publish(topics.live(station_id), payload, qos=0)
        return True

    def stop(self, session_id: str, reason: str, actor: Actor | None = None) -> bool:
        """End the session everywhere; False if it was not on air."""
        with self._lock:
            on_air = self._on_air.pop(session_id, None)
        if on_air is None:
            return False
        with on_air.lock:
            on_air.stopped = True
            archive, on_air.archive = on_air.archive, None
        now = self._clock()
        if on_air.opened:
            for station_id in on_air.station_ids:
                stop = LiveStop(
                    sender=SENDER,
                    seq=self._keys.next_seq(),
                    issued_at=now,
                    expires_at=now + CONTROL_TTL,
                    to=station_id,
                    session_id=session_id,
                )
                topic = topics.live(station_id)
                self._bus.publish(topic, seal(stop, self._keys.signing_key), qos=1)
                self._bus.publish(topic, b"", qos=1, retain=True)  # clears the retained start
        with session_scope(self._engine) as session:
            row = session.get(LiveSession, session_id)
            if row is not None:
                row.ended_at, row.end_reason, row.frames = now, reason, on_air.frames
                session.add(row)
                record_audit(
                    session, actor or SYSTEM, "live.stop", "live", session_id,
                    after={"reason": reason, "frames": on_air.frames},
                )  # fmt: skip
        if archive is not None:
            archive.close()
            if on_air.frames and self._archiver is not None:
                worker = threading.Thread(
                    target=self._archive, args=(on_air, archive.path), daemon=True,
                    name=f"live-archive-{session_id}",
                )  # fmt: skip
                self.archiving[session_id] = worker
                worker.start()
            else:
                archive.path.unlink(missing_ok=True)
        log.info("live session %s stopped (%s) after %s frames", session_id, reason, on_air.frames)
        return True

    def _archive(self, on_air: OnAir, path: Path) -> None:
        assert self._archiver is not None
        try:
            name = f"live {on_air.title or on_air.session_id}.opus"
            audio_id = self._archiver(path, name, on_air.actor)
            with session_scope(self._engine) as session:
                row = session.get(LiveSession, on_air.session_id)
                if row is not None:
                    row.audio_id = audio_id
                    session.add(row)
        except Exception:  # the session is over either way; say why it was not kept
            log.exception("could not archive live session %s", on_air.session_id)
        finally:
            path.unlink(missing_ok=True)

    def stop_expired(self) -> int:
        """Stop every session past its maximum length (a WebSocket that went quiet)."""
        now = self._clock()
        with self._lock:
            over = [s for s, o in self._on_air.items() if now >= o.ends_by]
        return sum(self.stop(s, "max_length") for s in over)

    def on_air(self) -> list[OnAir]:
        with self._lock:
            return [o for o in self._on_air.values() if o.opened and not o.stopped]

    def stop_all(self) -> None:
        with self._lock:
            ids = list(self._on_air)
        for session_id in ids:
            self.stop(session_id, "server_stopped")


def as_run(session: Session, session_id: str) -> dict[str, list[dict[str, object]]]:
    """What each station reported about the session, in order."""
    rows = session.exec(
        select(StationEvent)
        .where(StationEvent.item_id == f"live-{session_id}")
        .order_by(col(StationEvent.id))
    ).all()
    found: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        found.setdefault(row.station_id, []).append(
            {
                "kind": row.kind,
                "at": row.at,
                "started_at": row.started_at,
                "finished_at": row.finished_at,
                "reason": row.reason,
                "detail": row.detail,
            }
        )
    return found
