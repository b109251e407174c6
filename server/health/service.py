"""Station health as one running service: the writer, the notifier and the periodic jobs.

The only module that knows APScheduler. A ``BackgroundScheduler`` with the default
in-memory job store runs three interval jobs; nothing needs persisting, because every
job is re-added at start-up and each one catches up by itself (aggregation resumes from
the last aggregated hour, pruning from the retention cut-offs, the fleet check from the
current state):

- ``fleet-check`` every ``health_check_interval_s``: queues the offline check and every
  alarm rule on the health writer (which owns all alarm writes);
- ``aggregate`` and ``prune`` every ``health_maintenance_min``, on the scheduler's thread.

These jobs concern the whole fleet, so with several server replicas only the leader runs
them (``server.cluster.leader``): ``start(leading=False)`` keeps them paused until
``lead``; ``follow`` pauses them again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from server.db import utcnow
from server.health.ingest import HealthIngest, HealthStats
from server.health.notify import Notifier
from server.health.store import aggregate_complete_hours, prune
from server.settings import Settings

log = logging.getLogger(__name__)


class HealthService:
    """Owns the health writer, the alarm notifier and the scheduler; see the module doc.

    ``submit`` / ``evaluate_soon`` feed the writer, ``stats`` and ``drain`` serve the
    ``/api/v1/system`` page, tests and ``loaxa bench health``.
    """

    def __init__(
        self, engine: Engine, settings: Settings, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self.notifier = Notifier(settings)
        self.ingest = HealthIngest(engine, settings, clock, on_changes=self.notifier.send)
        self._scheduler: BackgroundScheduler | None = None

    @property
    def stats(self) -> HealthStats:
        return self.ingest.stats

    def submit(self, station_id: str, payload: bytes) -> None:
        self.ingest.submit(station_id, payload)

    def evaluate_soon(self, station_ids: set[str]) -> None:
        self.ingest.evaluate_soon(station_ids)

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until every report submitted so far is written (and its alarms evaluated)."""
        return self.ingest.drain(timeout_s)

    def as_dict(self) -> dict[str, int]:
        """Counters and queue depth for ``/api/v1/system``."""
        return {
            **self.stats.as_dict(),
            "backlog": self.ingest.backlog(),
            "notifications_sent": self.notifier.sent,
            "notifications_failed": self.notifier.failed,
        }

    # ------------------------------------------------------------- lifecycle

    def start(self, leading: bool = True) -> None:
        self.notifier.start()
        self.ingest.start()
        settings = self._settings
        scheduler = BackgroundScheduler(timezone=UTC)
        now = datetime.now(UTC)
        scheduler.add_job(
            self.ingest.check_fleet_soon,
            "interval",
            seconds=settings.health_check_interval_s,
            id="fleet-check",
            next_run_time=now + timedelta(seconds=settings.health_check_interval_s),
            coalesce=True,
            max_instances=1,
        )
        scheduler.add_job(
            self.run_maintenance,
            "interval",
            minutes=settings.health_maintenance_min,
            id="aggregate-and-prune",
            next_run_time=now + timedelta(seconds=5),
            coalesce=True,
            max_instances=1,
        )
        scheduler.start(paused=not leading)
        self._scheduler = scheduler

    def lead(self) -> None:
        """This replica leads: run the fleet check and the maintenance here."""
        if self._scheduler is not None:
            self._scheduler.resume()

    def follow(self) -> None:
        if self._scheduler is not None:
            self._scheduler.pause()

    def stop(self) -> None:
        """Stop the jobs, write what is queued, then stop notifying."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        self.ingest.stop()
        self.notifier.stop()

    def run_maintenance(self) -> None:
        """Aggregate complete hours, then prune past retention (a periodic job)."""
        now = self._clock()
        try:
            hours = aggregate_complete_hours(self._engine, now, self._settings)
            raw, hourly = prune(self._engine, now, self._settings)
        except Exception:  # the next run catches up; never let the scheduler log a traceback storm
            log.exception("health aggregation or pruning failed")
            return
        if hours or raw or hourly:
            log.info(
                "health history: %s hours aggregated, %s samples and %s hourly rows pruned",
                hours,
                raw,
                hourly,
            )
