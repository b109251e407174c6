"""The application factory. Nothing happens at import time.

``create_app(settings, bus)`` returns a FastAPI app whose lifespan builds the engine,
creates tables, seeds the area tree, loads the keys, starts the MQTT fleet link (unless
a bus is injected or MQTT is disabled) and keeps every station's retained plan fresh.
Tests build one app per test with their own data dir and a fake bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from loaxa_protocol import AudioRef, CommandReply, Event, Keyring
from server.alerts import models as alert_models  # noqa: F401  (registers the alert tables)
from server.alerts.canned import LIBRARY_DIR, TONE, library_assets, seed_library
from server.alerts.service import AlertService
from server.api import alarms as alarm_routes
from server.api import alerts as alert_routes
from server.api import areas, audio, auth, broadcasts, stations, system, tokens, users
from server.api import commands as command_routes
from server.api import enrolment as enrolment_routes
from server.api import health as health_routes
from server.api import keys as key_routes
from server.api import live as live_routes
from server.api import programmes as programme_routes
from server.api import reports as report_routes
from server.api import tts as tts_routes
from server.api import updates as update_routes
from server.api.alerts import CAP_MAX_BYTES
from server.api.audio import ingest_upload
from server.api.audit import router as audit_router
from server.api.errors import install_error_handlers
from server.api.limits import MULTIPART_SLACK_BYTES
from server.areas import seed_areas
from server.audio.store import AudioStore
from server.auth import models as auth_models  # noqa: F401  (registers the account tables)
from server.auth.actor import SYSTEM, Actor
from server.auth.ratelimit import DatabaseLoginLimiter
from server.auth.service import ensure_bootstrap_admin
from server.cluster.leader import STARTUP_LOCK_KEY, Leadership, held
from server.commands.service import CommandService
from server.context import ServerContext
from server.db import create_tables, make_engine, utcnow
from server.edge.body_limit import BodyLimit, RequestSizeGate
from server.edge.credentials import signed_in
from server.edge.forwarded import TrustedProxyMiddleware
from server.edge.headers import SecurityHeadersMiddleware
from server.fleet.bus import Bus, NullBus
from server.fleet.ingest import Ingestor
from server.fleet.link import FleetLink
from server.fleet.watch import IntrusionWatch
from server.health.ingest import record_clock_offset
from server.health.service import HealthService
from server.keys import ServerKeys
from server.live.service import LiveService
from server.pages import STATIC_FILES
from server.pages import router as pages_router
from server.planning.publisher import PlanPublisher
from server.programmes.planner import ProgrammePlanner
from server.settings import Settings
from server.tts.service import service_from_settings
from server.updates.service import UpdateService
from server.web.common import unknown_address

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def build_context(
    settings: Settings, bus: Bus | None, clock: Callable[[], datetime]
) -> ServerContext:
    """Open storage and wire the parts; the fleet link is created but not started."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    create_tables(engine)
    # Replicas starting together seed, create the first admin and generate keys once.
    with held(engine, STARTUP_LOCK_KEY), Session(engine) as session:
        seed_areas(session, settings.seed_province_codes)
        ensure_bootstrap_admin(session, settings, clock())
        keys = ServerKeys.load(settings, engine)
    # Everything validly signed by one of our own keys (rotated-out ones included) is ours;
    # anything else on a down-topic is an intrusion.
    watch = IntrusionWatch(
        lambda: Keyring.from_entries(keys.trusted_entries(clock())), clock, reload_keys=keys.reload
    )

    def on_reply(session: Session, reply: CommandReply) -> None:
        commands.on_reply(session, reply)

    def on_alert_events(session: Session, events: Sequence[Event]) -> None:
        alerts.on_alert_events(session, events)

    def on_online(session: Session, station_id: str) -> None:
        alerts.on_online(session, station_id)

    def on_update_events(session: Session, events: Sequence[Event]) -> None:
        updates.on_update_events(session, events)

    health = HealthService(engine, settings, clock)
    ingestor = Ingestor(
        engine,
        clock,
        watch,
        on_reply=on_reply,
        health=health,
        on_alert_events=on_alert_events,
        on_online=on_online,
        on_update_events=on_update_events,
    )

    link: FleetLink | None = None
    if bus is None and settings.mqtt_enabled:
        # The link must republish through the publisher, which publishes through the link.
        def republish() -> int:
            return publisher.republish_all()

        link = FleetLink(settings, ingestor.handle, on_connected=republish, watch=watch)
        bus = link
    publisher = PlanPublisher(engine, settings, keys, bus or NullBus(), clock)
    commands = CommandService(engine, keys, bus or NullBus(), clock, record_clock_offset)
    store = AudioStore(settings.audio_dir)
    # Before any plan goes out: plans list the library.
    with held(engine, STARTUP_LOCK_KEY), Session(engine) as session:
        seed_library(session, store, settings.alert_library_dir or LIBRARY_DIR)
    alerts = AlertService(engine, settings, keys, bus or NullBus(), store, clock)

    def chime(now: datetime) -> AudioRef | None:
        """The library's attention tone: it covers the amplifier's warm-up."""
        with Session(engine) as session:
            tone = library_assets(session).get(TONE)
        if tone is None or tone.id is None:
            return None
        ttl = timedelta(minutes=settings.live_max_minutes + 10)
        return AudioRef(
            sha256=tone.sha256,
            size_bytes=tone.size_bytes,
            duration_ms=tone.duration_ms,
            codec=tone.codec,
            url=keys.urls.sign_url(tone.id, ttl, now),
        )

    def archive(path: Path, name: str, actor: Actor) -> int | None:
        asset, _created = ingest_upload(context, path, name, actor)
        return asset.id

    live = LiveService(
        engine,
        keys,
        bus or NullBus(),
        clock,
        settings.data_dir / "live",
        timedelta(minutes=settings.live_max_minutes),
        chime,
        archive,
    )
    updates = UpdateService(engine, settings, keys, commands, clock)
    context = ServerContext(
        settings=settings,
        engine=engine,
        keys=keys,
        store=store,
        bus=bus or NullBus(),
        publisher=publisher,
        ingestor=ingestor,
        health=health,
        commands=commands,
        clock=clock,
        tts=service_from_settings(settings, store),
        alerts=alerts,
        updates=updates,
        link=link,
        live=live,
    )
    return context


async def _every(
    every_s: float, job: Callable[[], object], what: str, leadership: Leadership | None = None
) -> None:
    """Run a blocking job periodically in the thread pool (only while this replica leads,
    given its ``leadership``); one failure never ends it."""
    while True:
        await asyncio.sleep(every_s)
        if leadership is not None and not leadership.leading:
            continue
        try:
            await run_in_threadpool(job)
        except Exception:  # the next round may succeed
            log.exception("periodic %s failed", what)


def create_app(
    settings: Settings | None = None,
    bus: Bus | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """Build the Loaxa server; ``bus`` replaces the MQTT link, ``clock`` the wall clock."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = await run_in_threadpool(build_context, settings, bus, clock)
        app.state.context = context
        app.state.login_limiter = DatabaseLoginLimiter(
            context.engine,
            settings.login_max_failures,
            settings.login_window_minutes * 60,
            clock,
        )
        # Refused claim codes per address, counted in the database like failed sign-ins,
        # so a guesser spread over the replicas meets one limit ("enrolment@<ip>" keys:
        # no username holds an "@").
        app.state.enrolment_limiter = DatabaseLoginLimiter(
            context.engine,
            enrolment_routes.REFUSALS_PER_ADDRESS,
            enrolment_routes.REFUSAL_WINDOW_S,
            clock,
        )
        context.alerts.changes.on_keys_changed(context.keys.reload)
        context.alerts.changes.start()
        # Fleet-wide periodic work runs on the leader only (server.cluster.leader); every
        # replica starts it paused and the leader lock resumes it.
        context.health.start(leading=False)
        if context.link is not None:
            context.link.start()  # republishes every plan on each connect
        else:
            await run_in_threadpool(context.publisher.republish_all)
        # The planner rolls every plan's horizon forward (plan_refresh_min), renews URLs,
        # pre-renders programme speech and retries failed republishes, on a persistent store.
        context.planner = ProgrammePlanner(
            context.engine, settings, context.publisher, context.store, lambda: context.tts, clock
        )
        # Its job store creates its table on first start: one replica at a time.
        with held(context.engine, STARTUP_LOCK_KEY):
            context.planner.start(leading=False)
        planner = context.planner

        def lead() -> None:
            planner.lead()
            context.health.lead()

        def follow() -> None:
            planner.follow()
            context.health.follow()

        leading = Leadership(context.engine, lead, follow, settings.leader_check_s)
        context.leadership = leading
        await run_in_threadpool(leading.start)
        periodic = []
        if settings.alert_settle_s > 0:
            job = context.alerts.settle  # close alerts that are over or past expiry
            periodic.append(_every(settings.alert_settle_s, job, "alert settle", leading))
        if settings.update_tick_s > 0:
            job = context.updates.tick  # send, resend, promote or stop rollouts
            periodic.append(_every(settings.update_tick_s, job, "rollout tick", leading))
        if settings.clock_sync_min > 0:
            job = partial(context.commands.sync_clocks, SYSTEM)
            periodic.append(_every(settings.clock_sync_min * 60, job, "clock sync", leading))
        # Every replica: a live session lives in the process its microphone is connected to.
        periodic.append(_every(5, context.live.stop_expired, "live session expiry"))
        tasks = [asyncio.create_task(coroutine) for coroutine in periodic]
        log.info("Loaxa server ready; data in %s", settings.data_dir)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await run_in_threadpool(context.live.stop_all)  # before the link goes
            await run_in_threadpool(leading.stop)  # another replica takes over now
            if context.link is not None:
                await run_in_threadpool(context.link.stop)
            await run_in_threadpool(context.health.stop)  # after the link: it feeds health
            await run_in_threadpool(context.planner.stop)
            await run_in_threadpool(context.alerts.changes.stop)
            context.engine.dispose()

    app = FastAPI(
        title="Loaxa",
        summary="Controller for commune loudspeaker radio (đài truyền thanh cơ sở)",
        version="0.1.0",
        lifespan=lifespan,
    )
    api = APIRouter(prefix=API_PREFIX)
    routers = [auth, users, tokens, stations, command_routes, audio, broadcasts, areas, system]
    for module in [*routers, key_routes, health_routes, alarm_routes, alert_routes]:
        api.include_router(module.router)
    api.include_router(audit_router)
    api.include_router(tts_routes.router)
    api.include_router(report_routes.router)
    api.include_router(programme_routes.router)
    api.include_router(enrolment_routes.router)
    api.include_router(live_routes.router)
    api.include_router(update_routes.router)
    app.include_router(api)
    app.include_router(pages_router)
    app.mount("/static", STATIC_FILES, name="static")
    # The last added runs first: headers on every answer (refusals included), then the
    # client's true address, then the size gate before any route reads a byte.
    app.add_middleware(
        RequestSizeGate,
        limits=body_limits(settings),
        default_limit_bytes=settings.max_body_bytes,
        default_why="setting max_body_bytes",
        signed_in=signed_in,
        api_prefix=API_PREFIX,
    )
    app.add_middleware(TrustedProxyMiddleware, trusted=settings.trusted_proxies)
    app.add_middleware(SecurityHeadersMiddleware, api_prefix=API_PREFIX)
    install_error_handlers(app)
    # After the API's handlers: an unknown address answers a person with a page.
    app.add_exception_handler(StarletteHTTPException, unknown_address)
    return app


def body_limits(settings: Settings) -> list[BodyLimit]:
    """The routes allowed more than ``max_body_bytes``; only signed-in callers get it."""
    file_bytes = settings.max_upload_bytes
    upload = file_bytes + MULTIPART_SLACK_BYTES
    why = "setting max_upload_bytes"
    return [
        BodyLimit("POST", f"{API_PREFIX}/audio/?", upload, why, stated_bytes=file_bytes),
        BodyLimit("POST", "/audio/upload", upload, why, page_field="file", stated_bytes=file_bytes),
        BodyLimit("POST", f"{API_PREFIX}/alerts/cap", CAP_MAX_BYTES, "the limit of a CAP message"),
        BodyLimit("POST", f"{API_PREFIX}/releases/?", upload, why, stated_bytes=file_bytes),
    ]
