"""Who may see, edit and approve a programme, answered as :class:`ProgrammeError`.

The one permission check is ``server.auth.deps.authorize`` (it audits a refused write);
here its refusal becomes a ``ProgrammeError`` with status 403, so the programme service
raises one family of errors and both the API and the pages decide how to answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from fastapi import HTTPException
from sqlmodel import Session, col, select

from server.areas import ancestry
from server.auth.actor import Actor
from server.auth.deps import authorize, visible_areas
from server.auth.permissions import CREATE_ACTION, Action, allowed
from server.models import Station
from server.programmes.models import ApprovalRule, Programme, ProgrammeStation
from server.programmes.service import ProgrammeError, ResolvedTargets
from server.programmes.spec import ProgrammeSpec

NAMED_MAX = 10
"""At most this many targets are named in a refusal."""


def permit(
    actor: Actor,
    action: Action,
    area_codes: Iterable[str] | None,
    session: Session,
    *,
    object_type: str = "-",
    object_id: str = "-",
) -> None:
    """``authorize``, refusing with a 403 :class:`ProgrammeError` (same words)."""
    try:
        authorize(actor, action, area_codes, session, object_type=object_type, object_id=object_id)
    except HTTPException as exc:
        raise ProgrammeError(str(exc.detail), exc.status_code) from None


def get_programme(session: Session, programme_id: int) -> Programme:
    programme = session.get(Programme, programme_id)
    if programme is None:
        raise ProgrammeError(f"programme {programme_id} does not exist", 404)
    return programme


def check_visible(session: Session, actor: Actor, programme: Programme) -> None:
    """403 unless the programme's owner area or one of its stations is the caller's."""
    scope = visible_areas(actor, Action.BROADCAST_READ, session)
    if programme.area_code in scope:
        return
    assert programme.id is not None
    reach = session.exec(
        select(Station.area_code)
        .join(ProgrammeStation, col(ProgrammeStation.station_id) == col(Station.id))
        .where(ProgrammeStation.programme_id == programme.id)
    ).all()
    if scope & set(reach):
        return
    permit(actor, Action.BROADCAST_READ, [programme.area_code], session)


def visible_programme(session: Session, actor: Actor, programme_id: int) -> Programme:
    """The programme, if it exists (404) and the caller may see it (403)."""
    programme = get_programme(session, programme_id)
    check_visible(session, actor, programme)
    return programme


def approver_area(session: Session, area_code: str) -> str:
    """Whose ``programme.approve`` signs off a programme of ``area_code`` (nearest rule)."""
    for code in ancestry(session, area_code):
        rule = session.get(ApprovalRule, code)
        if rule is not None:
            return rule.approver_area_code
    return area_code


def may_approve(session: Session, actor: Actor, programme: Programme) -> bool:
    """Whether the caller holds ``programme.approve`` where this programme is signed off."""
    approver = approver_area(session, programme.area_code)
    return approver in visible_areas(actor, Action.PROGRAMME_APPROVE, session)


def username(actor: Actor) -> str:
    return actor.name.split("/", 1)[0]


def _outside_targets(
    session: Session, actor: Actor, action: Action, spec: ProgrammeSpec, resolved: ResolvedTargets
) -> list[str]:
    """Each target the caller may not ``action`` on, named as the operator wrote it."""
    ancestors = cache(lambda code: ancestry(session, code))

    def denied(code: str) -> bool:
        return not allowed(actor.grants, action, code, ancestors)

    named: list[str] = []
    named += [f"area {code}" for code in sorted(spec.targets.areas) if denied(code)]
    for name in sorted(spec.targets.groups):
        group_area = resolved.group_areas.get(name)
        if group_area is not None and denied(group_area):
            named.append(f"group {name} (area {group_area})")
    explicit = set(spec.targets.stations)
    for station_id, area in sorted(resolved.station_areas.items()):
        if denied(area) and (station_id in explicit or not named):
            named.append(f"station {station_id} (area {area})")
    if len(named) > NAMED_MAX:
        named = [*named[:NAMED_MAX], f"and {len(named) - NAMED_MAX} more"]
    return named


def authorize_targets(
    session: Session, actor: Actor, spec: ProgrammeSpec, resolved: ResolvedTargets
) -> None:
    """The caller may edit programmes over every target, at the programme's priority."""
    actions = [Action.PROGRAMME_EDIT]
    if CREATE_ACTION[spec.priority] != Action.BROADCAST_CREATE:
        actions.append(CREATE_ACTION[spec.priority])
    for action in actions:
        try:
            permit(
                actor,
                action,
                resolved.areas | {spec.area},
                session,
                object_type="programme",
                object_id=spec.key,
            )
        except ProgrammeError as exc:
            message = str(exc)
            outside = _outside_targets(session, actor, action, spec, resolved)
            if outside:
                message = f"{message}; targets outside your area: {', '.join(outside)}"
            if action != Action.PROGRAMME_EDIT:
                message = (
                    f"{message}; a {spec.priority.value} programme speaks for the province: "
                    "commune operators may use normal or background only"
                )
            raise ProgrammeError(message, 403) from None
