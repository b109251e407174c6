"""Everything one running server holds, built by the app's lifespan and shared by routes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from server.alerts.service import AlertService
from server.audio.gate import MediaGate
from server.audio.store import AudioStore
from server.cluster.leader import Leadership
from server.commands.service import CommandService
from server.fleet.bus import Bus
from server.fleet.ingest import Ingestor
from server.fleet.link import FleetLink
from server.health.service import HealthService
from server.keys import ServerKeys
from server.live.service import LiveService
from server.planning.publisher import PlanPublisher
from server.programmes.planner import ProgrammePlanner
from server.settings import Settings
from server.tts.service import TtsService
from server.updates.service import UpdateService


@dataclass
class ServerContext:
    settings: Settings
    engine: Engine
    keys: ServerKeys
    store: AudioStore
    bus: Bus
    publisher: PlanPublisher
    ingestor: Ingestor
    commands: CommandService
    health: HealthService
    clock: Callable[[], datetime]
    tts: TtsService
    alerts: AlertService
    updates: UpdateService
    live: LiveService = field(kw_only=True)
    link: FleetLink | None = None
    planner: ProgrammePlanner | None = None
    leadership: Leadership | None = None
    """whether this replica runs the fleet-wide periodic jobs (set by the lifespan)"""
    media: MediaGate = field(init=False)
    """bounds concurrent audio conversions (settings ``media_jobs``, ``media_queue``)"""

    def __post_init__(self) -> None:
        self.media = MediaGate(self.settings.media_jobs, self.settings.media_queue)
