"""Live broadcasts: create a session (authorised), stream Opus frames over a WebSocket.

The WebSocket is not authenticated by cookie (a cross-site page could open one with
the operator's cookie); it presents the one-time token the authorised ``POST`` returned.
Each binary message is one Opus packet behind a 10-byte header::

    capture time, ms since the Unix epoch (u64, big-endian) · samples at 48 kHz (u16)

A text message ``stop`` ends the session; so does closing the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlmodel import col, select

from server.api.deps import ContextDep, SessionDep
from server.auth.deps import ActorDep, authorize, client_ip
from server.auth.permissions import Action
from server.live.models import LiveSession
from server.live.service import LiveError, as_run
from server.models import Station
from server.programmes.service import ProgrammeError, resolve_targets
from server.programmes.spec import Targets

log = logging.getLogger(__name__)

router = APIRouter(prefix="/live", tags=["live"])

FRAME_HEADER = struct.Struct(">QH")
QUIET_CHECK_S = 2.0


class LiveCreate(BaseModel):
    targets: Targets
    title: str = Field(default="", max_length=200)


class LiveCreated(BaseModel):
    id: str
    token: str = Field(description="one-time: open /live/sessions/{id}/ws?token=… within 60 s")
    station_ids: list[str]
    ends_by: datetime
    warmup_ms: int = Field(description="amplifier warm-up (with the chime) before speech sounds")


class LivePublic(BaseModel):
    id: str
    title: str
    created_by: str
    station_ids: list[str]
    started_at: datetime | None
    ends_by: datetime
    ended_at: datetime | None
    end_reason: str | None
    frames: int
    audio_id: int | None
    on_air: bool
    as_run: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)


class _Spec:
    """What ``resolve_targets`` reads of a programme: its targets."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets


@router.post("/sessions", status_code=status.HTTP_201_CREATED, response_model=LiveCreated)
def create_session(
    body: LiveCreate, request: Request, session: SessionDep, context: ContextDep, actor: ActorDep
) -> LiveCreated:
    """Pick the stations; the operator may go live only where every one of them lies."""
    try:
        resolved = resolve_targets(session, _Spec(body.targets))  # type: ignore[arg-type]
    except ProgrammeError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    if not resolved.stations:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "targets: no registered station is reached"
        )
    authorize(
        actor, Action.LIVE_BROADCAST, resolved.areas, session,
        object_type="live", object_id=",".join(sorted(resolved.stations))[:200],
    )  # fmt: skip
    try:
        row, token = context.live.create(
            session, actor, resolved.stations, body.targets.model_dump(), body.title,
            client_ip(request),
        )  # fmt: skip
    except LiveError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return LiveCreated(
        id=row.id,
        token=token,
        station_ids=row.station_ids,
        ends_by=row.ends_by,
        warmup_ms=context.settings.amp_lead_ms,
    )


@router.websocket("/sessions/{session_id}/ws")
async def live_socket(websocket: WebSocket, session_id: str, token: str = "") -> None:
    context = websocket.app.state.context
    try:
        on_air = await run_in_threadpool(context.live.open, session_id, token)
    except LiveError as exc:
        await websocket.close(code=4403, reason=str(exc)[:120])
        return
    await websocket.accept()
    reason = "closed"
    try:
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), QUIET_CHECK_S)
            except TimeoutError:
                if context.clock() >= on_air.ends_by:
                    reason = "max_length"
                    break
                continue
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") == "stop":
                reason = "stopped"
                break
            data = message.get("bytes")
            if not data or len(data) <= FRAME_HEADER.size:
                continue
            capture_ms, samples = FRAME_HEADER.unpack_from(data)
            try:
                more = context.live.frame(on_air, capture_ms, samples, data[FRAME_HEADER.size :])
            except LiveError as exc:
                log.warning("live session %s: %s", session_id, exc)
                continue
            if not more:
                reason = "max_length"
                break
    except WebSocketDisconnect:
        pass
    finally:
        await run_in_threadpool(context.live.stop, session_id, reason, on_air.actor)
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()


@router.post("/sessions/{session_id}/stop", response_model=LivePublic)
def stop_session(
    session_id: str, session: SessionDep, context: ContextDep, actor: ActorDep
) -> LivePublic:
    # Stopping is going on air's other half: the same right over every station it reaches.
    row = _read(session, session_id, actor, Action.LIVE_BROADCAST)
    context.live.stop(session_id, "stopped", actor)
    session.refresh(row)
    return _public(row, context, session)


@router.get("/sessions", response_model=list[LivePublic])
def read_sessions(session: SessionDep, context: ContextDep, actor: ActorDep) -> list[LivePublic]:
    """The latest sessions the actor may see (any of their stations), newest first."""
    authorize(actor, Action.STATION_READ, None, session)
    rows = session.exec(
        select(LiveSession).order_by(col(LiveSession.created_at).desc()).limit(50)
    ).all()
    return [_public(r, context, None) for r in rows if _visible(session, r, actor)]


@router.get("/sessions/{session_id}", response_model=LivePublic)
def read_session(
    session_id: str, session: SessionDep, context: ContextDep, actor: ActorDep
) -> LivePublic:
    return _public(_read(session, session_id, actor), context, session)


def _areas(session: SessionDep, row: LiveSession) -> set[str]:
    ids = row.station_ids or []
    return set(session.exec(select(Station.area_code).where(col(Station.id).in_(ids))).all())


def _visible(session: SessionDep, row: LiveSession, actor: ActorDep) -> bool:
    try:
        authorize(actor, Action.STATION_READ, _areas(session, row) or None, session)
    except HTTPException:
        return False
    return True


def _read(
    session: SessionDep, session_id: str, actor: ActorDep, action: Action = Action.STATION_READ
) -> LiveSession:
    row = session.get(LiveSession, session_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"live session {session_id} not found")
    authorize(actor, action, _areas(session, row) or None, session)
    return row


def _public(row: LiveSession, context: ContextDep, session: SessionDep | None) -> LivePublic:
    on_air = {o.session_id for o in context.live.on_air()}
    return LivePublic(
        id=row.id,
        title=row.title,
        created_by=row.created_by,
        station_ids=row.station_ids or [],
        started_at=row.started_at,
        ends_by=row.ends_by,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        frames=row.frames,
        audio_id=row.audio_id,
        on_air=row.id in on_air,
        as_run=as_run(session, row.id) if session is not None else {},
    )
