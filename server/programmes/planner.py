"""The planner: the programme work that must happen on time, on a persistent scheduler.

APScheduler 3 with a SQLAlchemy job store in the server's own database, so work
scheduled before a restart (a republish that failed because the broker was away) is
still there after it. Jobs:

- ``roll-forward`` every ``plan_refresh_min``: republish the stations whose 9-day
  window gained an item since their last plan (an occurrence entering the horizon), and
  plans older than half their lifetime (so signed plans and URLs never run out); the
  rest are untouched (``server.planning.rolling``);
- ``prerender`` every ``programme_prerender_min``: make sure the speech of every
  text-to-speech item of a live programme is rendered and stored (re-rendering it if the
  audio store lost it), and republish the stations whose plans it changes;
- ``republish-retry``: a one-shot job left by :meth:`ProgrammePlanner.republish` when
  publishing failed; it retries until it succeeds.

Job functions are module-level (a persistent store keeps a reference, not a closure);
they find their running planner through ``_PLANNERS`` by the data directory.

With several server replicas every one of them keeps a scheduler on the shared job
store, but only the leader's runs jobs (``server.cluster.leader``): the others are
paused, yet still *add* jobs (a follower's failed republish leaves its retry there for
the leader to run). ``start`` begins paused; ``lead`` and ``follow`` switch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server.audio.store import AudioStore
from server.db import utcnow
from server.models import AudioAsset
from server.planning.publisher import PlanPublisher
from server.programmes.approval import OCCUPYING, ON_AIR
from server.programmes.models import Programme
from server.programmes.service import stations_of
from server.programmes.spec import ProgrammeSpec, TtsItem
from server.settings import Settings

log = logging.getLogger(__name__)

JOB_TABLE = "planner_jobs"
RETRY_S = 15
_PLANNERS: dict[str, ProgrammePlanner] = {}


def run_job(planner_key: str, job: str, station_ids: list[str] | None = None) -> None:
    """Entry point of every persistent job (referenced by name in the job store)."""
    planner = _PLANNERS.get(planner_key)
    if planner is None:
        log.warning("planner job %s: no running planner for %s", job, planner_key)
        return
    if job == "roll":
        planner.roll_forward()
    elif job == "prerender":
        planner.prerender()
    elif job == "republish":
        planner.republish_now(station_ids or [])
    else:
        log.error("planner job %s is unknown", job)


class ProgrammePlanner:
    """Owns the planner's scheduler; ``republish`` is what a programme change calls."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        publisher: PlanPublisher,
        store: AudioStore,
        tts: Callable[[], Any] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._publisher = publisher
        self._store = store
        self._tts = tts
        self._clock = clock
        self.key = str(settings.data_dir.resolve())
        self._scheduler: BackgroundScheduler | None = None
        self.rolls = 0
        """roll-forward runs in this process (``/api/v1/system``: which replica rolls)"""

    @property
    def scheduler(self) -> BackgroundScheduler | None:
        return self._scheduler

    def start(self, leading: bool = True) -> None:
        """Add the jobs; run them only when ``leading`` (else until ``lead`` is called)."""
        store = SQLAlchemyJobStore(engine=self._engine, tablename=JOB_TABLE)
        scheduler = BackgroundScheduler(timezone=UTC, jobstores={"default": store})
        _PLANNERS[self.key] = self
        now = datetime.now(UTC)
        settings = self._settings
        if settings.plan_refresh_min > 0:
            scheduler.add_job(
                run_job,
                "interval",
                minutes=settings.plan_refresh_min,
                args=[self.key, "roll"],
                id="roll-forward",
                next_run_time=now + timedelta(minutes=settings.plan_refresh_min),
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
        if settings.programme_prerender_min > 0:
            scheduler.add_job(
                run_job,
                "interval",
                minutes=settings.programme_prerender_min,
                args=[self.key, "prerender"],
                id="prerender",
                next_run_time=now + timedelta(seconds=30),
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
        scheduler.start(paused=not leading)
        self._scheduler = scheduler

    def lead(self) -> None:
        """This replica became the leader: run the jobs that fall due (missed ones too)."""
        if self._scheduler is not None:
            self._scheduler.resume()

    def follow(self) -> None:
        """Another replica leads: stop running jobs here (one already running finishes)."""
        if self._scheduler is not None:
            self._scheduler.pause()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        _PLANNERS.pop(self.key, None)

    # ------------------------------------------------------------- the work

    def roll_forward(self) -> int:
        """Republish the stations whose 9-day window gained an item since their last
        plan, or whose plan is due for renewal; returns how many."""
        self.rolls += 1
        return len(self._publisher.roll_forward())

    def republish(self, session: Session, station_ids: Iterable[str]) -> None:
        """Publish these stations' plans now; on failure leave a persistent retry job."""
        wanted = sorted(set(station_ids))
        if not wanted:
            return
        try:
            self._publisher.publish_stations(session, wanted)
        except Exception:
            log.exception("publishing %s plans failed; retrying in %s s", len(wanted), RETRY_S)
            self._retry(wanted)

    def republish_now(self, station_ids: list[str]) -> None:
        with Session(self._engine) as session:
            self.republish(session, station_ids)

    def _retry(self, station_ids: list[str]) -> None:
        if self._scheduler is None:
            return
        self._scheduler.add_job(
            run_job,
            "date",
            run_date=datetime.now(UTC) + timedelta(seconds=RETRY_S),
            args=[self.key, "republish", station_ids],
            id=f"republish-retry-{abs(hash(tuple(station_ids))) % 10**12}",
            replace_existing=True,
            misfire_grace_time=None,
        )

    def prerender(self) -> int:
        """Re-render missing speech of live programmes; returns how many items were rendered."""
        tts = self._tts()
        rendered = 0
        affected: set[str] = set()
        with Session(self._engine) as session:
            programmes = session.exec(
                select(Programme).where(col(Programme.state).in_(OCCUPYING))
            ).all()
            for programme in programmes:
                spec = ProgrammeSpec.model_validate(programme.spec)
                changed = dict(programme.rendered)
                for number, item in enumerate(spec.items, start=1):
                    if not isinstance(item, TtsItem):
                        continue
                    asset_id = programme.rendered.get(str(number))
                    asset = session.get(AudioAsset, asset_id) if asset_id is not None else None
                    if asset is not None and self._store.exists(asset.sha256):
                        continue
                    if tts is None:
                        log.error(
                            "programme %s item %s: speech is missing and no TTS is configured",
                            programme.key,
                            number,
                        )
                        continue
                    new = tts.render(session, item.text, item.voice)
                    changed[str(number)] = new.id
                    rendered += 1
                if changed != programme.rendered:
                    programme.rendered = changed
                    session.add(programme)
                    session.commit()
                    if programme.state in ON_AIR and programme.id is not None:
                        affected |= stations_of(session, programme.id)
            if affected:
                self.republish(session, affected)
        return rendered
