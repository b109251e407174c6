"""``loaxa bench sound``: an alert's arrival at a station → its first sample on a real device.

One real station agent (:class:`~node_firmware.agent.NodeAgent` with its real drivers:
paho link, audio cache on disk, the ALSA player) on a real-time ALSA device: the
``pulse`` device of libasound's PulseAudio plugin, played into a PulseAudio null sink
started for the run (:class:`PulseNullSink`), which consumes samples at the sound
card's pace as a Pi's card would. The station has the canned library's attention tone
and one message in its cache and a signed plan whose ``keep`` list names them, as a
province's stations do; the player keeps the tone decoded in memory.

Then ``alerts`` times: a signed canned alert (tone + message) is published on the
station's area alert topic; the clock starts when the station's MQTT client has read
it off its socket (paho's ``on_message`` putting it on the agent's queue: stamped by
:class:`StampedInbox`) and stops when the first ``writei`` of the tone has returned
(the device, started by it, holds the first samples: ``AlsaPlayer.first_samples``).
Between alerts an all-clear stops the alert, so each one meets an idle station.
``publish → first sample`` adds the broker's hop, for reference.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loaxa.assets import CANNED_AUDIO_DIR
from loaxa_protocol import Alert, AlertCancel, AudioRef, Plan, SigningKey, seal, topics
from loaxa_protocol.errors import LoaxaError
from node_firmware.agent import Inbox, NodeAgent
from node_firmware.config import (
    MqttConfig,
    NodeConfig,
    PlayerConfig,
    RelayConfig,
    TrustedKeyConfig,
)
from node_firmware.core.events import AlertReceived, Input
from node_firmware.drivers.alsa_pcm import why_unusable
from node_firmware.drivers.audio_cache import AudioCache
from node_firmware.drivers.player import AlsaPlayer

STATION = "st-bench-sound"
COMMUNE, PROVINCE = "01273", "04"
MESSAGE = "typhoon"
TARGET_MS = 150.0
READY_TIMEOUT_S = 30.0
SOUND_TIMEOUT_S = 10.0
PULSE_START_S = 10.0
Publish = Callable[[str, bytes], None]


class SoundBenchUnavailable(LoaxaError):
    """No real-time ALSA device can be had here (no pulseaudio, no libasound, no plugin)."""


class PulseNullSink:
    """A private PulseAudio daemon with one null sink, reached through ALSA's ``pulse`` device.

    It runs in the foreground as our child (``--daemonize=no``), with its own home and
    runtime folder and an anonymous Unix socket, so it touches no user's sound setup.
    Root needs no extra flag: the daemon only warns that a per-user server runs as root.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.socket = workdir / "native"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        """The value of ``PULSE_SERVER`` for clients (the ALSA plugin reads it)."""
        return f"unix:{self.socket}"

    def start(self) -> None:
        binary = shutil.which("pulseaudio")
        if binary is None:
            raise SoundBenchUnavailable("pulseaudio is not installed (apt install pulseaudio)")
        runtime = self.workdir / "run"
        runtime.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOME": str(self.workdir), "XDG_RUNTIME_DIR": str(runtime)}
        self._process = subprocess.Popen(
            [
                binary, "--daemonize=no", "--system=false", "--exit-idle-time=-1", "-n",
                "--use-pid-file=no", "--disable-shm=yes", "--log-target=stderr",
                "--load=module-null-sink sink_name=loaxa_bench rate=48000 channels=1",
                f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "pulseaudio.log").open("wb"),
        )  # fmt: skip
        deadline = time.monotonic() + PULSE_START_S
        while not self.socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                log_tail = (self.workdir / "pulseaudio.log").read_text(errors="replace")[-500:]
                self.stop()
                raise SoundBenchUnavailable(f"pulseaudio did not start: {log_tail.strip()}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@contextmanager
def pulse_device(workdir: Path) -> Iterator[str]:
    """A running :class:`PulseNullSink`, with ``PULSE_SERVER`` set for this process; yields
    the ALSA device name. Raises :class:`SoundBenchUnavailable` with the reason."""
    sink = PulseNullSink(workdir)
    sink.start()
    previous = os.environ.get("PULSE_SERVER")
    os.environ["PULSE_SERVER"] = sink.server
    try:
        reason = why_unusable("pulse")
        if reason is not None:
            raise SoundBenchUnavailable(
                f"ALSA's pulse device does not open ({reason}); apt install libasound2-plugins"
            )
        yield "pulse"
    finally:
        if previous is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = previous
        sink.stop()


class StampedInbox(Inbox):
    """The agent's queue, noting when each alert arrived (on paho's thread, off the socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.alert_arrivals: list[float] = []

    def put(self, item: Input) -> None:
        if isinstance(item, AlertReceived):
            self.alert_arrivals.append(time.monotonic())
        super().put(item)


@dataclass(frozen=True)
class SoundBenchResult:
    alerts: int
    device: str
    arrival_to_sound_ms: list[float]
    publish_to_sound_ms: list[float]

    def as_dict(self) -> dict[str, object]:
        arrival, publish = self.arrival_to_sound_ms, self.publish_to_sound_ms
        return {
            "alerts": self.alerts,
            "device": self.device,
            "arrival_to_first_sample_p50_ms": round(percentile(arrival, 50), 1),
            "arrival_to_first_sample_p95_ms": round(percentile(arrival, 95), 1),
            "arrival_to_first_sample_max_ms": round(max(arrival), 1),
            "publish_to_first_sample_p50_ms": round(percentile(publish, 50), 1),
            "publish_to_first_sample_p95_ms": round(percentile(publish, 95), 1),
            "target_ms": TARGET_MS,
        }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a reported figure is one really measured)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def result_rows(result: SoundBenchResult) -> list[tuple[str, str]]:
    figures = result.as_dict()
    return [
        ("alerts", str(result.alerts)),
        ("ALSA device", result.device),
        ("arrival → first sample, p50", f"{figures['arrival_to_first_sample_p50_ms']} ms"),
        ("arrival → first sample, p95", f"{figures['arrival_to_first_sample_p95_ms']} ms"),
        ("arrival → first sample, max", f"{figures['arrival_to_first_sample_max_ms']} ms"),
        ("publish → first sample, p50", f"{figures['publish_to_first_sample_p50_ms']} ms"),
        ("target (p95)", f"< {TARGET_MS:.0f} ms"),
    ]  # fmt: skip


def _library_ref(name: str, info: dict[str, dict[str, object]]) -> tuple[AudioRef, bytes]:
    entry = info[name]
    data = (CANNED_AUDIO_DIR / str(entry["file"])).read_bytes()
    ref = AudioRef(
        sha256=str(entry["sha256"]),
        size_bytes=len(data),
        duration_ms=int(str(entry["duration_ms"])),
        url=f"http://127.0.0.1:9/library/{name}",  # cached already: never fetched
    )
    return ref, data


def measure_alert_to_sound(
    mqtt: MqttConfig, publish: Publish, device: str, workdir: Path, alerts: int = 20
) -> SoundBenchResult:
    """Run the agent on ``device`` with ``mqtt`` and time ``alerts`` alerts sent by ``publish``."""
    info = json.loads((CANNED_AUDIO_DIR / "library.json").read_text(encoding="utf-8"))
    tone, tone_data = _library_ref("tone", info)
    message, message_data = _library_ref(MESSAGE, info)
    plan_key = SigningKey.generate("plan", frozenset({"plan", "command", "trust"}))
    alert_key = SigningKey.generate("alert", frozenset({"alert", "alert_cancel"}))
    config = NodeConfig(
        station_id=STATION,
        areas=[COMMUNE, PROVINCE],
        mqtt=mqtt,
        trusted_keys=[
            TrustedKeyConfig(kid=k.kid, public_key=k.public_b64, purposes=sorted(k.purposes))
            for k in (plan_key, alert_key)
        ],
        data_dir=workdir / "node",
        relay=RelayConfig(driver="sim"),
        player=PlayerConfig(driver="alsa", device=device),
    )
    cache = AudioCache(workdir / "node" / "audio", 10**9)
    cache.store(tone.sha256, tone_data)
    cache.store(message.sha256, message_data)
    inbox = StampedInbox()
    agent = NodeAgent(config, inbox=inbox)
    player = agent.player
    if not isinstance(player, AlsaPlayer):
        raise TypeError("the sound bench needs the ALSA player")
    thread = threading.Thread(target=agent.run, name="bench-sound-node", daemon=True)
    thread.start()
    try:
        _wait(lambda: agent.core.connected, READY_TIMEOUT_S, "the agent to connect")
        time.sleep(0.3)  # its SUBSCRIBE follows the CONNACK
        now = datetime.now(UTC)
        plan = Plan(
            sender="server", seq=1, issued_at=now, expires_at=now + timedelta(hours=1),
            to=STATION, station_id=STATION, horizon_until=now + timedelta(hours=1),
            keep=[tone, message],
        )  # fmt: skip
        publish(topics.plan(STATION), seal(plan, plan_key))
        tone_path = cache.path(tone.sha256)
        _wait(lambda: tone_path in player.ready_files(), READY_TIMEOUT_S, "the tone in memory")
        arrival_ms: list[float] = []
        publish_ms: list[float] = []
        for n in range(alerts):
            alert_id = f"bench-sound-{n}"
            now = datetime.now(UTC)
            raw = seal(
                Alert(
                    sender="province-04", seq=n + 1, issued_at=now,
                    expires_at=now + timedelta(hours=1), to=f"area:{PROVINCE}",
                    alert_id=alert_id, title="bench", drill=True, tone=tone, audio=message,
                ),
                alert_key,
            )  # fmt: skip
            arrived = len(inbox.alert_arrivals)  # an all-clear arrives on the same topics
            sent = time.monotonic()
            publish(topics.area_alert(PROVINCE), raw)
            first_sample = _first_sample(player, f"alert:{alert_id}#0")
            arrival = inbox.alert_arrivals[arrived]
            arrival_ms.append((first_sample - arrival) * 1000)
            publish_ms.append((first_sample - sent) * 1000)
            time.sleep(0.3)  # a moment of tone, then the all-clear
            now = datetime.now(UTC)
            cancel = AlertCancel(
                sender="province-04", seq=n + 1, issued_at=now,
                expires_at=now + timedelta(hours=1), to=f"area:{PROVINCE}", alert_id=alert_id,
            )  # fmt: skip
            publish(topics.area_alert(PROVINCE), seal(cancel, alert_key))
            _wait(lambda: agent.core.alert is None, SOUND_TIMEOUT_S, "the all-clear")
            time.sleep(0.5)  # the player lets go of the device
    finally:
        agent.stop()
        thread.join(10)
    return SoundBenchResult(alerts, device, arrival_ms, publish_ms)


def _first_sample(player: AlsaPlayer, item_id: str) -> float:
    """When the player put the item's first samples on the device (monotonic)."""
    deadline = time.monotonic() + SOUND_TIMEOUT_S
    while time.monotonic() < deadline:
        for played, at in list(player.first_samples):
            if played == item_id:
                return at
        time.sleep(0.005)
    raise RuntimeError(f"no sample of {item_id} reached the device in {SOUND_TIMEOUT_S} s")


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)


def run_sound_bench(alerts: int = 20) -> SoundBenchResult:
    """The whole run on this machine: a PulseAudio null sink, a private Mosquitto, one agent."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from loaxa.broker import start_broker

    with tempfile.TemporaryDirectory(prefix="loaxa-bench-sound-") as tmp:
        workdir = Path(tmp)
        with pulse_device(workdir / "pulse") as device:
            broker = start_broker("mosquitto", workdir=workdir / "broker")
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sound-province")
            try:
                client.connect(broker.host, broker.port)
                client.loop_start()

                def publish(topic: str, payload: bytes) -> None:
                    client.publish(topic, payload, qos=1).wait_for_publish(5)

                return measure_alert_to_sound(
                    MqttConfig(host=broker.host, port=broker.port), publish, device, workdir,
                    alerts,
                )  # fmt: skip
            finally:
                client.loop_stop()
                client.disconnect()
                broker.stop()
