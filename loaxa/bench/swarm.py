"""A light swarm of simulated stations that only publish health, for the benchmarks.

The real station agent (``node_firmware``) runs several threads per station, so a
thousand of them cannot share a 2-core machine with the broker and the server. Nor can a
thousand paho clients each with ``loop_start()``: that is a thousand network threads
fighting over one GIL. The swarm keeps what the server sees real — one MQTT connection
per station, the station's own credentials, schema-valid :class:`Health` JSON on the
station's own topic at the agent's QoS — and drops everything else.

Design (measured in docs/performance.md, "Health ingestion"):

* A few worker processes (``spawn``, by default one per core), each owning a share of the
  stations. A process, not a thread, per share: JSON building and paho's packet code are
  pure Python, so only processes use both cores.
* In each worker ONE thread drives all its paho clients with paho's non-blocking API
  (``loop_read`` / ``loop_write`` / ``loop_misc``) over a ``selectors`` poller (epoll: plain
  ``select()`` stops at 1,024 file descriptors). Without ``loop_start`` paho writes a
  publish straight to the socket; a client whose socket buffer is full is watched for
  writability until paho's queue drains.
* Each station publishes every ``interval`` with a phase of ``index / N × interval``, so the
  swarm as a whole offers a smooth ``N / interval`` reports per second instead of N at
  once. A worker that falls behind publishes late (never skips) and reports how late
  (``lag``), which tells whether the swarm itself, not the server, was the limit.
* The parent talks to the workers over pipes; a worker stops on ``stop`` or as soon as
  its pipe closes, so a crashed parent never leaves workers behind. Between runs the
  workers keep their connections alive (keepalive pings), so the same connections
  serve a measurement against the server and one against a plain subscriber.

:class:`CountingSubscriber` is that plain subscriber: the floor a server is compared to.
The processes, pipes and loop are shared with the alert swarm (:mod:`loaxa.bench.swarm_transport`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from loaxa.bench.swarm_transport import (
    IDLE_WAIT_S,
    Link,
    LoopWorker,
    SwarmError,
    SwarmReady,
    WorkerPool,
    run_worker,
)
from loaxa_protocol import Health, topics

log = logging.getLogger(__name__)

HEALTH_QOS = 0
"""What the station agent publishes health with (node_firmware/agent.py)."""
AGENT_VERSION = "swarm-1"
FLUSH_TIMEOUT_S = 10.0

_AT = "2000-01-01T00:00:00Z"
_UPTIME = 123456.5


@dataclass(frozen=True)
class SwarmStation:
    """One simulated station: its id and the broker account it registered with."""

    station_id: str
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class SwarmRun:
    """What one run sent, and whether the swarm kept to its own schedule."""

    sent: int
    failed: int
    disconnected: int
    unflushed: int
    started: float
    finished: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float

    @property
    def seconds(self) -> float:
        return self.finished - self.started

    @property
    def offered_per_s(self) -> float:
        """What the swarm actually managed to send per second over its window."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class HealthTemplate:
    """A station's health report as bytes, with only ``at`` and ``uptime_s`` to fill in.

    Built once through the :class:`Health` model (so every report is schema-valid,
    shaped like the agent's: ``exclude_none``), then re-filled per report by byte
    concatenation — pydantic per message would cost the swarm a third of its CPU.
    """

    def __init__(self, station_id: str, index: int) -> None:
        sample = Health(
            station_id=station_id,
            at=datetime.fromisoformat(_AT),
            agent_version=AGENT_VERSION,
            uptime_s=_UPTIME,
            disk_free_bytes=12_000_000_000 - index * 1_000_000,
            disk_total_bytes=15_000_000_000,
            cpu_temp_c=48.5 + index % 20,
            load_1m=0.12,
            mem_used_pct=31.0,
            ntp_synced=True,
            modem_rssi_dbm=-71 - index % 30,
            modem_operator="Viettel",
            amp_on=False,
            relay_ok=True,
            volume_pct=80,
            plan_seq=1,
            plan_items=2,
            cached_audio=2,
        ).model_dump_json(exclude_none=True)
        head, rest = sample.split(f'"at":"{_AT}"')
        middle, tail = rest.split(f'"uptime_s":{_UPTIME}')
        self._head = f'{head}"at":"'.encode()
        self._middle = f'"{middle}"uptime_s":'.encode()
        self._tail = tail.encode()
        self._boot = time.time() - index * 7.0

    def render(self, now: float) -> bytes:
        at = datetime.fromtimestamp(now, UTC).isoformat().encode()
        uptime = repr(round(now - self._boot, 3)).encode()
        return self._head + at + self._middle + uptime + self._tail


# ------------------------------------------------------------------ the worker process


@dataclass
class _Schedule:
    """When each local client publishes next: round-robin over clients sorted by phase."""

    start: float
    end: float
    interval: float
    phases: list[float]
    cursor: int = 0
    round: int = 0

    def next_due(self) -> float:
        return self.start + self.phases[self.cursor] + self.round * self.interval

    def advance(self) -> None:
        self.cursor += 1
        if self.cursor == len(self.phases):
            self.cursor = 0
            self.round += 1


@dataclass
class _RunState:
    schedule: _Schedule
    sent: int = 0
    failed: int = 0
    lags: list[float] = field(default_factory=list)
    done_sending: bool = False
    flush_deadline: float = 0.0


class _Worker(LoopWorker[Link]):
    """Drives its share of the swarm's clients from one thread (see the module doc)."""

    def __init__(
        self,
        conn: Connection,
        host: str,
        port: int,
        members: Sequence[tuple[int, SwarmStation]],
        total: int,
        keepalive_s: int,
    ) -> None:
        super().__init__(conn, host, port, keepalive_s)
        self._members = list(members)
        self._total = total
        self._links = [
            Link(index=index, station_id=station.station_id)
            for index, (_number, station) in enumerate(self._members)
        ]
        self._templates = [HealthTemplate(s.station_id, number) for number, s in self._members]
        self._topics = [topics.health(s.station_id) for _number, s in self._members]
        self._disconnected = 0
        self._run: _RunState | None = None

    def _connect(self, link: Link) -> None:
        station = self._members[link.index][1]
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=station.station_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            userdata=link.index,
        )
        if station.username:
            client.username_pw_set(station.username, station.password)
        client.on_connect = self._on_connect
        self._open(link, client)

    def _drop(self, link: Link) -> bool:
        """Forget a client whose connection died; the benchmark counts, never reconnects."""
        dropped = super()._drop(link)
        if dropped:
            self._disconnected += 1
        return dropped

    # -------------------------------------------------------- commands and runs

    def _handle(self, message: tuple[Any, ...]) -> bool:
        match message:
            case ("run", float(start), float(seconds), float(interval)):
                phases = [g / self._total * interval for g, _station in self._members]
                schedule = _Schedule(start, start + seconds, interval, phases)
                self._run = _RunState(schedule)
                return True
        return False

    def _publish_due(self, run: _RunState, now: float) -> None:
        schedule = run.schedule
        while True:
            due = schedule.next_due()
            if due >= schedule.end:
                run.done_sending = True
                run.flush_deadline = now + FLUSH_TIMEOUT_S
                return
            if due > now:
                return
            index = schedule.cursor
            schedule.advance()
            link = self._links[index]
            client = link.client
            if client is None or not link.online:
                run.failed += 1
                continue
            info = client.publish(
                self._topics[index], self._templates[index].render(time.time()), qos=HEALTH_QOS
            )
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                run.sent += 1
                run.lags.append(time.monotonic() - due)
                self._watch(link)
            else:
                run.failed += 1
                self._drop(link)

    def _finish(self, run: _RunState) -> None:
        lags = run.lags
        self._conn.send(
            (
                "done",
                {
                    "sent": run.sent,
                    "failed": run.failed,
                    "disconnected": self._disconnected,
                    "unflushed": len(self._blocked),
                    "started": run.schedule.start,
                    "finished": time.monotonic(),
                    "lag_p50_ms": percentile(lags, 50) * 1000,
                    "lag_p99_ms": percentile(lags, 99) * 1000,
                    "lag_max_ms": max(lags, default=0.0) * 1000,
                },
            )
        )
        self._run = None

    def _turn(self) -> None:
        """Wait for sockets or the next due publish, then act."""
        now = time.monotonic()
        run = self._run
        if run is None:
            self._poll(IDLE_WAIT_S)
            return
        if not run.done_sending:
            self._poll(min(IDLE_WAIT_S, max(0.0, run.schedule.next_due() - now)))
            if self._run is run:
                self._publish_due(run, time.monotonic())
            return
        if not self._blocked or now > run.flush_deadline:
            self._finish(run)
            return
        self._poll(0.05)


def _worker_main(
    conn: Connection,
    host: str,
    port: int,
    members: list[tuple[int, SwarmStation]],
    total: int,
    keepalive_s: int,
    connect_timeout_s: float,
) -> None:
    run_worker(
        conn,
        lambda: _Worker(conn, host, port, members, total, keepalive_s),
        connect_timeout_s,
        "swarm worker",
    )


# ------------------------------------------------------------------ the parent side


class Swarm(WorkerPool):
    """N simulated stations spread over a few worker processes; use as a context manager.

    ``start()`` connects every station and returns how that went; ``run()`` makes them all
    publish health for a while and returns what was sent; ``close()`` disconnects them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        stations: Sequence[SwarmStation],
        workers: int | None = None,
        keepalive_s: int = 60,
    ) -> None:
        super().__init__(host, port, stations, workers)
        self._keepalive = keepalive_s

    def start(self, timeout_s: float = 60.0) -> SwarmReady:
        """Spawn the workers and connect every station (one MQTT connection each)."""
        indexed = list(enumerate(self.stations))
        return self._spawn(
            _worker_main,
            lambda number: (
                self.host,
                self.port,
                indexed[number :: self.workers],
                len(self.stations),
                self._keepalive,
                timeout_s,
            ),
            "loaxa-swarm",
            timeout_s + 30,  # + the workers' own start-up
        )

    def run(self, seconds: float, interval_s: float, lead_s: float = 0.3) -> SwarmRun:
        """Every station publishes once per ``interval_s`` for ``seconds``; blocks till done.

        All workers start at the same instant (``CLOCK_MONOTONIC`` is system-wide on
        Linux), ``lead_s`` from now, so the swarm's offered rate is flat from the start.
        """
        if seconds <= 0 or interval_s <= 0:
            raise ValueError("seconds and interval_s must be positive")
        start = time.monotonic() + lead_s
        replies = self._ask(
            ("run", start, float(seconds), float(interval_s)),
            lead_s + seconds + FLUSH_TIMEOUT_S + 30,
        )
        reports = [r[1] for r in replies]
        return SwarmRun(
            sent=sum(r["sent"] for r in reports),
            failed=sum(r["failed"] for r in reports),
            disconnected=sum(r["disconnected"] for r in reports),
            unflushed=sum(r["unflushed"] for r in reports),
            started=start,
            finished=max(r["finished"] for r in reports),
            lag_p50_ms=max(r["lag_p50_ms"] for r in reports),
            lag_p99_ms=max(r["lag_p99_ms"] for r in reports),
            lag_max_ms=max(r["lag_max_ms"] for r in reports),
        )


class CountingSubscriber:
    """A plain MQTT subscriber that only counts: the floor a server is measured against.

    Same paho, same broker, same subscription QoS as the server's fleet link, but no
    validation and no database, so the difference between its rate and the server's is
    what ingestion costs.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        username: str | None = None,
        password: str | None = None,
        qos: int = 1,
    ) -> None:
        self._host = host
        self._port = port
        self._topic = topic
        self._qos = qos
        self._count = 0
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"loaxa-bench-sink-{os.getpid()}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if username:
            client.username_pw_set(username, password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    @property
    def count(self) -> int:
        return self._count

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason_code: ReasonCode, _p: Any
    ) -> None:
        if not reason_code.is_failure:
            client.subscribe(self._topic, self._qos)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if not any(code.is_failure for code in codes):
            self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        self._count += 1

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if self._client.loop(timeout=0.5) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.warning("counting subscriber lost its broker connection")
                return

    def start(self, timeout_s: float = 10.0) -> CountingSubscriber:
        self._client.connect(self._host, self._port, keepalive=60)
        self._thread = threading.Thread(target=self._loop, name="bench-sink", daemon=True)
        self._thread.start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise SwarmError(f"the counting subscriber could not subscribe to {self._topic}")
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._client.disconnect()

    def __enter__(self) -> CountingSubscriber:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
