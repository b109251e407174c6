"""Remote actions on one station: send a signed command, then watch for its answer."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from sqlmodel import col, select

from loaxa_protocol.commands import TECHNICIAN_COMMANDS
from server.api.deps import ContextDep, DbId, SessionDep
from server.api.stations import read_station_or_404
from server.auth.deps import ActorDep, authorize, client_ip
from server.auth.permissions import Action
from server.commands.models import CommandCreate, CommandPublic, StationCommand
from server.commands.service import CommandError

router = APIRouter(prefix="/stations/{station_id}/commands", tags=["commands"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=CommandPublic)
def create_command(
    station_id: str,
    body: CommandCreate,
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: ActorDep,
) -> StationCommand:
    """Accepted, not done: the station answers on its own; poll the command for the result."""
    station = read_station_or_404(session, station_id)
    authorize(
        actor, Action.STATION_COMMAND, [station.area_code], session,
        object_type="station", object_id=station_id,
    )  # fmt: skip
    if body.name not in TECHNICIAN_COMMANDS:
        known = ", ".join(sorted(TECHNICIAN_COMMANDS))
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"name {body.name!r} is not one of: {known}"
        )
    try:
        return context.commands.send(
            session, station_id, body.name, body.args, actor, client_ip(request)
        )
    except CommandError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@router.get("", response_model=list[CommandPublic])
def read_commands(station_id: str, session: SessionDep, actor: ActorDep) -> list[StationCommand]:
    station = read_station_or_404(session, station_id)
    authorize(actor, Action.STATION_READ, [station.area_code], session)
    rows = session.exec(
        select(StationCommand)
        .where(StationCommand.station_id == station_id)
        .order_by(col(StationCommand.id).desc())
        .limit(50)
    )
    return list(rows.all())


@router.get("/{command_id}", response_model=CommandPublic)
def read_command(
    station_id: str, command_id: DbId, session: SessionDep, actor: ActorDep
) -> StationCommand:
    station = read_station_or_404(session, station_id)
    authorize(actor, Action.STATION_READ, [station.area_code], session)
    row = session.get(StationCommand, command_id)
    if row is None or row.station_id != station_id:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"command {command_id} of {station_id!r} does not exist"
        )
    return row
