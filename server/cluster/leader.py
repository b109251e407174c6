"""One leader among the server replicas, by a PostgreSQL advisory lock.

The periodic jobs that must run once in the fleet — the planner's roll and pre-render,
alarm evaluation of the whole fleet, health aggregation and retention, alert settling
and clock sync — run only on the replica that holds the session advisory lock
``LEADER_LOCK_KEY``. Every replica tries to take it once per ``check_s`` on a connection
of its own and keeps that connection open while it leads. When the leader dies,
PostgreSQL sees its connection close and frees the lock; the next try of another
replica takes it, so the jobs move within about ``check_s`` (the operating system's
TCP keepalive bounds the case of a leader cut off without a closed socket). A leader
whose lock connection fails steps down at once: it can no longer prove it leads.

On SQLite (one process by design) this replica always leads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

LEADER_LOCK_KEY = 0x4C4F4158_00000002
"""The leader's advisory-lock key ("LOAX" + 2)."""
STARTUP_LOCK_KEY = 0x4C4F4158_00000003
"""Held while a replica seeds areas, the first admin, the keys and the alert library, so
replicas starting together never both generate keys or insert the same rows."""
PUBLISH_LOCK_KEY = 0x4C4F4158_00000004
"""Held from drawing a plan's sequence to publishing it (see ``PlanPublisher``)."""
SCHEMA_LOCK_KEY = 0x4C4F4158_00000005
"""Held while a replica checks or migrates the schema (``server.db.create_tables``)."""


def shared(engine: Engine) -> bool:
    """Whether several replicas may share this database (anything but SQLite)."""
    return engine.dialect.name != "sqlite"


@contextlib.contextmanager
def held(engine: Engine, key: int) -> Iterator[None]:
    """Hold a session advisory lock across commits, waiting for it; no-op on SQLite."""
    if not shared(engine):
        yield
        return
    with engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


class Leadership:
    """Takes and keeps the leader lock; calls ``on_gain`` / ``on_lose`` on each change."""

    def __init__(
        self,
        engine: Engine,
        on_gain: Callable[[], None],
        on_lose: Callable[[], None],
        check_s: float = 1.0,
    ) -> None:
        self._engine = engine
        # The lock's connection is its own, outside the application's pool: it is held
        # for as long as this replica leads, and its checks are no request's statements.
        self._lock_engine = (
            create_engine(engine.url, poolclass=NullPool) if shared(engine) else None
        )
        self._on_gain = on_gain
        self._on_lose = on_lose
        self._check_s = check_s
        self._leading = False
        self._connection: Connection | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.terms = 0
        """how many times this replica became the leader"""

    @property
    def leading(self) -> bool:
        return self._leading

    def start(self) -> None:
        if not shared(self._engine):
            self._gain()
            return
        self._stopping.clear()
        self._try()  # lead from the first instant if nobody else does
        self._thread = threading.Thread(target=self._run, name="leader-lock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the jobs, then give the lock back so another replica takes over now."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._leading:
            self._lose()
        self._drop_connection()
        if self._lock_engine is not None:
            self._lock_engine.dispose()

    def _run(self) -> None:
        while not self._stopping.wait(self._check_s):
            self._try()

    def _try(self) -> None:
        try:
            if self._connection is None:
                assert self._lock_engine is not None
                connection = self._lock_engine.connect()
                self._connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            if self._leading:
                self._connection.execute(text("SELECT 1")).scalar_one()
                return
            taken = self._connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}
            ).scalar_one()
        except Exception:
            log.warning("leader lock: database connection failed", exc_info=True)
            self._drop_connection()
            if self._leading:
                log.warning("stepping down as leader: the lock cannot be confirmed")
                self._lose()
            return
        if taken:
            self._gain()

    def _gain(self) -> None:
        self._leading = True
        self.terms += 1
        log.info("this replica leads: periodic jobs run here")
        try:
            self._on_gain()
        except Exception:
            log.exception("starting the leader's jobs failed")

    def _lose(self) -> None:
        self._leading = False
        try:
            self._on_lose()
        except Exception:
            log.exception("stopping the leader's jobs failed")

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()  # never back to the pool still holding the lock
                connection.close()
