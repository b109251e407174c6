"""A swarm of simulated stations running the real node core, for alerts at fleet scale.

The health swarm (:mod:`loaxa.bench.swarm`) only publishes; an alert needs the station's brain.
Here every simulated station is what the firmware is minus its devices:

* its own MQTT connection and credentials, its own last will, subscribed to its plan,
  trust, command and alert topics and to the alert topic of every area it lies in
  (:mod:`loaxa_protocol.topics`), publishing ``online`` on connect as the agent does;
* the real :class:`~node_firmware.core.machine.NodeCore` fed every message it receives,
  so every signature, expiry, addressee and replay check a Pi makes is made here too;
* light drivers that take the real drivers' time: the relay answers (``RelaySwitched``)
  ``relay_ms`` after it was asked; the player is a timer that reports ``PlaybackStarted``
  at ``start_at`` but never sooner than ``player_start_ms`` after it was cued (what a
  warm ALSA player needs to write its first sample of an item due now), and
  ``PlaybackFinished`` after the duration. Both default to medians measured on the real
  drivers by ``loaxa bench drivers`` (:data:`RELAY_MS`, :data:`PLAYER_START_MS`);
  the audio cache is a set of hashes per station over one content-addressed
  store per process, which verifies the sha256 of every ``StoreAudio``; downloads
  (``FetchAudio``) go over HTTP once per file and process and are verified too;
  ``WakeAt`` is a timer. ``Publish`` goes out through the station's own connection.

Canned library audio (``AudioAsset.library``) counts as already cached: in the field it
reaches every station ahead of time through ``Plan.keep``, long before any alert, so the
swarm boots every core with it (``Boot.cached_audio``) instead of downloading it a
thousand times before the benchmark.

Scale, on two cores: a few ``spawn``ed worker processes (one per core by default), each
driving its share of paho clients from ONE thread over an epoll selector with paho's
non-blocking API, the machinery it shares with :mod:`loaxa.bench.swarm` (the reasons are written
there; the code is :mod:`loaxa.bench.swarm_transport`), plus one heap of timers per process for
every player, wake-up and relay of its stations — a thread per playing item does not
scale to a thousand stations in Python (see docs/performance.md). Inputs are queued and
handed to the cores outside paho's callbacks, so a core's ``Publish`` is written to the
socket at once.

What the benchmark reads: every time a core emits an ``alert_*`` event the worker notes
the station, the kind, the alert id, ``time.monotonic()`` right after the core returned
(the instant a Pi would have sent the ack) and ``arrived``: the instant the station's
client handed the message that caused it to ``on_message`` — read off the socket, before
the core ran. ``CLOCK_MONOTONIC`` is system-wide on Linux, so the parent compares both
with the instant it called the API. A message on an alert topic that starts with
:data:`FLOOR_MARK` is not given to the core: its arrival is stamped at that very same
point (the transport floor: same clients, same sockets, same loop, same stamp). The
sockets are read every few inputs while cores work (as a Pi's MQTT thread reads beside
its core), so "read by the station" does not include waiting for neighbours' cores; that
wait shows in the node part instead, where the issue puts the node's own work.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import heapq
import json
import logging
import selectors
import socket
import time
import urllib.request
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from loaxa.bench.swarm_transport import (
    IDLE_WAIT_S,
    Link,
    LoopWorker,
    SwarmReady,
    WorkerPool,
    run_worker,
)
from loaxa_protocol import KeyEntry, Keyring, Status, StatusState, topics
from node_firmware.core.events import (
    Action,
    AlertReceived,
    AudioFetched,
    AudioFetchFailed,
    AudioVerified,
    Boot,
    BrokerConnected,
    BrokerDisconnected,
    CommandReceived,
    FetchAudio,
    Input,
    PinAudio,
    PlanReceived,
    PlaybackFailed,
    PlaybackFinished,
    PlaybackStarted,
    Publish,
    ReadAmplifier,
    RelaySwitched,
    ReportHealth,
    Restart,
    RestartPlayer,
    SaveState,
    SendLog,
    SetRelay,
    SetVolume,
    StartPlayback,
    StopPlayback,
    StoreAudio,
    Tick,
    TrustReceived,
    VerifyAudio,
    WakeAt,
)
from node_firmware.core.machine import CoreSettings, NodeCore

log = logging.getLogger(__name__)

FLOOR_MARK = b"LOAXA-FLOOR:"
"""A payload starting with this on an alert topic is a transport probe, not an alert."""
AGENT_VERSION = "alert-swarm-1"
FETCH_TIMEOUT_S = 30.0
SUBSCRIBE_QOS = 1
READ_EVERY = 8
"""Inputs handed to cores between two reads of the sockets (see ``_process_inbox``)."""
ALERT_EVENT = b'"alert_id"'
REJECTED = b'"kind":"rejected"'


@dataclass(frozen=True)
class SimStation:
    """One simulated station: its id, broker account and the areas it lies in."""

    station_id: str
    username: str | None = None
    password: str | None = None
    areas: tuple[str, ...] = ()


RELAY_MS = 0.1
"""Relay round trip measured by ``loaxa bench drivers`` (2026-12-07, quiet machine):
LineRelay ``RELAY 1 ON`` → ``OK`` through a pseudo-terminal board, 0.09 ms p50, 0.12 ms
p95 (3.1-3.6 ms p95 under other sessions' load); rounded up."""
PLAYER_START_MS = 60.0
"""Start of an item due now whose file the player meets for the first time (ffmpeg
decodes it as it plays: a custom alert's audio), measured by ``loaxa bench drivers``
(2026-12-07, quiet machine, ALSA null device): 55 ms p50, 74 ms p95 (252-302 ms p50 at
load average 8-13)."""
PLAYER_READY_START_MS = 5.0
"""Start of an item due now from a file kept ready (the canned library, decoded ahead):
0.7 ms p50, 1.05 ms p95 on ALSA's null device (``loaxa bench drivers``, same day);
rounded up to what ``loaxa bench sound`` saw on a real-time PulseAudio sink from the
alert's arrival (3.6 ms p50, 7.4 ms p95)."""


@dataclass(frozen=True)
class NodeProfile:
    """What every station of the swarm shares: trusted keys, cached library, timings."""

    trusted_keys: tuple[dict[str, Any], ...]
    """``KeyEntry`` JSON dicts (what registration hands a station)."""
    cached_audio: tuple[str, ...] = ()
    """sha256 of the canned library: pre-distributed, so cached from boot."""
    amp_lead_ms: int = 1500
    amp_tail_ms: int = 1000
    heartbeat_s: float = 60.0
    health: bool = True
    """Publish the core's heartbeats (on a change of state and every ``heartbeat_s``)."""
    keepalive_s: int = 60
    relay_ms: float = RELAY_MS
    """The relay board's answer comes this long after the switch was asked."""
    player_start_ms: float = PLAYER_START_MS
    """The player's first sample comes at least this long after it was cued."""


@dataclass(frozen=True)
class Mark:
    """A core emitted an alert event (``kind``) for ``alert_id`` at monotonic ``at``."""

    station_id: str
    kind: str
    alert_id: str
    at: float
    reason: str | None = None
    arrived: float = 0.0
    """when the message that caused it reached the station's client (0: not a message)"""
    worker: int = 0
    cpu: float = 0.0
    """the CPU time its swarm process had used at ``at`` (``time.process_time()``)"""


@dataclass(frozen=True)
class FloorMark:
    """A transport probe ``tag`` reached ``station_id`` at monotonic ``at``."""

    station_id: str
    tag: str
    at: float


@dataclass(frozen=True)
class Collected:
    """What the workers noted since the last collection."""

    marks: list[Mark]
    floor: list[FloorMark]
    alert_topics: dict[str, int]
    """Topic → size in bytes of the alerts received on it (the probe copies both)."""
    errors: list[str]


# ------------------------------------------------------------------ one station


@dataclass(eq=False, kw_only=True)
class _Station(Link):
    spec: SimStation
    core: NodeCore
    cached: set[str]
    client: _CorkedClient | None = None
    wake_at: float | None = None
    playing: dict[str, int] = field(default_factory=dict)
    """item id → generation of the player timer that owns it (stop = forget)."""
    history: list[tuple[str, str, float]] = field(default_factory=list)
    """(what, item id, monotonic): the player's own record, for tests."""
    booted: float = field(default_factory=time.monotonic)


class _CorkedClient(mqtt.Client):
    """A paho client whose writes are gathered and sent once per turn of the loop.

    A station answering an alert writes three packets within microseconds (the PUBACK,
    ``alert_received``, ``alert_playing``); one ``send()`` for them instead of three is
    what TCP_CORK does for a C client (measured: ~4 % of the swarm's CPU per alert).
    """

    def __init__(self, *args: Any, corked: set[int], index: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out = bytearray()
        self._corked = corked
        self._index = index

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if not buf:
            return 0
        self.out += buf
        self._corked.add(self._index)
        return len(buf)

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        """The broker's PUBACK to a station's QoS 1 publish, without MQTT 5 decoding.

        paho builds a reason code and a properties object for every PUBACK even on MQTT
        3.1.1, where the packet is only a message id; the swarm sets no ``on_publish``, so
        forgetting the message is all there is to do (as paho's own path does after it).
        """
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol == MQTTProtocolVersion.MQTTv5 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            message = self._out_messages.pop(mid, None)
        if message is None:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        message.info._set_as_published()
        if message.qos > 0:
            self._inflight_messages -= 1
            if self._max_inflight_messages > 0:
                return self._update_inflight()
        return MQTTErrorCode.MQTT_ERR_SUCCESS


class _Cache:
    """One content-addressed store per process; each station owns a set of its hashes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def store(self, sha256: str, data: bytes) -> bool:
        """Keep ``data`` if it hashes to ``sha256`` (else refuse, as a Pi's cache would)."""
        if hashlib.sha256(data).hexdigest() != sha256:
            return False
        self.blobs.setdefault(sha256, data)
        return True


def _utc() -> datetime:
    return datetime.now(UTC)


class _Worker(LoopWorker[_Station]):
    """Drives its share of the swarm from one thread: sockets, cores, timers."""

    def __init__(
        self,
        conn: Connection,
        host: str,
        port: int,
        members: Sequence[SimStation],
        profile: NodeProfile,
        number: int = 0,
    ) -> None:
        super().__init__(conn, host, port, profile.keepalive_s)
        self._number = number
        self._profile = profile
        keyring = Keyring.from_entries([KeyEntry.model_validate(k) for k in profile.trusted_keys])
        self._stations = self._links
        self._by_id: dict[str, _Station] = {}
        for index, spec in enumerate(members):
            settings = CoreSettings(
                station_id=spec.station_id,
                keyring=keyring,
                areas=frozenset(spec.areas),
                amp_lead=timedelta(milliseconds=profile.amp_lead_ms),
                amp_tail=timedelta(milliseconds=profile.amp_tail_ms),
                heartbeat=timedelta(seconds=profile.heartbeat_s),
            )
            station = _Station(
                index=index,
                station_id=spec.station_id,
                spec=spec,
                core=NodeCore(settings),
                cached=set(profile.cached_audio),
            )
            self._stations.append(station)
            self._by_id[spec.station_id] = station
        self._cache = _Cache()
        self._inbox: deque[tuple[int, Input, float]] = deque()
        self._arrived = 0.0
        self._deferred: deque[tuple[int, dict[str, Any]]] = deque()
        self._timers: list[tuple[float, int, int, str, str, int]] = []
        self._timer_seq = 0
        self._play_gen = 0
        self._corked: set[int] = set()
        self._marks: list[Mark] = []
        self._floor: list[FloorMark] = []
        self._alert_topics: dict[str, int] = {}
        self._errors: list[str] = []
        self._fetches: dict[str, list[int]] = {}
        self._fetched: deque[tuple[str, bytes | None, str]] = deque()
        self._fetch_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="swarm-fetch")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)

    # -------------------------------------------------------- connections

    def _connect(self, station: _Station) -> None:
        """Open the station's connection as the agent's MQTT link does (clean session)."""
        spec = station.spec
        client = _CorkedClient(
            CallbackAPIVersion.VERSION2,
            client_id=f"loaxa-node-{spec.station_id}",
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
            userdata=station.index,
            corked=self._corked,
            index=station.index,
        )
        if spec.username:
            client.username_pw_set(spec.username, spec.password)
        client.will_set(
            topics.status(spec.station_id), _status(spec.station_id, StatusState.OFFLINE), 1, True
        )
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._open(station, client)

    def _on_connected(self, station: _Station, client: mqtt.Client) -> None:
        sid = station.spec.station_id
        wanted = [topics.trust(sid), topics.plan(sid), topics.command(sid), topics.alert(sid)]
        wanted += [topics.area_alert(code) for code in station.spec.areas]
        client.subscribe([(topic, SUBSCRIBE_QOS) for topic in wanted])
        client.publish(topics.status(sid), _status(sid, StatusState.ONLINE), 1, True)
        self._inbox.append((station.index, BrokerConnected(), 0.0))

    def _on_message(self, _client: mqtt.Client, index: int, message: mqtt.MQTTMessage) -> None:
        payload = message.payload
        leaf = message.topic.rsplit("/", 1)[-1]
        if leaf == "alert":
            if payload.startswith(FLOOR_MARK):
                tag = payload[len(FLOOR_MARK) : payload.index(b":", len(FLOOR_MARK))].decode()
                sid = self._stations[index].spec.station_id
                self._floor.append(FloorMark(sid, tag, time.monotonic()))
                return
            self._alert_topics[message.topic] = len(payload)
            self._inbox.append((index, AlertReceived(bytes(payload)), time.monotonic()))
        elif leaf == "plan":
            self._inbox.append((index, PlanReceived(bytes(payload)), time.monotonic()))
        elif leaf == "trust":
            self._inbox.append((index, TrustReceived(bytes(payload)), time.monotonic()))
        elif leaf == "cmd":
            self._inbox.append((index, CommandReceived(bytes(payload)), time.monotonic()))

    def _drop(self, station: _Station) -> bool:
        """Forget a connection (lost, or cut on purpose); the core hears of it."""
        was_connected = station.connected
        dropped = super()._drop(station)  # a reconnect starts a fresh, clean session
        if dropped and was_connected:
            self._inbox.append((station.index, BrokerDisconnected(), 0.0))
        return dropped

    def _wants_write(self, station: _Station) -> bool | None:
        client = station.client
        if not station.online or client is None or station.index in self._corked:
            return None  # gathered bytes are flushed (and watched) at the end of the turn
        return bool(client.out) or client.want_write()

    def _flush(self, station: _Station) -> bool:
        """Send what the station's client gathered; False when the connection is dead."""
        client = station.client
        if client is None or not client.out or not station.online:
            return True
        try:
            sent = station.sock.send(client.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        del client.out[:sent]
        return True

    def _flush_all(self) -> None:
        corked = list(self._corked)
        self._corked.clear()  # the same set object: every client adds to it
        for index in corked:
            station = self._stations[index]
            if not self._flush(station):
                self._drop(station)
            else:
                self._watch(station)

    def _wakeup(self) -> None:
        self._drain_fetched()

    # -------------------------------------------------------- the cores

    def _boot(self) -> None:
        for station in self._stations:
            boot = Boot(stored_plan=None, memory={}, cached_audio=frozenset(station.cached))
            self._feed(station, boot)

    def _feed(self, station: _Station, event: Input, arrived: float = 0.0) -> None:
        self._arrived = arrived
        try:
            actions = station.core.handle(event, _utc())
        except Exception as exc:  # a core bug must be seen, not kill a thousand stations
            log.exception("core of %s failed on %s", station.spec.station_id, type(event))
            self._errors.append(f"{station.spec.station_id}: {type(exc).__name__}: {exc}")
            return
        emitted = time.monotonic()
        for action in actions:
            try:
                self._run(station, action, emitted)
            except Exception as exc:
                log.exception("action %s failed", type(action).__name__)
                self._errors.append(f"{station.spec.station_id}: {type(action).__name__}: {exc}")

    def _run(self, station: _Station, action: Action, emitted: float) -> None:
        match action:
            case WakeAt(at=at):
                self._wake(station, at)
            case Publish(topic=topic, payload=payload, qos=qos, retain=retain):
                if (ALERT_EVENT in payload or REJECTED in payload) and topic.endswith("/event"):
                    self._note(station, payload, emitted)
                self._publish(station, topic, payload, qos, retain)
            case SetRelay(on=on):
                if self._profile.relay_ms > 0:
                    answer_at = time.monotonic() + self._profile.relay_ms / 1000
                    self._push(answer_at, station, "relay", "on" if on else "off", 0)
                else:
                    self._inbox.append((station.index, RelaySwitched(on), 0.0))
            case StoreAudio(sha256=sha, data=data):
                if self._cache.store(sha, data):
                    station.cached.add(sha)
                else:
                    log.warning(
                        "%s: inline audio does not hash to %s", station.spec.station_id, sha
                    )
            case StartPlayback():
                self._start(station, action)
            case StopPlayback(item_id=item_id):
                if station.playing.pop(item_id, None) is not None:
                    station.history.append(("stopped", item_id, time.monotonic()))
            case RestartPlayer():
                station.playing.clear()
            case FetchAudio(ref=ref):
                self._fetch(station, ref.sha256, ref.url)
            case ReportHealth(snapshot=snapshot):
                if self._profile.health:
                    self._deferred.append((station.index, snapshot))
            case VerifyAudio(sha256=sha):  # the swarm's cache is memory: it cannot rot
                self._inbox.append((station.index, AudioVerified(sha, True), 0.0))
            case SaveState() | PinAudio() | SetVolume() | ReadAmplifier() | Restart():
                pass  # nothing to persist or drive in memory; the core keeps its own state
            case SendLog(command_seq=seq):
                log.info("%s: fetch_log %s ignored by the swarm", station.spec.station_id, seq)
            case _:
                raise TypeError(f"unknown action {action!r}")

    def _note(self, station: _Station, payload: bytes, emitted: float) -> None:
        # The core's events are compact pydantic JSON and these fields are codes without
        # quotes, so a search is enough (and a tenth of json.loads on the hot path).
        # A forged alert's refusal names no alert (its fields were never trusted): "".
        alert_id = _field(payload, b"alert_id") or ""
        kind, reason = _field(payload, b"kind") or "?", _field(payload, b"reason")
        mark = Mark(
            station.spec.station_id,
            kind,
            alert_id,
            emitted,
            reason,
            self._arrived,
            self._number,
            time.process_time(),
        )
        self._marks.append(mark)

    def _publish(
        self, station: _Station, topic: str, payload: bytes, qos: int, retain: bool
    ) -> None:
        client = station.client
        if client is None:
            return
        client.publish(topic, payload, qos=qos, retain=retain)

    # -------------------------------------------------------- timers: wake, player

    def _push(self, at: float, station: _Station, kind: str, item_id: str, gen: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, station.index, kind, item_id, gen))

    def _wake(self, station: _Station, at: datetime) -> None:
        due = time.monotonic() + (at - _utc()).total_seconds()
        if station.wake_at is not None and abs(station.wake_at - due) < 0.001:
            return
        station.wake_at = due
        self._push(due, station, "wake", "", 0)

    def _start(self, station: _Station, action: StartPlayback) -> None:
        if action.stream is None and action.sha256 not in station.cached:
            reason = f"audio {action.sha256} is not in the cache"
            self._inbox.append((station.index, PlaybackFailed(action.item_id, reason), 0.0))
            return
        self._play_gen += 1
        station.playing[action.item_id] = self._play_gen
        now = time.monotonic()
        due = now + (action.start_at - _utc()).total_seconds()
        # A real player cued late (an alert is cued for now) starts when it can.
        due = max(due, now + self._profile.player_start_ms / 1000)
        self._push(due, station, "start", action.item_id, self._play_gen)
        # The file's own length, as the real player reads it; the plan's for a stream.
        self._push(
            due + action.duration_ms / 1000, station, "finish", action.item_id, self._play_gen
        )

    def _fire_due(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _at, _seq, index, kind, item_id, gen = heapq.heappop(self._timers)
            station = self._stations[index]
            if kind == "wake":
                if station.wake_at is not None and station.wake_at <= now:
                    station.wake_at = None
                    self._feed(station, Tick())
                continue
            if kind == "relay":
                self._feed(station, RelaySwitched(item_id == "on"))
                now = time.monotonic()
                continue
            if station.playing.get(item_id) != gen:
                continue  # stopped: a stop is final, no callback
            if kind == "start":
                station.history.append(("started", item_id, time.monotonic()))
                self._feed(station, PlaybackStarted(item_id, _utc()))
            else:
                del station.playing[item_id]
                station.history.append(("finished", item_id, time.monotonic()))
                self._feed(station, PlaybackFinished(item_id, _utc()))
            now = time.monotonic()

    # -------------------------------------------------------- downloads

    def _fetch(self, station: _Station, sha: str, url: str) -> None:
        if sha in self._cache.blobs:
            station.cached.add(sha)
            self._inbox.append((station.index, AudioFetched(sha), 0.0))
            return
        waiting = self._fetches.setdefault(sha, [])
        waiting.append(station.index)
        if len(waiting) == 1:
            self._fetch_pool.submit(self._download, sha, url)

    def _download(self, sha: str, url: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
                data: bytes | None = response.read()
            reason = ""
        except Exception as exc:  # reported to the cores waiting for it
            data, reason = None, f"{type(exc).__name__}: {exc}"
        self._fetched.append((sha, data, reason))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _drain_fetched(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        while self._fetched:
            sha, data, reason = self._fetched.popleft()
            ok = data is not None and self._cache.store(sha, data)
            if data is not None and not ok:
                reason = "downloaded file does not match its sha256"
            for index in self._fetches.pop(sha, []):
                station = self._stations[index]
                if ok:
                    station.cached.add(sha)
                    self._inbox.append((index, AudioFetched(sha), 0.0))
                else:
                    self._inbox.append((index, AudioFetchFailed(sha, reason), 0.0))

    # -------------------------------------------------------- health (off the critical path)

    def _report_health(self, index: int, snapshot: dict[str, Any]) -> None:
        station = self._stations[index]
        if not station.online:
            return
        report = {
            "type": "health",
            "station_id": station.spec.station_id,
            "at": _utc().isoformat(),
            "agent_version": AGENT_VERSION,
            "uptime_s": round(time.monotonic() - station.booted, 3),
            **{k: v for k, v in snapshot.items() if v is not None},
        }
        sid = station.spec.station_id
        self._publish(station, topics.health(sid), json.dumps(report).encode(), 0, False)

    # -------------------------------------------------------- commands from the parent

    def _handle(self, message: tuple[Any, ...]) -> bool:
        match message:
            case ("collect",):
                self._conn.send(
                    (
                        "collected",
                        self._marks,
                        self._floor,
                        dict(self._alert_topics),
                        self._errors,
                    )
                )
                self._marks, self._floor, self._errors = [], [], []
            case ("offline", list(ids)):
                for sid in ids:
                    if (station := self._by_id.get(sid)) is not None:
                        self._drop(station)
                self._conn.send(("ok",))
            case ("online", list(ids)):
                for sid in ids:
                    station = self._by_id.get(sid)
                    if station is not None and not station.online:
                        self._connect(station)
                self._conn.send(("ok",))
            case ("history", list(ids)):
                found = {sid: list(self._by_id[sid].history) for sid in ids if sid in self._by_id}
                self._conn.send(("history", found))
            case ("connected",):
                self._conn.send(("connected", sum(s.connected for s in self._stations)))
            case _:
                return False
        return True

    # -------------------------------------------------------- the loop

    def _next_timeout(self) -> float:
        if self._inbox:
            return 0.0
        timeout = IDLE_WAIT_S
        if self._timers:
            timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
        if self._deferred:
            timeout = 0.0
        return timeout

    def _process_inbox(self) -> None:
        # Only what is queued now: follow-ups (a relay's answer) wait for the next turn,
        # behind what the sockets delivered meanwhile, as on the agent's queue.
        # A player that is due starts between two stations' inputs, not after the whole
        # batch: on a Pi the player waits for its instant whatever the neighbours do.
        # The sockets are read every READ_EVERY inputs: on a Pi the MQTT client reads in
        # its own thread whatever the core does, so a message is "read by the station"
        # when it reaches the client, not when a neighbour's core lets the loop return to
        # the selector; acks gathered meanwhile leave at once for the same reason.
        timers = self._timers
        for count in range(1, len(self._inbox) + 1):
            index, event, arrived = self._inbox.popleft()
            self._feed(self._stations[index], event, arrived)
            if timers and timers[0][0] <= time.monotonic():
                self._fire_due()
            if count % READ_EVERY == 0:
                self._poll(0)
                self._flush_all()

    def _set_up(self, connect_timeout_s: float) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, -1)
        self._boot()
        super()._set_up(connect_timeout_s)
        # Five hundred stations' cores, keyrings and clients live as long as the
        # process: out of the collector's sight, so a full collection during an alert
        # does not walk them all (a Pi's collector walks one station's; measured: a
        # gen-2 pass over 500 cores costs ~15 ms, ~10 % of a core's work per alert).
        gc.freeze()

    def _turn(self) -> None:
        # The base loop then runs the keepalives and flushes what the turn gathered.
        self._poll(self._next_timeout())
        self._process_inbox()
        self._fire_due()
        if not self._inbox and self._deferred:
            # Heartbeats go when nothing urgent waits, as the agent's probe thread.
            index, snapshot = self._deferred.popleft()
            self._report_health(index, snapshot)

    def _close(self) -> None:
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)


def _field(payload: bytes, name: bytes) -> str | None:
    """The string value of top-level field ``name`` in compact JSON, or None."""
    key = b'"' + name + b'":"'
    start = payload.find(key)
    if start < 0:
        return None
    start += len(key)
    return payload[start : payload.index(b'"', start)].decode()


def _status(station_id: str, state: StatusState) -> bytes:
    at = None if state is StatusState.OFFLINE else _utc()
    return (
        Status(station_id=station_id, state=state, at=at)
        .model_dump_json(exclude_none=True)
        .encode()
    )


def _worker_main(
    conn: Connection,
    host: str,
    port: int,
    members: list[SimStation],
    profile: NodeProfile,
    connect_timeout_s: float,
    number: int = 0,
) -> None:
    run_worker(
        conn,
        lambda: _Worker(conn, host, port, members, profile, number),
        connect_timeout_s,
        "alert swarm worker",
    )


# ------------------------------------------------------------------ the parent side


class AlertSwarm(WorkerPool):
    """N simulated stations running the node core, over a few processes; a context manager."""

    what = "alert swarm worker"

    def __init__(
        self,
        host: str,
        port: int,
        stations: Sequence[SimStation],
        profile: NodeProfile,
        workers: int | None = None,
    ) -> None:
        super().__init__(host, port, stations, workers)
        self.profile = profile

    def start(self, timeout_s: float = 120.0) -> SwarmReady:
        """Spawn the workers, boot every core and connect every station."""
        return self._spawn(
            _worker_main,
            lambda number: (
                self.host,
                self.port,
                self.stations[number :: self.workers],
                self.profile,
                timeout_s,
                number,
            ),
            "loaxa-alert-swarm",
            timeout_s + 60,
        )

    def collect(self) -> Collected:
        """Marks and probe arrivals noted since the last call (each is returned once)."""
        replies = self._ask(("collect",))
        topics_seen: dict[str, int] = {}
        for reply in replies:
            topics_seen.update(reply[3])
        return Collected(
            marks=[m for r in replies for m in r[1]],
            floor=[f for r in replies for f in r[2]],
            alert_topics=topics_seen,
            errors=[e for r in replies for e in r[4]],
        )

    def offline(self, station_ids: Sequence[str]) -> None:
        """Cut these stations' connections (no goodbye: the broker sends their last will)."""
        self._ask(("offline", list(station_ids)))

    def online(self, station_ids: Sequence[str]) -> None:
        """Reconnect these stations (clean session, as the agent's link)."""
        self._ask(("online", list(station_ids)))

    def connected(self) -> int:
        return sum(r[1] for r in self._ask(("connected",)))

    def history(self, station_ids: Sequence[str]) -> dict[str, list[tuple[str, str, float]]]:
        """Each station's player record: ``(started|stopped|finished, item_id, monotonic)``."""
        merged: dict[str, list[tuple[str, str, float]]] = {}
        for reply in self._ask(("history", list(station_ids))):
            merged.update(reply[1])
        return merged


def floor_payload(tag: str, size: int) -> bytes:
    """A transport probe of exactly ``size`` bytes (at least the mark and the tag)."""
    head = FLOOR_MARK + tag.encode() + b":"
    return head + b"x" * max(0, size - len(head))


def trusted_key_dicts(entries: Sequence[KeyEntry]) -> tuple[dict[str, Any], ...]:
    """Keys as plain JSON dicts, to cross the process boundary."""
    return tuple(entry.model_dump(mode="json") for entry in entries)
