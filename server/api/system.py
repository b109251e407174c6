"""The server's own health: broker link and ingest counters, for technicians and probes.

``queues`` shows each bounded queue between a producer and a worker thread: ``queued``
now (memory and spill), ``max`` (its setting), ``peak``, what it ``dropped`` by kind
(only health reports and alarm notifications are ever dropped), what spilled to disk,
and what was ``retried`` one by one or ``failed`` even alone. ``cluster`` says which
replica this is (its MQTT client id), whether it leads and how often it rolled the plans.
"""

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
        "queues": {
            "fleet_ingest": (
                {
                    **link.queue_stats(),
                    "retried": context.ingestor.stats.retried,
                    "failed": context.ingestor.stats.failed,
                }
                if link is not None
                else None
            ),
            "health_writer": context.health.ingest.queue_stats(),
            "alarm_notifier": context.health.notifier.queue_stats(),
        },
        "media": context.media.as_dict(),
        "intrusions": context.ingestor.intrusions,
        "signing_key": context.keys.signing_key.kid,
        "cluster": {
            "replica": context.settings.mqtt_client_id,
            "leader": context.leadership.leading if context.leadership is not None else None,
            "terms": context.leadership.terms if context.leadership is not None else 0,
            "planner_rolls": context.planner.rolls if context.planner is not None else 0,
        },
    }
