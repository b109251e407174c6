"""Station groups (named sets of loudspeakers a programme may target) and approval rules.

A group's change is taken into every programme naming it at once (``settle_reach``);
the caller republishes the stations returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, delete, select

from server.areas import ancestry
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.auth.deps import visible_areas
from server.auth.permissions import Action
from server.models import Area, Station
from server.programmes.access import NAMED_MAX, permit
from server.programmes.approval import ProgrammeState
from server.programmes.models import (
    ApprovalRule,
    Programme,
    StationGroup,
    StationGroupMember,
    StationGroupPublic,
)
from server.programmes.reach import settle_reach
from server.programmes.service import ProgrammeError


def group_public(session: Session, group: StationGroup) -> StationGroupPublic:
    members = session.exec(
        select(StationGroupMember.station_id)
        .where(StationGroupMember.group_id == group.id)
        .order_by(col(StationGroupMember.station_id))
    ).all()
    assert group.id is not None
    return StationGroupPublic(
        id=group.id,
        name=group.name,
        title=group.title,
        area_code=group.area_code,
        station_ids=list(members),
        created_at=group.created_at,
    )


def list_groups(session: Session, actor: Actor) -> list[StationGroupPublic]:
    permit(actor, Action.STATION_READ, None, session)
    scope = visible_areas(actor, Action.STATION_READ, session)
    groups = session.exec(
        select(StationGroup)
        .where(col(StationGroup.area_code).in_(scope))
        .order_by(col(StationGroup.name))
    ).all()
    return [group_public(session, g) for g in groups]


def check_group(
    session: Session,
    actor: Actor,
    name: str,
    area_code: str,
    station_ids: Iterable[str],
    before: StationGroup | None,
) -> None:
    """Members and area exist and the caller may edit programmes over all of them (and over
    the group's current area when it moves)."""
    wanted = set(station_ids)
    rows = dict(
        session.exec(select(Station.id, Station.area_code).where(col(Station.id).in_(wanted))).all()
    )
    if wanted - rows.keys():
        unknown = ", ".join(sorted(wanted - rows.keys()))
        raise ProgrammeError(f"station_ids: unknown station(s) {unknown}")
    if session.get(Area, area_code) is None:
        raise ProgrammeError(f"area_code: unknown area {area_code!r}")
    areas = {area_code, *rows.values()}
    if before is not None:
        areas.add(before.area_code)
    permit(
        actor,
        Action.PROGRAMME_EDIT,
        areas,
        session,
        object_type="station_group",
        object_id=name,
    )


def naming_group(session: Session, name: str) -> list[Programme]:
    """Programmes (not archived) whose targets name the group."""
    rows = session.exec(
        select(Programme).where(col(Programme.state) != ProgrammeState.ARCHIVED)
    ).all()
    return [p for p in rows if name in p.spec.get("targets", {}).get("groups", [])]


def write_group(
    session: Session,
    actor: Actor,
    group: StationGroup,
    station_ids: Iterable[str],
    now: datetime,
    settle: bool = True,
) -> set[str]:
    """Store the group and its members, take the change into every programme naming it
    (unless ``settle`` is false); returns the stations whose plans change. The caller
    commits."""
    new = group.id is None
    session.add(group)
    session.flush()
    assert group.id is not None
    old = set(
        session.exec(
            select(StationGroupMember.station_id).where(StationGroupMember.group_id == group.id)
        ).all()
    )
    wanted = set(station_ids)
    session.exec(
        delete(StationGroupMember)
        .where(col(StationGroupMember.group_id) == group.id)
        .where(col(StationGroupMember.station_id).in_(old - wanted))
    )
    for station_id in sorted(wanted - old):
        session.add(StationGroupMember(group_id=group.id, station_id=station_id))
    record_audit(
        session,
        actor,
        "station_group.create" if new else "station_group.update",
        "station_group",
        str(group.id),
        before=None if new else {"stations": sorted(old)},
        after={"name": group.name, "area_code": group.area_code, "stations": sorted(wanted)},
    )
    session.flush()
    if not settle:
        return set()
    return settle_reach(session, now, programmes=naming_group(session, group.name), actor=actor)


def create_group(
    session: Session,
    actor: Actor,
    now: datetime,
    name: str,
    title: str,
    area_code: str,
    station_ids: list[str],
) -> tuple[StationGroup, set[str]]:
    """A named set of stations; returns it and the stations whose plans change (committed)."""
    check_group(session, actor, name, area_code, station_ids, None)
    if session.exec(select(StationGroup).where(StationGroup.name == name)).first():
        raise ProgrammeError(f"group name {name!r} is taken", 409)
    group = StationGroup(name=name, title=title, area_code=area_code, created_at=now)
    affected = write_group(session, actor, group, station_ids, now)
    session.commit()
    return group, affected


def update_group(
    session: Session,
    actor: Actor,
    now: datetime,
    group_id: int,
    title: str | None,
    station_ids: list[str],
) -> tuple[StationGroup, set[str]]:
    """Change a group's members: every programme naming it takes the new members in (or
    holds them on a clash) and lets the removed ones go, at once (committed)."""
    group = session.get(StationGroup, group_id)
    if group is None:
        raise ProgrammeError(f"station group {group_id} does not exist", 404)
    check_group(session, actor, group.name, group.area_code, station_ids, group)
    if title is not None:
        group.title = title
    affected = write_group(session, actor, group, station_ids, now)
    session.commit()
    return group, affected


def delete_group(session: Session, actor: Actor, group_id: int) -> None:
    """Remove a group no live programme names (change their targets first)."""
    group = session.get(StationGroup, group_id)
    if group is None:
        raise ProgrammeError(f"station group {group_id} does not exist", 404)
    permit(
        actor,
        Action.PROGRAMME_EDIT,
        [group.area_code],
        session,
        object_type="station_group",
        object_id=str(group_id),
    )
    users = naming_group(session, group.name)
    if users:
        named = ", ".join(f"{p.key!r} (id {p.id})" for p in users[:NAMED_MAX])
        raise ProgrammeError(
            f"group {group.name!r} is a target of programme(s) {named}; change their targets "
            "first, or change the group's members with PUT",
            409,
        )
    session.exec(delete(StationGroupMember).where(col(StationGroupMember.group_id) == group_id))
    session.delete(group)
    record_audit(session, actor, "station_group.delete", "station_group", str(group_id))
    session.commit()


# ------------------------------------------------------------------ approval rules


def list_approval_rules(session: Session, actor: Actor) -> list[ApprovalRule]:
    permit(actor, Action.AREA_READ, None, session)
    scope = visible_areas(actor, Action.AREA_READ, session)
    rules = session.exec(
        select(ApprovalRule)
        .where(col(ApprovalRule.area_code).in_(scope))
        .order_by(col(ApprovalRule.area_code))
    )
    return list(rules.all())


def set_approval_rule(
    session: Session, actor: Actor, now: datetime, area_code: str, approver_area_code: str
) -> ApprovalRule:
    """Who approves the programmes of ``area_code`` (and below): approvers over
    ``approver_area_code``, which must be the area itself or one above it."""
    if session.get(Area, area_code) is None:
        raise ProgrammeError(f"area {area_code!r} does not exist", 404)
    permit(
        actor,
        Action.USER_MANAGE,
        [area_code],
        session,
        object_type="approval_rule",
        object_id=area_code,
    )
    if approver_area_code not in ancestry(session, area_code):
        raise ProgrammeError(
            f"approver_area_code: {approver_area_code!r} is not {area_code} or an area above it"
        )
    rule = session.get(ApprovalRule, area_code) or ApprovalRule(
        area_code=area_code, approver_area_code=approver_area_code, updated_by=actor.name
    )
    before = {"approver_area_code": rule.approver_area_code}
    rule.approver_area_code = approver_area_code
    rule.updated_by = actor.name
    rule.updated_at = now
    session.add(rule)
    record_audit(
        session,
        actor,
        "approval_rule.set",
        "approval_rule",
        area_code,
        before=before,
        after={"approver_area_code": approver_area_code},
    )
    session.commit()
    session.refresh(rule)
    return rule
