"""A whole schedule (groups, then programmes by key) applied all or nothing.

Every part is checked first, exactly as a single save would check it, and overlaps are
checked against what is scheduled *and* the batch's own programmes; any refusal raises
:class:`BatchRefused` with every error found and changes nothing. A dry run checks and
answers as if applied, changing nothing.

Three steps, each over named work items: :func:`_plan_groups` and
:func:`_plan_programmes` check without writing (speech rendering commits only its own
cache rows); :func:`_write` writes in one transaction under the schedule lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, select

from server.auth.actor import Actor
from server.auth.permissions import Action
from server.context import ServerContext
from server.programmes.access import permit
from server.programmes.approval import ApprovalAction, ApprovalError, ProgrammeState, transition
from server.programmes.editing import (
    Prepared,
    precheck,
    republish,
    spec_json,
    submit_now,
    write_new,
    write_update,
)
from server.programmes.groups import check_group, naming_group, write_group
from server.programmes.models import (
    BatchError,
    BatchGroupOutcome,
    BatchProgrammeOutcome,
    BatchResult,
    Programme,
    ProgrammeBatch,
    StationGroup,
    StationGroupMember,
)
from server.programmes.reach import settle_reach
from server.programmes.recurrence import RecurrenceError
from server.programmes.service import GroupView, ProgrammeError, check_overlaps, hold_schedule
from server.programmes.spec import GroupSpec, ProgrammeSpec
from server.programmes.views import detail


@dataclass(frozen=True)
class Refusal:
    """One part of the batch refused, named by its place in the file."""

    where: str
    key: str
    status: int
    message: str
    code: str = ""

    @classmethod
    def of(cls, where: str, key: str, exc: Exception) -> Refusal:
        if isinstance(exc, ApprovalError):
            return cls(where, key, 409, str(exc))
        if isinstance(exc, ProgrammeError):
            return cls(where, key, exc.status, str(exc), exc.code)
        assert isinstance(exc, RecurrenceError)
        return cls(where, key, 422, str(exc), exc.code)

    def public(self) -> BatchError:
        return BatchError(
            where=self.where, key=self.key, status=self.status, detail=self.message, code=self.code
        )


class BatchRefused(ProgrammeError):
    """Some parts were refused; nothing was changed. The status is the first refusal's."""

    def __init__(self, refusals: list[Refusal]) -> None:
        count = len(refusals)
        lines = [f"{r.where} {r.key!r}: {r.message}" for r in refusals]
        super().__init__(
            f"{count} error{'s' if count != 1 else ''}; nothing was changed: " + "; ".join(lines),
            refusals[0].status,
        )
        self.refusals = refusals


@dataclass
class GroupWork:
    spec: GroupSpec
    stored: StationGroup | None
    changed: bool


@dataclass
class ProgrammeWork:
    number: int
    """1-based place in the file"""
    spec: ProgrammeSpec
    stored: Programme | None
    prepared: Prepared | None
    """None: the stored programme is exactly this spec already"""


@dataclass
class Written:
    programme: Programme
    action: str
    """created, updated or unchanged"""
    warnings: list[str] = field(default_factory=list)


@dataclass
class Plan:
    groups: list[GroupWork] = field(default_factory=list)
    views: dict[str, GroupView] = field(default_factory=dict)
    """the batch's groups as target resolution sees them"""
    programmes: list[ProgrammeWork] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def _plan_groups(session: Session, actor: Actor, body: ProgrammeBatch, plan: Plan) -> None:
    names = [g.name for g in body.groups]
    stored = {
        g.name: g
        for g in session.exec(select(StationGroup).where(col(StationGroup.name).in_(names))).all()
    }
    for number, group in enumerate(body.groups, start=1):
        where = f"groups[{number}]"
        before = stored.get(group.name)
        if names.count(group.name) > 1:
            plan.refusals.append(
                Refusal(where, group.name, 422, "group name used twice in the batch")
            )
            continue
        if before is not None and before.area_code != group.area:
            plan.refusals.append(
                Refusal(
                    where, group.name, 422, f"belongs to area {before.area_code}, not {group.area}"
                )
            )
            continue
        try:
            check_group(session, actor, group.name, group.area, group.stations, before)
        except ProgrammeError as exc:
            plan.refusals.append(Refusal.of(where, group.name, exc))
            continue
        members = (
            set(
                session.exec(
                    select(StationGroupMember.station_id).where(
                        StationGroupMember.group_id == before.id
                    )
                ).all()
            )
            if before is not None
            else set()
        )
        changed = (
            before is None
            or members != set(group.stations)
            or bool(group.title and group.title != before.title)
        )
        plan.views[group.name] = GroupView(group.area, frozenset(group.stations))
        plan.groups.append(GroupWork(group, before, changed))


def _plan_programmes(
    session: Session, context: ServerContext, actor: Actor, body: ProgrammeBatch, plan: Plan
) -> None:
    keys = [p.key for p in body.programmes]
    stored = {
        p.key: p for p in session.exec(select(Programme).where(col(Programme.key).in_(keys))).all()
    }
    for number, spec in enumerate(body.programmes, start=1):
        where = f"programmes[{number}]"
        old = stored.get(spec.key)
        if keys.count(spec.key) > 1:
            plan.refusals.append(Refusal(where, spec.key, 422, "key used twice in the batch"))
            continue
        try:
            if old is not None:
                permit(
                    actor,
                    Action.PROGRAMME_EDIT,
                    [old.area_code],
                    session,
                    object_type="programme",
                    object_id=str(old.id),
                )
            if old is not None and spec_json(spec) == old.spec:
                plan.programmes.append(ProgrammeWork(number, spec, old, None))
                continue
            if old is not None:
                transition(old.state, ApprovalAction.EDIT)
            ready = precheck(session, context, actor, spec, old, plan.views)
        except (ProgrammeError, RecurrenceError, ApprovalError) as exc:
            plan.refusals.append(Refusal.of(where, spec.key, exc))
            continue
        plan.programmes.append(ProgrammeWork(number, spec, old, ready))


def _write(
    session: Session, actor: Actor, plan: Plan, now: datetime
) -> tuple[list[BatchGroupOutcome], list[Written], set[str]]:
    """Groups, then programmes (overlaps seeing the batch's own); the caller commits."""
    hold_schedule(session)
    affected: set[str] = set()
    group_outcomes: list[BatchGroupOutcome] = []
    for group_work in plan.groups:
        group, stored = group_work.spec, group_work.stored
        row = stored or StationGroup(
            name=group.name, title=group.title, area_code=group.area, created_at=now
        )
        if group_work.changed:
            row.title = group.title or row.title
            write_group(session, actor, row, group.stations, now, settle=False)
        action = "created" if stored is None else ("updated" if group_work.changed else "unchanged")
        group_outcomes.append(BatchGroupOutcome(name=group.name, action=action, id=row.id))
    # The stored version of a programme the batch changes further down must not count.
    pending = {
        w.number: w.stored.id
        for w in plan.programmes
        if w.stored is not None and w.stored.id is not None and w.prepared is not None
    }
    written: list[Written] = []
    for work in plan.programmes:
        if work.prepared is None:
            assert work.stored is not None
            written.append(Written(work.stored, "unchanged"))
            continue
        ignore = frozenset(pid for n, pid in pending.items() if n > work.number)
        try:
            check_overlaps(
                session,
                work.stored.id if work.stored is not None else None,
                work.spec,
                work.prepared.segments,
                work.prepared.stations,
                now,
                ignore=ignore,
            )
        except ProgrammeError as exc:
            plan.refusals.append(Refusal.of(f"programmes[{work.number}]", work.spec.key, exc))
            continue
        if work.stored is None:
            programme = write_new(session, actor, work.spec, work.prepared, now)
            written.append(Written(programme, "created", work.prepared.warnings))
        else:
            affected |= write_update(session, actor, work.stored, work.spec, work.prepared, now)
            written.append(Written(work.stored, "updated", work.prepared.warnings))
    if plan.refusals:
        return group_outcomes, written, affected
    in_batch = {w.programme.id for w in written}
    changed_groups = {w.spec.name for w in plan.groups if w.changed}
    others = [
        p
        for name in sorted(changed_groups)
        for p in naming_group(session, name)
        if p.id not in in_batch
    ]
    if others:
        affected |= settle_reach(session, now, programmes=others, actor=actor)
    return group_outcomes, written, affected


def apply_batch(
    session: Session, context: ServerContext, actor: Actor, body: ProgrammeBatch
) -> BatchResult:
    """Check every part, then write all of it (or, on any refusal, nothing)."""
    now = context.clock()
    plan = Plan()
    _plan_groups(session, actor, body, plan)
    _plan_programmes(session, context, actor, body, plan)
    if plan.refusals:
        session.rollback()
        raise BatchRefused(plan.refusals)
    group_outcomes, written, affected = _write(session, actor, plan, now)
    if plan.refusals:
        session.rollback()
        raise BatchRefused(plan.refusals)
    if body.submit:
        for w in written:
            if w.programme.state in (ProgrammeState.DRAFT, ProgrammeState.REJECTED):
                submit_now(session, actor, w.programme, now)
        session.flush()
    result = BatchResult(
        applied=not body.dry_run,
        groups=group_outcomes,
        programmes=[
            BatchProgrammeOutcome(
                key=w.programme.key,
                action=w.action,
                programme=detail(
                    session, w.programme, now, w.warnings, changed=w.action != "unchanged"
                ),
            )
            for w in written
        ],
    )
    if body.dry_run:
        session.rollback()
        return result
    session.commit()
    republish(context, session, affected)
    return result
