"""Station releases and rollouts: upload a signed release, roll it out by area, stop it.

A release's files are the one thing here a station fetches: without an account, since
they are the station's published software and a station installs nothing its signed
manifest does not name (``loaxa_protocol.release``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select

from server.api.deps import ContextDep, DbId, SessionDep
from server.auth.deps import ActorDep, authorize, client_ip, visible_areas
from server.auth.permissions import Action
from server.updates.models import Release, Rollout, RolloutMember
from server.updates.service import UpdateError

router = APIRouter(tags=["updates"])

RELEASE_MAX_FILES = 100


class ReleasePublic(BaseModel):
    id: int
    version: str
    kid: str
    size_bytes: int
    file_count: int
    created_by: str
    created_at: datetime


class RolloutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release_id: int = Field(ge=1)
    area_code: str = Field(description="every station in this area's subtree")
    canary_pct: int = Field(default=10, ge=0, le=100, description="at least one canary")
    canary_minutes: float = Field(
        default=30, ge=0, le=7 * 24 * 60, description="canaries healthy this long promote it"
    )
    health_deadline_s: int = Field(default=180, ge=5, le=3600)


class RolloutStop(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=300)


class MemberPublic(BaseModel):
    station_id: str
    canary: bool
    state: str
    version_before: str | None
    sends: int
    updated_at: datetime | None
    reason: str | None
    detail: str | None


class RolloutPublic(BaseModel):
    id: int
    release_id: int
    version: str
    area_code: str
    canary_pct: int
    canary_minutes: float
    health_deadline_s: int
    state: str
    detail: str | None
    started_by: str
    started_at: datetime
    promoted_at: datetime | None
    ended_at: datetime | None
    stopped_by: str | None
    counts: dict[str, int] = Field(description="stations per state")
    members: list[MemberPublic] = Field(default_factory=list)


def rollout_public(session: Session, rollout: Rollout, members: bool = True) -> RolloutPublic:
    release = session.get(Release, rollout.release_id)
    rows = session.exec(select(RolloutMember).where(RolloutMember.rollout_id == rollout.id)).all()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    assert rollout.id is not None and release is not None
    return RolloutPublic(
        **rollout.model_dump(exclude={"id"}),
        id=rollout.id,
        version=release.version,
        counts=counts,
        members=[MemberPublic(**r.model_dump()) for r in rows] if members else [],
    )


def _rollout_or_404(session: Session, rollout_id: int) -> Rollout:
    rollout = session.get(Rollout, rollout_id)
    if rollout is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"rollout {rollout_id} does not exist")
    return rollout


@router.get("/releases", response_model=list[ReleasePublic])
def read_releases(session: SessionDep, actor: ActorDep) -> list[Release]:
    authorize(actor, Action.STATION_READ, None, session)
    return list(session.exec(select(Release).order_by(col(Release.id).desc())).all())


@router.post("/releases", status_code=status.HTTP_201_CREATED, response_model=ReleasePublic)
async def create_release(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
    manifest: Annotated[str, Form(description="the signed manifest (loaxa release sign)")],
    files: Annotated[list[UploadFile], File(description="every file the manifest names")],
) -> Release:
    """Store a release signed by the release key; refused if any file differs from it."""
    authorize(actor, Action.STATION_UPDATE, None, session, object_type="release")
    if len(files) > RELEASE_MAX_FILES:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "too many files")
    data = {f.filename or "": await f.read() for f in files}
    try:
        return context.updates.add_release(session, manifest, data, actor, client_ip(request))
    except UpdateError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@router.head("/releases/{version}/files/{name}", response_class=FileResponse,
             operation_id="head_release_file")  # fmt: skip
@router.get("/releases/{version}/files/{name}", response_class=FileResponse,
            operation_id="read_release_file")  # fmt: skip
def read_release_file(version: str, name: str, context: ContextDep) -> FileResponse:
    """A release's file, for stations (HTTP Range: a cut download resumes)."""
    path = context.updates.file_path(version, name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"release {version} has no file {name!r}")
    return FileResponse(
        path, media_type="application/octet-stream", headers={"cache-control": "max-age=86400"}
    )


@router.get("/rollouts", response_model=list[RolloutPublic])
def read_rollouts(session: SessionDep, actor: ActorDep) -> list[RolloutPublic]:
    authorize(actor, Action.STATION_READ, None, session)
    areas = visible_areas(actor, Action.STATION_READ, session)
    rows = session.exec(
        select(Rollout).where(col(Rollout.area_code).in_(areas)).order_by(col(Rollout.id).desc())
    ).all()
    return [rollout_public(session, r, members=False) for r in rows]


@router.post("/rollouts", status_code=status.HTTP_201_CREATED, response_model=RolloutPublic)
def create_rollout(
    body: RolloutCreate, request: Request, session: SessionDep, context: ContextDep,
    actor: ActorDep,
) -> RolloutPublic:  # fmt: skip
    """Start: the canaries get the release at the next tick; the rest once they are proven."""
    authorize(actor, Action.STATION_UPDATE, [body.area_code], session, object_type="rollout")
    try:
        rollout = context.updates.start_rollout(
            session, body.release_id, body.area_code, actor,
            canary_pct=body.canary_pct, canary_minutes=body.canary_minutes,
            health_deadline_s=body.health_deadline_s, source_ip=client_ip(request),
        )  # fmt: skip
    except UpdateError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return rollout_public(session, rollout)


@router.get("/rollouts/{rollout_id}", response_model=RolloutPublic)
def read_rollout(rollout_id: DbId, session: SessionDep, actor: ActorDep) -> RolloutPublic:
    rollout = _rollout_or_404(session, rollout_id)
    authorize(actor, Action.STATION_READ, [rollout.area_code], session)
    return rollout_public(session, rollout)


@router.post("/rollouts/{rollout_id}/stop", response_model=RolloutPublic)
def stop_rollout(
    rollout_id: DbId, body: RolloutStop, request: Request, session: SessionDep,
    context: ContextDep, actor: ActorDep,
) -> RolloutPublic:  # fmt: skip
    rollout = _rollout_or_404(session, rollout_id)
    authorize(
        actor, Action.STATION_UPDATE, [rollout.area_code], session,
        object_type="rollout", object_id=str(rollout_id),
    )  # fmt: skip
    try:
        rollout = context.updates.stop_rollout(
            session, rollout_id, actor, body.reason, client_ip(request)
        )
    except UpdateError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return rollout_public(session, rollout)
