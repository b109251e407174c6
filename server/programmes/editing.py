"""Saving programmes and moving them through approval: what the API and the pages call.

Saving checks, in this order, and changes nothing on any error: priority allowed for
the role, targets known and inside the caller's area (403 naming those outside), timing
that fires (and not absurdly often), audio that exists, streams that are audio, speech
that fits its slot, and no overlap at the same priority on a station (409 naming both
items and the local time). Only approved programmes air; any change republishes exactly
the stations whose plans it touches. Approving keeps a copy of what was approved
(``approved_spec``/``approved_stations``) so the next approver sees what changed.

Refusals are :class:`ProgrammeError` (with its HTTP status), :class:`RecurrenceError`
(422) or :class:`ApprovalError` (409); the caller decides how to answer them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, delete, select

from server.audit.log import record_audit
from server.auth.actor import Actor
from server.auth.permissions import CREATE_ACTION, Action
from server.context import ServerContext
from server.models import Area, Station
from server.programmes.access import (
    approver_area,
    authorize_targets,
    get_programme,
    permit,
    username,
)
from server.programmes.approval import (
    OCCUPYING,
    ON_AIR,
    ApprovalAction,
    ProgrammeState,
    transition,
)
from server.programmes.models import Programme, ProgrammeDetail, ProgrammeStation
from server.programmes.probe import policy_from, probe_stream
from server.programmes.reach import clear_holds, retry_holds, settle_reach
from server.programmes.recurrence import validate_timing
from server.programmes.service import (
    GroupView,
    ProgrammeError,
    check_overlaps,
    check_sources,
    check_speech_fits,
    hold_schedule,
    resolve_targets,
    segments_of,
    stations_of,
    timing_of,
)
from server.programmes.spec import ProgrammeSpec, StreamItem, TtsItem
from server.programmes.timeline import Segment, total_ms
from server.programmes.views import detail
from server.tts.errors import TtsEngineMissing, TtsError


@dataclass
class Prepared:
    """A spec that passed every check but the overlaps, with what the write needs."""

    spec: ProgrammeSpec
    rendered: dict[str, int]
    """item number → audio id of its speech"""
    segments: list[Segment]
    stations: set[str]
    warnings: list[str]


def spec_json(spec: ProgrammeSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude_defaults=False)


def republish(context: ServerContext, session: Session, stations: Iterable[str]) -> None:
    if context.planner is not None:
        context.planner.republish(session, stations)
    else:
        context.publisher.publish_stations(session, stations)


# ------------------------------------------------------------------ checks


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
    authorize_targets(session, actor, spec, resolved)
    validate_timing(timing_of(spec), context.clock())
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
        context.clock(),
    )
    return ready


# ------------------------------------------------------------------ writes


def _save_stations(session: Session, programme_id: int, stations: set[str]) -> None:
    session.exec(delete(ProgrammeStation).where(col(ProgrammeStation.programme_id) == programme_id))
    for station_id in sorted(stations):
        session.add(ProgrammeStation(programme_id=programme_id, station_id=station_id))


def _key_taken(session: Session, key: str) -> None:
    taken = session.exec(select(Programme.id).where(Programme.key == key)).first()
    if taken is not None:
        raise ProgrammeError(
            f"key {key!r} is taken by programme {taken}; PUT /programmes/{taken} to change it",
            409,
        )


def write_new(
    session: Session, actor: Actor, spec: ProgrammeSpec, ready: Prepared, now: datetime
) -> Programme:
    """Insert a checked new programme (a draft) and its stations; the caller commits."""
    programme = Programme(
        key=spec.key,
        title=spec.title,
        area_code=spec.area,
        priority=spec.priority,
        proposal=spec.proposal,
        spec=spec_json(spec),
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


def write_update(
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
    programme.spec = spec_json(spec)
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


def submit_now(session: Session, actor: Actor, programme: Programme, now: datetime) -> None:
    """Mark a draft or rejected programme submitted (no checks: a batch has made them)."""
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


# ------------------------------------------------------------------ one programme


def create(
    session: Session, context: ServerContext, actor: Actor, spec: ProgrammeSpec
) -> ProgrammeDetail:
    """Save a new programme as a draft (it airs once submitted and approved)."""
    ready = prepare(session, context, actor, spec, None)
    _key_taken(session, spec.key)
    now = context.clock()
    programme = write_new(session, actor, spec, ready, now)
    session.commit()
    session.refresh(programme)
    return detail(session, programme, now, ready.warnings)


def update(
    session: Session,
    context: ServerContext,
    actor: Actor,
    programme_id: int,
    spec: ProgrammeSpec,
) -> ProgrammeDetail:
    """Replace the definition. The same spec again changes nothing (``changed`` false);
    a real change sends the programme back to draft, off the air until re-approved."""
    programme = get_programme(session, programme_id)
    permit(
        actor,
        Action.PROGRAMME_EDIT,
        [programme.area_code],
        session,
        object_type="programme",
        object_id=str(programme_id),
    )
    now = context.clock()
    if spec.key != programme.key:
        raise ProgrammeError(
            f"key: {spec.key!r} differs from this programme's key {programme.key!r}"
        )
    if spec_json(spec) == programme.spec:
        return detail(session, programme, now, changed=False)
    transition(programme.state, ApprovalAction.EDIT)
    ready = prepare(session, context, actor, spec, programme)
    old_stations = stations_of(session, programme_id)
    affected = write_update(session, actor, programme, spec, ready, now)
    session.commit()
    # Slots it left (another time, other stations) may let a held programme in.
    affected |= retry_holds(session, old_stations, now)
    session.commit()
    republish(context, session, affected)
    session.refresh(programme)
    return detail(session, programme, now, ready.warnings)


def move(
    session: Session,
    context: ServerContext,
    actor: Actor,
    programme_id: int,
    action: ApprovalAction,
    reason: str | None = None,
) -> ProgrammeDetail:
    """Submit, approve, reject (with ``reason``) or archive.

    Approving needs ``programme.approve`` over the area the approval rule names (default:
    the programme's own area), by someone other than the submitter; the others need
    ``programme.edit`` over the programme's area.
    """
    programme = get_programme(session, programme_id)
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
    permit(actor, permission, [area], session, object_type="programme", object_id=str(programme_id))
    hold_schedule(session)  # what follows reads the state and the slots as they are now
    session.refresh(programme)
    new_state = transition(programme.state, action)
    if (
        action == ApprovalAction.APPROVE
        and programme.submitted_by is not None
        and username(actor) == programme.submitted_by.split("/", 1)[0]
    ):
        raise ProgrammeError(
            f"permission denied: {Action.PROGRAMME_APPROVE} — {username(actor)} submitted this "
            "programme; a different approver must approve it",
            403,
        )
    takes_slot_again = (
        action == ApprovalAction.SUBMIT and programme.state == ProgrammeState.REJECTED
    )
    now = context.clock()
    if (action == ApprovalAction.APPROVE or takes_slot_again) and not programme.proposal:
        # Still true now? Time has passed since the save: a one-off may be in the past, and
        # a one-off broadcast may have been booked into the slot since. A rejected
        # programme left its slot, which another may have taken: submitting it again
        # takes the slot back only if it is still free.
        spec = ProgrammeSpec.model_validate(programme.spec)
        validate_timing(timing_of(spec), now)
        check_overlaps(
            session,
            programme_id,
            spec,
            segments_of(session, spec, programme.rendered),
            stations_of(session, programme_id),
            now,
        )
    was_on_air = programme.state in ON_AIR
    before = programme.state
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
    if action == ApprovalAction.APPROVE:
        # What was signed off, for the next approver to compare against.
        programme.approved_spec = programme.spec
        programme.approved_stations = sorted(stations_of(session, programme_id))
        programme.approved_at = now
        session.add(programme)
    session.commit()
    if (was_on_air or new_state in ON_AIR) and not programme.proposal:
        affected |= stations_of(session, programme_id)
    if new_state not in OCCUPYING:
        # Its slots are free now: a programme held there may take them.
        affected |= retry_holds(session, stations_of(session, programme_id), now)
        session.commit()
    republish(context, session, affected)
    session.refresh(programme)
    return detail(session, programme, now)


def accept_proposal(
    session: Session,
    context: ServerContext,
    actor: Actor,
    programme_id: int,
    area_code: str,
    key: str | None,
) -> ProgrammeDetail:
    """Take a province proposal into a commune's programme: a draft copy owned by the
    commune, reaching the commune's stations among the proposal's targets."""
    proposal = get_programme(session, programme_id)
    permit(
        actor,
        Action.PROGRAMME_EDIT,
        [area_code],
        session,
        object_type="programme",
        object_id=str(programme_id),
    )
    if not proposal.proposal:
        raise ProgrammeError(f"programme {programme_id} is not a proposal")
    reached = session.exec(
        select(Station.id)
        .join(ProgrammeStation, col(ProgrammeStation.station_id) == col(Station.id))
        .where(ProgrammeStation.programme_id == programme_id)
        .where(Station.area_code == area_code)
    ).all()
    if not reached:
        raise ProgrammeError(f"proposal {programme_id} reaches no station in area {area_code}")
    spec = ProgrammeSpec.model_validate(proposal.spec)
    data = spec.model_dump()
    data.update(
        key=key or f"{spec.key}.{area_code}"[:63],
        area=area_code,
        proposal=False,
        targets={"stations": sorted(reached)},
    )
    try:
        copy = ProgrammeSpec.model_validate(data)
    except ValidationError as exc:
        raise ProgrammeError(f"key: {exc.errors()[0]['msg']}") from exc
    created = create(session, context, actor, copy)
    programme = get_programme(session, created.id)
    programme.proposal_of = programme_id
    session.add(programme)
    session.commit()
    return detail(session, programme, context.clock())
