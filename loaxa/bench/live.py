"""``loaxa bench live``: speech captured → played at N real stations, through the real server.

A capture side (:class:`LiveSender`) does what the live page does: it encodes 60 ms of
speech-like sound at a time with libopus, stamps each frame with the wall-clock time
its first sample was captured, and sends it over the server's WebSocket at real-time
pace. The server signs the session, tags every frame per station and publishes it to a
Mosquitto with the production security model (accounts and the generated ACL); real
station agents verify every frame and play it through their jitter buffer into a
simulated sound device that records when each frame sounded. Capture → output latency
is that instant minus the capture stamp (same host, same clock); a *gap* is an audible
dropout: a concealed or silent stretch between two played frames.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import struct
import time
from dataclasses import dataclass
from typing import Any

from node_firmware.drivers.live_output import SimulatedLiveSink
from node_firmware.drivers.opus import OpusEncoder

log = logging.getLogger(__name__)

FRAME_MS = 60
FRAME_SAMPLES = FRAME_MS * 48
BITRATE = 16_000
HEADER = struct.Struct(">QH")


def speech_like(frame_index: int, rng: random.Random) -> bytes:
    """60 ms of a voice-band signal with syllable-rate loudness changes (not silence:
    Opus would spend almost nothing on silence and the bandwidth would read too low)."""
    out = bytearray()
    envelope = 0.35 + 0.3 * math.sin(2 * math.pi * 4 * frame_index * FRAME_MS / 1000)
    for n in range(FRAME_SAMPLES):
        t = (frame_index * FRAME_SAMPLES + n) / 48_000
        pitch = 140 + 30 * math.sin(2 * math.pi * 0.7 * t)
        value = sum(math.sin(2 * math.pi * pitch * k * t) / k for k in (1, 2, 3, 5))
        value = envelope * (0.5 * value + 0.1 * (rng.random() - 0.5))
        out += struct.pack("<h", max(-32767, min(32767, int(value * 12_000))))
    return bytes(out)


@functools.cache
def speech_loop() -> tuple[bytes, ...]:
    """3 s of speech-like PCM, looped by the sender (made once: it takes a while)."""
    rng = random.Random(16)
    return tuple(speech_like(i, rng) for i in range(50))


@dataclass
class Sent:
    frames: int = 0
    opus_bytes: int = 0


class LiveSender:
    """The capture side of the live page, in Python, over the real WebSocket."""

    def __init__(self, base_url: str, session_id: str, token: str) -> None:
        self.url = (
            base_url.replace("http", "ws", 1) + f"/api/v1/live/sessions/{session_id}/ws"
            f"?token={token}"
        )

    def run(self, seconds: float) -> Sent:
        from websockets.sync.client import connect

        encoder = OpusEncoder(BITRATE)
        pcm = speech_loop()
        sent = Sent()
        with connect(self.url, open_timeout=10) as socket:
            started = time.time()
            frames = int(seconds * 1000 / FRAME_MS)
            for index in range(frames):
                captured_at = started + index * FRAME_MS / 1000
                # the frame is complete when its last sample has been captured
                ready = captured_at + FRAME_MS / 1000
                time.sleep(max(0.0, ready - time.time()))
                packet = encoder.encode(pcm[index % len(pcm)])
                capture_ms = int(captured_at * 1000)
                socket.send(HEADER.pack(capture_ms, FRAME_SAMPLES) + packet)
                sent.frames += 1
                sent.opus_bytes += len(packet)
            socket.send("stop")
        encoder.close()
        return sent


def measure(sinks: list[SimulatedLiveSink]) -> dict[str, Any]:
    latencies = sorted(
        s.at_s * 1000 - s.capture_ms
        for sink in sinks
        for s in sink.sounds
        if s.capture_ms is not None
    )

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "played": len(latencies),
        "p50_ms": round(pct(50), 1),
        "p95_ms": round(pct(95), 1),
        "max_ms": round(latencies[-1], 1) if latencies else float("nan"),
        "concealed": sum(1 for sink in sinks for s in sink.sounds if s.seq is None),
        "gaps": sum(sink.gaps for sink in sinks),
    }


def run_live_bench(stations: int, seconds: float) -> dict[str, Any]:
    from loaxa.bench.common import secured_stack

    with secured_stack("loaxa-bench-live-") as (secured, stack):
        configs = []
        with stack.registering():
            for n in range(stations):
                configs.append(
                    stack.register_station(f"Cụm loa {n + 1}", "01273", 22.66, 106.25 + n / 100)
                )
        secured.grant_registered(stack)
        nodes = [stack.start_node(config) for config in configs]
        deadline = time.monotonic() + 30
        while not all(n.agent.core.connected for n in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("not every station connected to the bench broker")
            time.sleep(0.05)
        with stack.client() as http:
            created = http.post(
                "/api/v1/live/sessions",
                json={"targets": {"stations": [n.station_id for n in nodes]}, "title": "bench"},
            )
            created.raise_for_status()
        body = created.json()
        sinks = []
        for node in nodes:
            sink = node.agent.live.sink
            assert isinstance(sink, SimulatedLiveSink)
            sink.reset()
            sinks.append(sink)
        sent = LiveSender(stack.base_url, body["id"], body["token"]).run(seconds)
        time.sleep(1.0)  # the last frames leave the jitter buffers
        result = measure(sinks)
        per_station_bits = sent.opus_bytes + sent.frames * _wire_overhead(nodes[0].station_id)
        kbit_s = per_station_bits * 8 / (sent.frames * FRAME_MS / 1000) / 1000
        return {
            "stations": stations,
            "seconds": seconds,
            "frames_sent": sent.frames,
            "frames_expected": sent.frames * stations,
            "warmup_ms": body["warmup_ms"],
            **result,
            "kbit_s_per_station": round(kbit_s, 1),
        }


def _wire_overhead(station_id: str) -> int:
    """Bytes a frame costs on the station's link beyond its Opus packet: our header and
    tag, the MQTT PUBLISH header and topic, and TCP/IPv4 headers (one frame a segment)."""
    from loaxa_protocol import topics
    from loaxa_protocol.live import OVERHEAD_BYTES

    topic = len(topics.live(station_id).encode())
    mqtt = 1 + 2 + 2 + topic  # fixed header (remaining length < 16 KiB), topic length, topic
    return OVERHEAD_BYTES + mqtt + 40
