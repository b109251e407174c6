"""Alarms: the technician's work list, with history, scoped to the caller's areas."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlmodel import Session

from server.api.deps import ClockDep, DbId, SessionDep
from server.areas import subtree_codes
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize, visible_areas
from server.auth.permissions import Action
from server.health.alarms import AlarmError, acknowledge, alarm_history, list_alarms
from server.health.models import (
    AcknowledgeBody,
    Alarm,
    AlarmDetail,
    AlarmEventPublic,
    AlarmPublic,
)
from server.health.rules import AlarmState
from server.models import Station

router = APIRouter(prefix="/alarms", tags=["alarms"])


def read_alarm_detail(session: Session, alarm: Alarm) -> AlarmDetail:
    """An alarm with its history, oldest change first."""
    assert alarm.id is not None
    history = [AlarmEventPublic.model_validate(e) for e in alarm_history(session, alarm.id)]
    return AlarmDetail(**AlarmPublic.model_validate(alarm).model_dump(), history=history)


def _alarm_in_scope(
    session: Session, actor: Actor, alarm_id: int, action: Action
) -> tuple[Alarm, Station]:
    alarm = session.get(Alarm, alarm_id)
    station = session.get(Station, alarm.station_id) if alarm is not None else None
    if alarm is None or station is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alarm {alarm_id} does not exist")
    authorize(
        actor, action, [station.area_code], session, object_type="alarm", object_id=str(alarm_id)
    )
    return alarm, station


@router.get("", response_model=list[AlarmPublic])
def read_alarms(
    session: SessionDep,
    actor: ActorDep,
    state: AlarmState | None = None,
    station_id: str | None = None,
    area: str | None = None,
    limit: int = 200,
) -> list[Alarm]:
    """Alarms in the caller's areas, newest first; ``area`` narrows to one subtree."""
    authorize(actor, Action.ALARM_READ, None, session)
    scope = visible_areas(actor, Action.ALARM_READ, session)
    if area is not None:
        scope &= subtree_codes(session, [area])
    return list_alarms(session, scope, state=state, station_id=station_id, limit=limit)


@router.get("/{alarm_id}", response_model=AlarmDetail)
def read_alarm(alarm_id: DbId, session: SessionDep, actor: ActorDep) -> AlarmDetail:
    alarm, _station = _alarm_in_scope(session, actor, alarm_id, Action.ALARM_READ)
    return read_alarm_detail(session, alarm)


@router.post("/{alarm_id}/acknowledge", response_model=AlarmDetail)
def acknowledge_alarm(
    alarm_id: DbId, body: AcknowledgeBody, session: SessionDep, actor: ActorDep, clock: ClockDep
) -> AlarmDetail:
    """Say that someone is on it: the alarm stays until its condition clears (409 unless open)."""
    alarm, station = _alarm_in_scope(session, actor, alarm_id, Action.ALARM_ACK)
    try:
        acknowledge(session, alarm, actor.name, body.note, clock())
    except AlarmError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    record_audit(
        session,
        actor,
        "alarm.acknowledge",
        "alarm",
        str(alarm_id),
        before={"state": AlarmState.OPEN.value},
        after={
            "state": AlarmState.ACKNOWLEDGED.value,
            "station_id": station.id,
            "kind": alarm.kind,
            "note": body.note,
        },
    )
    session.commit()
    return read_alarm_detail(session, alarm)
