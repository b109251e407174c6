"""``loaxa bench alert``: API call → "playing" on every station, against the transport floor.

One run, everything on this machine:

1. A private Mosquitto with the production security model (per-station passwords and the
   generated ACL, anonymous refused; :class:`loaxa.bench.common.SecuredBroker`).
2. The real server (:class:`~loaxa.stack.LocalStack`). N stations are written straight
   into its database through its own ``Station`` model, with a real ``$7$`` password hash
   each — registering through ``POST /api/v1/stations`` costs ~8 ms a station (40 s for
   5,000) and is measured by ``loaxa bench health``; the rows are the same, only the
   audit entry per registration is skipped. The broker then loads the accounts (SIGHUP).
3. The alert swarm (:mod:`loaxa.bench.alert_swarm`): one authenticated MQTT connection per
   station and the real node core behind each, booted with the canned library cached.
4. One uncounted warm-up round (``warmup``: a cold server's first alert pays for SQL
   statement caches and lazy imports; a province's server is warm), then ``rounds`` times:
   ``POST /api/v1/alerts`` (a drill to the whole province, so no second
   officer is needed; if the server still asks for one, a second officer confirms through
   the API and the clock starts at the confirm call), then wait until every station's core
   has emitted ``alert_playing``; cancel it through the API (timed the same way, to
   ``alert_cancelled``); then publish ONE probe of the alert's exact size on the topics the
   alert travelled on, from the server's broker account, and wait until every station's
   client has it: the transport floor, measured with the same clients, sockets and loop.
5. Per station and round, as issue 7 splits it: delivery = API call → the station's MQTT
   client reads the alert off its socket (server + broker path; stamped in the client's
   ``on_message``, before the node core runs); node = that instant → the core emits
   ``alert_playing`` (verifying, accepting, relay, player: the node's own work, which on
   real hardware runs on every Pi in parallel and here shares two cores); end to end =
   API call → ``alert_playing``. The floor is stamped at the very same point of the same
   client (``on_message``), so delivery / floor compares like with like. The cancel is
   timed the same way: API call → read by the client, and → ``alert_cancelled``.
   Times are ``CLOCK_MONOTONIC`` (system-wide): the parent's at the call, the swarm's in
   the client callback and right after the core returned the ack.

With ``replicas`` > 1 the server is that many real ``loaxa serve`` processes on a fresh
PostgreSQL database (:mod:`loaxa.bench.replicas`); the bench reaches them through HTTP and
the database only. With ``kill_replica`` the middle round's alert goes to the leader,
which is killed with SIGKILL as soon as it answered, while the stations are still
receiving and acking; the cancel and everything after go to a survivor. The JSON line
then adds ``replicas``, ``killed``, ``takeover_s`` (SIGKILL → another replica leads),
``rolled_after_kill``, ``duplicates`` (an alert received or played twice at a station)
and ``plan_refusals``; ``missing`` lists the stations that did not play some round.

Without replicas the server runs in this process, so it has one GIL's worth of CPU,
sharing two cores with Mosquitto and the swarm's processes. Rounds start only once the
server's ingest backlog is empty, so each alert meets a quiet server, as a real one would
between alerts.
"""

from __future__ import annotations

import logging
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from loaxa.bench.alert_swarm import (
    PLAYER_READY_START_MS,
    PLAYER_START_MS,
    RELAY_MS,
    AlertSwarm,
    Collected,
    FloorMark,
    Mark,
    NodeProfile,
    SimStation,
    floor_payload,
    trusted_key_dicts,
)
from loaxa.bench.common import (
    BULK_CHUNK,
    BULK_TIMEOUT_S,
    SecuredBroker,
    require_connected,
    secured_stack,
)
from loaxa.bench.replicas import DEFAULT_ADMIN_URL, ReplicaSet, fresh_postgres
from loaxa.bench.swarm import percentile
from loaxa.broker_config import load_station_accounts
from loaxa.stack import LocalStack
from loaxa_protocol import KeyEntry
from server.db import make_engine, utcnow
from server.keys import ServerKeys
from server.models import Area, AudioAsset
from server.settings import Settings

log = logging.getLogger(__name__)

PROVINCE = "04"
"""Cao Bằng: the swarm's stations are spread over its communes."""
COMMUNES_MAX = 20
INLINE_SECONDS = 12.0
"""Length of the custom message for ``--payload inline`` (speech-like, encoded by the server)."""
ROUND_TIMEOUT_S = 60.0
TAKEOVER_TIMEOUT_S = 30.0
ROLL_TIMEOUT_S = 30.0
REPLICA_PLAN_REFRESH_MIN = 0.05
API_TIMEOUT_S = 300.0
"""The cancel call waits behind the server's ingest of every ack (see docs/performance.md)."""
COLLECT_EVERY_S = 0.25
QUIET_TIMEOUT_S = 60.0
Payload = Literal["canned", "inline"]


@dataclass(frozen=True)
class Spread:
    """Percentiles of one part of the path, in milliseconds."""

    p50: float
    p95: float
    p99: float
    max: float
    n: int

    @classmethod
    def of(cls, values_s: list[float]) -> Spread:
        ms = [v * 1000 for v in values_s]
        return cls(
            round(percentile(ms, 50), 1),
            round(percentile(ms, 95), 1),
            round(percentile(ms, 99), 1),
            round(max(ms, default=0.0), 1),
            len(ms),
        )


@dataclass(frozen=True)
class AlertBenchResult:
    """Every figure of one run; :meth:`as_dict` is the ``--json`` line."""

    nodes: int
    payload: str
    payload_bytes: int
    rounds: int
    workers: int
    delivered: int
    """stations that received (core accepted) the alert in every round"""
    acked_playing: int
    """stations whose core reported ``alert_playing`` in every round"""
    cancelled: int
    refused: int
    registration_s: float
    connect_s: float
    end_to_end: Spread
    """API call → the core emits ``alert_playing``"""
    deliver: Spread
    """API call → the station's client reads the alert off its socket (server + broker)"""
    node: Spread
    """read by the client → ``alert_playing``: the node's own work (and, in the swarm, the
    wait for the cores of its neighbours on the same two cores)"""
    accept: Spread
    """read by the client → the core acks ``alert_received`` (queue, verify, accept)"""
    acked: Spread
    """API call → ``alert_received`` (what the previous version of this bench called
    delivery: it included the node core's check)"""
    first_arrival_ms: float
    """median over rounds of the first station's arrival: the server's own time to wire"""
    raw: Spread
    """the floor: a probe of the alert's size published → read by the same clients"""
    cancel_deliver: Spread
    """cancel call → the station's client reads the ``AlertCancel``"""
    cancel: Spread
    """cancel call → the core emits ``alert_cancelled``"""
    api_call: Spread
    cancel_call: Spread
    ratio: float
    cancel_ratio: float
    """cancel delivery p99 / floor p99"""
    swarm_cpu_us: float = 0.0
    """CPU a swarm process spent per station per alert, from its first station's
    ``alert_received`` to its last ``alert_playing`` (median over rounds and processes)"""
    swarm_share: float = 0.0
    """that CPU time over the same wall time: the share of a core the process got"""
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """``os.getloadavg()`` at the end of the run (other sessions share this machine)"""
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    replicas: int = 1
    """server processes (``--replicas``); 1: the server runs in the bench's process"""
    killed: str | None = None
    """the replica killed mid-round (``--kill-replica``): the leader, which took the call"""
    takeover_s: float | None = None
    """SIGKILL → another replica leads"""
    rolled_after_kill: bool | None = None
    """the new leader's planner rolled the plans after the takeover"""
    duplicates: int = 0
    """a station received or played one alert twice (must be 0: exactly once)"""
    plan_refusals: list[str] = field(default_factory=list)
    """plans a station refused (``station: reason``; must be empty: no sequence reused)"""
    relay_ms: float = 0.0
    """the swarm relay's answer time (inside ``p99_ms``; default: the real driver's)"""
    player_start_ms: float = 0.0
    """the swarm player's start-up for an item due now (inside ``p99_ms``)"""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            p50_ms=self.end_to_end.p50,
            p95_ms=self.end_to_end.p95,
            p99_ms=self.end_to_end.p99,
            max_ms=self.end_to_end.max,
            deliver_p50_ms=self.deliver.p50,
            deliver_p99_ms=self.deliver.p99,
            accept_p99_ms=self.accept.p99,
            node_p50_ms=self.node.p50,
            node_p99_ms=self.node.p99,
            raw_p50_ms=self.raw.p50,
            raw_p99_ms=self.raw.p99,
            cancel_deliver_p99_ms=self.cancel_deliver.p99,
            cancel_p99_ms=self.cancel.p99,
        )
        return data


# ------------------------------------------------------------------ set-up


@dataclass
class BenchServer:
    """What the bench needs of the server: its database, its keys, and where to call it.

    One in-process server (:class:`LocalStack`), or replicas (:class:`ReplicaSet`), in
    which case the bench reads keys from their shared data dir and calls one replica.
    """

    engine: Engine
    base_url: str
    token: str
    trusted: Callable[[], list[KeyEntry]]
    amp_lead_ms: int
    amp_tail_ms: int
    clock: Callable[[], datetime] = utcnow

    @classmethod
    def of_stack(cls, stack: LocalStack) -> BenchServer:
        context = stack.context
        assert stack.token is not None
        return cls(
            context.engine,
            stack.base_url,
            stack.token,
            lambda: context.keys.trusted_entries(context.clock()),
            context.settings.amp_lead_ms,
            context.settings.amp_tail_ms,
            context.clock,
        )

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers)


def register_bulk(server: BenchServer, nodes: int) -> list[SimStation]:
    """Register ``nodes`` stations through ``POST /api/v1/stations/bulk``, as a province does.

    Spread over the province's first communes; each station's areas come from the node
    config the server hands out, and its first plan waits retained on the broker.
    """
    with Session(server.engine) as session:
        communes = list(
            session.exec(
                select(Area.code)
                .where(Area.parent_code == PROVINCE)
                .order_by(col(Area.code))
                .limit(COMMUNES_MAX)
            ).all()
        )
    if not communes:
        raise RuntimeError(f"the server has no communes under province {PROVINCE}")
    stations: list[SimStation] = []
    with server.client() as http:
        for start in range(0, nodes, BULK_CHUNK):
            body = [
                {
                    "id": f"al-{number:05d}",
                    "name": f"Cụm loa thử cảnh báo {number}",
                    "area_code": communes[number % len(communes)],
                    "latitude": 22.6 + number % 100 / 1000,
                    "longitude": 106.2 + number // 100 / 1000,
                }
                for number in range(start, min(nodes, start + BULK_CHUNK))
            ]
            response = http.post(
                "/api/v1/stations/bulk", json={"stations": body}, timeout=BULK_TIMEOUT_S
            )
            response.raise_for_status()
            stations += [
                SimStation(
                    one["station"]["id"],
                    one["mqtt"]["username"],
                    one["mqtt"]["password"],
                    tuple(one["node_config"]["areas"]),
                )
                for one in response.json()
            ]
    return stations


def library_sha256s(server: BenchServer | LocalStack) -> tuple[str, ...]:
    """The canned library every station keeps cached ahead of need."""
    engine = server.engine if isinstance(server, BenchServer) else server.context.engine
    with Session(engine) as session:
        rows = session.exec(
            select(AudioAsset.sha256).where(col(AudioAsset.library).is_not(None))
        ).all()
    return tuple(rows)


def node_profile(
    server: BenchServer,
    health: bool = True,
    relay_ms: float | None = None,
    player_start_ms: float | None = None,
) -> NodeProfile:
    """The swarm's stations; relay and player times default to the measured real drivers."""
    return NodeProfile(
        trusted_keys=trusted_key_dicts(server.trusted()),
        cached_audio=library_sha256s(server),
        amp_lead_ms=server.amp_lead_ms,
        amp_tail_ms=server.amp_tail_ms,
        health=health,
        relay_ms=RELAY_MS if relay_ms is None else relay_ms,
        player_start_ms=PLAYER_START_MS if player_start_ms is None else player_start_ms,
    )


def second_officer_token(server: BenchServer) -> str:
    """An alert officer other than the stack's administrator, to confirm through the API."""
    from server.auth.permissions import Role
    from server.auth.service import add_grant, create_user, find_user, issue_token

    now = server.clock()
    with Session(server.engine) as session:
        user = find_user(session, "bench-officer-2") or create_user(
            session, "bench-officer-2", None, now
        )
        add_grant(session, user, Role.ALERT_OFFICER, PROVINCE, now)
        _token, raw = issue_token(session, user, "bench-alert", now)
        session.commit()
    return raw


def upload_inline_audio(http: httpx.Client, seconds: float = INLINE_SECONDS) -> int:
    """A speech-like custom message, uploaded and encoded by the server; its asset id."""
    from server.audio.synth import speech_like_wav

    response = http.post(
        "/api/v1/audio", files={"file": ("canh-bao.wav", speech_like_wav(seconds))}
    )
    response.raise_for_status()
    return int(response.json()["id"])


def wait_quiet(http: httpx.Client, timeout_s: float = QUIET_TIMEOUT_S) -> None:
    """Until the server has taken in everything the stations sent (no ingest backlog)."""
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        system = http.get("/api/v1/system").json()
        backlog = int(system["mqtt"]["backlog"]) + int(system.get("health", {}).get("backlog", 0))
        now = time.monotonic()
        if backlog == 0:
            quiet_since = quiet_since or now
            if now - quiet_since >= 0.5:
                return
        else:
            quiet_since = None
        time.sleep(0.1)
    log.warning("the server's ingest backlog did not empty within %.0f s", timeout_s)


class FloorPublisher:
    """The server's broker account publishing transport probes (QoS 1, like an alert)."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"loaxa-bench-floor-{secrets.token_hex(3)}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self._client.username_pw_set(username, password)
        self._connected = threading.Event()
        self._client.on_connect = lambda *_args: self._connected.set()
        self._client.connect(host, port, 60)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise RuntimeError("the floor publisher could not connect to the broker")

    def publish(self, topic_sizes: dict[str, int], tag: str) -> float:
        """Publish one probe per topic; return the monotonic instant just before."""
        started = time.monotonic()
        for topic, size in topic_sizes.items():
            self._client.publish(topic, floor_payload(tag, size), qos=1)
        return started

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# ------------------------------------------------------------------ the rounds


@dataclass
class _Round:
    alert_id: str
    t0: float
    api_s: float
    received: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    playing: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    cancel_t0: float = 0.0
    cancel_api_s: float = 0.0
    cancelled: dict[str, float] = field(default_factory=dict)
    cancel_arrived: dict[str, float] = field(default_factory=dict)
    work: list[Mark] = field(default_factory=list)
    """``alert_received`` and ``alert_playing`` marks, for the swarm's CPU per station"""
    floor_t0: float = 0.0
    floor: dict[str, float] = field(default_factory=dict)
    payload_bytes: int = 0
    duplicates: int = 0
    """a second ``alert_received`` / ``alert_playing`` of this alert at one station"""


class _Collector:
    """Sorts what the swarm noted into the current round."""

    def __init__(self, swarm: AlertSwarm) -> None:
        self.swarm = swarm
        self.topics: dict[str, int] = {}
        self.errors: list[str] = []
        self.plan_refusals: list[str] = []
        """stations' refusals of a message naming no alert (plans): ``station: reason``"""
        self._early: list[Mark] = []

    def pull(self, current: _Round) -> Collected:
        got = self.swarm.collect()
        self.topics.update(got.alert_topics)
        self.errors += got.errors
        for mark in [*self._early, *got.marks]:
            if mark.kind == "rejected" and not mark.alert_id:
                self.plan_refusals.append(f"{mark.station_id}: {mark.reason}")
            self._sort(current, mark)
        self._early = []
        for probe in got.floor:
            self._probe(current, probe)
        return got

    @staticmethod
    def _sort(current: _Round, mark: Mark) -> None:
        if mark.alert_id != current.alert_id:
            return  # a late ack of an earlier round
        table = {
            "alert_received": current.received,
            "alert_playing": current.playing,
            "alert_cancelled": current.cancelled,
        }.get(mark.kind)
        if table is not None:
            if mark.station_id in table and mark.kind in ("alert_received", "alert_playing"):
                current.duplicates += 1
            table.setdefault(mark.station_id, mark.at)
            if mark.kind in ("alert_received", "alert_playing"):
                current.work.append(mark)
            if mark.kind == "alert_received" and mark.arrived:
                current.arrived.setdefault(mark.station_id, mark.arrived)
            elif mark.kind == "alert_cancelled" and mark.arrived:
                current.cancel_arrived.setdefault(mark.station_id, mark.arrived)
        elif mark.kind == "rejected":
            current.refused[mark.station_id] = mark.reason or "?"

    @staticmethod
    def _probe(current: _Round, probe: FloorMark) -> None:
        if probe.tag == current.alert_id:
            current.floor.setdefault(probe.station_id, probe.at)

    def wait(self, current: _Round, table: dict[str, float], nodes: int) -> None:
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        while len(table) + len(current.refused) < nodes and time.monotonic() < deadline:
            time.sleep(COLLECT_EVERY_S)
            self.pull(current)


def _send_alert(
    http: httpx.Client, confirmer: httpx.Client, body: dict[str, Any]
) -> tuple[dict[str, Any], float, float]:
    """POST the alert (confirming it if asked); the alert, the clock start and API time."""
    t0 = time.monotonic()
    response = http.post("/api/v1/alerts", json=body, timeout=API_TIMEOUT_S)
    api_s = time.monotonic() - t0
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/v1/alerts answered {response.status_code}: {response.text}")
    alert: dict[str, Any] = response.json()
    if alert["state"] == "awaiting_confirmation":
        t0 = time.monotonic()
        confirmed = confirmer.post(f"/api/v1/alerts/{alert['id']}/confirm", timeout=API_TIMEOUT_S)
        api_s = time.monotonic() - t0
        if confirmed.status_code != 200:
            raise RuntimeError(f"confirm answered {confirmed.status_code}: {confirmed.text}")
        alert = confirmed.json()
    return alert, t0, api_s


def _alert_body(payload: Payload, audio_id: int | None, number: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": f"Diễn tập cảnh báo {number + 1}",
        "severity": "extreme",
        "area_codes": [PROVINCE],
        "drill": True,
        "repeat": 1,
        "gap_s": 0,
        "tone": True,
        "expires_at": (datetime.now(UTC) + timedelta(minutes=30)).isoformat(),
    }
    if payload == "canned":
        body["canned"] = "typhoon"
    else:
        body["audio_id"] = audio_id
    return body


@dataclass
class Failover:
    """What ``--kill-replica`` did and saw (replicas only)."""

    killed: str | None = None
    """the replica killed (the leader, which also took the round's alert call)"""
    takeover_s: float | None = None
    """SIGKILL → another replica reports that it leads"""
    rolled: bool = False
    """the new leader rolled the plans after the takeover"""


def _take_over(replicas: ReplicaSet, failover: Failover, killed_at: float) -> None:
    """Wait for another replica to lead, then for its planner's next roll."""
    deadline = killed_at + TAKEOVER_TIMEOUT_S
    leader = None
    while leader is None and time.monotonic() < deadline:
        leader = replicas.leader()
        if leader is None:
            time.sleep(0.05)
    if leader is None:
        log.error("no replica took the lead within %.0f s", TAKEOVER_TIMEOUT_S)
        return
    failover.takeover_s = round(time.monotonic() - killed_at, 2)
    rolls = replicas.cluster(leader)["planner_rolls"]
    while time.monotonic() < deadline + ROLL_TIMEOUT_S:
        if replicas.cluster(leader)["planner_rolls"] > rolls:
            failover.rolled = True
            return
        time.sleep(0.2)


def _run_rounds(
    server: BenchServer,
    swarm: AlertSwarm,
    floor: FloorPublisher,
    nodes: int,
    payload: Payload,
    rounds: int,
    warmup: int,
    replicas: ReplicaSet | None = None,
    kill_replica: bool = False,
) -> tuple[list[_Round], _Collector, Failover]:
    """The rounds; with ``kill_replica``, the middle round's alert goes to the leader, which
    is killed as soon as it answered, while the alert is on its way to the stations."""
    collector = _Collector(swarm)
    failover = Failover()
    done: list[_Round] = []
    officer = second_officer_token(server)
    kill_round = rounds // 2 if kill_replica and replicas is not None else None
    killed_at = 0.0
    http = server.client()
    confirmer = httpx.Client(
        base_url=server.base_url, timeout=30, headers={"Authorization": f"Bearer {officer}"}
    )
    try:
        audio_id = upload_inline_audio(http) if payload == "inline" else None
        for number in range(-warmup, rounds):
            _wait_all_quiet(http, replicas)
            swarm.collect()  # forget anything noted between rounds
            body = _alert_body(payload, audio_id, number)
            if number == kill_round and replicas is not None:
                victim = replicas.leader()
                if victim is None:
                    raise RuntimeError("no replica leads: cannot kill the leader")
                with (
                    replicas.client(victim) as to_victim,
                    replicas.client(victim, officer) as confirm_victim,
                ):
                    alert, t0, api_s = _send_alert(to_victim, confirm_victim, body)
                replicas.kill(victim)
                killed_at = time.monotonic()
                failover.killed = victim.name
                log.info(
                    "killed replica %s (the leader) %.0f ms after the alert call",
                    victim.name,
                    (killed_at - t0) * 1000,
                )
                survivor = replicas.alive()[0]
                http.close()
                confirmer.close()
                http = replicas.client(survivor)
                confirmer = replicas.client(survivor, officer)
            else:
                alert, t0, api_s = _send_alert(http, confirmer, body)
            current = _Round(alert["alert_id"], t0, api_s, payload_bytes=alert["payload_bytes"])
            collector.wait(current, current.playing, nodes)
            current.cancel_t0 = time.monotonic()
            cancelled = http.post(f"/api/v1/alerts/{alert['id']}/cancel", timeout=API_TIMEOUT_S)
            current.cancel_api_s = time.monotonic() - current.cancel_t0
            if cancelled.status_code != 200:
                raise RuntimeError(f"cancel answered {cancelled.status_code}: {cancelled.text}")
            collector.wait(current, current.cancelled, nodes)
            if number == kill_round and replicas is not None:
                _take_over(replicas, failover, killed_at)
            _wait_all_quiet(http, replicas)
            if collector.topics:
                current.floor_t0 = floor.publish(collector.topics, current.alert_id)
                collector.wait(current, current.floor, nodes)
            collector.pull(current)  # late duplicates and plan refusals
            arrived = [at - current.t0 for at in current.arrived.values()]
            log.info(
                "round %s: received %s, playing %s, cancelled %s, probe %s of %s%s; "
                "API %.0f ms, delivery p99 %.0f ms",
                number + 1 if number >= 0 else "warm-up",
                len(current.received),
                len(current.playing),
                len(current.cancelled),
                len(current.floor),
                nodes,
                " (a replica was killed)" if number == kill_round else "",
                current.api_s * 1000,
                percentile(arrived, 99) * 1000 if arrived else float("nan"),
            )
            if number >= 0:
                done.append(current)
    finally:
        http.close()
        confirmer.close()
    return done, collector, failover


def _wait_all_quiet(http: httpx.Client, replicas: ReplicaSet | None) -> None:
    """Every running replica has taken in what the stations sent."""
    if replicas is None:
        wait_quiet(http)
        return
    for replica in replicas.alive():
        with replicas.client(replica) as each:
            wait_quiet(each)


def _summarise(
    nodes: int,
    payload: Payload,
    workers: int,
    registration_s: float,
    connect_s: float,
    done: list[_Round],
    collector: _Collector,
    station_ids: list[str],
    replicas: int = 1,
    failover: Failover | None = None,
) -> AlertBenchResult:
    deliver, node, accept, acked, e2e, raw = [], [], [], [], [], []
    cancel, cancel_deliver, api, firsts = [], [], [], []
    cancel_api = [r.cancel_api_s for r in done]
    for r in done:
        deliver += [at - r.t0 for at in r.arrived.values()]
        accept += [r.received[sid] - at for sid, at in r.arrived.items() if sid in r.received]
        node += [r.playing[sid] - at for sid, at in r.arrived.items() if sid in r.playing]
        if r.arrived:
            firsts.append(min(r.arrived.values()) - r.t0)
        acked += [at - r.t0 for at in r.received.values()]
        e2e += [at - r.t0 for at in r.playing.values()]
        raw += [at - r.floor_t0 for at in r.floor.values()]
        cancel += [at - r.cancel_t0 for at in r.cancelled.values()]
        cancel_deliver += [at - r.cancel_t0 for at in r.cancel_arrived.values()]
        api.append(r.api_s)
    per_station, shares = _swarm_work(done)
    everywhere = set(station_ids)
    missing = set()
    for r in done:
        missing |= everywhere - set(r.playing)
    deliver_s, raw_s, cancel_deliver_s = (
        Spread.of(deliver),
        Spread.of(raw),
        Spread.of(cancel_deliver),
    )
    return AlertBenchResult(
        nodes=nodes,
        payload=payload,
        payload_bytes=max((r.payload_bytes for r in done), default=0),
        rounds=len(done),
        workers=workers,
        delivered=min((len(r.arrived.keys() & r.received.keys()) for r in done), default=0),
        acked_playing=min((len(r.playing) for r in done), default=0),
        cancelled=min((len(r.cancelled) for r in done), default=0),
        refused=sum(len(r.refused) for r in done),
        registration_s=round(registration_s, 2),
        connect_s=round(connect_s, 2),
        end_to_end=Spread.of(e2e),
        deliver=deliver_s,
        node=Spread.of(node),
        accept=Spread.of(accept),
        acked=Spread.of(acked),
        first_arrival_ms=round(sorted(firsts)[len(firsts) // 2] * 1000, 1) if firsts else 0.0,
        raw=raw_s,
        cancel_deliver=cancel_deliver_s,
        cancel=Spread.of(cancel),
        api_call=Spread.of(api),
        cancel_call=Spread.of(cancel_api),
        ratio=round(deliver_s.p99 / raw_s.p99, 2) if raw_s.p99 else 0.0,
        cancel_ratio=round(cancel_deliver_s.p99 / raw_s.p99, 2) if raw_s.p99 else 0.0,
        swarm_cpu_us=per_station,
        swarm_share=shares,
        load=os.getloadavg(),
        missing=sorted(missing)[:20],
        errors=collector.errors[:20],
        replicas=replicas,
        killed=failover.killed if failover else None,
        takeover_s=failover.takeover_s if failover else None,
        rolled_after_kill=failover.rolled if failover and failover.killed else None,
        duplicates=sum(r.duplicates for r in done),
        plan_refusals=collector.plan_refusals[:20],
    )


def _swarm_work(done: list[_Round]) -> tuple[float, float]:
    """Median µs of CPU per station per alert in a swarm process, and its share of a core."""
    per_station, shares = [], []
    for r in done:
        by_worker: dict[int, list[Mark]] = {}
        for mark in r.work:
            by_worker.setdefault(mark.worker, []).append(mark)
        for marks in by_worker.values():
            received = [m for m in marks if m.kind == "alert_received"]
            playing = [m for m in marks if m.kind == "alert_playing"]
            if len(received) < 2 or not playing:
                continue
            first = min(received, key=lambda m: m.at)
            last = max(playing, key=lambda m: m.at)
            cpu, wall = last.cpu - first.cpu, last.at - first.at
            per_station.append(cpu / (len(received) - 1) * 1e6)
            if wall > 0:
                shares.append(cpu / wall)
    return (
        round(statistics.median(per_station), 1) if per_station else 0.0,
        round(statistics.median(shares), 2) if shares else 0.0,
    )


def run_alert_bench(
    nodes: int,
    payload: Payload = "canned",
    rounds: int = 5,
    workers: int | None = None,
    health: bool = True,
    warmup: int = 1,
    replicas: int = 1,
    kill_replica: bool = False,
    admin_database_url: str = DEFAULT_ADMIN_URL,
    relay_ms: float | None = None,
    player_start_ms: float | None = None,
) -> AlertBenchResult:
    """Run the whole benchmark (see the module doc) and return its figures.

    ``replicas`` > 1 runs that many ``loaxa serve`` processes on a fresh PostgreSQL
    database made next to ``admin_database_url``'s; ``kill_replica`` kills the leader in
    the middle round (see :func:`_run_rounds`).
    """
    if nodes < 1 or rounds < 1 or replicas < 1:
        raise ValueError("nodes, rounds and replicas must be positive")
    if kill_replica and replicas < 2:
        raise ValueError("--kill-replica needs --replicas 2 or more")
    if player_start_ms is None:
        # A canned alert plays from the library a station keeps decoded; custom audio
        # arrives with the alert and is decoded as it plays.
        player_start_ms = PLAYER_READY_START_MS if payload == "canned" else PLAYER_START_MS
    if replicas > 1:
        return _run_on_replicas(
            nodes, payload, rounds, workers, health, warmup, replicas, kill_replica,
            admin_database_url, relay_ms, player_start_ms,
        )  # fmt: skip
    with secured_stack("loaxa-bench-alert-") as (secured, stack):
        server = BenchServer.of_stack(stack)
        started = time.monotonic()
        stations = register_bulk(server, nodes)
        registration_s = time.monotonic() - started
        secured.grant_registered(stack)
        profile = node_profile(server, health, relay_ms, player_start_ms)
        broker = secured.broker
        with AlertSwarm(broker.host, broker.port, stations, profile, workers) as swarm:
            ready = swarm.start()
            require_connected(ready, nodes, log)
            floor = FloorPublisher(
                broker.host, broker.port, secured.server.username, secured.server.password
            )
            try:
                done, collector, _ = _run_rounds(
                    server, swarm, floor, nodes, payload, rounds, warmup
                )
            finally:
                floor.close()
    result = _summarise(
        nodes,
        payload,
        swarm.workers,
        registration_s,
        ready.seconds,
        done,
        collector,
        [s.station_id for s in stations],
    )
    return replace(result, relay_ms=profile.relay_ms, player_start_ms=profile.player_start_ms)


def _run_on_replicas(
    nodes: int,
    payload: Payload,
    rounds: int,
    workers: int | None,
    health: bool,
    warmup: int,
    count: int,
    kill_replica: bool,
    admin_database_url: str,
    relay_ms: float | None,
    player_start_ms: float | None,
) -> AlertBenchResult:
    """The same rounds against ``count`` real server processes on PostgreSQL."""
    with (
        tempfile.TemporaryDirectory(prefix="loaxa-bench-alert-replicas-") as tmp,
        fresh_postgres(admin_database_url) as url,
    ):
        secured = SecuredBroker(Path(tmp) / "mosquitto")
        with secured.broker as broker:
            env = {
                "LOAXA_MQTT_HOST": broker.host,
                "LOAXA_MQTT_PORT": str(broker.port),
                "LOAXA_MQTT_USERNAME": secured.server.username,
                "LOAXA_MQTT_PASSWORD": secured.server.password,
                # A roll every 3 s, so the bench sees the planner keep rolling after a
                # takeover; the leader check as in production.
                "LOAXA_PLAN_REFRESH_MIN": str(REPLICA_PLAN_REFRESH_MIN),
                "LOAXA_CLOCK_SYNC_MIN": "0",
            }
            admin = ("admin", f"Bench-{secrets.token_urlsafe(12)}")
            data_dir = Path(tmp) / "shared"
            with ReplicaSet(count, data_dir, url, env, admin) as replica_set:
                first = replica_set.replicas[0]
                settings = Settings(data_dir=data_dir, database_url=url, mqtt_enabled=False)
                keys = ServerKeys.load(settings)  # read from the shared data dir
                engine = make_engine(url)
                try:
                    server = BenchServer(
                        engine,
                        first.base_url,
                        replica_set.token,
                        lambda: keys.trusted_entries(utcnow()),
                        settings.amp_lead_ms,
                        settings.amp_tail_ms,
                    )
                    started = time.monotonic()
                    stations = register_bulk(server, nodes)
                    registration_s = time.monotonic() - started
                    secured.grant(load_station_accounts(url))
                    profile = node_profile(server, health, relay_ms, player_start_ms)
                    with AlertSwarm(broker.host, broker.port, stations, profile, workers) as swarm:
                        ready = swarm.start()
                        require_connected(ready, nodes, log)
                        floor = FloorPublisher(
                            broker.host,
                            broker.port,
                            secured.server.username,
                            secured.server.password,
                        )
                        try:
                            done, collector, failover = _run_rounds(
                                server, swarm, floor, nodes, payload, rounds, warmup,
                                replica_set, kill_replica,
                            )  # fmt: skip
                        finally:
                            floor.close()
                finally:
                    engine.dispose()
    result = _summarise(
        nodes,
        payload,
        swarm.workers,
        registration_s,
        ready.seconds,
        done,
        collector,
        [s.station_id for s in stations],
        count,
        failover,
    )
    return replace(result, relay_ms=profile.relay_ms, player_start_ms=profile.player_start_ms)


def result_rows(result: AlertBenchResult) -> list[tuple[str, str, str, str, str, str]]:
    """The table ``loaxa bench alert`` prints: (what, p50, p95, p99, max, n) rows."""

    def row(what: str, spread: Spread) -> tuple[str, str, str, str, str, str]:
        return (
            what,
            f"{spread.p50:,.1f}",
            f"{spread.p95:,.1f}",
            f"{spread.p99:,.1f}",
            f"{spread.max:,.1f}",
            f"{spread.n:,}",
        )

    r = result
    return [
        row("API call → playing (end to end)", r.end_to_end),
        row("API call → read by the station's client (delivery)", r.deliver),
        row("read → playing (node: verify, accept, relay, player)", r.node),
        row("  of which read → alert_received (queue, verify)", r.accept),
        row("raw broker fan-out, same size, same client (floor)", r.raw),
        row("cancel call → read by the station's client", r.cancel_deliver),
        row("cancel call → alert_cancelled", r.cancel),
        row("POST /alerts itself", r.api_call),
        row("POST /alerts/{id}/cancel itself", r.cancel_call),
    ]


def summary_lines(result: AlertBenchResult) -> list[str]:
    r = result
    lines = [
        f"{r.nodes:,} stations over {r.workers} swarm processes; {r.rounds} rounds of "
        f"{'an' if r.payload == 'inline' else 'a'} {r.payload} alert "
        f"({r.payload_bytes:,} bytes on the wire)",
        f"delivered {r.delivered:,} · playing {r.acked_playing:,} · cancelled {r.cancelled:,}"
        f" of {r.nodes:,} in every round · refused {r.refused}",
        f"delivery p99 / floor p99 = {r.deliver.p99:,.1f} / {r.raw.p99:,.1f} ms = "
        f"{r.ratio:.2f} × (target ≤ 2 ×, aim 1.5 ×); end-to-end p99 {r.end_to_end.p99:,.1f} ms "
        "(target ≤ 500 ms)",
        f"cancel: delivery p99 {r.cancel_deliver.p99:,.1f} ms ({r.cancel_ratio:.2f} × the "
        f"floor), → alert_cancelled p99 {r.cancel.p99:,.1f} ms; the cancel call answered "
        f"in p50 {r.cancel_call.p50:,.1f} ms",
        f"the server's own time to the wire (first station reached, median): "
        f"{r.first_arrival_ms:,.1f} ms; POST /alerts answered in p50 {r.api_call.p50:,.1f} ms",
        f"swarm: {r.swarm_cpu_us:,.0f} µs of CPU per station per alert (read → playing, "
        f"all included), {r.swarm_share:.0%} of a core per process meanwhile",
        f"drivers (in every figure from 'playing'): relay answers after {r.relay_ms:g} ms, "
        f"player starts an item due now after {r.player_start_ms:g} ms (loaxa bench drivers)",
        f"set-up: stations registered (bulk API) in {r.registration_s:.1f} s, "
        f"connected in {r.connect_s:.1f} s;"
        f" load average at the end {r.load[0]:.2f} {r.load[1]:.2f} {r.load[2]:.2f}",
    ]
    if r.replicas > 1:
        lines.append(
            f"{r.replicas} server replicas; killed: {r.killed or 'none'}"
            + (
                f" (another led {r.takeover_s} s later; planner rolled after: "
                f"{r.rolled_after_kill})"
                if r.killed
                else ""
            )
            + f"; alerts received or played twice: {r.duplicates}; plans refused:"
            f" {len(r.plan_refusals)}"
        )
    if r.plan_refusals:
        lines.append(f"refused plans: {', '.join(r.plan_refusals[:5])}")
    if r.missing:
        lines.append(f"not playing in some round: {', '.join(r.missing)}")
    if r.errors:
        lines.append(f"swarm errors: {'; '.join(r.errors[:5])}")
    return lines
