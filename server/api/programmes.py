"""Programmes over HTTP: parse, call ``server.programmes``, answer.

The rules (what a save checks and in which order, who approves, how a batch is all or
nothing) live in the service: ``server.programmes.editing`` (save, approve),
``server.programmes.batch``, ``server.programmes.groups`` and ``server.programmes.views``.
Here its refusals become HTTP answers: a ``ProgrammeError`` with its own status, a
timing that cannot be scheduled 422, a state that does not allow the action 409.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse

from server.api.deps import ContextDep, DbId, SessionDep
from server.auth.deps import ActorDep
from server.programmes import batch, editing, groups, views
from server.programmes.access import visible_programme
from server.programmes.approval import ApprovalAction, ApprovalError, ProgrammeState
from server.programmes.models import (
    AcceptBody,
    ApprovalRule,
    ApprovalRuleBody,
    ApprovalRulePublic,
    BatchResult,
    OccurrencePublic,
    Programme,
    ProgrammeBatch,
    ProgrammeDetail,
    ProgrammePublic,
    RejectBody,
    StationGroupCreate,
    StationGroupPublic,
    StationGroupUpdate,
    Timeline,
)
from server.programmes.recurrence import RecurrenceError
from server.programmes.service import ProgrammeError
from server.programmes.spec import ProgrammeSpec

router = APIRouter(tags=["programmes"])


def http_error(exc: ProgrammeError | RecurrenceError | ApprovalError) -> HTTPException:
    """The service's refusal as an HTTP answer with the same words."""
    if isinstance(exc, ApprovalError):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    if isinstance(exc, ProgrammeError):
        return HTTPException(exc.status, str(exc))
    return HTTPException(422, str(exc))


@contextmanager
def answering() -> Iterator[None]:
    """Turn the service's refusals into HTTP answers (the cause kept for the pages)."""
    try:
        yield
    except (ProgrammeError, RecurrenceError, ApprovalError) as exc:
        raise http_error(exc) from exc


# ------------------------------------------------------------------ programmes


@router.post("/programmes", status_code=status.HTTP_201_CREATED, response_model=ProgrammeDetail)
def create_programme(
    body: ProgrammeSpec, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    """Save a new programme as a draft (it airs once submitted and approved)."""
    with answering():
        return editing.create(session, context, actor, body)


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
    try:
        return batch.apply_batch(session, context, actor, body)
    except batch.BatchRefused as refused:
        return JSONResponse(
            status_code=refused.status,
            content={
                "detail": str(refused),
                "errors": [r.public().model_dump() for r in refused.refusals],
            },
        )


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
    with answering():
        return views.list_programmes(session, actor, key, state, proposals, limit)


@router.get("/programmes/{programme_id}", response_model=ProgrammeDetail)
def read_programme(
    programme_id: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    with answering():
        programme = visible_programme(session, actor, programme_id)
        return views.detail(session, programme, context.clock())


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
    with answering():
        return editing.update(session, context, actor, programme_id, body)


@router.post("/programmes/{programme_id}/submit", response_model=ProgrammeDetail)
def submit_programme(
    programme_id: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    """Ask for approval (draft or rejected → submitted)."""
    with answering():
        return editing.move(session, context, actor, programme_id, ApprovalAction.SUBMIT)


@router.post("/programmes/{programme_id}/approve", response_model=ProgrammeDetail)
def approve_programme(
    programme_id: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    """Put it on the air: its stations' plans are republished at once.

    Needs ``programme.approve`` over the area the approval rule names (default: the
    programme's own area), by someone other than the submitter.
    """
    with answering():
        return editing.move(session, context, actor, programme_id, ApprovalAction.APPROVE)


@router.post("/programmes/{programme_id}/reject", response_model=ProgrammeDetail)
def reject_programme(
    programme_id: DbId,
    body: RejectBody,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
) -> ProgrammeDetail:
    """Send it back with a reason the operator sees."""
    with answering():
        return editing.move(
            session, context, actor, programme_id, ApprovalAction.REJECT, body.reason
        )


@router.post("/programmes/{programme_id}/archive", response_model=ProgrammeDetail)
def archive_programme(
    programme_id: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ProgrammeDetail:
    """Take it off the air for good (kept for the record)."""
    with answering():
        return editing.move(session, context, actor, programme_id, ApprovalAction.ARCHIVE)


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
    with answering():
        return editing.accept_proposal(
            session, context, actor, programme_id, body.area_code, body.key
        )


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
    with answering():
        return views.occurrences(session, actor, programme_id, start or context.clock(), days)


@router.get("/stations/{station_id}/timeline", response_model=Timeline)
def read_timeline(
    station_id: str,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
    day: Annotated[date | None, Query(alias="date")] = None,
) -> Timeline:
    """What the station plays on a local day (default today), drafts marked off-air."""
    with answering():
        return views.timeline(session, actor, station_id, day, context.clock())


# ------------------------------------------------------------------ groups


@router.get("/station-groups", response_model=list[StationGroupPublic])
def read_groups(session: SessionDep, actor: ActorDep) -> list[StationGroupPublic]:
    with answering():
        return groups.list_groups(session, actor)


@router.post(
    "/station-groups", status_code=status.HTTP_201_CREATED, response_model=StationGroupPublic
)
def create_group(
    body: StationGroupCreate, session: SessionDep, context: ContextDep, actor: ActorDep
) -> StationGroupPublic:
    """A named set of stations, e.g. the loudspeakers along the market road."""
    with answering():
        group, affected = groups.create_group(
            session, actor, context.clock(), body.name, body.title, body.area_code, body.station_ids
        )
    editing.republish(context, session, affected)
    return groups.group_public(session, group)


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
    with answering():
        group, affected = groups.update_group(
            session, actor, context.clock(), group_id, body.title, body.station_ids
        )
    editing.republish(context, session, affected)
    return groups.group_public(session, group)


@router.delete("/station-groups/{group_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_group(group_id: DbId, session: SessionDep, actor: ActorDep) -> None:
    """Remove a group no live programme names (change their targets first)."""
    with answering():
        groups.delete_group(session, actor, group_id)


# ------------------------------------------------------------------ approval rules


@router.get("/approval-rules", response_model=list[ApprovalRulePublic])
def read_approval_rules(session: SessionDep, actor: ActorDep) -> list[ApprovalRule]:
    with answering():
        return groups.list_approval_rules(session, actor)


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
    with answering():
        return groups.set_approval_rule(
            session, actor, context.clock(), area_code, body.approver_area_code
        )
