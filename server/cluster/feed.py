"""The live-alert change feed: per-alert counters the live view waits on.

A change to an alert's deliveries bumps its counter; the live page's stream re-reads the
alert only when the counter moved, so an idle page costs no query. With several
replicas the station's ack may be ingested by one replica while the page streams from
another, so on PostgreSQL a bump is also a ``NOTIFY loaxa_alert_changes, '<pk>'`` —
inside the writer's transaction when there is one, so it is delivered at commit and
never before the rows it announces are visible — and every replica LISTENs and bumps
its own counter. On SQLite (one process) the counters stay in memory.

The same connection carries ``loaxa_key_changes``: a replica that rotated the plan key
says so, and every replica reads the keys again (``on_keys_changed``), also each time
its listening connection is (re)made, in case a notice went by while it was away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine, text
from sqlmodel import Session

from server.cluster.leader import shared

log = logging.getLogger(__name__)

CHANNEL = "loaxa_alert_changes"
KEYS_CHANNEL = "loaxa_key_changes"
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
RECONNECT_S = 1.0


class ChangeFeed:
    """Per-alert change counters, shared between replicas through LISTEN/NOTIFY."""

    def __init__(self, engine: Engine | None = None) -> None:
        self._engine = engine if engine is not None and shared(engine) else None
        self._versions: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self._keys_changed: Callable[[], object] = lambda: None
        self.received = 0
        """notifications received from the database (any replica's, this one's too)"""

    def bump(self, alert_pk: int, session: Session | None = None) -> None:
        """Alert ``alert_pk`` changed; ``session``: the uncommitted transaction that changed it."""
        self._bump_here(alert_pk)
        if self._engine is None:
            return
        try:
            self._notify(CHANNEL, str(alert_pk), session)
        except Exception:  # the live view of other replicas lags; the alert itself is fine
            log.warning("alert %s: change notification failed", alert_pk, exc_info=True)

    def on_keys_changed(self, reload: Callable[[], object]) -> None:
        """Call ``reload`` when a replica rotated a key, and on every (re)connect."""
        self._keys_changed = reload

    def keys_changed(self) -> None:
        """Tell every replica to read the keys again (this one has them already)."""
        if self._engine is None:
            return
        try:
            self._notify(KEYS_CHANNEL, "plan", None)
        except Exception:  # the others read the keys on their next (re)connect
            log.warning("key change notification failed", exc_info=True)

    def _notify(self, channel: str, payload: str, session: Session | None) -> None:
        assert self._engine is not None
        if session is not None:
            session.execute(_NOTIFY, {"channel": channel, "payload": payload})
            return
        with self._engine.connect() as connection:
            connection.execute(_NOTIFY, {"channel": channel, "payload": payload})
            connection.commit()

    def version(self, alert_pk: int) -> int:
        with self._lock:
            return self._versions.get(alert_pk, 0)

    def _bump_here(self, alert_pk: int) -> None:
        with self._lock:
            self._versions[alert_pk] = self._versions.get(alert_pk, 0) + 1

    # ------------------------------------------------------------ listening

    def start(self) -> None:
        if self._engine is None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._listen, name="alert-feed", daemon=True)
        self._thread.start()
        self._listening.wait(5.0)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _listen(self) -> None:
        assert self._engine is not None
        url = self._engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not self._stopping.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    connection.execute(f"LISTEN {KEYS_CHANNEL}")
                    self._listening.set()
                    self._reload_keys()
                    while not self._stopping.is_set():
                        for note in connection.notifies(timeout=0.5):
                            self.received += 1
                            if note.channel == KEYS_CHANNEL:
                                self._reload_keys()
                            elif note.payload.isdigit():
                                self._bump_here(int(note.payload))
            except Exception:
                log.warning("alert change feed: listening failed; retrying", exc_info=True)
                self._stopping.wait(RECONNECT_S)

    def _reload_keys(self) -> None:
        try:
            self._keys_changed()
        except Exception:  # a half-written key file: the next notice or reconnect retries
            log.exception("reading the keys again failed")
