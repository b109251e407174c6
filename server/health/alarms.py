"""Alarms in the database: facts for the rules, open / resolve / acknowledge, and queries.

Theory of operation: :func:`apply_findings` is the only code that opens or resolves an
alarm. It compares the rules' findings with the station's active alarms (open or
acknowledged): a finding without an active alarm of its kind opens one, an active alarm
whose kind was evaluated but did not fire is resolved, and anything else is at most a
refreshed ``detail`` — so a persisting condition never opens a duplicate. Every state
change writes an :class:`AlarmEvent`. All rule evaluation runs on the health writer's
one thread (see ``server.health.ingest``), which is what makes "never two active alarms of
one kind" hold without a lock; acknowledging, the one change made elsewhere, is a
conditional update that cannot resurrect a resolved alarm.

Functions take a session and leave committing to the caller, so the technician pages can
call the queries with their own session.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from server.health.models import (
    ACTIVE_STATES,
    Alarm,
    AlarmEvent,
    StationLiveness,
)
from server.health.rules import (
    ALL_KINDS,
    AlarmKind,
    AlarmSeverity,
    AlarmState,
    FaultReport,
    Finding,
    ItemOutcome,
    StationFacts,
    Thresholds,
    evaluate,
)
from server.health.status import LIVE, Observation, degrading, next_status
from server.models import (
    AudioAsset,
    Broadcast,
    BroadcastTarget,
    Station,
    StationStatus,
)
from server.planning.compiler import item_id_for
from server.settings import Settings

MAX_DETAIL = 500
ALARM_PAGE_MAX = 1000


class AlarmError(Exception):
    """An alarm cannot change as asked (it does not exist, or is past that state)."""


@dataclass(frozen=True)
class AlarmChange:
    """An alarm that opened or resolved: what the notifiers send."""

    alarm_id: int
    station_id: str
    kind: str
    severity: str
    state: str
    detail: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        offline=timedelta(minutes=settings.alarm_offline_min),
        disk_free_pct=settings.alarm_disk_free_pct,
        cpu_temp_c=settings.alarm_cpu_temp_c,
        clock_offset_ms=settings.alarm_clock_offset_ms,
        amp_min_current_ma=settings.alarm_amp_min_current_ma,
    )


# ------------------------------------------------------------------ facts


def facts_for(
    station: Station, liveness: StationLiveness | None, items: Sequence[ItemOutcome] = ()
) -> StationFacts:
    """What the rules may know about one station, from rows already loaded."""
    fault = None
    if liveness is not None and liveness.fault_kind and liveness.fault_at is not None:
        fault = FaultReport(liveness.fault_kind, liveness.fault_at, liveness.fault_detail or "")
    seen = liveness.last_seen_at if liveness is not None else None
    return StationFacts(
        station_id=station.id,
        status=station.status.value,
        unreachable_since=seen or station.status_at,
        health=station.last_health or {},
        health_at=station.last_health_at,
        fault=fault,
        items=tuple(items),
    )


def item_outcomes(
    session: Session,
    station_ids: Collection[str],
    now: datetime,
    grace: timedelta,
    lookback: timedelta,
) -> dict[str, list[ItemOutcome]]:
    """Planned items that started within ``lookback``, with the instant each must be done."""
    query = (
        select(BroadcastTarget, Broadcast.start_at, AudioAsset.duration_ms)
        .join(Broadcast, col(Broadcast.id) == BroadcastTarget.broadcast_id)
        .join(AudioAsset, col(AudioAsset.id) == Broadcast.audio_id)
        .where(col(Broadcast.start_at) >= now - lookback, col(Broadcast.start_at) <= now)
        .where(col(BroadcastTarget.station_id).in_(station_ids))
    )
    found: dict[str, list[ItemOutcome]] = defaultdict(list)
    for target, start_at, duration_ms in session.exec(query).all():
        deadline = start_at + timedelta(milliseconds=duration_ms) + grace
        found[target.station_id].append(
            ItemOutcome(item_id_for(target.broadcast_id), target.state.value, deadline)
        )
    return found


def active_alarms(session: Session, station_ids: Collection[str] | None) -> dict[str, list[Alarm]]:
    """Open and acknowledged alarms, by station (every station when ``station_ids`` is None)."""
    query = select(Alarm).where(col(Alarm.state).in_(ACTIVE_STATES))
    if station_ids is not None:
        query = query.where(col(Alarm.station_id).in_(station_ids))
    found: dict[str, list[Alarm]] = defaultdict(list)
    for alarm in session.exec(query).all():
        found[alarm.station_id].append(alarm)
    return found


def is_degraded(alarms: Iterable[Alarm]) -> bool:
    return degrading((a.kind, a.severity) for a in alarms)


def set_status(station: Station, status: StationStatus, now: datetime) -> None:
    """Change the status; ``status_at`` is when it last *changed*, on the server's clock."""
    if station.status is not status:
        station.status = status
        station.status_at = now


# ------------------------------------------------------------- open / resolve


def apply_findings(
    session: Session,
    station: Station,
    findings: dict[AlarmKind, Finding],
    kinds: Collection[AlarmKind],
    active: list[Alarm],
    now: datetime,
) -> list[AlarmChange]:
    """Open, refresh and resolve the station's alarms of ``kinds``; keep its status in step.

    ``active`` (the station's active alarms) is updated in place.
    """
    changes: list[AlarmChange] = []
    by_kind = {alarm.kind: alarm for alarm in active}
    for kind, finding in findings.items():
        alarm = by_kind.get(kind)
        detail = finding.detail[:MAX_DETAIL]
        if alarm is None:
            alarm = Alarm(
                station_id=station.id,
                kind=kind.value,
                severity=finding.severity.value,
                detail=detail,
                opened_at=now,
            )
            session.add(alarm)
            session.flush()  # the id, for the history row and the notification
            assert alarm.id is not None
            session.add(AlarmEvent(alarm_id=alarm.id, state=AlarmState.OPEN.value, at=now))
            active.append(alarm)
            changes.append(_change(alarm, now))
        elif (alarm.detail, alarm.severity) != (detail, finding.severity.value):
            alarm.detail, alarm.severity = detail, finding.severity.value
            session.add(alarm)
    for alarm in list(active):
        if alarm.kind in kinds and alarm.kind not in findings:
            alarm.state = AlarmState.RESOLVED.value
            alarm.resolved_at = now
            session.add(alarm)
            assert alarm.id is not None
            session.add(AlarmEvent(alarm_id=alarm.id, state=AlarmState.RESOLVED.value, at=now))
            active.remove(alarm)
            changes.append(_change(alarm, now))
    if changes:
        set_status(
            station,
            next_status(station.status, Observation.ALARMS_CHANGED, is_degraded(active)),
            now,
        )
        session.add(station)
    return changes


def _change(alarm: Alarm, now: datetime) -> AlarmChange:
    assert alarm.id is not None
    return AlarmChange(
        alarm.id, alarm.station_id, alarm.kind, alarm.severity, alarm.state, alarm.detail, now
    )


def mark_silent_offline(session: Session, now: datetime, offline_after: timedelta) -> int:
    """Turn running stations that have been silent too long offline; how many turned.

    One conditional UPDATE, so a heartbeat committed meanwhile by the writer is never
    overwritten by a decision taken on an older read.
    """
    silent = select(StationLiveness.station_id).where(
        col(StationLiveness.last_seen_at) < now - offline_after
    )
    result = session.execute(
        update(Station)
        .where(col(Station.id).in_(silent), col(Station.status).in_(list(LIVE)))
        .values(status=StationStatus.OFFLINE, status_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def evaluate_fleet(session: Session, now: datetime, settings: Settings) -> list[AlarmChange]:
    """Mark silent stations offline, then run every rule for every station."""
    mark_silent_offline(session, now, timedelta(minutes=settings.offline_after_min))
    session.expire_all()
    stations = list(session.exec(select(Station)).all())
    ids = [s.id for s in stations]
    liveness = {row.station_id: row for row in session.exec(select(StationLiveness)).all()}
    items = item_outcomes(
        session,
        ids,
        now,
        timedelta(minutes=settings.alarm_item_grace_min),
        timedelta(hours=settings.alarm_item_lookback_h),
    )
    active = active_alarms(session, None)
    limits = thresholds(settings)
    changes: list[AlarmChange] = []
    for station in stations:
        facts = facts_for(station, liveness.get(station.id), items.get(station.id, ()))
        findings = evaluate(facts, now, limits)
        changes += apply_findings(session, station, findings, ALL_KINDS, active[station.id], now)
    return changes


# ------------------------------------------------------------- acknowledge


def acknowledge(session: Session, alarm: Alarm, by: str, note: str | None, now: datetime) -> Alarm:
    """Mark an open alarm as being handled; raises :class:`AlarmError` otherwise.

    Conditional on the state still being ``open`` in the database: the health writer may
    have resolved it a moment ago, and a resolved alarm stays resolved.
    """
    assert alarm.id is not None
    result = session.execute(
        update(Alarm)
        .where(col(Alarm.id) == alarm.id, col(Alarm.state) == AlarmState.OPEN.value)
        .values(state=AlarmState.ACKNOWLEDGED.value, acknowledged_at=now, acknowledged_by=by)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        session.refresh(alarm)
        raise AlarmError(f"alarm {alarm.id} is {alarm.state}; only an open alarm is acknowledged")
    session.add(
        AlarmEvent(alarm_id=alarm.id, state=AlarmState.ACKNOWLEDGED.value, at=now, by=by, note=note)
    )
    session.flush()
    session.refresh(alarm)
    return alarm


# ------------------------------------------------------------------ queries


def list_alarms(
    session: Session,
    areas: Collection[str],
    *,
    state: AlarmState | None = None,
    station_id: str | None = None,
    limit: int = 200,
) -> list[Alarm]:
    """Alarms of stations in ``areas``, newest first; ``state`` None means every state."""
    query = (
        select(Alarm)
        .join(Station, col(Station.id) == Alarm.station_id)
        .where(col(Station.area_code).in_(areas))
    )
    if state is not None:
        query = query.where(Alarm.state == state.value)
    if station_id is not None:
        query = query.where(Alarm.station_id == station_id)
    query = query.order_by(col(Alarm.opened_at).desc(), col(Alarm.id).desc())
    return list(session.exec(query.limit(max(1, min(limit, ALARM_PAGE_MAX)))).all())


def alarm_history(session: Session, alarm_id: int) -> list[AlarmEvent]:
    query = select(AlarmEvent).where(AlarmEvent.alarm_id == alarm_id)
    return list(session.exec(query.order_by(col(AlarmEvent.at), col(AlarmEvent.id))).all())


def status_counts(session: Session, areas: Collection[str]) -> dict[str, int]:
    """Stations by status, every status present (zero when none)."""
    query = (
        select(Station.status, func.count())
        .where(col(Station.area_code).in_(areas))
        .group_by(Station.status)
    )
    counts = {status.value: 0 for status in StationStatus}
    for status, count in session.exec(query).all():
        counts[StationStatus(status).value] = count
    return counts


def active_alarm_counts(session: Session, areas: Collection[str]) -> dict[str, int]:
    """Active alarms by severity, every severity present (zero when none)."""
    query = (
        select(Alarm.severity, func.count())
        .join(Station, col(Station.id) == Alarm.station_id)
        .where(col(Station.area_code).in_(areas), col(Alarm.state).in_(ACTIVE_STATES))
        .group_by(Alarm.severity)
    )
    counts = {severity.value: 0 for severity in AlarmSeverity}
    for severity, count in session.exec(query).all():
        counts[severity] = count
    return counts
