"""The server's own health: broker link and ingest counters, for technicians and probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.api.deps import ContextDep, SessionDep
from server.auth.deps import ActorDep, authorize
from server.auth.permissions import Action

router = APIRouter(prefix="/system", tags=["system"])


@router.get("")
def read_system(context: ContextDep, session: SessionDep, actor: ActorDep) -> dict[str, Any]:
    authorize(actor, Action.SYSTEM_READ, None, session)
    link = context.link
    return {
        "mqtt": {
            "enabled": link is not None,
            "connected": link.connected if link is not None else None,
            "backlog": link.backlog() if link is not None else 0,
        },
        "ingest": context.ingestor.stats.as_dict(),
        "health": context.health.as_dict(),
        "signing_key": context.keys.signing_key.kid,
    }
