"""The station agent: one loop owns the core, drivers turn its actions into I/O.

Every driver callback (paho's network thread, the player's timer thread, download
workers) only puts an input on the queue; the loop alone calls the core, so the core
needs no locks and its behaviour is exactly what the unit tests show.

Alerts must sound within a fraction of a second, so nothing slow runs on the loop:
downloads, health probes and amplifier readings run on worker threads, and an alert
input goes ahead of queued driver news (see :class:`Inbox`). What stays on the loop
is quick by design: publishing, switching the relay, saving state, appending an event to
the outbox (one fsync; ``drivers/courier.py``), and writing an inline alert's audio
(which must be on disk before the player is told to play it). Re-hashing cached audio
runs on its own worker thread, one file at a time.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loaxa_protocol import AudioRef, CommandReply, Health, Keyring, topics
from loaxa_protocol.errors import ConfigError, FetchError, RelayError
from node_firmware import AGENT_VERSION
from node_firmware.config import NodeConfig
from node_firmware.core.events import (
    Action,
    AlertReceived,
    AudioFetched,
    AudioFetchFailed,
    AudioVerified,
    Boot,
    BrokerConnected,
    CommitRelease,
    FetchAudio,
    FetchRelease,
    ForgetUpdateOutcome,
    Input,
    InstallRelease,
    PinAudio,
    PlaybackFailed,
    PlaybackFinished,
    PlaybackStarted,
    PlayLiveFrame,
    Publish,
    ReadAmplifier,
    RelayFailed,
    RelayReadback,
    RelaySwitched,
    ReleaseFailed,
    ReleaseFetched,
    ReleaseInstalled,
    ReportHealth,
    Restart,
    RestartPlayer,
    RollBackRelease,
    SaveState,
    SendLog,
    SetRelay,
    SetVolume,
    StartLive,
    StartPlayback,
    StopLive,
    StopPlayback,
    StoreAudio,
    StreamUnreachable,
    SwitchRelease,
    Tick,
    VerifyAudio,
    WakeAt,
)
from node_firmware.core.machine import CoreSettings, NodeCore
from node_firmware.drivers.audio_cache import AudioCache
from node_firmware.drivers.courier import Courier
from node_firmware.drivers.fetcher import AudioFetcher, DownloadError
from node_firmware.drivers.live_output import (
    AlsaLiveSink,
    LiveOutput,
    LiveSink,
    SimulatedLiveSink,
)
from node_firmware.drivers.memory import trim_heap
from node_firmware.drivers.modem import Modem, ModemError, health_fields
from node_firmware.drivers.modem_sim import SimulatedModem
from node_firmware.drivers.mqtt_link import MqttLink
from node_firmware.drivers.netwatch import NetworkWatcher
from node_firmware.drivers.player import AlsaPlayer, Player, open_player
from node_firmware.drivers.probes import ReportingRelay, amp_readback, system_health
from node_firmware.drivers.relay import Relay, open_relay
from node_firmware.drivers.slots import ENV_LAUNCHER, Slots, UpdateError
from node_firmware.drivers.state_store import StateStore
from node_firmware.drivers.systemd import ServiceWatchdog, notify, watchdog_period
from node_firmware.drivers.test_tone import ensure_test_tone

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


MAX_REPLY_BYTES = 60 * 1024
PLAYER_ANSWER_S = 1.0
"""How long the service watchdog waits for the player's bookkeeping to answer."""

TRIM_AFTER_CONNECT_S = 5.0
"""Start-up is over (config, stored plan, first connection, retained messages) by then."""

_OVERTAKEN_BY_ALERTS = (AudioFetched, AudioFetchFailed, RelayReadback, StreamUnreachable, Tick)
"""Driver news whose order does not matter: an alert may go ahead of it."""


class Inbox:
    """The loop's input queue, in arrival order except that an alert jumps ahead.

    An alert is placed before any queued input of ``_OVERTAKEN_BY_ALERTS`` (finished
    downloads, readings), never before a signed message (a trust update may bring the
    key the alert is signed with) or a player or relay report (the core must know
    whether the bulletin it pre-empts had finished). Any thread may ``put``.
    """

    def __init__(self) -> None:
        self._items: deque[Input] = deque()
        self._ready = threading.Condition()

    def put(self, item: Input) -> None:
        with self._ready:
            if isinstance(item, AlertReceived):
                index = len(self._items)
                while index and isinstance(self._items[index - 1], _OVERTAKEN_BY_ALERTS):
                    index -= 1
                self._items.insert(index, item)
            else:
                self._items.append(item)
            self._ready.notify()

    def get(self, timeout_s: float | None) -> Input | None:
        """The next input, or None when ``timeout_s`` passed without one."""
        with self._ready:
            if not self._ready.wait_for(lambda: bool(self._items), timeout_s):
                return None
            return self._items.popleft()

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)


class RecentLog(logging.Handler):
    """The agent's last log lines, for a technician's ``fetch_log`` command."""

    def __init__(self, keep: int = 1000) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=keep)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def core_settings(config: NodeConfig, test_tone: AudioRef, amp_readback: bool) -> CoreSettings:
    keyring = Keyring()
    for key in config.trusted_keys:
        keyring.add(key.kid, key.public_key, set(key.purposes), key.valid_until)
    return CoreSettings(
        station_id=config.station_id,
        keyring=keyring,
        areas=frozenset(config.areas),
        amp_lead=timedelta(milliseconds=config.amp_lead_ms),
        amp_tail=timedelta(milliseconds=config.amp_tail_ms),
        heartbeat=timedelta(seconds=config.heartbeat_s),
        test_tone=test_tone,
        amp_readback=amp_readback,
        agent_version=AGENT_VERSION,
    )


class NodeAgent:
    """Wires one station's drivers around its core. ``run()`` blocks until ``stop()``."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        relay: Relay | None = None,
        player: Player | None = None,
        inbox: Inbox | None = None,
        trim_after_start: bool = False,
    ) -> None:
        self.config = config
        data_dir = Path(config.data_dir)
        self.store = StateStore(data_dir / "state")
        self.cache = AudioCache(data_dir / "audio", config.cache_max_bytes)
        self.fetcher = AudioFetcher(self.cache)
        self.board = None
        if relay is None:
            relay, self.board = open_relay(config.relay)
        self.relay = relay
        self.player = player or open_player(config.player)
        sink: LiveSink = SimulatedLiveSink()
        if isinstance(self.player, AlsaPlayer):
            sink = AlsaLiveSink(self.player)
        self.live = LiveOutput(sink)
        self.core = NodeCore(
            core_settings(
                config,
                test_tone=ensure_test_tone(self.cache),
                amp_readback=isinstance(self.relay, ReportingRelay),
            )
        )
        self.modem, self.modem_sim = self._open_modem()
        self.recent_log = RecentLog()
        self.restart_requested = False
        self.relaunch_requested = False
        """an update switched slots: restart through the launcher, not in place"""
        self.slots = Slots(data_dir)
        self._started_monotonic = time.monotonic()
        self.inputs = inbox if inbox is not None else Inbox()  # a bench may stamp arrivals
        self.courier = Courier(
            data_dir / "outbox", topics.health(config.station_id), lambda: self.inputs.put(Tick())
        )
        self.link = MqttLink(
            config.mqtt,
            config.station_id,
            self.inputs.put,
            config.areas,
            on_acked=self.courier.acked,
        )
        self.courier.use(self.link)
        # When the station's own link returns, try the broker within seconds instead of
        # sitting out a back-off drawn while cut off (issue 11: an alert within 10 s).
        self.netwatch = NetworkWatcher(self.link.network_returned, lambda: self.link.broker_address)
        self._downloads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fetch")
        # Probes can block for seconds (a silent modem, a hung timedatectl); off the loop
        # they cannot delay a cue.
        self._probes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probes")
        # One file at a time: re-reading the library must not starve playback of the disk.
        self._verifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify")
        # Fetching and installing a release (minutes of pip on a Pi): never on the loop.
        self._updates = ThreadPoolExecutor(max_workers=1, thread_name_prefix="update")
        self._pinned: frozenset[str] = frozenset()
        # Only in the station's own process (main.run_agent): in a process that also runs
        # a server or many agents (tests, `loaxa stack`) the trim of a large heap would
        # hold the allocator for a moment and return little.
        self._trim_at: float | None = None if trim_after_start else float("inf")
        self._stopping = threading.Event()
        self._wake_at: datetime | None = None
        self._turns = 0
        self._turns_at_check = -1
        period = watchdog_period()
        self._watchdog = None if period is None else ServiceWatchdog(period, self.health_problem)

    def _open_modem(self) -> tuple[Modem | None, SimulatedModem | None]:
        cfg = self.config.modem
        if cfg.driver == "sim":
            simulated = SimulatedModem()
            return Modem(simulated.port, cfg.baudrate), simulated
        if cfg.driver == "serial":
            if cfg.port is None:
                raise ConfigError("modem.port is required for the serial modem driver")
            return Modem(cfg.port, cfg.baudrate), None
        return None, None

    # ------------------------------------------------------------ lifecycle

    def run(self) -> bool:
        """Run until stopped; True when a ``restart`` command asked for a fresh process."""
        plan_raw, replay = self.store.load()
        self.courier.load()
        logging.getLogger().addHandler(self.recent_log)
        try:
            # Before the link starts: no message (an alert least of all) may reach the
            # core before it knows what it remembered (seen alerts, rotated keys).
            slots = self.slots.status(AGENT_VERSION)
            self._step(Boot(plan_raw, replay, self.cache.hashes(), slots))
            self.link.start()
            self.netwatch.start()
            notify("READY=1")
            if self._watchdog is not None:
                self._watchdog.start()
            while not self._stopping.is_set():
                self._step(self._next_input())
                self._turns += 1
        finally:
            notify("STOPPING=1")
            if self._watchdog is not None:
                self._watchdog.stop()
            logging.getLogger().removeHandler(self.recent_log)
            self._shutdown()
        return self.restart_requested

    def stop(self) -> None:
        self._stopping.set()
        self.inputs.put(Tick())

    def health_problem(self) -> str | None:
        """What is wrong with the agent, or None: the service watchdog pings only on None.

        Called from the watchdog's thread once per its interval: the loop must have turned
        since the last call (each call queues a Tick, so an idle loop turns too), paho's
        network thread must run, and the player must answer.
        """
        turns = self._turns
        self.inputs.put(Tick())
        if turns == self._turns_at_check:
            return "the agent's loop has not turned since the last check"
        self._turns_at_check = turns
        if not self.link.running:
            return "the MQTT link's network thread is not running"
        if not self.player.answers(PLAYER_ANSWER_S):
            return f"the player did not answer within {PLAYER_ANSWER_S} s"
        return None

    def _next_input(self) -> Input:
        timeout = None
        if self._wake_at is not None:
            timeout = max(0.0, (self._wake_at - _now()).total_seconds())
        event = self.inputs.get(timeout)
        return Tick() if event is None else event

    def _step(self, event: Input) -> None:
        self.courier.note_acks()
        for action in self.core.handle(event, _now()):
            try:
                self._run(action)
            except Exception:  # a driver bug must not silence the station
                log.exception("action %s failed", type(action).__name__)
        if isinstance(event, BrokerConnected):
            self.courier.connected()
            if self._trim_at is None:
                self._trim_at = time.monotonic() + TRIM_AFTER_CONNECT_S
                waker = threading.Timer(TRIM_AFTER_CONNECT_S, self.inputs.put, (Tick(),))
                waker.daemon = True
                waker.start()
        elif self._trim_at is not None and time.monotonic() >= self._trim_at:
            self._trim_at = float("inf")  # once: what start-up freed goes back to the system
            trim_heap()

    def _shutdown(self) -> None:
        self._probes.shutdown(wait=True, cancel_futures=True)  # it uses the modem and link
        self.live.close()
        self.player.close()
        try:
            self.relay.set(False)
        except RelayError as exc:
            log.warning("could not switch the amplifier off on stop: %s", exc)
        self.relay.close()
        if self.board is not None:
            self.board.close()
        if self.modem is not None:
            self.modem.close()
        if self.modem_sim is not None:
            self.modem_sim.close()
        self.netwatch.stop()
        self.link.stop()
        self._downloads.shutdown(wait=False, cancel_futures=True)
        self._verifier.shutdown(wait=False, cancel_futures=True)
        self._updates.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ actions

    def _run(self, action: Action) -> None:
        match action:
            case WakeAt(at=at):
                self._wake_at = at
            case Publish(topic=topic, payload=payload, durable=True):
                self.courier.send_event(topic, payload, self.core.connected)
            case Publish(topic=topic, payload=payload, qos=qos, retain=retain):
                self.link.publish(topic, payload, qos, retain)
            case SaveState(plan_raw=raw, memory=replay):
                self.store.save(raw, replay)
            case PinAudio(sha256s=needed, keep=keep):
                self.cache.pin(needed, dict(keep))
                self._pinned = needed
                self._keep_ready()
            case FetchAudio():
                self._downloads.submit(self._fetch, action)
            case VerifyAudio(sha256=sha):
                self._verifier.submit(self._verify, sha)
            case StoreAudio(sha256=sha, data=data):
                self._store(sha, data)
            case SetRelay(on=on):
                self._switch(on)
            case StartPlayback():
                self._start(action)
            case StopPlayback(item_id=item_id):
                self.player.stop(item_id)
            case RestartPlayer(reason=reason):
                log.error("restarting the player: %s", reason)
                self.player.restart()
            case ReportHealth(snapshot=snapshot):
                self._probes.submit(self._report_health_logged, snapshot)
            case SetVolume(percent=percent):
                self.player.set_volume(percent)
                self.live.set_volume(percent)
            case ReadAmplifier():
                # A serial round trip (up to a second with a silent board): off the loop.
                self._probes.submit(self._read_amplifier_logged)
            case SendLog(command_seq=seq, lines=lines):
                self._send_log(seq, lines)
            case Restart():
                self.restart_requested = True
                self.stop()
            case PlayLiveFrame(session_id=session_id, frame=frame):
                self.live.push(session_id, frame)
            case StartLive(
                session_id=session_id, chime_sha256=chime, warmup_ms=warmup_ms, volume_pct=volume
            ):
                chime_path = None
                if chime is not None and self.cache.has(chime) and self._verify(chime):
                    chime_path = self.cache.path(chime)
                volume = 100 if volume is None else volume  # never set: full, as items
                self.live.start(session_id, chime_path, warmup_ms, volume)
            case StopLive(session_id=session_id):
                self.live.stop(session_id)
            case FetchRelease():
                self._updates.submit(self._fetch_release, action)
            case InstallRelease(version=version):
                self._updates.submit(self._install_release, version)
            case SwitchRelease(version=v, slot=slot, rollout_id=rollout, deadline_s=deadline):
                self.slots.switch(v, slot, rollout, deadline, AGENT_VERSION)
                self.relaunch_requested = True
                self.stop()
            case CommitRelease(version=version):
                self.slots.commit()
                log.info("release %s committed", version)
            case RollBackRelease(version=version, reason=reason):
                self.slots.roll_back(version, reason)
                self.relaunch_requested = True
                self.stop()
            case ForgetUpdateOutcome():
                self.slots.write_outcome(None)
            case _:
                raise TypeError(f"unknown action {action!r}")

    def _fetch(self, action: FetchAudio) -> None:
        sha = action.ref.sha256
        try:
            self.fetcher.fetch(action.ref)
        except DownloadError as exc:
            log.warning("download of %s failed: %s", sha[:12], exc)
            self.inputs.put(AudioFetchFailed(sha, str(exc), str(exc.reason)))
        except FetchError as exc:
            self.inputs.put(AudioFetchFailed(sha, str(exc)))
        except Exception as exc:  # unexpected, but the core must hear of it to retry
            log.exception("download of %s crashed", sha)
            self.inputs.put(AudioFetchFailed(sha, f"internal error: {exc}"))
        else:
            self.inputs.put(AudioFetched(sha))
            if sha in self._pinned:
                self._keep_ready()

    def _keep_ready(self) -> None:
        """The player holds the short pinned files (the alert tone) ready to sound at once."""
        cached = [self.cache.path(sha) for sha in sorted(self._pinned) if self.cache.has(sha)]
        self.player.keep_ready(cached)

    def _fetch_release(self, action: FetchRelease) -> None:
        try:
            self.slots.fetch(action.version, action.files, action.base_url)
        except Exception as exc:  # UpdateError, or a bug: the core must hear either
            log.warning("release %s not fetched: %s", action.version, exc)
            self.inputs.put(ReleaseFailed(action.version, "fetch", str(exc)))
        else:
            self.inputs.put(ReleaseFetched(action.version))

    def _install_release(self, version: str) -> None:
        launcher = os.environ.get(ENV_LAUNCHER, sys.executable)
        try:
            slot = self.slots.install(version, launcher)
        except UpdateError as exc:
            log.warning("release %s not installed: %s", version, exc)
            self.inputs.put(ReleaseFailed(version, "install", str(exc)))
        except Exception as exc:
            log.exception("installing release %s crashed", version)
            self.inputs.put(ReleaseFailed(version, "install", f"internal error: {exc}"))
        else:
            self.inputs.put(ReleaseInstalled(version, slot))

    def _verify(self, sha: str) -> bool:
        """Re-hash one cached file (a worker thread, or the loop for an alert); tell the core."""
        problem = self.cache.verify(sha)
        self.inputs.put(AudioVerified(sha, problem is None, problem or ""))
        return problem is None

    def _store(self, sha: str, data: bytes) -> None:
        """Inline audio goes to disk now, before the next action (the playback) runs."""
        try:
            self.cache.store(sha, data)
        except FetchError as exc:
            # The player then finds no file and fails the item: the core reports that.
            log.error("could not store inline audio %s: %s", sha[:12], exc)

    def _switch(self, on: bool) -> None:
        try:
            self.relay.set(on)
        except RelayError as exc:
            self.inputs.put(RelayFailed(on, str(exc)))
        else:
            self.inputs.put(RelaySwitched(on))

    def _start(self, action: StartPlayback) -> None:
        put = self.inputs.put
        if action.stream is not None:
            fallback = action.stream.fallback
            fallback_path = None
            if fallback is not None and self.cache.has(fallback.sha256):
                fallback_path = self.cache.path(fallback.sha256)
            elif fallback is not None:
                log.warning("fallback of %s is not cached; relaying without it", action.item_id)
            self.player.start_stream(
                action.item_id,
                action.stream.url,
                fallback_path,
                action.start_at,
                action.duration_ms,
                on_started=lambda item, at: put(PlaybackStarted(item, at)),
                on_finished=lambda item, at: put(PlaybackFinished(item, at)),
                on_failed=lambda item, reason: put(PlaybackFailed(item, reason)),
                on_unreachable=lambda item, reason: put(StreamUnreachable(item, reason)),
                volume_pct=action.volume_pct,
            )
            return
        if action.sha256 is None:
            raise ValueError(f"StartPlayback of {action.item_id} names neither audio nor stream")
        if action.verify and not self._verify(action.sha256):
            put(PlaybackFailed(action.item_id, "hash_mismatch: the cached file changed on disk"))
            return
        self.player.start(
            action.item_id,
            self.cache.path(action.sha256),
            action.start_at,
            action.duration_ms,
            on_started=lambda item, at: put(PlaybackStarted(item, at)),
            on_finished=lambda item, at: put(PlaybackFinished(item, at)),
            on_failed=lambda item, reason: put(PlaybackFailed(item, reason)),
            volume_pct=action.volume_pct,
        )

    def _read_amplifier_logged(self) -> None:
        try:
            self._read_amplifier()
        except Exception:  # the worker thread has nobody else to tell
            log.exception("amplifier readback failed")

    def _read_amplifier(self) -> None:
        reading = amp_readback(self.relay)
        if reading is None:
            return
        current, temp = reading.get("amp_current_ma"), reading.get("amp_temp_c")
        self.inputs.put(
            RelayReadback(
                on=bool(reading.get("amp_on")),
                current_ma=float(current) if isinstance(current, int | float) else None,
                temp_c=float(temp) if isinstance(temp, int | float) else None,
            )
        )

    def _send_log(self, seq: int, lines: int) -> None:
        recent = list(self.recent_log.lines)[-lines:]
        while recent and len("\n".join(recent).encode()) > MAX_REPLY_BYTES:
            recent.pop(0)
        reply = CommandReply(
            station_id=self.config.station_id,
            command_seq=seq,
            name="fetch_log",
            at=_now(),
            ok=True,
            detail=f"{len(recent)} lines",
            data={"lines": recent},
        )
        payload = reply.model_dump_json(exclude_none=True).encode()
        self.link.publish(topics.reply(self.config.station_id), payload, qos=1)

    def _report_health_logged(self, snapshot: dict[str, object]) -> None:
        try:
            self._report_health(snapshot)
        except Exception:  # the probes' thread has nobody else to tell
            log.exception("health report failed")

    def _report_health(self, snapshot: dict[str, object]) -> None:
        probes = system_health(self.cache)
        if self.modem is not None:
            try:
                probes.update(health_fields(self.modem.read()))
            except ModemError as exc:
                log.warning("modem: %s", exc)
        if probes.get("uptime_s") is None:  # the probe failed; the agent's own uptime then
            probes["uptime_s"] = time.monotonic() - self._started_monotonic
        health = Health.model_validate(
            {
                "station_id": self.config.station_id,
                "at": _now(),
                "agent_version": AGENT_VERSION,
                **probes,
                **snapshot,
            }
        )
        self.courier.publish_health(health.model_dump_json(exclude_none=True).encode())
