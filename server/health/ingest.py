"""The health writer: heartbeats in, samples, station status and hardware alarms out.

Theory of operation: :meth:`HealthIngest.submit` is called on the fleet link's worker
thread for every heartbeat; it only rate-limits and enqueues, so neither paho's thread
nor the event ingest ever waits on the database; beyond ``health_queue_max`` queued, the
oldest reports are shed and counted. One writer thread drains the queue in
batches — up to ``health_batch_max`` reports, or whatever arrived within
``health_batch_interval_ms`` of the first — and writes each batch in ONE transaction:
the samples (a single multi-row INSERT), the stations' latest health, their liveness,
their status and their hardware alarms. If a batch fails, each report is retried on its
own so one bad row cannot drop its neighbours.

The same thread runs every alarm evaluation (jobs queued by the scheduler and by fault
events), so rule evaluation is single-threaded by construction: see
``server.health.alarms``. Per-station rate limiting happens before the queue: a looping
node's excess is dropped and counted while its neighbours' reports go through.

Status and fault events arrive with the event ingest (``server.fleet.ingest``) and are
applied in its transaction by :func:`apply_link_status` and :func:`note_fault`; the
clock-sync code records offsets with :func:`record_clock_offset`.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session

from loaxa_protocol import Event, Status, StatusState
from server.db import session_scope, utcnow
from server.fleet.backlog import Backlog
from server.health.alarms import (
    AlarmChange,
    active_alarms,
    apply_findings,
    evaluate_fleet,
    facts_for,
    is_degraded,
    set_status,
    thresholds,
)
from server.health.models import HealthSample, StationLiveness
from server.health.rules import HARDWARE_KINDS, evaluate
from server.health.status import Observation, next_status
from server.health.validate import CHECKS, METRICS, Checked, Rejected, check_health
from server.models import Station, StationStatus
from server.settings import Settings

log = logging.getLogger(__name__)

RATE_WINDOW_S = 10.0
"""``health_rate_limit`` counts reports per this many seconds."""

Job = Callable[[], None]
OnChanges = Callable[[list[AlarmChange]], None]
_STOP = object()

LINK_OBSERVATION = {
    StatusState.ONLINE: Observation.LINK_ONLINE,
    StatusState.OFFLINE: Observation.LINK_OFFLINE,
    StatusState.STOPPED: Observation.LINK_STOPPED,
}


@dataclass
class HealthStats:
    """Counters for ``/api/v1/system`` and ``loaxa bench health``.

    ``received`` = ``stored`` + every ``dropped_*`` + ``rejected`` + ``unknown_station``
    + ``failed`` + reports still queued. Each counter has one writing thread.
    """

    received: int = 0
    stored: int = 0
    flagged: int = 0
    dropped_rate_limited: int = 0
    dropped_backlog: int = 0
    rejected: int = 0
    unknown_station: int = 0
    retried: int = 0
    failed: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RateLimiter:
    """At most ``limit`` events per ``window_s`` per key, over a sliding window."""

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window_s
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = deque(maxlen=self._limit)
        while seen and now - seen[0] >= self._window:
            seen.popleft()
        if len(seen) >= self._limit:
            return False
        seen.append(now)
        return True


@dataclass(frozen=True)
class Report:
    station_id: str
    payload: bytes
    received_at: datetime


class HealthIngest:
    """Queue and single writer thread for heartbeats and alarm evaluation."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        on_changes: OnChanges | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._on_changes = on_changes
        self._monotonic = monotonic
        self._limits = thresholds(settings)
        self._limiter = RateLimiter(settings.health_rate_limit, RATE_WINDOW_S, monotonic)
        self._warned: dict[str, float] = {}
        self._queue: Backlog[Any] = Backlog(
            settings.health_queue_max,
            lambda item: "health" if isinstance(item, Report) else None,  # jobs are kept
            {"health"},
            what="health writer queue",
        )
        self._thread: threading.Thread | None = None
        self._holding = 0
        """reports taken off the queue and not yet written (one batch, big ones take seconds)"""
        self.stats = HealthStats()

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("HealthIngest already started")
        self._thread = threading.Thread(target=self._run, name="health-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then end the writer."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        self._thread = None

    def backlog(self) -> int:
        """Reports and jobs queued, plus the reports of the batch being gathered or written."""
        return self._queue.qsize() + self._holding

    def queue_stats(self) -> dict[str, Any]:
        """The queue's counters for ``/api/v1/system``."""
        return {
            **self._queue.as_dict(),
            "retried": self.stats.retried,
            "failed": self.stats.failed,
        }

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued before this call is written; False on timeout."""
        done = threading.Event()
        self._queue.put(done.set)
        return done.wait(timeout_s)

    # ------------------------------------------------------------- inputs

    def submit(self, station_id: str, payload: bytes) -> None:
        """Accept one heartbeat from the station named by its topic; never blocks."""
        self.stats.received += 1
        if not self._limiter.allow(station_id):
            self.stats.dropped_rate_limited += 1
            self._warn_flood(station_id)
            return
        self._queue.put(Report(station_id, payload, self._clock()))
        self.stats.dropped_backlog = self._queue.dropped.get("health", 0)

    def evaluate_soon(self, station_ids: Collection[str]) -> None:
        """Re-run the hardware rules for these stations (after a fault event)."""
        ids = frozenset(station_ids)
        self._queue.put(lambda: self._evaluate_hardware(ids))

    def check_fleet_soon(self) -> None:
        """Queue the offline check and every rule for every station (the periodic job)."""
        self._queue.put(self._check_fleet)

    def _warn_flood(self, station_id: str) -> None:
        now = self._monotonic()
        if now - self._warned.get(station_id, -math.inf) >= RATE_WINDOW_S:
            self._warned[station_id] = now
            log.warning(
                "station %s sends more than %s health reports per %s s; dropping the excess",
                station_id,
                self._settings.health_rate_limit,
                RATE_WINDOW_S,
            )

    # ------------------------------------------------------------- the writer

    def _run(self) -> None:
        pending: list[Report] = []
        deadline = 0.0
        interval = self._settings.health_batch_interval_ms / 1000
        while True:
            timeout = max(0.0, deadline - self._monotonic()) if pending else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._flush(pending)
                continue
            if isinstance(item, Report):
                if not pending:
                    deadline = self._monotonic() + interval
                pending.append(item)
                self._holding = len(pending)
                full = len(pending) >= self._settings.health_batch_max
                if full or self._monotonic() >= deadline:
                    self._flush(pending)
                continue
            self._flush(pending)
            if item is _STOP:
                return
            self._run_job(item)

    def _run_job(self, job: Job) -> None:
        try:
            job()
        except Exception:  # the writer must outlive any job
            log.exception("health job %s failed", getattr(job, "__name__", job))

    def _flush(self, pending: list[Report]) -> None:
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        try:
            try:
                changes = self._write(batch)
            except OperationalError:  # a lock timeout or deadlock: the batch itself is fine
                log.warning("batch of %s health reports hit a lock; retrying it", len(batch))
                changes = self._write(batch)
        except Exception:  # any exception: one bad report must not take the batch down
            log.exception("batch of %s health reports failed; retrying one by one", len(batch))
            self.stats.retried += len(batch)
            changes = []
            for one in batch:
                try:
                    changes += self._write([one])
                except Exception:
                    self.stats.failed += 1
                    log.exception("could not store a health report from %s", one.station_id)
        self._holding = 0
        self._notify(changes)

    def _write(self, batch: Sequence[Report]) -> list[AlarmChange]:
        checked: list[tuple[Report, Checked]] = []
        for report in batch:
            try:
                checked.append(
                    (report, check_health(report.station_id, report.payload, report.received_at))
                )
            except Rejected as exc:
                self.stats.rejected += 1
                log.warning("health report from %s refused: %s", report.station_id, exc)
        if not checked:
            return []
        now = self._clock()
        ids = {report.station_id for report, _ in checked}
        with session_scope(self._engine) as session:
            connection = session.connection()
            stations = load_heads(connection, ids)
            liveness = load_liveness(connection, ids)
            rows: list[tuple[Any, ...]] = []
            latest: dict[str, datetime] = {}
            newest: dict[str, tuple[Report, Checked]] = {}
            unknown = flagged = 0
            for report, result in checked:
                sid = report.station_id
                if sid not in stations:
                    unknown += 1
                    continue
                rows.append(sample_row(report, result))
                flagged += bool(result.problems)
                if sid not in latest or report.received_at > latest[sid]:
                    latest[sid] = report.received_at
                best = newest.get(sid)
                if best is None or _station_time(report, result) > _station_time(*best):
                    newest[sid] = (report, result)
            # Only each station's newest report can become its latest health: one
            # remember_latest per station, not per report (ten of them a batch at 10/s).
            for sid, (report, result) in newest.items():
                live = liveness.get(sid)
                if live is None:
                    live = liveness[sid] = LiveHead(sid, None, None, None, None, fresh=True)
                remember_latest(stations[sid], live, report, result)  # type: ignore[arg-type]
                if live.last_seen_at is None or latest[sid] > live.last_seen_at:
                    live.last_seen_at = latest[sid]
            if rows:
                insert_samples(connection, rows)
            load_unchanged_health(connection, [stations[i] for i in latest])
            changes = self._after_heartbeats(session, stations, liveness, latest, now)
            write_heads(connection, [stations[i] for i in latest])
            write_liveness(connection, [liveness[i] for i in latest])
        self.stats.unknown_station += unknown
        self.stats.stored += len(rows)
        self.stats.flagged += flagged
        self.stats.batches += 1
        if unknown:
            log.warning("%s health reports from unregistered stations ignored", unknown)
        return changes

    def _after_heartbeats(
        self,
        session: Session,
        stations: dict[str, StationHead],
        liveness: dict[str, LiveHead],
        latest: dict[str, datetime],
        now: datetime,
    ) -> list[AlarmChange]:
        """Hardware alarms and status of the stations that just reported.

        Works on :class:`StationHead` copies; a station whose alarms may change gets a
        detached ``Station`` for :func:`apply_findings` (which may add it to the session),
        and its status is copied back so the batch UPDATE writes the same final values.
        """
        active = active_alarms(session, latest.keys())
        changes: list[AlarmChange] = []
        for station_id, received_at in latest.items():
            head, live = stations[station_id], liveness[station_id]
            facts = facts_for(head, live)  # type: ignore[arg-type]
            findings = evaluate(facts, now, self._limits, HARDWARE_KINDS)
            station: Station | StationHead = head
            if findings or active[station_id]:
                station = head.as_station()
                changes += apply_findings(
                    session, station, findings, HARDWARE_KINDS, active[station_id], now
                )
            # A last will heard after this report was received outranks it.
            revoked = station.status in {StationStatus.OFFLINE, StationStatus.STOPPED} and (
                station.status_at is not None and station.status_at > received_at
            )
            if not revoked:
                degraded = is_degraded(active[station_id])
                set_status(
                    station,  # type: ignore[arg-type]
                    next_status(station.status, Observation.HEARTBEAT, degraded),
                    now,
                )
            head.status, head.status_at = station.status, station.status_at
        return changes

    def _evaluate_hardware(self, station_ids: frozenset[str]) -> None:
        now = self._clock()
        with session_scope(self._engine) as session:
            active = active_alarms(session, station_ids)
            changes: list[AlarmChange] = []
            for station_id in station_ids:
                station = session.get(Station, station_id)
                if station is None:
                    continue
                live = session.get(StationLiveness, station_id)
                findings = evaluate(facts_for(station, live), now, self._limits, HARDWARE_KINDS)
                changes += apply_findings(
                    session, station, findings, HARDWARE_KINDS, active[station_id], now
                )
        self._notify(changes)

    def _check_fleet(self) -> None:
        with session_scope(self._engine) as session:
            changes = evaluate_fleet(session, self._clock(), self._settings)
        self._notify(changes)

    def _notify(self, changes: list[AlarmChange]) -> None:
        for change in changes:
            log.info(
                "alarm %s %s at %s: %s", change.kind, change.state, change.station_id, change.detail
            )
        if changes and self._on_changes is not None:
            self._on_changes(changes)


# ------------------------------------------------------------- row building


def _station_time(report: Report, result: Checked) -> datetime:
    """The order :func:`remember_latest` keeps: the station's clock when plausible."""
    return result.node_at or report.received_at


_SAMPLES = HealthSample.__table__  # type: ignore[attr-defined]
SAMPLE_COLUMNS = ("station_id", "at", "node_at", "flags", *METRICS)


def insert_samples(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Append :func:`sample_row` rows: COPY on PostgreSQL, one driver executemany elsewhere.

    At 10,000 reports a second SQLAlchemy's per-row parameter processing cost more than
    the database's work, so values are converted here as the column types would
    (the two timestamps through their own processors; ``flags`` as the JSON type writes
    it, None being JSON ``null``) and handed to the driver in one call.
    """
    dialect = connection.dialect
    names = ", ".join(SAMPLE_COLUMNS)
    if dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {_SAMPLES.name} ({names}) FROM STDIN") as copy:
            for sid, at, node_at, flags, *metrics in rows:
                copy.write_row((sid, at, node_at, json.dumps(flags), *metrics))
        return
    stamp = _SAMPLES.c.at.type._cached_bind_processor(dialect)
    dumps = json.dumps
    values = [
        (
            sid,
            stamp(at),
            None if node_at is None else stamp(node_at),
            "null" if flags is None else dumps(flags),
            *metrics,
        )
        for sid, at, node_at, flags, *metrics in rows
    ]
    marks = ", ".join("?" for _ in SAMPLE_COLUMNS)
    connection.exec_driver_sql(f"INSERT INTO {_SAMPLES.name} ({names}) VALUES ({marks})", values)


def sample_row(report: Report, result: Checked) -> tuple[Any, ...]:
    """One ``HealthSample`` row, values in :data:`SAMPLE_COLUMNS` order (COPY, executemany)."""
    values = result.values
    return (
        report.station_id,
        report.received_at,
        result.node_at,
        result.problems or None,
        *[values.get(metric) for metric in METRICS],
    )


def remember_latest(
    station: Station, live: StationLiveness, report: Report, result: Checked
) -> None:
    """Keep the newest report on the station row; every report proves the station alive.

    Order by the station's clock when it is plausible (MQTT may redeliver an older report
    after a reconnect); the clock offset measured by the server survives a heartbeat.
    """
    if live.last_seen_at is None or report.received_at > live.last_seen_at:
        live.last_seen_at = report.received_at
    at = result.node_at or report.received_at
    if station.last_health_at is not None and at <= station.last_health_at:
        return
    health: dict[str, Any] = {name: result.values.get(name) for name in CHECKS}
    health["disk_free_pct"] = result.values.get("disk_free_pct")
    previous = station.last_health or {}
    if health["clock_offset_ms"] is None and previous.get("clock_offset_ms") is not None:
        health["clock_offset_ms"] = previous["clock_offset_ms"]
        health["clock_offset_at"] = previous.get("clock_offset_at")
    health["station_id"] = station.id
    health["at"] = at.isoformat()
    health["received_at"] = report.received_at.isoformat()
    health["flags"] = result.problems
    station.last_health = health
    station.last_health_at = at


# ------------------------------------------------- the writer's narrow rows

_STATION = Station.__table__  # type: ignore[attr-defined]
_LIVENESS = StationLiveness.__table__  # type: ignore[attr-defined]


@dataclass(slots=True)
class StationHead:
    """What the writer reads and writes of a ``Station``, without its whole JSON.

    ``last_health`` starts as just the two clock-offset keys a heartbeat carries over
    (all :func:`remember_latest` reads of the previous health); it becomes the full new
    health when a report advances ``last_health_at``, or is loaded whole by
    :func:`load_unchanged_health` when none did. ``read_*`` are the values as read, so
    only what changed is written.
    """

    id: str
    status: StationStatus
    status_at: datetime | None
    last_health_at: datetime | None
    last_health: dict[str, Any] | None
    read_status: StationStatus
    read_health_at: datetime | None

    @property
    def health_changed(self) -> bool:
        return self.last_health_at != self.read_health_at

    @property
    def status_changed(self) -> bool:
        return self.status is not self.read_status

    def as_station(self) -> Station:
        """A detached ``Station`` with these values, for code that takes the ORM row.

        Added to a session it becomes persistent without a load; only attributes
        changed afterwards are written.
        """
        # Only the columns the writer touches; the rest stay unloaded and unwritten.
        station = Station(  # type: ignore[call-arg]
            id=self.id,
            status=self.status,
            status_at=self.status_at,
            last_health=self.last_health,
            last_health_at=self.last_health_at,
        )
        make_transient_to_detached(station)
        return station


@dataclass(slots=True)
class LiveHead:
    """A ``StationLiveness`` row as the writer needs it (``fresh``: not in the table yet)."""

    station_id: str
    last_seen_at: datetime | None
    fault_kind: str | None
    fault_at: datetime | None
    fault_detail: str | None
    fresh: bool = False
    read_seen_at: datetime | None = None


def load_heads(connection: Connection, ids: Collection[str]) -> dict[str, StationHead]:
    """The batch's stations, reading only the clock-offset keys of ``last_health``."""
    health = _STATION.c.last_health
    query = select(
        _STATION.c.id,
        _STATION.c.status,
        _STATION.c.status_at,
        _STATION.c.last_health_at,
        health["clock_offset_ms"],
        health["clock_offset_at"],
    ).where(_STATION.c.id.in_(ids))
    heads: dict[str, StationHead] = {}
    # Several ingest workers write the same stations' rows at once: each batch locks its
    # rows here, all of them, in id order, so two batches wait for each other instead of
    # deadlocking (PostgreSQL found one when the locks came with the UPDATEs, in arrival
    # order). SQLite ignores it: its writers already take turns on the whole file.
    query = query.order_by(_STATION.c.id).with_for_update(key_share=True)
    for sid, status, status_at, health_at, offset_ms, offset_at in connection.execute(query):
        previous = {"clock_offset_ms": offset_ms, "clock_offset_at": offset_at}
        heads[sid] = StationHead(sid, status, status_at, health_at, previous, status, health_at)
    return heads


def load_liveness(connection: Connection, ids: Collection[str]) -> dict[str, LiveHead]:
    c = _LIVENESS.c
    query = (
        select(c.station_id, c.last_seen_at, c.fault_kind, c.fault_at, c.fault_detail)
        .where(c.station_id.in_(ids))
        .order_by(c.station_id)
        .with_for_update(key_share=True)  # as load_heads, after it
    )
    return {row[0]: LiveHead(*row, read_seen_at=row[1]) for row in connection.execute(query)}


def load_unchanged_health(connection: Connection, heads: Sequence[StationHead]) -> None:
    """The whole stored ``last_health`` of stations no report in the batch advanced."""
    stale = {head.id: head for head in heads if not head.health_changed}
    if not stale:
        return
    query = select(_STATION.c.id, _STATION.c.last_health).where(_STATION.c.id.in_(stale))
    for sid, health in connection.execute(query):
        stale[sid].last_health = health


def write_heads(connection: Connection, heads: Sequence[StationHead]) -> None:
    """One executemany UPDATE per set of changed columns (health and/or status)."""
    groups: dict[tuple[bool, bool], list[dict[str, Any]]] = {}
    for head in heads:
        key = (head.health_changed, head.status_changed)
        if not any(key):
            continue
        params: dict[str, Any] = {"b_id": head.id}
        if key[0]:
            params["b_health"] = head.last_health
            params["b_health_at"] = head.last_health_at
        if key[1]:
            params["b_status"] = head.status
            params["b_status_at"] = head.status_at
        groups.setdefault(key, []).append(params)
    c = _STATION.c
    for (health, status), params_list in groups.items():
        values: dict[str, Any] = {}
        if health:
            values["last_health"] = bindparam("b_health", type_=c.last_health.type)
            values["last_health_at"] = bindparam("b_health_at", type_=c.last_health_at.type)
        if status:
            values["status"] = bindparam("b_status", type_=c.status.type)
            values["status_at"] = bindparam("b_status_at", type_=c.status_at.type)
        statement = update(_STATION).where(c.id == bindparam("b_id")).values(**values)
        connection.execute(statement, params_list)


def write_liveness(connection: Connection, rows: Sequence[LiveHead]) -> None:
    """New liveness rows in one INSERT; changed ``last_seen_at`` in one UPDATE."""
    c = _LIVENESS.c
    fresh = [
        {"station_id": row.station_id, "last_seen_at": row.last_seen_at}
        for row in rows
        if row.fresh
    ]
    seen = [
        {"b_id": row.station_id, "b_seen": row.last_seen_at}
        for row in rows
        if not row.fresh and row.last_seen_at != row.read_seen_at
    ]
    if fresh:
        # The event ingest may have created the row since we read it (a station's first
        # status and first heartbeat arrive together): insert-or-update, never fail.
        statement = _upsert(connection, _LIVENESS)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[c.station_id],
                set_={"last_seen_at": statement.excluded.last_seen_at},
            ),
            fresh,
        )
    if seen:
        statement = (
            update(_LIVENESS)
            .where(c.station_id == bindparam("b_id"))
            .values(last_seen_at=bindparam("b_seen", type_=c.last_seen_at.type))
        )
        connection.execute(statement, seen)


# ------------------------------------------------------- from the event ingest


def _upsert(connection: Connection, table: Any) -> Any:
    """An INSERT that can resolve a primary-key conflict, on SQLite and PostgreSQL alike."""
    if connection.dialect.name == "postgresql":
        return postgresql_insert(table)
    return sqlite_insert(table)


def _liveness(session: Session, station_id: str) -> StationLiveness:
    """The station's liveness row, created race-free if the health writer has none yet."""
    live = session.get(StationLiveness, station_id)
    if live is None:
        connection = session.connection()
        connection.execute(
            _upsert(connection, _LIVENESS).on_conflict_do_nothing(), [{"station_id": station_id}]
        )
        live = session.get(StationLiveness, station_id)
        assert live is not None
    return live


def apply_link_status(session: Session, station: Station, message: Status, now: datetime) -> None:
    """Apply a station's availability message (its own, or the broker's last will).

    The last will carries no time: it is the broker's word that the link died just now.
    A timed status older than the last one applied is a stale retained copy.
    """
    live = _liveness(session, station.id)
    if message.at is not None:
        if live.link_at is not None and message.at < live.link_at:
            return
        live.link_at = message.at
    degraded = False
    if message.state is StatusState.ONLINE:
        live.last_seen_at = now
        degraded = is_degraded(active_alarms(session, [station.id])[station.id])
    observed = LINK_OBSERVATION[message.state]
    set_status(station, next_status(station.status, observed, degraded), now)
    session.add(live)
    session.add(station)


def note_fault(session: Session, event: Event) -> None:
    """Remember an amplifier or relay fault event for the alarm rules."""
    live = _liveness(session, event.station_id)
    if live.fault_at is None or event.at >= live.fault_at:
        live.fault_kind = event.kind.value
        live.fault_at = event.at
        live.fault_detail = (event.detail or event.reason or "")[:500]
        session.add(live)


def record_clock_offset(session: Session, station_id: str, offset_ms: float, at: datetime) -> None:
    """Store a clock offset measured by the server's time sync at server time ``at``.

    Goes onto ``Station.last_health["clock_offset_ms"]`` (the rules read it there, and
    heartbeats keep it) and into a sample so the offset is charted like any probe. The
    ``clock_offset`` alarm follows at the next fleet check. Raises LookupError for an
    unknown station and ValueError for a non-finite offset (both are bugs in the caller).
    """
    if not math.isfinite(offset_ms):
        raise ValueError(f"clock offset {offset_ms!r} is not a number")
    station = session.get(Station, station_id)
    if station is None:
        raise LookupError(f"station {station_id!r} does not exist")
    health = dict(station.last_health or {})
    health["clock_offset_ms"] = offset_ms
    health["clock_offset_at"] = at.isoformat()
    station.last_health = health
    session.add(station)
    session.add(HealthSample(station_id=station_id, at=at, clock_offset_ms=offset_ms))
