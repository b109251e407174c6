"""Relaying a live channel on the station, against a real local stream server.

The server is a stand-in for Icecast: one ffmpeg per channel encodes an endless
Ogg/Opus (or MP3) tone at real-time pace (``-re``) and every listener joins the
broadcast where it is (an Ogg listener first gets the stream's header pages, as
Icecast does). So a relay that "ran for its window" can be told from one that gulped
a file: the bytes it consumed match the bitrate times the time it listened. The
server can drop every listener, go away (connection refused) and come back on the same
port, and serves the wrong things a mistyped URL leads to (a web page, a 404, bytes
that are no audio).
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loaxa.broker import free_port
from loaxa_protocol import AudioRef, Plan, PlanItem, SigningKey, StreamRef, seal, topics
from node_firmware.agent import NodeAgent
from node_firmware.config import NodeConfig, RelayConfig, TrustedKeyConfig
from node_firmware.drivers.alsa_pcm import why_unusable
from node_firmware.drivers.audio_cache import AudioCache
from node_firmware.drivers.ogg import audio_duration_ms
from node_firmware.drivers.player import AlsaPlayer, PlayRecord, SimulatedPlayer, find_ffmpeg
from tests.audio_samples import make_audio
from tests.brokers import ProductionMosquitto, admit_station

CODECS = {
    "ogg": (
        "audio/ogg",
        ["-c:a", "libopus", "-b:a", "32k", "-page_duration", "20000", "-f", "ogg"],
    ),
    "mp3": ("audio/mpeg", ["-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3"]),
}


class Channel:
    """One live encoder, broadcast to every listener from where it is now."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.content_type, args = CODECS[codec]
        self._encoder = subprocess.Popen(
            [find_ffmpeg(), "-nostdin", "-v", "error", "-re", "-f", "lavfi",
             "-i", "sine=frequency=440:sample_rate=48000", "-ac", "1", *args,
             "-flush_packets", "1", "pipe:1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        )  # fmt: skip
        self._header = b""  # Ogg: the OpusHead and OpusTags pages, for late joiners
        self._audio_begun = False
        self._pumped = 0
        self._started = time.monotonic()
        self._listeners: list[queue.Queue[bytes]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def join(self) -> queue.Queue[bytes]:
        listener: queue.Queue[bytes] = queue.Queue()
        with self._lock:
            if self._header:
                listener.put(self._header)
            self._listeners.append(listener)
        return listener

    def leave(self, listener: queue.Queue[bytes]) -> None:
        with self._lock:
            self._listeners.remove(listener)

    def close(self) -> None:
        self._encoder.kill()
        self._encoder.wait()

    def _pump(self) -> None:
        assert self._encoder.stdout is not None
        out = self._encoder.stdout
        with contextlib.suppress(OSError, ValueError):
            while True:
                data = self._ogg_page(out) if self.codec == "ogg" else out.read(4096)
                if not data:
                    return
                with self._lock:
                    self._pumped += len(data)
                    for listener in self._listeners:
                        listener.put(data)

    def bytes_per_s(self) -> float:
        """The channel's real rate, containers and all, as measured at the source."""
        with self._lock:
            return self._pumped / (time.monotonic() - self._started)

    def _ogg_page(self, out: Any) -> bytes:
        head = _read_exact(out, 27)
        if len(head) < 27:
            return b""
        segments = _read_exact(out, head[26])
        page = head + segments + _read_exact(out, sum(segments))
        granule = int.from_bytes(head[6:14], "little", signed=True)
        if granule == 0 and not self._audio_begun:
            with self._lock:
                self._header += page
        else:
            self._audio_begun = True
        return page


def _read_exact(out: Any, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := out.read(size - len(data))):
        data += chunk
    return data


class LiveStreamServer:
    """Live channels on 127.0.0.1 (``/live.ogg``, ``/live.mp3``), with faults on demand."""

    def __init__(self) -> None:
        self.port = free_port()
        self.listeners = 0  # connections to a live path
        self.bytes_sent = 0
        self._generation = 0  # bumped by drop(): older listeners hang up
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._channels = {codec: Channel(codec) for codec in CODECS}

    def url(self, path: str = "/live.ogg") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def channel(self, codec: str) -> Channel:
        return self._channels[codec]

    def start(self) -> LiveStreamServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (new connections are refused) and drop every listener."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.drop()

    def close(self) -> None:
        self.stop()
        for channel in self._channels.values():
            channel.close()

    def drop(self) -> None:
        with self._lock:
            self._generation += 1

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        if path in ("/live.ogg", "/live.mp3"):
            self._live(handler, self._channels[path.rpartition(".")[2]])
        elif path == "/page.html":
            self._reply(handler, 200, "text/html; charset=utf-8", b"<html><body>VOV</body></html>")
        elif path == "/garbage.mp3":
            self._reply(handler, 200, "audio/mpeg", b"this is certainly not audio " * 100)
        elif path == "/moved":
            handler.send_response(302)
            handler.send_header("Location", "/live.ogg")
            handler.end_headers()
        else:
            self._reply(handler, 404, "text/plain", b"no such stream")

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, ctype: str, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _live(self, handler: BaseHTTPRequestHandler, channel: Channel) -> None:
        with self._lock:
            self.listeners += 1
            generation = self._generation
        listener = channel.join()
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", channel.content_type)
            handler.send_header("icy-name", "Loaxa test channel")
            handler.end_headers()
            handler.wfile.flush()
            while self._generation == generation:
                try:
                    data = listener.get(timeout=0.05)
                except queue.Empty:
                    continue
                handler.wfile.write(data)
                with self._lock:
                    self.bytes_sent += len(data)
        except OSError:
            pass  # the listener hung up
        finally:
            channel.leave(listener)
            with contextlib.suppress(OSError):
                handler.connection.shutdown(2)  # a drop is a real TCP close


@pytest.fixture
def server() -> Iterator[LiveStreamServer]:
    running = LiveStreamServer().start()
    yield running
    running.close()


@pytest.fixture(scope="module")
def fallback(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cached fallback file (Ogg Opus, as delivered), shorter than the windows."""
    path = tmp_path_factory.mktemp("relay") / ("f" * 64)
    path.write_bytes(make_audio("ogg", 0.7))
    return path


@dataclass
class Relay:
    """One stream item's callbacks, as the agent would turn them into core inputs."""

    start_at: datetime
    window_ms: int
    started: list[datetime] = field(default_factory=list)
    finished: list[datetime] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def end_at(self) -> datetime:
        return self.start_at + timedelta(milliseconds=self.window_ms)

    def on_started(self, _item: str, at: datetime) -> None:
        self.started.append(at)

    def on_finished(self, _item: str, at: datetime) -> None:
        self.finished.append(at)
        self.done.set()

    def on_failed(self, _item: str, reason: str) -> None:
        self.failed.append(reason)
        self.done.set()

    def on_unreachable(self, _item: str, reason: str) -> None:
        self.unreachable.append(reason)


def relay(
    player: SimulatedPlayer | AlsaPlayer,
    url: str,
    window_ms: int,
    fallback: Path | None = None,
    lead_s: float = 0.3,
    volume_pct: int | None = None,
    item_id: str = "vov-1",
) -> Relay:
    calls = Relay(datetime.now(UTC) + timedelta(seconds=lead_s), window_ms)
    player.start_stream(
        item_id, url, fallback, calls.start_at, window_ms, calls.on_started,
        calls.on_finished, calls.on_failed, calls.on_unreachable, volume_pct,
    )  # fmt: skip
    return calls


def ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def only_record(player: SimulatedPlayer) -> PlayRecord:
    deadline = time.monotonic() + 2
    while not player.records:
        assert time.monotonic() < deadline, "no play record"
        time.sleep(0.01)
    [record] = player.records
    return record


def after(seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


# ---------------------------------------------------------------- the simulated player


def test_relays_the_stream_for_its_window_at_its_pace_and_stops_on_time(
    server: LiveStreamServer,
) -> None:
    player = SimulatedPlayer()
    # A 2 s cue, as a station's amplifier lead gives it: the stream is connected before the
    # instant even when ffmpeg is slow to start on a busy machine (1.7 s seen in CI).
    calls = relay(player, server.url(), 2000, volume_pct=40, lead_s=2.0)
    assert calls.done.wait(6)
    player.close()

    assert calls.failed == [] and calls.unreachable == []
    record = only_record(player)
    late_ms = ms(calls.started[0] - calls.start_at)
    end_error_ms = ms(calls.finished[0] - calls.end_at)
    print(f"relay started {late_ms:.1f} ms after the instant; ended {end_error_ms:+.1f} ms off")
    assert 0 <= late_ms < 250  # 0.1 ms when the machine is not busy
    assert abs(end_error_ms) <= 100
    assert [s.source for s in record.segments] == ["stream"], record.segments
    assert record.audio == server.url() and record.volume_pct == 40 and not record.interrupted
    # Consumed at the stream's pace: what the channel sent over the time connected (the
    # window, and the second before it when the player connected early), not a file
    # swallowed whole.
    rate = server.channel("ogg").bytes_per_s()
    print(f"consumed {record.stream_bytes} bytes; the channel runs at {rate:.0f} bytes/s")
    assert rate * 2.0 < record.stream_bytes < rate * (2.0 + 1.0 + 0.5)
    assert record.stream_bytes == pytest.approx(server.bytes_sent, rel=0.05)
    assert server.listeners == 1


def test_a_drop_mid_window_is_followed_by_a_reconnect(server: LiveStreamServer) -> None:
    player = SimulatedPlayer()
    calls = relay(player, server.url(), 3000)
    after(0.3 + 1.2, server.drop)
    assert calls.done.wait(6)
    player.close()

    record = only_record(player)
    sources = [s.source for s in record.segments]
    print(f"segments: {[(s.source, s.bytes) for s in record.segments]}")
    assert sources == ["stream", "stream"], sources
    assert server.listeners == 2
    assert calls.unreachable == []  # back within the grace: a drop, not an outage
    gap_ms = ms(record.segments[1].started_at - record.segments[0].finished_at)
    assert gap_ms < 1000, f"reconnecting took {gap_ms:.0f} ms"
    assert all(s.bytes > 0 for s in record.segments)
    assert abs(ms(calls.finished[0] - calls.end_at)) <= 100


def test_an_outage_plays_the_fallback_reports_once_and_returns_to_the_stream(
    server: LiveStreamServer, fallback: Path
) -> None:
    player = SimulatedPlayer()
    calls = relay(player, server.url(), 6000, fallback=fallback)
    after(0.3 + 1.0, server.stop)  # refused from now on
    after(0.3 + 4.0, server.start)
    assert calls.done.wait(9)
    player.close()

    record = only_record(player)
    sources = [s.source for s in record.segments]
    lengths = [(s.source, round(ms(s.finished_at - s.started_at))) for s in record.segments]
    print(f"segments (ms): {lengths}")
    assert sources == ["stream", "fallback", "stream"], sources
    assert len(calls.unreachable) == 1 and calls.unreachable[0].startswith("network:")
    assert "connection refused" in calls.unreachable[0]
    stream_lost = record.segments[0].finished_at
    fallback_in = record.segments[1].started_at
    assert 1500 <= ms(fallback_in - stream_lost) <= 2500  # the grace before an outage
    assert calls.failed == [] and len(calls.finished) == 1
    assert abs(ms(calls.finished[0] - calls.end_at)) <= 100
    assert record.segments[-1].bytes > 0


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (None, "network: "),  # nothing listens on the port
        ("/missing", "http_status: HTTP 404"),
        ("/page.html", "not_audio: "),
        ("/garbage.mp3", "undecodable: "),
    ],
)
def test_an_unusable_url_plays_the_fallback_for_the_window_and_is_reported_once(
    server: LiveStreamServer, fallback: Path, path: str | None, reason: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}/live.ogg" if path is None else server.url(path)
    player = SimulatedPlayer()
    calls = relay(player, url, 1500, fallback=fallback)
    assert calls.done.wait(5)
    player.close()

    assert len(calls.unreachable) == 1, calls.unreachable  # retried, but reported once
    assert calls.unreachable[0].startswith(reason), calls.unreachable[0]
    record = only_record(player)
    assert [s.source for s in record.segments] == ["fallback"]
    assert ms(calls.started[0] - calls.start_at) < 100  # no dead air at the start
    assert calls.failed == [] and abs(ms(calls.finished[0] - calls.end_at)) <= 100
    assert server.listeners == 0


def test_a_redirect_is_followed(server: LiveStreamServer) -> None:
    player = SimulatedPlayer()
    calls = relay(player, server.url("/moved"), 800, lead_s=1.0)
    assert calls.done.wait(4)
    player.close()
    assert calls.unreachable == [] and calls.finished
    assert only_record(player).stream_bytes > 0


def test_no_stream_and_no_fallback_fails_the_item(server: LiveStreamServer) -> None:
    player = SimulatedPlayer()
    calls = relay(player, server.url("/page.html"), 1000)
    assert calls.done.wait(4)
    player.close()

    assert len(calls.unreachable) == 1 and calls.unreachable[0].startswith("not_audio")
    assert calls.started == [] and calls.finished == []
    assert len(calls.failed) == 1 and "no fallback" in calls.failed[0]
    assert player.records == []


def test_stop_ends_the_relay_at_once_and_hangs_up(server: LiveStreamServer) -> None:
    player = SimulatedPlayer()
    calls = relay(player, server.url(), 10_000)
    deadline = time.monotonic() + 3
    while not calls.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)
    stopped_at = datetime.now(UTC)
    player.stop("vov-1")
    record = only_record(player)
    player.close()

    assert record.interrupted and calls.finished == [] and calls.failed == []
    assert ms(record.finished_at - stopped_at) < 150
    sent = server.bytes_sent
    time.sleep(0.5)
    assert server.bytes_sent - sent < 1000  # the server noticed the listener leave


# ---------------------------------------------------------------- the ALSA player


ALSA_NULL_UNUSABLE = why_unusable("null")
"""libasound's 'null' device takes samples as fast as they come: the logic, not the timing."""


alsa = pytest.mark.skipif(
    ALSA_NULL_UNUSABLE is not None, reason=f"ALSA null device: {ALSA_NULL_UNUSABLE}"
)


@alsa
@pytest.mark.parametrize("codec", ["ogg", "mp3"])
def test_alsa_player_relays_through_ffmpeg_for_the_window(
    server: LiveStreamServer, codec: str
) -> None:
    player = AlsaPlayer("null")
    try:
        calls = relay(player, server.url(f"/live.{codec}"), 2000, lead_s=0.5)
        assert calls.done.wait(6), calls
    finally:
        player.close()
    assert calls.failed == [] and calls.unreachable == []
    late_ms = ms(calls.started[0] - calls.start_at)
    end_error_ms = ms(calls.finished[0] - calls.end_at)
    print(f"alsa relay ({codec}): started {late_ms:.0f} ms late, ended {end_error_ms:+.1f} ms off")
    # ffmpeg probes 0.2 s of the live stream before its first PCM (more on a busy
    # machine): a relay may start late, never end late.
    assert 0 <= late_ms < 1500
    assert abs(end_error_ms) <= 100
    assert server.listeners == 1


@alsa
def test_alsa_player_falls_back_when_ffmpeg_cannot_decode(
    server: LiveStreamServer, fallback: Path
) -> None:
    player = AlsaPlayer("null")
    try:
        refused = relay(player, f"http://127.0.0.1:{free_port()}/x", 1200, fallback, lead_s=0.5)
        assert refused.done.wait(5)
        page = relay(player, server.url("/page.html"), 1200, fallback, 0.5, item_id="vov-2")
        assert page.done.wait(5)
    finally:
        player.close()
    for calls, reason in ((refused, "network"), (page, "undecodable")):
        assert len(calls.unreachable) == 1, calls.unreachable
        assert calls.unreachable[0].startswith(reason), calls.unreachable[0]
        assert calls.failed == [] and calls.started and calls.finished
        assert abs(ms(calls.finished[0] - calls.end_at)) <= 100


@alsa
def test_alsa_relay_stopped_for_an_alert_frees_the_device_at_once(
    server: LiveStreamServer, fallback: Path
) -> None:
    player = AlsaPlayer("null")
    try:
        relayed = relay(player, server.url(), 10_000, lead_s=0.3)
        wait_until_true(lambda: bool(relayed.started), 5, "the relay to start")
        time.sleep(0.3)
        player.stop("vov-1")  # the core pre-empts the relay for an alert, cued for now
        alert = Relay(datetime.now(UTC), 700)
        player.start(
            "alert-1", fallback, alert.start_at, 700, alert.on_started, alert.on_finished,
            alert.on_failed,
        )  # fmt: skip
        assert alert.done.wait(5)
    finally:
        player.close()
    assert alert.failed == [] and relayed.finished == [] and relayed.failed == []
    late_ms = ms(alert.started[0] - alert.start_at)
    print(f"alsa: alert after a relay's stop started {late_ms:.0f} ms after its cue")
    assert late_ms < 500


def wait_until_true(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ---------------------------------------------------------------- the whole station


def test_a_station_relays_a_planned_window_and_falls_back_when_the_channel_is_gone(
    server: LiveStreamServer, tmp_path: Path, production_mosquitto: ProductionMosquitto, mqtt_probe
) -> None:
    """A signed plan with two stream items through a real broker to the real agent."""
    station_id = "st-01273-001"
    plan_key = SigningKey.generate("plan", frozenset({"plan", "command", "trust"}))
    config = NodeConfig(
        station_id=station_id,
        areas=["01273"],
        mqtt=admit_station(production_mosquitto, station_id, ["01273"]),
        trusted_keys=[
            TrustedKeyConfig(kid=plan_key.kid, public_key=plan_key.public_b64, purposes=["plan"])
        ],
        data_dir=tmp_path / "node",
        relay=RelayConfig(driver="sim"),
        amp_lead_ms=300,
        amp_tail_ms=200,
    )
    filler = make_audio("ogg", 0.7)
    filler_ref = AudioRef(
        sha256=hashlib.sha256(filler).hexdigest(),
        size_bytes=len(filler),
        duration_ms=audio_duration_ms(filler),
        url="http://127.0.0.1:9/never-fetched",
    )
    AudioCache(config.data_dir / "audio", 10**9).store(filler_ref.sha256, filler)
    probe = mqtt_probe(production_mosquitto, topics=[topics.event(station_id)])  # the server
    agent = NodeAgent(config)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        now = datetime.now(UTC)
        live_at, dead_at = now + timedelta(seconds=1.5), now + timedelta(seconds=4.5)
        gone = f"http://127.0.0.1:{free_port()}/vov1"
        items = [
            PlanItem(item_id="vov-live", start_at=live_at, window_ms=2000, volume_pct=70,
                     stream=StreamRef(url=server.url(), fallback=filler_ref)),
            PlanItem(item_id="vov-gone", start_at=dead_at, window_ms=1500,
                     stream=StreamRef(url=gone, fallback=filler_ref)),
        ]  # fmt: skip
        plan = Plan(
            sender="server", seq=1, issued_at=now, expires_at=now + timedelta(hours=1),
            to=station_id, station_id=station_id, horizon_until=now + timedelta(hours=1),
            items=items,
        )  # fmt: skip
        probe.publish(topics.plan(station_id), seal(plan, plan_key), retain=True)

        def event(kind: str, item_id: str) -> dict[str, Any]:
            found = probe.wait_for(
                lambda m: m.json()["kind"] == kind and m.json().get("item_id") == item_id, 10
            )
            return dict(found.json())

        live = event("played", "vov-live")
        started, finished = iso(live["started_at"]), iso(live["finished_at"])
        print(f"live: started {ms(started - live_at):+.1f} ms, ended {ms(finished - live_at):.0f}")
        assert abs(ms(started - live_at)) < 100 and abs(ms(finished - live_at) - 2000) <= 100

        unreachable = event("stream_unreachable", "vov-gone")
        assert unreachable["reason"].startswith("network")
        dead = event("played", "vov-gone")
        assert abs(ms(iso(dead["finished_at"]) - dead_at) - 1500) <= 100
        stream_events = [
            m.json()["kind"]
            for m in probe.messages
            if m.json().get("item_id") == "vov-gone" and m.json()["kind"] == "stream_unreachable"
        ]
        assert stream_events == ["stream_unreachable"]  # once per outage

        records = {r.item_id: r for r in agent.player.records}  # type: ignore[attr-defined]
        assert [s.source for s in records["vov-live"].segments] == ["stream"]
        assert records["vov-live"].volume_pct == 70 and records["vov-live"].stream_bytes > 0
        assert [s.source for s in records["vov-gone"].segments] == ["fallback"]
    finally:
        agent.stop()
        thread.join(10)


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text)
