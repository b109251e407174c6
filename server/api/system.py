"""The server's own health: broker link and ingest counters, for technicians and probes.

``queues`` shows each bounded queue between a producer and a worker thread: ``queued``
now (memory and spill), ``max`` (its setting), ``peak``, what it ``dropped`` by kind
(only health reports and alarm notifications are ever dropped), what spilled to disk,
and what was ``retried`` one by one or ``failed`` even alone. ``cluster`` says which
replica this is (its MQTT client id), whether it leads and how often it rolled the plans.
``ingest_workers`` lists the ``loaxa worker ingest`` processes (from their rows in the
database) and sums their health and event counters.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlmodel import select

from server.api.deps import ContextDep, SessionDep
from server.auth.deps import ActorDep, authorize
from server.auth.permissions import Action
from server.fleet.models import IngestWorkerState
from server.fleet.worker import worker_totals

WORKER_FRESH_S = 10.0
"""An ingest worker that has not reported for this long is shown as not alive."""

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
            "broker_dropped": link.broker_dropped if link is not None else None,
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
        "ingest_workers": {
            "enabled": context.settings.ingest_workers,
            **worker_totals(
                list(session.exec(select(IngestWorkerState)).all()),
                context.clock(),
                WORKER_FRESH_S,
            ),
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
