"""Programmes: the commune's recurring schedule, its approval, groups and timelines.

Saving checks, in this order, and changes nothing on any error: priority allowed for
the role, targets known and inside the caller's area (403 naming those outside), timing
that fires (and not absurdly often), audio that exists, streams that are audio, speech
that fits its slot, and no overlap at the same priority on a station (409 naming both
items and the local time). Only approved programmes air; any change republishes exactly
the stations whose plans it touches.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlmodel import Session, col, delete, select

from server.api.broadcasts import CREATE_ACTION
from server.api.deps import ContextDep, DbId, SessionDep
from server.areas import ancestry
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize, visible_areas
from server.auth.permissions import Action, allowed
from server.context import ServerContext
from server.models import Area, Station, StationEvent
from server.programmes.approval import (
    OCCUPYING,
    ON_AIR,
    ApprovalAction,
    ApprovalError,
    ProgrammeState,
    transition,
)
from server.programmes.models import (
    AcceptBody,
    ApprovalRule,
    ApprovalRuleBody,
    ApprovalRulePublic,
    BatchError,
    BatchGroupOutcome,
    BatchProgrammeOutcome,
    BatchResult,
    HeldStation,
    OccurrencePublic,
    Programme,
    ProgrammeBatch,
    ProgrammeDetail,
    ProgrammePublic,
    ProgrammeStation,
    RejectBody,
    StationGroup,
    StationGroupCreate,
    StationGroupMember,
    StationGroupPublic,
    StationGroupUpdate,
    Timeline,
)
from server.programmes.probe import policy_from, probe_stream
from server.programmes.reach import clear_holds, holds_of, retry_holds, settle_reach
from server.programmes.recurrence import RecurrenceError, fmt_local, to_local, validate_timing
from server.programmes.service import (
    GroupView,
    ProgrammeError,
    ResolvedTargets,
    check_overlaps,
    check_sources,
    check_speech_fits,
    hold_schedule,
    resolve_targets,
    segments_of,
    station_timeline,
    stations_of,
    timing_of,
)
from server.programmes.spec import GroupSpec, ProgrammeSpec, StreamItem, TtsItem
from server.programmes.timeline import Segment, occurrence_stamp, programme_item_of, total_ms
from server.tts.errors import TtsEngineMissing, TtsError

router = APIRouter(tags=["programmes"])

LIST_MAX = 500
NAMED_MAX = 10


def _http(exc: ProgrammeError | RecurrenceError | ApprovalError) -> HTTPException:
    code = exc.status if isinstance(exc, ProgrammeError) else 422
    if isinstance(exc, ApprovalError):
        code = status.HTTP_409_CONFLICT
    return HTTPException(code, str(exc))


def _now(context: ServerContext) -> datetime:
    return context.clock()


# ------------------------------------------------------------------ checks


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


def _authorize_targets(
    session: Session, actor: Actor, spec: ProgrammeSpec, resolved: ResolvedTargets
) -> None:
    actions = [Action.PROGRAMME_EDIT]
    if CREATE_ACTION[spec.priority] != Action.BROADCAST_CREATE:
        actions.append(CREATE_ACTION[spec.priority])
    for action in actions:
        try:
            authorize(
                actor,
                action,
                resolved.areas | {spec.area},
                session,
                object_type="programme",
                object_id=spec.key,
            )
        except HTTPException as exc:
            outside = _outside_targets(session, actor, action, spec, resolved)
            if exc.status_code == 403 and outside:
                exc.detail = f"{exc.detail}; targets outside your area: {', '.join(outside)}"
            if action != Action.PROGRAMME_EDIT and exc.status_code == 403:
                exc.detail = (
                    f"{exc.detail}; a {spec.priority.value} programme speaks for the province: "
                    "commune operators may use normal or background only"
                )
            raise


def _render_speech(session: Session, context: ServerContext, spec: ProgrammeSpec) -> dict[str, int]:
    """Render every TTS item (cached by text and voice), so its duration is known now."""
    rendered: dict[str, int] = {}
    for number, item in enumerate(spec.items, start=1):
        if not isinstance(item, TtsItem):
            continue
        try:
            asset = context.tts.render(session, item.text, item.voice)
        except TtsError as exc:  # its subclasses carry the operator-facing message
            code = 503 if isinstance(exc, TtsEngineMissing) else 422
            raise ProgrammeError(f"items[{number}]: text-to-speech: {exc}", code) from exc
        assert asset.id is not None
        rendered[str(number)] = asset.id
    return rendered


def _probe(context: ServerContext, spec: ProgrammeSpec, before: ProgrammeSpec | None) -> list[str]:
    """Probe each stream URL that is new; an error refuses, a warning is returned."""
    known = (
        {i.url for i in before.items if isinstance(i, StreamItem)} if before is not None else set()
    )
    warnings: list[str] = []
    streams = [
        (number, item)
        for number, item in enumerate(spec.items, start=1)
        if isinstance(item, StreamItem) and item.url not in known
    ]
    if not streams:
        return warnings
    settings = context.settings
    policy = policy_from(settings.stream_allowed_networks, settings.public_url)
    for number, item in streams:
        result = probe_stream(item.url, settings.stream_probe_timeout_s, policy)
        if result.error is not None:
            raise ProgrammeError(f"items[{number}]: {result.error}")
        if result.warning is not None:
            warnings.append(f"items[{number}]: {result.warning}")
    return warnings


class Prepared:
    def __init__(
        self,
        spec: ProgrammeSpec,
        rendered: dict[str, int],
        segments: list[Segment],
        stations: set[str],
        warnings: list[str],
    ) -> None:
        self.spec = spec
        self.rendered = rendered
        self.segments = segments
        self.stations = stations
        self.warnings = warnings


def precheck(
    session: Session,
    context: ServerContext,
    actor: Actor,
    spec: ProgrammeSpec,
    before: Programme | None,
    groups: dict[str, GroupView] | None = None,
) -> Prepared:
    """Every check of a save but the overlaps, before anything is written.

    ``groups`` stands in for the database's groups of those names (a batch changing them).
    Speech is rendered here: rendering commits the session, so it must come before any
    write of the caller's own.
    """
    if spec.priority not in CREATE_ACTION:
        raise ProgrammeError(
            f"priority {spec.priority.value!r} is for alerts: an emergency goes out through "
            "the alert API, which pre-empts everything"
        )
    if session.get(Area, spec.area) is None:
        raise ProgrammeError(f"area: unknown area {spec.area!r}")
    resolved = resolve_targets(session, spec, groups)
    _authorize_targets(session, actor, spec, resolved)
    validate_timing(timing_of(spec), _now(context))
    check_sources(session, spec)
    before_spec = ProgrammeSpec.model_validate(before.spec) if before is not None else None
    warnings = resolved.warnings + _probe(context, spec, before_spec)
    rendered = _render_speech(session, context, spec)
    check_speech_fits(spec, rendered, session)
    segments = segments_of(session, spec, rendered)
    return Prepared(spec, rendered, segments, resolved.stations, warnings)


def prepare(
    session: Session,
    context: ServerContext,
    actor: Actor,
    spec: ProgrammeSpec,
    before: Programme | None,
) -> Prepared:
    """Every check of a save, before anything is written (see the module doc for the order).

    The schedule lock is held from the overlap check to the caller's commit.
    """
    ready = precheck(session, context, actor, spec, before)
    hold_schedule(session)
    if before is not None:
        session.refresh(before)  # as it is now: archived meanwhile is never edited
        transition(before.state, ApprovalAction.EDIT)
    check_overlaps(
        session,
        before.id if before is not None else None,
        spec,
        ready.segments,
        ready.stations,
        _now(context),
    )
    return ready


# ------------------------------------------------------------------ views


def _next(spec: ProgrammeSpec, now: datetime, count: int = 5) -> list[datetime]:
    found: list[datetime] = []
    timing = timing_of(spec)
    after = now
    while len(found) < count:
        nxt = timing.next_after(after)
        if nxt is None:
            break
        found.append(nxt)
        after = nxt + timedelta(seconds=1)
    return found


def detail(
    session: Session,
    programme: Programme,
    now: datetime,
    warnings: Iterable[str] = (),
    changed: bool = True,
) -> ProgrammeDetail:
    assert programme.id is not None
    spec = ProgrammeSpec.model_validate(programme.spec)
    held = [
        HeldStation(station_id=h.station_id, reason=h.reason, since=h.since)
        for h in holds_of(session, programme.id)
    ]
    return ProgrammeDetail(
        **ProgrammePublic.model_validate(programme).model_dump(),
        stations=sorted(stations_of(session, programme.id)),
        held=held,
        next_occurrences=_next(spec, now),
        warnings=list(warnings),
        changed=changed,
    )


def _visible(session: Session, actor: Actor, programme: Programme) -> None:
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
    authorize(actor, Action.BROADCAST_READ, [programme.area_code], session)


def _get(session: Session, programme_id: int) -> Programme:
    programme = session.get(Programme, programme_id)
    if programme is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"programme {programme_id} does not exist")
    return programme


def _save_stations(session: Session, programme_id: int, stations: set[str]) -> None:
    session.exec(delete(ProgrammeStation).where(col(ProgrammeStation.programme_id) == programme_id))
    for station_id in sorted(stations):
        session.add(ProgrammeStation(programme_id=programme_id, station_id=station_id))


def _republish(context: ServerContext, session: Session, stations: Iterable[str]) -> None:
    if context.planner is not None:
        context.planner.republish(session, stations)
    else:
        context.publisher.publish_stations(session, stations)


def _spec_json(spec: ProgrammeSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_defaults=False)


# ------------------------------------------------------------------ programmes


def _key_taken(session: Session, key: str) -> None:
    taken = session.exec(select(Programme.id).where(Programme.key == key)).first()
    if taken is not None:
        raise ProgrammeError(
            f"key {key!r} is taken by programme {taken}; PUT /programmes/{taken} to change it",
            status.HTTP_409_CONFLICT,
        )


def _write_new(
    session: Session, actor: Actor, spec: ProgrammeSpec, ready: Prepared, now: datetime
) -> Programme:
    """Insert a checked new programme (a draft) and its stations; the caller commits."""
    programme = Programme(
        key=spec.key,
        title=spec.title,
        area_code=spec.area,
        priority=spec.priority,
        proposal=spec.proposal,
        spec=_spec_json(spec),
        rendered=ready.rendered,
        duration_ms=total_ms(ready.segments),
        created_by=actor.name,
        updated_by=actor.name,
        created_at=now,
        updated_at=now,
        state_at=now,
    )
    session.add(programme)
    session.flush()
    assert programme.id is not None
    _save_stations(session, programme.id, ready.stations)
    record_audit(
        session,
        actor,
        "programme.create",
        "programme",
        str(programme.id),
        after={"key": spec.key, "spec": programme.spec, "stations": sorted(ready.stations)},
    )
    session.flush()
    return programme


def _write_update(
    session: Session,
    actor: Actor,
    programme: Programme,
    spec: ProgrammeSpec,
    ready: Prepared,
    now: datetime,
) -> set[str]:
    """Replace a programme's definition (back to draft); returns the stations whose plans
    change (old and new ones, when it was on the air). The caller commits."""
    assert programme.id is not None
    was_on_air = programme.state in ON_AIR
    old_stations = stations_of(session, programme.id)
    before = {"state": programme.state, "spec": programme.spec}
    programme.title = spec.title
    programme.area_code = spec.area
    programme.priority = spec.priority
    programme.proposal = spec.proposal
    programme.spec = _spec_json(spec)
    programme.rendered = ready.rendered
    programme.duration_ms = total_ms(ready.segments)
    programme.state = transition(programme.state, ApprovalAction.EDIT)
    programme.updated_by = actor.name
    programme.updated_at = now
    programme.state_at = now
    programme.approved_by = None
    _save_stations(session, programme.id, ready.stations)
    clear_holds(session, programme.id)
    session.add(programme)
    record_audit(
        session,
        actor,
        "programme.update",
        "programme",
        str(programme.id),
        before=before,
        after={"state": programme.state, "spec": programme.spec},
    )
    session.flush()
    return old_stations | ready.stations if was_on_air else set()


@router.post("/programmes", status_code=status.HTTP_201_CREATED, response_model=ProgrammeDetail)
def create_programme(
    body: ProgrammeSpec, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    """Save a new programme as a draft (it airs once submitted and approved)."""
    try:
        ready = prepare(session, context, actor, body, None)
        _key_taken(session, body.key)
    except (ProgrammeError, RecurrenceError) as exc:
        raise _http(exc) from exc
    now = _now(context)
    programme = _write_new(session, actor, body, ready, now)
    session.commit()
    session.refresh(programme)
    return detail(session, programme, now, ready.warnings)


BatchRefusal = tuple[str, str, int, str, str]
"""(where, key, HTTP status, message, code)"""


def _refusal(where: str, key: str, exc: Exception) -> BatchRefusal:
    if isinstance(exc, HTTPException):
        return where, key, exc.status_code, str(exc.detail), ""
    assert isinstance(exc, ProgrammeError | RecurrenceError | ApprovalError)
    http = _http(exc)
    return where, key, http.status_code, str(http.detail), str(getattr(exc, "code", ""))


def _refused(errors: list[BatchRefusal]) -> JSONResponse:
    """One answer for every refusal: the first one's status, each named by its place."""
    lines = [f"{where} {key!r}: {message}" for where, key, _, message, _ in errors]
    count = len(errors)
    return JSONResponse(
        status_code=errors[0][2],
        content={
            "detail": f"{count} error{'s' if count != 1 else ''}; nothing was changed: "
            + "; ".join(lines),
            "errors": [
                BatchError(where=w, key=k, status=c, detail=m, code=r).model_dump()
                for w, k, c, m, r in errors
            ],
        },
    )


@router.post(
    "/programmes/batch",
    response_model=BatchResult,
    responses={409: {"description": "a clash"}, 422: {"description": "a bad part"}},
)
def apply_batch(
    body: ProgrammeBatch, session: SessionDep, context: ContextDep, actor: ActorDep
) -> BatchResult | JSONResponse:
    """Create or update a whole schedule (groups, then programmes by key) all or nothing.

    Every part is checked first, exactly as a single save would check it, and overlaps are
    checked against what is scheduled *and* the batch's own programmes; any refusal
    answers with every error found (``errors``) and changes nothing. ``dry_run`` checks
    and answers as if applied, changing nothing.
    """
    now = _now(context)
    errors: list[BatchRefusal] = []
    # -------- checks that write nothing (speech rendering commits its own cache rows)
    names = [g.name for g in body.groups]
    groups_before = {
        g.name: g
        for g in session.exec(select(StationGroup).where(col(StationGroup.name).in_(names))).all()
    }
    views: dict[str, GroupView] = {}
    group_work: list[tuple[GroupSpec, StationGroup | None, bool]] = []
    for number, group in enumerate(body.groups, start=1):
        where = f"groups[{number}]"
        before = groups_before.get(group.name)
        if names.count(group.name) > 1:
            errors.append((where, group.name, 422, "group name used twice in the batch", ""))
            continue
        if before is not None and before.area_code != group.area:
            errors.append(
                (
                    where,
                    group.name,
                    422,
                    f"belongs to area {before.area_code}, not {group.area}",
                    "",
                )
            )
            continue
        try:
            _check_group(session, actor, group.name, group.area, group.stations, before)
        except HTTPException as exc:
            errors.append(_refusal(where, group.name, exc))
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
        views[group.name] = GroupView(group.area, frozenset(group.stations))
        group_work.append((group, before, changed))
    keys = [p.key for p in body.programmes]
    programmes_before = {
        p.key: p for p in session.exec(select(Programme).where(col(Programme.key).in_(keys))).all()
    }
    work: list[tuple[int, ProgrammeSpec, Programme | None, Prepared | None]] = []
    for number, spec in enumerate(body.programmes, start=1):
        where = f"programmes[{number}]"
        old = programmes_before.get(spec.key)
        if keys.count(spec.key) > 1:
            errors.append((where, spec.key, 422, "key used twice in the batch", ""))
            continue
        try:
            if old is not None:
                authorize(
                    actor,
                    Action.PROGRAMME_EDIT,
                    [old.area_code],
                    session,
                    object_type="programme",
                    object_id=str(old.id),
                )
            if old is not None and _spec_json(spec) == old.spec:
                work.append((number, spec, old, None))  # unchanged
                continue
            if old is not None:
                transition(old.state, ApprovalAction.EDIT)
            ready = precheck(session, context, actor, spec, old, views)
        except (ProgrammeError, RecurrenceError, ApprovalError, HTTPException) as exc:
            errors.append(_refusal(where, spec.key, exc))
            continue
        work.append((number, spec, old, ready))
    if errors:
        session.rollback()
        return _refused(errors)
    # -------- writes, in one transaction; overlaps see the batch's own programmes
    hold_schedule(session)
    affected: set[str] = set()
    group_outcomes: list[BatchGroupOutcome] = []
    for group, stored, changed in group_work:
        row = stored or StationGroup(
            name=group.name, title=group.title, area_code=group.area, created_at=now
        )
        if changed:
            row.title = group.title or row.title
            _write_group(session, actor, row, group.stations, now, settle=False)
        action = "created" if stored is None else ("updated" if changed else "unchanged")
        group_outcomes.append(BatchGroupOutcome(name=group.name, action=action, id=row.id))
    # The stored version of a programme the batch changes further down must not count.
    pending = {
        number: old.id
        for number, _, old, ready in work
        if old is not None and old.id is not None and ready is not None
    }
    written: list[tuple[int, Programme, str, list[str]]] = []
    for number, spec, old, prepared in work:
        if prepared is None:
            assert old is not None
            written.append((number, old, "unchanged", []))
            continue
        ignore = frozenset(pid for n, pid in pending.items() if n > number)
        try:
            check_overlaps(
                session,
                old.id if old is not None else None,
                spec,
                prepared.segments,
                prepared.stations,
                now,
                ignore=ignore,
            )
        except ProgrammeError as exc:
            errors.append(_refusal(f"programmes[{number}]", spec.key, exc))
            continue
        if old is None:
            programme = _write_new(session, actor, spec, prepared, now)
            written.append((number, programme, "created", prepared.warnings))
        else:
            affected |= _write_update(session, actor, old, spec, prepared, now)
            written.append((number, old, "updated", prepared.warnings))
    if errors:
        session.rollback()
        return _refused(errors)
    in_batch = {p.id for _, p, _, _ in written}
    changed_groups = {g.name for g, _, changed in group_work if changed}
    others = [
        p
        for name in sorted(changed_groups)
        for p in _naming_group(session, name)
        if p.id not in in_batch
    ]
    if others:
        affected |= settle_reach(session, now, programmes=others, actor=actor)
    if body.submit:
        for _, programme, _, _ in written:
            if programme.state in (ProgrammeState.DRAFT, ProgrammeState.REJECTED):
                before_state = programme.state
                programme.state = transition(programme.state, ApprovalAction.SUBMIT)
                programme.state_at = now
                programme.submitted_by = actor.name
                programme.reject_reason = None
                session.add(programme)
                record_audit(
                    session,
                    actor,
                    "programme.submit",
                    "programme",
                    str(programme.id),
                    before={"state": before_state},
                    after={"state": programme.state},
                )
        session.flush()
    result = BatchResult(
        applied=not body.dry_run,
        groups=group_outcomes,
        programmes=[
            BatchProgrammeOutcome(
                key=programme.key,
                action=action,
                programme=detail(session, programme, now, warnings, changed=action != "unchanged"),
            )
            for _, programme, action, warnings in written
        ],
    )
    if body.dry_run:
        session.rollback()
        return result
    session.commit()
    _republish(context, session, affected)
    return result


@router.get("/programmes", response_model=list[ProgrammePublic])
def read_programmes(
    session: SessionDep,
    actor: ActorDep,
    key: str | None = None,
    state: ProgrammeState | None = None,
    proposals: bool | None = None,
    limit: int = 200,
) -> list[Programme]:
    """Programmes owned in, or reaching a station in, the caller's areas (newest first)."""
    authorize(actor, Action.BROADCAST_READ, None, session)
    scope = visible_areas(actor, Action.BROADCAST_READ, session)
    reaching = (
        select(ProgrammeStation.programme_id)
        .join(Station, col(Station.id) == col(ProgrammeStation.station_id))
        .where(col(Station.area_code).in_(scope))
    )
    query = select(Programme).where(
        col(Programme.area_code).in_(scope) | col(Programme.id).in_(reaching)
    )
    if key is not None:
        query = query.where(Programme.key == key)
    if state is not None:
        query = query.where(col(Programme.state) == state)
    if proposals is not None:
        query = query.where(col(Programme.proposal).is_(proposals))
    query = query.order_by(col(Programme.id).desc()).limit(max(1, min(limit, LIST_MAX)))
    return list(session.exec(query).all())


@router.get("/programmes/{programme_id}", response_model=ProgrammeDetail)
def read_programme(
    programme_id: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    programme = _get(session, programme_id)
    _visible(session, actor, programme)
    return detail(session, programme, _now(context))


@router.put("/programmes/{programme_id}", response_model=ProgrammeDetail)
def update_programme(
    programme_id: DbId,
    body: ProgrammeSpec,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
) -> ProgrammeDetail:
    """Replace the definition. The same body again changes nothing (``changed`` false);
    a real change sends the programme back to draft, off the air until re-approved."""
    programme = _get(session, programme_id)
    authorize(
        actor,
        Action.PROGRAMME_EDIT,
        [programme.area_code],
        session,
        object_type="programme",
        object_id=str(programme_id),
    )
    now = _now(context)
    if body.key != programme.key:
        raise HTTPException(
            422, f"key: {body.key!r} differs from this programme's key {programme.key!r}"
        )
    if _spec_json(body) == programme.spec:
        return detail(session, programme, now, changed=False)
    try:
        transition(programme.state, ApprovalAction.EDIT)
        ready = prepare(session, context, actor, body, programme)
    except (ProgrammeError, RecurrenceError, ApprovalError) as exc:
        raise _http(exc) from exc
    old_stations = stations_of(session, programme_id)
    affected = _write_update(session, actor, programme, body, ready, now)
    session.commit()
    # Slots it left (another time, other stations) may let a held programme in.
    affected |= retry_holds(session, old_stations, now)
    session.commit()
    _republish(context, session, affected)
    session.refresh(programme)
    return detail(session, programme, now, ready.warnings)


def approver_area(session: Session, area_code: str) -> str:
    """Whose ``programme.approve`` signs off a programme of ``area_code`` (nearest rule)."""
    for code in ancestry(session, area_code):
        rule = session.get(ApprovalRule, code)
        if rule is not None:
            return rule.approver_area_code
    return area_code


def _username(actor: Actor) -> str:
    return actor.name.split("/", 1)[0]


def _move(
    session: Session,
    context: ServerContext,
    actor: ActorDep,
    programme_id: int,
    action: ApprovalAction,
    reason: str | None = None,
) -> ProgrammeDetail:
    programme = _get(session, programme_id)
    permission = (
        Action.PROGRAMME_APPROVE
        if action in {ApprovalAction.APPROVE, ApprovalAction.REJECT}
        else Action.PROGRAMME_EDIT
    )
    area = (
        approver_area(session, programme.area_code)
        if permission == Action.PROGRAMME_APPROVE
        else programme.area_code
    )
    authorize(
        actor, permission, [area], session, object_type="programme", object_id=str(programme_id)
    )
    hold_schedule(session)  # what follows reads the state and the slots as they are now
    session.refresh(programme)
    try:
        new_state = transition(programme.state, action)
    except ApprovalError as exc:
        raise _http(exc) from exc
    if (
        action == ApprovalAction.APPROVE
        and programme.submitted_by is not None
        and _username(actor) == programme.submitted_by.split("/", 1)[0]
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"permission denied: {Action.PROGRAMME_APPROVE} — {_username(actor)} submitted this "
            "programme; a different approver must approve it",
        )
    takes_slot_again = (
        action == ApprovalAction.SUBMIT and programme.state == ProgrammeState.REJECTED
    )
    if (action == ApprovalAction.APPROVE or takes_slot_again) and not programme.proposal:
        # Still true now? Time has passed since the save: a one-off may be in the past, and
        # a one-off broadcast may have been booked into the slot since. A rejected
        # programme left its slot, which another may have taken: submitting it again
        # takes the slot back only if it is still free.
        spec = ProgrammeSpec.model_validate(programme.spec)
        try:
            validate_timing(timing_of(spec), _now(context))
            check_overlaps(
                session,
                programme_id,
                spec,
                segments_of(session, spec, programme.rendered),
                stations_of(session, programme_id),
                _now(context),
            )
        except (RecurrenceError, ProgrammeError) as exc:
            raise _http(exc) from exc
    was_on_air = programme.state in ON_AIR
    before = programme.state
    now = _now(context)
    programme.state = new_state
    programme.state_at = now
    if action == ApprovalAction.SUBMIT:
        programme.submitted_by = actor.name
        programme.reject_reason = None
    elif action == ApprovalAction.APPROVE:
        programme.approved_by = actor.name
    elif action == ApprovalAction.REJECT:
        programme.reject_reason = reason
    session.add(programme)
    record_audit(
        session,
        actor,
        f"programme.{action.value}",
        "programme",
        str(programme_id),
        before={"state": before},
        after={"state": new_state, **({"reason": reason} if reason else {})},
    )
    affected: set[str] = set()
    if new_state in ON_AIR:
        # Targets are live: take in stations registered since, retry the held ones.
        affected |= settle_reach(session, now, programmes=[programme], actor=actor)
    session.commit()
    if (was_on_air or new_state in ON_AIR) and not programme.proposal:
        affected |= stations_of(session, programme_id)
    if new_state not in OCCUPYING:
        # Its slots are free now: a programme held there may take them.
        affected |= retry_holds(session, stations_of(session, programme_id), now)
        session.commit()
    _republish(context, session, affected)
    session.refresh(programme)
    return detail(session, programme, now)


@router.post("/programmes/{programme_id}/submit", response_model=ProgrammeDetail)
def submit_programme(
    programme_id: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    """Ask for approval (draft or rejected → submitted)."""
    return _move(session, context, actor, programme_id, ApprovalAction.SUBMIT)


@router.post("/programmes/{programme_id}/approve", response_model=ProgrammeDetail)
def approve_programme(
    programme_id: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    """Put it on the air: its stations' plans are republished at once.

    Needs ``programme.approve`` over the area the approval rule names (default: the
    programme's own area), by someone other than the submitter.
    """
    return _move(session, context, actor, programme_id, ApprovalAction.APPROVE)


@router.post("/programmes/{programme_id}/reject", response_model=ProgrammeDetail)
def reject_programme(
    programme_id: DbId,
    body: RejectBody,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
) -> ProgrammeDetail:
    """Send it back with a reason the operator sees."""
    return _move(session, context, actor, programme_id, ApprovalAction.REJECT, body.reason)


@router.post("/programmes/{programme_id}/archive", response_model=ProgrammeDetail)
def archive_programme(
    programme_id: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    """Take it off the air for good (kept for the record)."""
    return _move(session, context, actor, programme_id, ApprovalAction.ARCHIVE)


@router.post(
    "/programmes/{programme_id}/accept",
    status_code=status.HTTP_201_CREATED,
    response_model=ProgrammeDetail,
)
def accept_proposal(
    programme_id: DbId,
    body: AcceptBody,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
) -> ProgrammeDetail:
    """Take a province proposal into a commune's programme: a draft copy owned by the
    commune, reaching the commune's stations among the proposal's targets."""
    proposal = _get(session, programme_id)
    authorize(
        actor,
        Action.PROGRAMME_EDIT,
        [body.area_code],
        session,
        object_type="programme",
        object_id=str(programme_id),
    )
    if not proposal.proposal:
        raise HTTPException(422, f"programme {programme_id} is not a proposal")
    reached = session.exec(
        select(Station.id)
        .join(ProgrammeStation, col(ProgrammeStation.station_id) == col(Station.id))
        .where(ProgrammeStation.programme_id == programme_id)
        .where(Station.area_code == body.area_code)
    ).all()
    if not reached:
        raise HTTPException(
            422, f"proposal {programme_id} reaches no station in area {body.area_code}"
        )
    spec = ProgrammeSpec.model_validate(proposal.spec)
    data = spec.model_dump()
    data.update(
        key=body.key or f"{spec.key}.{body.area_code}"[:63],
        area=body.area_code,
        proposal=False,
        targets={"stations": sorted(reached)},
    )
    try:
        copy = ProgrammeSpec.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, f"key: {exc.errors()[0]['msg']}") from exc
    created = create_programme(copy, session, context, actor)
    programme = _get(session, created.id)
    programme.proposal_of = programme_id
    session.add(programme)
    session.commit()
    return detail(session, programme, _now(context))


@router.get("/programmes/{programme_id}/occurrences", response_model=list[OccurrencePublic])
def read_occurrences(
    programme_id: DbId,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    days: Annotated[int, Query(ge=1, le=366)] = 7,
) -> list[OccurrencePublic]:
    """Occurrences from ``from`` (default now) for ``days`` days, local and UTC."""
    programme = _get(session, programme_id)
    _visible(session, actor, programme)
    begin = start or _now(context)
    if begin.tzinfo is None:
        raise HTTPException(422, "from: give an offset, e.g. 2026-12-07T00:00+07:00")
    spec = ProgrammeSpec.model_validate(programme.spec)
    length = timedelta(milliseconds=programme.duration_ms)
    starts = timing_of(spec).between(begin, begin + timedelta(days=days), 1000)
    outcomes = _outcomes(session, programme_id, starts) if starts else {}
    return [
        OccurrencePublic(
            start_at=t,
            end_at=t + length,
            start_local=fmt_local(t),
            end_local=fmt_local(t + length),
            outcomes=outcomes.get(t, {}),
        )
        for t in starts
    ]


OUTCOMES = ("played", "interrupted", "failed", "stream_unreachable")


def _outcomes(
    session: Session, programme_id: int, starts: list[datetime]
) -> dict[datetime, dict[str, int]]:
    """What the stations reported for each occurrence's items (from the event log)."""
    by_stamp = {occurrence_stamp(start): start for start in starts}
    rows = session.exec(
        select(StationEvent.item_id, StationEvent.kind)
        .where(col(StationEvent.item_id).startswith(f"p{programme_id}."))
        .where(col(StationEvent.kind).in_(OUTCOMES))
        .where(col(StationEvent.at) >= starts[0] - timedelta(days=1))
    ).all()
    found: dict[datetime, dict[str, int]] = {}
    for item_id, kind in rows:
        ref = programme_item_of(item_id or "")
        if ref is None or ref.programme_id != programme_id or ref.local_stamp not in by_stamp:
            continue
        tally = found.setdefault(by_stamp[ref.local_stamp], {})
        tally[kind] = tally.get(kind, 0) + 1
    return found


@router.get("/stations/{station_id}/timeline", response_model=Timeline)
def read_timeline(
    station_id: str,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
    day: Annotated[date | None, Query(alias="date")] = None,
) -> Timeline:
    """What the station plays on a local day (default today), drafts marked off-air."""
    station = session.get(Station, station_id)
    if station is None:
        raise HTTPException(404, f"station {station_id!r} does not exist")
    authorize(actor, Action.STATION_READ, [station.area_code], session)
    wanted = day or to_local(_now(context)).date()
    return Timeline(
        station_id=station_id,
        date=wanted.isoformat(),
        entries=station_timeline(session, station_id, wanted),
    )


# ------------------------------------------------------------------ groups


def _group_public(session: Session, group: StationGroup) -> StationGroupPublic:
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


@router.get("/station-groups", response_model=list[StationGroupPublic])
def read_groups(session: SessionDep, actor: ActorDep) -> list[StationGroupPublic]:
    authorize(actor, Action.STATION_READ, None, session)
    scope = visible_areas(actor, Action.STATION_READ, session)
    groups = session.exec(
        select(StationGroup)
        .where(col(StationGroup.area_code).in_(scope))
        .order_by(col(StationGroup.name))
    ).all()
    return [_group_public(session, g) for g in groups]


def _check_group(
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
        raise HTTPException(422, f"station_ids: unknown station(s) {unknown}")
    if session.get(Area, area_code) is None:
        raise HTTPException(422, f"area_code: unknown area {area_code!r}")
    areas = {area_code, *rows.values()}
    if before is not None:
        areas.add(before.area_code)
    authorize(
        actor,
        Action.PROGRAMME_EDIT,
        areas,
        session,
        object_type="station_group",
        object_id=name,
    )


def _write_group(
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
    return settle_reach(session, now, programmes=_naming_group(session, group.name), actor=actor)


def _naming_group(session: Session, name: str) -> list[Programme]:
    """Programmes (not archived) whose targets name the group."""
    rows = session.exec(
        select(Programme).where(col(Programme.state) != ProgrammeState.ARCHIVED)
    ).all()
    return [p for p in rows if name in p.spec.get("targets", {}).get("groups", [])]


@router.post(
    "/station-groups", status_code=status.HTTP_201_CREATED, response_model=StationGroupPublic
)
def create_group(
    body: StationGroupCreate, session: SessionDep, context: ContextDep, actor: ActorDep
) -> StationGroupPublic:
    """A named set of stations, e.g. the loudspeakers along the market road."""
    _check_group(session, actor, body.name, body.area_code, body.station_ids, None)
    if session.exec(select(StationGroup).where(StationGroup.name == body.name)).first():
        raise HTTPException(409, f"group name {body.name!r} is taken")
    now = _now(context)
    group = StationGroup(name=body.name, title=body.title, area_code=body.area_code, created_at=now)
    affected = _write_group(session, actor, group, body.station_ids, now)
    session.commit()
    _republish(context, session, affected)
    return _group_public(session, group)


@router.put("/station-groups/{group_id}", response_model=StationGroupPublic)
def update_group(
    group_id: DbId,
    body: StationGroupUpdate,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
) -> StationGroupPublic:
    """Change a group's members: every programme naming it takes the new members in (or
    holds them on a clash, see ``held``) and lets the removed ones go, at once."""
    group = session.get(StationGroup, group_id)
    if group is None:
        raise HTTPException(404, f"station group {group_id} does not exist")
    _check_group(session, actor, group.name, group.area_code, body.station_ids, group)
    if body.title is not None:
        group.title = body.title
    now = _now(context)
    affected = _write_group(session, actor, group, body.station_ids, now)
    session.commit()
    _republish(context, session, affected)
    return _group_public(session, group)


@router.delete("/station-groups/{group_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_group(group_id: DbId, session: SessionDep, actor: ActorDep) -> None:
    """Remove a group no live programme names (change their targets first)."""
    group = session.get(StationGroup, group_id)
    if group is None:
        raise HTTPException(404, f"station group {group_id} does not exist")
    authorize(
        actor,
        Action.PROGRAMME_EDIT,
        [group.area_code],
        session,
        object_type="station_group",
        object_id=str(group_id),
    )
    users = _naming_group(session, group.name)
    if users:
        named = ", ".join(f"{p.key!r} (id {p.id})" for p in users[:NAMED_MAX])
        raise HTTPException(
            409,
            f"group {group.name!r} is a target of programme(s) {named}; change their targets "
            "first, or change the group's members with PUT",
        )
    session.exec(delete(StationGroupMember).where(col(StationGroupMember.group_id) == group_id))
    session.delete(group)
    record_audit(session, actor, "station_group.delete", "station_group", str(group_id))
    session.commit()


# ------------------------------------------------------------------ approval rules


@router.get("/approval-rules", response_model=list[ApprovalRulePublic])
def read_approval_rules(session: SessionDep, actor: ActorDep) -> list[ApprovalRule]:
    authorize(actor, Action.AREA_READ, None, session)
    scope = visible_areas(actor, Action.AREA_READ, session)
    rules = session.exec(
        select(ApprovalRule)
        .where(col(ApprovalRule.area_code).in_(scope))
        .order_by(col(ApprovalRule.area_code))
    )
    return list(rules.all())


@router.put("/approval-rules/{area_code}", response_model=ApprovalRulePublic)
def set_approval_rule(
    area_code: str,
    body: ApprovalRuleBody,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
) -> ApprovalRule:
    """Who approves the programmes of ``area_code`` (and below): approvers over
    ``approver_area_code``, which must be the area itself or one above it."""
    if session.get(Area, area_code) is None:
        raise HTTPException(404, f"area {area_code!r} does not exist")
    authorize(
        actor,
        Action.USER_MANAGE,
        [area_code],
        session,
        object_type="approval_rule",
        object_id=area_code,
    )
    if body.approver_area_code not in ancestry(session, area_code):
        raise HTTPException(
            422,
            f"approver_area_code: {body.approver_area_code!r} is not {area_code} or an area "
            "above it",
        )
    rule = session.get(ApprovalRule, area_code) or ApprovalRule(
        area_code=area_code, approver_area_code=body.approver_area_code, updated_by=actor.name
    )
    before = {"approver_area_code": rule.approver_area_code}
    rule.approver_area_code = body.approver_area_code
    rule.updated_by = actor.name
    rule.updated_at = _now(context)
    session.add(rule)
    record_audit(
        session,
        actor,
        "approval_rule.set",
        "approval_rule",
        area_code,
        before=before,
        after={"approver_area_code": body.approver_area_code},
    )
    session.commit()
    session.refresh(rule)
    return rule
