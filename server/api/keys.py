"""The server's signing keys: list what stations trust, rotate the plan key."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, Field
from sqlmodel import col, select

from loaxa_protocol import KeyEntry, TrustUpdate
from server.api.deps import ClockDep, ContextDep, SessionDep
from server.audit.log import record_audit
from server.auth.deps import ActorDep, authorize, client_ip
from server.auth.permissions import Action
from server.models import Area
from server.planning.trust import KeyRotation

router = APIRouter(prefix="/keys", tags=["keys"])

MAX_TRUSTED_KEYS = next(
    int(rule.max_length)
    for rule in TrustUpdate.model_fields["keys"].metadata
    if hasattr(rule, "max_length")
)
"""The most keys one trust update (what a station holds) may carry."""


class KeysPublic(BaseModel):
    signing_kid: str = Field(description="the key that signs plans and commands now")
    trusted: list[KeyEntry] = Field(description="what stations are told to trust")


class RotateRequest(BaseModel):
    grace_hours: int = Field(
        default=168, ge=1, le=24 * 90, description="how long stations keep honouring the old key"
    )


class RotateResult(BaseModel):
    old_kid: str
    new_kid: str
    old_key_valid_until: datetime
    stations_told: int


@router.get("", response_model=KeysPublic)
def read_keys(
    context: ContextDep, session: SessionDep, actor: ActorDep, clock: ClockDep
) -> KeysPublic:
    authorize(actor, Action.SYSTEM_READ, None, session)
    keys = context.keys
    return KeysPublic(signing_kid=keys.signing_key.kid, trusted=keys.trusted_entries(clock()))


@router.post("/rotate", response_model=RotateResult)
def rotate_signing_key(
    body: RotateRequest,
    request: Request,
    context: ContextDep,
    session: SessionDep,
    actor: ActorDep,
    clock: ClockDep,
) -> RotateResult:
    """Every station in every province is affected, so it needs keys.manage at the top."""
    roots = session.exec(select(Area.code).where(col(Area.parent_code).is_(None))).all()
    authorize(actor, Action.KEYS_MANAGE, roots, session, object_type="key", object_id="plan")
    grace = timedelta(hours=body.grace_hours)
    _check_room_for_a_key(context.keys.trusted_entries(clock()))
    rotation = KeyRotation(
        context.engine,
        context.keys,
        context.bus,
        context.publisher,
        clock,
        announce=context.alerts.changes.keys_changed,
    )
    done = rotation.rotate(grace)
    record_audit(
        session,
        actor,
        "keys.rotate",
        "key",
        done.new_kid,
        before={"kid": done.old_kid},
        after={"kid": done.new_kid, "grace_hours": body.grace_hours, "told": done.stations_told},
        source_ip=client_ip(request),
    )
    session.commit()
    return RotateResult(**done._asdict())


def _check_room_for_a_key(trusted: list[KeyEntry]) -> None:
    """Refuse before rotating: a trust update that cannot be sent would leave stations
    refusing every plan signed by a key they were never told about."""
    if len(trusted) < MAX_TRUSTED_KEYS:
        return
    first_free = min(k.valid_until for k in trusted if k.valid_until is not None)
    raise HTTPException(
        status.HTTP_409_CONFLICT,
        f"stations trust at most {MAX_TRUSTED_KEYS} keys and {len(trusted)} are trusted now "
        f"(rotated-out keys stay trusted for their grace period; the first expires at "
        f"{first_free.isoformat()}): rotate again after that",
    )
