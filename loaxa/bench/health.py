"""``loaxa bench health``: how many health reports a second the server stores, none lost.

One run, everything on this machine, in this order:

1. A private Mosquitto with the production security model — no anonymous access, a
   password file with each station's ``$7$`` hash as the server stored it, and the
   generated ACL — so the broker pays the same per-publish ACL checks it pays in the
   field; reloaded with the stations' accounts after registration
   (:mod:`loaxa.bench.common`, shared with ``loaxa bench alert``).
2. The real server (:class:`~loaxa.stack.LocalStack`) and N stations registered through
   the real API (``POST /api/v1/stations/bulk``, up to 1,000 a request).
3. The swarm (:mod:`loaxa.bench.swarm`): one authenticated MQTT connection per station,
   schema-valid health every ``interval`` at a spread phase. While it runs, a thread
   reads ``GET /api/v1/stations`` (what a technician's fleet page asks for), pausing
   ``api_pause_s`` between requests, and records its latency.
4. Stored-report counters are read from ``GET /api/v1/system`` before, at the end of the
   window and after a drain; ``lost = sent − stored``. The rate in the window counts the
   health sample rows in the database itself at both ends (the workers' counters reach
   ``/api/v1/system`` only every half second, which would read as a slower writer).
5. The server is stopped and the same swarm sends the same reports for the same time to a
   plain counting subscriber: the broker-and-client floor. ``server / raw`` near 1 means
   ingestion keeps up with everything the machinery can deliver.

The server runs in this process (as in the other benchmarks) and the swarm in its own
processes, so the server has one core's worth of GIL, sharing two cores with Mosquitto
and the swarm.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from sqlalchemy import func, select

from loaxa.bench.common import SecuredBroker, register_bulk, require_connected, secured_stack
from loaxa.bench.swarm import CountingSubscriber, Swarm, SwarmRun, SwarmStation, percentile
from loaxa.stack import LocalStack
from loaxa_protocol import topics
from server.health.models import HealthSample
from server.settings import Settings

log = logging.getLogger(__name__)

AREAS = ("01273", "01279", "01288")
"""Cao Bằng communes (the demo's): stations are spread over them round-robin."""
API_PAUSE_S = 0.5
"""Default pause between two API samples: a technician or two with the fleet page open.

Each ``GET /api/v1/stations`` of 1,000 stations costs the server ~100 ms of its one
GIL, so sampling much faster would measure the sampler, not the ingestion."""
COUNTER_POLL_S = 0.1
DRAIN_IDLE_S = 3.0
"""The drain ends early once nothing new is stored for this long with no backlog."""
DRAIN_MAX_S = 120.0
RATE_LIMIT_WINDOW_S = 10.0
"""The server's per-station health rate limit counts reports per this window."""
RATE_LIMIT_HEADROOM = 2
WORKERS_READY_S = 60.0
WORKERS_STOP_S = 30.0


@dataclass(frozen=True)
class HealthBenchResult:
    """Every figure of one run; :meth:`as_dict` is the ``--json`` line."""

    nodes: int
    seconds: float
    interval_ms: float
    workers: int
    broker_auth: str
    registration_s: float
    connect_s: float
    offered_per_s: float
    sent: int
    stored: int
    reports_per_s: float
    lost: int
    received: int
    dropped_rate_limited: int
    dropped_other: int
    shed: int
    """health reports the server's own ingest queue dropped, oldest first, when full (counted)"""
    broker_dropped: int | None
    """messages the broker dropped because a client read too slowly (its ``$SYS`` counter,
    broker-wide; None if the broker does not publish it)"""
    unaccounted: int
    """sent, yet neither stored nor counted as dropped anywhere, the broker included: must be 0"""
    drain_s: float
    backlog_max: int
    api_pause_s: float
    api_samples: int
    api_p50_ms: float
    api_p99_ms: float
    swarm_lag_p99_ms: float
    raw_sent: int
    raw_received: int
    raw_msgs_per_s: float
    raw_lost: int
    server_over_raw: float
    rate_limit_per_10s: int | None
    counters: str
    ingest_workers: int
    """``loaxa worker ingest`` processes (0: the server ingested alone)"""
    database: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Counts:
    """The server's ingest counters that the benchmark needs, from ``/api/v1/system``."""

    received: int
    stored: int
    rate_limited: int
    dropped: int
    """Refused or lost inside the server for any other reason (backlog full, invalid…)."""
    shed: int
    """dropped by the fleet ingest queue when full (health only; events spill to disk)"""
    broker_dropped: int | None
    """the broker's drop counter, as the server last read it"""
    backlog: int
    source: str


_HEALTH_DROPS = ("dropped_backlog", "rejected", "unknown_station", "failed")
_INGEST_DROPS = ("malformed", "unroutable", "unknown_station", "failed")


def _counts(system: dict[str, Any]) -> _Counts:
    """Read the health counters, from the health pipeline when the server has one.

    ``health.stored`` counts rows written by the batched health writer (server/health);
    a server without it applies each message in the fleet ingest, where
    ``ingest.applied`` is the same number (the swarm sends nothing but health).
    """
    ingest = system.get("ingest", {})
    health = system.get("health")
    mqtt_backlog = int(system.get("mqtt", {}).get("backlog", 0))
    broker_dropped = system.get("mqtt", {}).get("broker_dropped")
    fleet_queue = system.get("queues", {}).get("fleet_ingest") or {}
    shed = int(fleet_queue.get("dropped", {}).get("health", 0))
    workers = system.get("ingest_workers", {}).get("totals", {}).get("health")
    if isinstance(health, dict) and workers:  # the workers' sums, plus the server's own
        health = {key: health.get(key, 0) + workers.get(key, 0) for key in {*health, *workers}}
    if isinstance(health, dict) and "stored" in health:
        return _Counts(
            received=int(health.get("received", 0)),
            stored=int(health["stored"]),
            rate_limited=int(health.get("dropped_rate_limited", 0)),
            dropped=sum(int(health.get(key, 0)) for key in _HEALTH_DROPS)
            + int(ingest.get("malformed", 0)),
            shed=shed,
            broker_dropped=broker_dropped,
            backlog=mqtt_backlog + int(health.get("backlog", 0)),
            source="health.stored" + (" + ingest_workers.totals.health.stored" if workers else ""),
        )
    return _Counts(
        received=int(ingest.get("received", 0)),
        stored=int(ingest.get("applied", 0)),
        rate_limited=0,
        dropped=sum(int(ingest.get(key, 0)) for key in _INGEST_DROPS),
        shed=shed,
        broker_dropped=broker_dropped,
        backlog=mqtt_backlog,
        source="ingest.applied",
    )


class _ApiSampler(threading.Thread):
    """Times ``GET /api/v1/stations`` and tracks the ingest backlog until stopped."""

    def __init__(self, stack: LocalStack, pause_s: float) -> None:
        super().__init__(name="bench-api", daemon=True)
        self._stack = stack
        self._pause_s = pause_s
        self._stop_requested = threading.Event()
        self.latencies_ms: list[float] = []
        self.backlog_max = 0
        self.error: str | None = None

    def run(self) -> None:
        with self._stack.client() as http:
            while not self._stop_requested.wait(self._pause_s):
                started = time.perf_counter()
                response = http.get("/api/v1/stations")
                elapsed = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    self.error = f"GET /api/v1/stations answered {response.status_code}"
                    return
                self.latencies_ms.append(elapsed)
                counts = _counts(http.get("/api/v1/system").json())
                self.backlog_max = max(self.backlog_max, counts.backlog)

    def stop(self) -> None:
        self._stop_requested.set()
        self.join(30)


def _register(stack: LocalStack, nodes: int) -> list[SwarmStation]:
    """Register ``nodes`` stations through the bulk API; return their broker accounts."""
    body = [
        {
            "id": f"hb-{number:05d}",
            "name": f"Cụm loa thử tải {number}",
            "area_code": AREAS[number % len(AREAS)],
            "latitude": 22.6 + number % 100 / 1000,
            "longitude": 106.2 + number // 100 / 1000,
        }
        for number in range(nodes)
    ]
    return register_bulk(stack, body)


def _accounted(counts: _Counts) -> int:
    """Reports stored or counted as dropped, wherever that happened."""
    return (
        counts.stored
        + counts.rate_limited
        + counts.dropped
        + counts.shed
        + (counts.broker_dropped or 0)
    )


def _wait_stored(http: httpx.Client, base: _Counts, sent: int) -> tuple[_Counts, float]:
    """Poll the counters until every sent report is accounted for or progress stops."""
    started = time.monotonic()
    last_progress, last_stored = started, -1
    while True:
        counts = _counts(http.get("/api/v1/system").json())
        now = time.monotonic()
        accounted = _accounted(counts) - _accounted(base)
        if accounted >= sent and counts.backlog == 0:
            return counts, now - started
        if counts.stored != last_stored or counts.backlog > 0:
            last_progress, last_stored = now, counts.stored
        if now - last_progress > DRAIN_IDLE_S or now - started > DRAIN_MAX_S:
            return counts, now - started
        time.sleep(COUNTER_POLL_S)


def _wait_received(sink: CountingSubscriber, base: int, sent: int) -> None:
    """Let the plain subscriber take what is still in flight (bounded by DRAIN_IDLE_S)."""
    deadline = time.monotonic() + DRAIN_IDLE_S
    while sink.count - base < sent and time.monotonic() < deadline:
        time.sleep(COUNTER_POLL_S)


def _rate_limit(interval_s: float) -> int | None:
    """A per-station limit that lets the compressed heartbeat through, or None if none.

    The swarm compresses a 60 s heartbeat into ``interval_s``; the server's flood limit
    is scaled by the same factor (with headroom) or every station would look like a
    looping node. Floods are the health tests' business, not this benchmark's.
    """
    if "health_rate_limit" not in Settings.model_fields:
        return None
    default = int(Settings.model_fields["health_rate_limit"].default)
    return max(default, math.ceil(RATE_LIMIT_WINDOW_S / interval_s * RATE_LIMIT_HEADROOM))


@dataclass(frozen=True)
class _ServerPhase:
    run: SwarmRun
    base: _Counts
    end: _Counts
    final: _Counts
    drain_s: float
    api_ms: list[float]
    backlog_max: int
    counters: str
    rows_in_window: int
    """health sample rows written between the window's start and end"""


@dataclass(frozen=True)
class _RawPhase:
    run: SwarmRun
    in_window: int
    received: int


class IngestProcesses:
    """``loaxa worker ingest --workers N`` as a child process, on the bench's broker and data.

    It reads LOAXA_* like any deployment: the server's data dir and database, and the
    ingest account the secured broker holds (what ``ingest.env`` carries in production).
    """

    def __init__(self, count: int, stack: LocalStack, secured: SecuredBroker) -> None:
        self.count = count
        settings = stack.context.settings
        broker = secured.broker
        self._env = {
            **os.environ,
            "LOAXA_DATA_DIR": str(settings.data_dir),
            "LOAXA_DATABASE_URL": settings.db_url,
            "LOAXA_MQTT_HOST": broker.host,
            "LOAXA_MQTT_PORT": str(broker.port),
            "LOAXA_MQTT_USERNAME": secured.ingest.username,
            "LOAXA_MQTT_PASSWORD": secured.ingest.password,
            "LOAXA_HEALTH_RATE_LIMIT": str(settings.health_rate_limit),
        }
        self._stack = stack
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> IngestProcesses:
        command = [sys.executable, "-m", "loaxa", "worker", "ingest", "--workers", str(self.count)]
        self._proc = subprocess.Popen(command, env=self._env, start_new_session=True)
        deadline = time.monotonic() + WORKERS_READY_S
        with self._stack.client() as http:
            while True:
                listed = http.get("/api/v1/system").json()["ingest_workers"]["workers"]
                if sum(1 for w in listed if w.get("subscribed")) >= self.count:
                    return self
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{self.count} ingest workers did not subscribe")
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM: each worker writes what it holds, then exits."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(WORKERS_STOP_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def run_health_bench(
    nodes: int,
    seconds: float = 10.0,
    interval_ms: float = 1000.0,
    workers: int | None = None,
    api_pause_s: float = API_PAUSE_S,
    ingest_workers: int = 0,
    database_url: str | None = None,
) -> HealthBenchResult:
    """Run the whole benchmark (see the module doc) and return its figures.

    ``ingest_workers`` > 0 runs that many ``loaxa worker ingest`` processes (the server
    then leaves health and events to them); ``database_url`` names an empty database
    (PostgreSQL) instead of the default SQLite file.
    """
    if nodes < 1 or seconds <= 0 or interval_ms <= 0:
        raise ValueError("nodes, seconds and interval_ms must be positive")
    interval_s = interval_ms / 1000
    limit = _rate_limit(interval_s)
    overrides: dict[str, Any] = {} if limit is None else {"health_rate_limit": limit}
    if ingest_workers:
        overrides["ingest_workers"] = True
    if database_url:
        overrides["database_url"] = database_url
    with secured_stack("loaxa-bench-health-", overrides) as (secured, stack):
        database = stack.context.engine.dialect.name
        started = time.monotonic()
        stations = _register(stack, nodes)
        registration_s = time.monotonic() - started
        log.info("registered %s stations in %.1f s", nodes, registration_s)
        secured.grant_registered(stack)
        broker = secured.broker
        processes = IngestProcesses(ingest_workers, stack, secured) if ingest_workers else None
        with Swarm(broker.host, broker.port, stations, workers) as swarm:
            ready = swarm.start()
            require_connected(ready, nodes, log)
            with processes or contextlib.nullcontext():
                server = _server_phase(stack, swarm, seconds, interval_s, api_pause_s)
            stack.stop()  # the floor is measured with no server listening
            raw = _raw_phase(secured, swarm, seconds, interval_s)
    stored = server.final.stored - server.base.stored
    shed = server.final.shed - server.base.shed
    broker_dropped = (
        None
        if server.final.broker_dropped is None
        else server.final.broker_dropped - (server.base.broker_dropped or 0)
    )
    reports_per_s = server.rows_in_window / server.run.seconds
    raw_per_s = raw.in_window / raw.run.seconds
    return HealthBenchResult(
        nodes=nodes,
        seconds=seconds,
        interval_ms=interval_ms,
        workers=swarm.workers,
        broker_auth="per-station password + ACL",
        registration_s=round(registration_s, 2),
        connect_s=round(ready.seconds, 2),
        offered_per_s=round(server.run.offered_per_s, 1),
        sent=server.run.sent,
        stored=stored,
        reports_per_s=round(reports_per_s, 1),
        lost=server.run.sent - stored,
        received=server.final.received - server.base.received,
        dropped_rate_limited=server.final.rate_limited - server.base.rate_limited,
        dropped_other=server.final.dropped - server.base.dropped,
        shed=shed,
        broker_dropped=broker_dropped,
        unaccounted=server.run.sent - (_accounted(server.final) - _accounted(server.base)),
        drain_s=round(server.drain_s, 2),
        backlog_max=server.backlog_max,
        api_pause_s=api_pause_s,
        api_samples=len(server.api_ms),
        api_p50_ms=round(percentile(server.api_ms, 50), 1),
        api_p99_ms=round(percentile(server.api_ms, 99), 1),
        swarm_lag_p99_ms=round(max(server.run.lag_p99_ms, raw.run.lag_p99_ms), 1),
        raw_sent=raw.run.sent,
        raw_received=raw.received,
        raw_msgs_per_s=round(raw_per_s, 1),
        raw_lost=raw.run.sent - raw.received,
        server_over_raw=round(reports_per_s / raw_per_s, 3) if raw_per_s else 0.0,
        rate_limit_per_10s=limit,
        counters=server.counters,
        ingest_workers=ingest_workers,
        database=database,
    )


def _server_phase(
    stack: LocalStack, swarm: Swarm, seconds: float, interval_s: float, api_pause_s: float
) -> _ServerPhase:
    """The swarm against the server: counters around the window, API sampled during it."""
    with stack.client() as http:
        base = _counts(http.get("/api/v1/system").json())
        rows_base = _sample_rows(stack)
        sampler = _ApiSampler(stack, api_pause_s)
        sampler.start()
        try:
            run = swarm.run(seconds, interval_s)
            rows_end = _sample_rows(stack)
        finally:
            sampler.stop()
        end = _counts(http.get("/api/v1/system").json())
        final, drain_s = _wait_stored(http, base, run.sent)
    if sampler.error is not None:
        raise RuntimeError(sampler.error)
    log.info("server phase: sent %s, stored %s", run.sent, final.stored - base.stored)
    return _ServerPhase(
        run=run,
        base=base,
        end=end,
        final=final,
        drain_s=drain_s,
        api_ms=sampler.latencies_ms,
        backlog_max=sampler.backlog_max,
        counters=base.source,
        rows_in_window=rows_end - rows_base,
    )


def _sample_rows(stack: LocalStack) -> int:
    """Health sample rows in the database now: stored, whichever process wrote them."""
    with stack.context.engine.connect() as connection:
        query = select(func.count()).select_from(HealthSample)
        return int(connection.execute(query).scalar_one())


def _raw_phase(
    secured: SecuredBroker, swarm: Swarm, seconds: float, interval_s: float
) -> _RawPhase:
    """The same swarm and schedule against a plain subscriber (server's account): the floor."""
    server = secured.server
    with CountingSubscriber(
        swarm.host, swarm.port, topics.ALL_HEALTH, server.username, server.password
    ) as sink:
        base = sink.count
        run = swarm.run(seconds, interval_s)
        in_window = sink.count - base
        _wait_received(sink, base, run.sent)
        received = sink.count - base
    log.info("raw phase: sent %s, received %s", run.sent, received)
    return _RawPhase(run, in_window, received)


def result_rows(result: HealthBenchResult) -> list[tuple[str, str]]:
    """The table ``loaxa bench health`` prints, as (what, figure) rows."""
    r = result
    return [
        ("stations (MQTT connections)", f"{r.nodes} over {r.workers} swarm processes"),
        (
            "ingest",
            f"{r.ingest_workers} worker processes" if r.ingest_workers else "the server alone",
        ),
        ("database", r.database),
        ("broker", f"Mosquitto, {r.broker_auth}"),
        ("registration through the API", f"{r.registration_s:.1f} s"),
        ("swarm connect", f"{r.connect_s:.1f} s"),
        ("window", f"{r.seconds:g} s, each station every {r.interval_ms:g} ms"),
        ("offered", f"{r.offered_per_s:,.0f} reports/s ({r.sent:,} sent)"),
        ("stored, sustained in the window", f"{r.reports_per_s:,.0f} reports/s"),
        ("stored after drain", f"{r.stored:,} (drain {r.drain_s:.1f} s)"),
        ("lost (sent − stored)", f"{r.lost:,}"),
        ("received by the server", f"{r.received:,}"),
        (
            "dropped: rate limit · other · shed by the full queue",
            f"{r.dropped_rate_limited:,} · {r.dropped_other:,} · {r.shed:,}",
        ),
        (
            "dropped by the broker (client too slow; its $SYS counter)",
            "not published" if r.broker_dropped is None else f"{r.broker_dropped:,}",
        ),
        ("unaccounted (sent, neither stored nor counted)", f"{r.unaccounted:,}"),
        ("ingest backlog, max", f"{r.backlog_max:,}"),
        (
            "GET /api/v1/stations under load",
            f"p50 {r.api_p50_ms:.1f} ms · p99 {r.api_p99_ms:.1f} ms "
            f"({r.api_samples} samples, {r.api_pause_s:g} s apart)",
        ),
        ("raw broker floor (plain subscriber)", f"{r.raw_msgs_per_s:,.0f} msgs/s"),
        ("raw lost", f"{r.raw_lost:,}"),
        ("server / raw", f"{r.server_over_raw:.3f}"),
        ("swarm lateness p99", f"{r.swarm_lag_p99_ms:.1f} ms"),
        ("counter", r.counters),
    ]
