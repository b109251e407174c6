"""Areas: the official province → commune tree that broadcasts and alerts target."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlmodel import col, select

from server.api.deps import SessionDep
from server.auth.deps import ActorDep, authorize
from server.auth.permissions import Action
from server.models import Area, AreaPublic

router = APIRouter(prefix="/areas", tags=["areas"])


@router.get("", response_model=list[AreaPublic])
def read_areas(session: SessionDep, actor: ActorDep, parent_code: str | None = None) -> list[Area]:
    """All areas, or the children of ``parent_code``.

    Not cut to the caller's subtree: the tree is official public data, and naming a
    neighbouring commune is how one asks it for help.
    """
    authorize(actor, Action.AREA_READ, None, session)
    query = select(Area).order_by(col(Area.code))
    if parent_code is not None:
        query = query.where(Area.parent_code == parent_code)
    return list(session.exec(query).all())


@router.get("/{code}", response_model=AreaPublic)
def read_area(code: str, session: SessionDep, actor: ActorDep) -> Area:
    authorize(actor, Action.AREA_READ, None, session)
    area = session.get(Area, code)
    if area is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"area {code!r} does not exist")
    return area
