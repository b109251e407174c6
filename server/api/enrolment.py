"""Enrolment: stations ask to join with a claim code; technicians issue codes and approve.

``requests`` and ``poll`` are the only endpoints a station without credentials may
call. Refusals from one address are counted, in the database so that every replica
counts the same ones: past the limit every ask and poll from it is answered 429 until
the window passes, so codes cannot be guessed at speed.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from loaxa_protocol.enrolment import EnrolmentAsk, SealedBox, key_fingerprint
from server.api.deps import ContextDep, DbId, SessionDep
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize, client_ip, visible_areas
from server.auth.permissions import Action
from server.auth.ratelimit import SignInLimiter
from server.enrolment import service
from server.enrolment.claims import REFUSAL_STATUS, REFUSAL_TEXT
from server.enrolment.models import ClaimCode, EnrolmentRequest, RequestState

router = APIRouter(prefix="/enrolment", tags=["enrolment"])

REFUSALS_PER_ADDRESS = 5
REFUSAL_WINDOW_S = 15 * 60


class ClaimCodesCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    area_code: str = Field(description="the area whose stations may use them")
    count: int = Field(default=1, ge=1, le=service.MAX_CODES_AT_ONCE)
    valid_days: float = Field(default=30, gt=0, le=366, description="expiry, from now")


class ClaimCodesIssued(BaseModel):
    area_code: str
    expires_at: datetime
    codes: list[str] = Field(description="shown once: only their hashes are stored")


class EnrolmentAnswer(BaseModel):
    """What a station polling for its request receives."""

    request_id: int
    state: RequestState
    retry_after_s: int | None = None
    station_id: str | None = None
    sealed: SealedBox | None = Field(
        default=None, description="the station's config, sealed to its own public key"
    )


class PendingRequest(BaseModel):
    id: int
    area_code: str = Field(description="the claim code's area: the station is placed inside it")
    hostname: str
    key_fingerprint: str
    source_ip: str | None
    requested_at: datetime
    last_poll_at: datetime | None


class Approval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    area_code: str = Field(description="the commune or ward it stands in")
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


def _limiter(request: Request) -> SignInLimiter:
    limiter: SignInLimiter = request.app.state.enrolment_limiter
    return limiter


def _station_call(
    request: Request, session: Session, body: EnrolmentAsk, context: ContextDep, call: str
) -> EnrolmentRequest:
    """Run ``ask`` or ``poll``; a refusal is committed (audited) before the error answer."""
    ip = client_ip(request)
    limiter = _limiter(request)
    address = f"enrolment@{ip}"
    wait = limiter.retry_after(address, None)
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many refused claim codes from this address; try again later",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    act = service.ask if call == "ask" else service.poll
    try:
        found = act(session, body, ip, context.clock())
    except service.EnrolmentRefused as refused:
        session.commit()
        limiter.record_failure(address, None)
        raise HTTPException(
            REFUSAL_STATUS[refused.refusal],
            {"reason": refused.refusal.value, "message": REFUSAL_TEXT[refused.refusal]},
        ) from refused
    session.commit()
    session.refresh(found)
    return found


def _answer(found: EnrolmentRequest, response: Response) -> EnrolmentAnswer:
    assert found.id is not None
    state = RequestState(found.state)
    waiting = state is RequestState.PENDING
    if waiting:
        response.status_code = status.HTTP_202_ACCEPTED
    return EnrolmentAnswer(
        request_id=found.id,
        state=state,
        retry_after_s=service.POLL_AFTER_S if waiting else None,
        station_id=found.station_id,
        sealed=service.sealed_answer(found),
    )


@router.post("/requests", response_model=EnrolmentAnswer, status_code=status.HTTP_202_ACCEPTED)
def create_enrolment_request(
    body: EnrolmentAsk,
    request: Request,
    response: Response,
    session: SessionDep,
    context: ContextDep,
) -> EnrolmentAnswer:
    """A new station asks to join with its claim code and public key (no account needed)."""
    return _answer(_station_call(request, session, body, context, "ask"), response)


@router.post("/poll", response_model=EnrolmentAnswer)
def poll_enrolment_request(
    body: EnrolmentAsk,
    request: Request,
    response: Response,
    session: SessionDep,
    context: ContextDep,
) -> EnrolmentAnswer:
    """202 while a technician has not decided; 200 with the sealed config once approved."""
    return _answer(_station_call(request, session, body, context, "poll"), response)


@router.post("/claim-codes", response_model=ClaimCodesIssued, status_code=201)
def create_claim_codes(
    body: ClaimCodesCreate, session: SessionDep, context: ContextDep, actor: ActorDep
) -> ClaimCodesIssued:
    """One-time codes for new stations of an area, to print on their boxes."""
    authorize(
        actor,
        Action.STATION_REGISTER,
        [body.area_code],
        session,
        object_type="area",
        object_id=body.area_code,
    )
    now = context.clock()
    try:
        issued = service.create_claim_codes(
            session, actor, body.area_code, body.count, timedelta(days=body.valid_days), now
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    session.commit()
    return ClaimCodesIssued(
        area_code=body.area_code,
        expires_at=issued[0][0].expires_at,
        codes=[code for _, code in issued],
    )


@router.get("/requests", response_model=list[PendingRequest])
def read_pending_requests(session: SessionDep, actor: ActorDep) -> list[PendingRequest]:
    """Stations waiting for a technician in the caller's areas, oldest first."""
    authorize(actor, Action.STATION_REGISTER, None, session)
    scope = visible_areas(actor, Action.STATION_REGISTER, session)
    return [pending_view(found, area) for found, area in service.pending_requests(session, scope)]


def pending_view(found: EnrolmentRequest, area_code: str) -> PendingRequest:
    assert found.id is not None
    return PendingRequest(
        id=found.id,
        area_code=area_code,
        hostname=found.hostname,
        key_fingerprint=key_fingerprint(found.public_key),
        source_ip=found.source_ip,
        requested_at=found.requested_at,
        last_poll_at=found.last_poll_at,
    )


def read_request_in_scope(
    session: Session, actor: Actor, request_id: int
) -> tuple[EnrolmentRequest, ClaimCode]:
    found = session.get(EnrolmentRequest, request_id)
    claim = session.get(ClaimCode, found.claim_id) if found is not None else None
    if found is None or claim is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"enrolment request {request_id} does not exist"
        )
    authorize(
        actor,
        Action.STATION_REGISTER,
        [claim.area_code],
        session,
        object_type="enrolment",
        object_id=str(request_id),
    )
    return found, claim


@router.post("/requests/{request_id}/approve", response_model=PendingRequest)
def approve_enrolment_request(
    request_id: DbId, body: Approval, session: SessionDep, context: ContextDep, actor: ActorDep
) -> PendingRequest:
    """Place the station and register it; it collects its config at its next poll."""
    found, claim = read_request_in_scope(session, actor, request_id)
    place = service.Placement(body.name, body.area_code, body.latitude, body.longitude)
    try:
        service.approve(session, context, actor, found, place)
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    return pending_view(found, claim.area_code)


@router.post("/requests/{request_id}/reject", response_model=PendingRequest)
def reject_enrolment_request(
    request_id: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> PendingRequest:
    found, claim = read_request_in_scope(session, actor, request_id)
    try:
        service.reject(session, actor, found, context.clock())
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    return pending_view(found, claim.area_code)
