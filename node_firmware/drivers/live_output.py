"""The live output: a session's chime, then its frames, decoded and played in time.

The core decides *what* (which frames are genuine, when a session sounds); this driver
only keeps time. One thread per session ticks once per frame period (the frame's own
duration, 60 ms from the live page) and asks the :class:`~node_firmware.core.live.JitterBuffer`
what to play: a frame (decoded by libopus), a concealed frame (the decoder's
packet-loss concealment, not a click) or silence while it buffers. Frames arrive on
the agent's loop thread (``push``); the buffer is shared under a lock.

Volume: live audio plays at the station's volume like every other item (the core puts
it in ``StartLive``; a volume command during the session applies from the next frame).
The PCM samples are scaled here — the same linear software gain ffmpeg's ``volume``
filter gives the player's items — and the chime is decoded at that volume.

Sinks: :class:`SimulatedLiveSink` records when each frame "sounded" (the benchmark and
the tests measure capture → output latency and gaps from it); :class:`AlsaLiveSink`
writes the PCM onto the player's open ALSA device.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from loaxa_protocol.errors import AudioError
from loaxa_protocol.live import Frame
from node_firmware.core.live import JitterBuffer, Playout
from node_firmware.drivers.opus import OpusDecoder
from node_firmware.drivers.player import PCM_BYTES_PER_MS, AlsaPlayer, decode_command

log = logging.getLogger(__name__)

DEFAULT_FRAME_MS = 60.0


@dataclass(frozen=True)
class LiveSound:
    """One frame period at the output."""

    session_id: str
    seq: int | None
    """the frame played, or None for a concealed one"""
    capture_ms: int | None
    at_s: float
    """wall-clock time it went to the output"""
    peak: int = 0
    """the loudest sample's magnitude (the tests check the volume with it)"""


class LiveSink(Protocol):
    def warm_up(
        self, chime: Path | None, volume_pct: int, until_s: float, cancel: threading.Event
    ) -> None:
        """Play the chime (if any, at ``volume_pct``) and return at ``until_s``: warmed up."""

    def play(self, session_id: str, pcm: bytes, frame: Frame | None) -> None:
        """One frame period of PCM (``frame`` None: concealed)."""

    def pause(self, samples: int) -> None:
        """Buffering: nothing to play for ``samples``."""


class SimulatedLiveSink:
    """Keeps perfect time and records what sounded; counts audible gaps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sounds: list[LiveSound] = []
        self.gaps = 0
        self._played = False
        self._in_gap = False

    def warm_up(
        self, chime: Path | None, volume_pct: int, until_s: float, cancel: threading.Event
    ) -> None:
        cancel.wait(max(0.0, until_s - time.time()))

    def play(self, session_id: str, pcm: bytes, frame: Frame | None) -> None:
        with self._lock:
            if frame is None:
                self._in_gap = self._played
            else:
                if self._in_gap:
                    self.gaps += 1  # a dropout heard between two frames
                self._played, self._in_gap = True, False
            seq = frame.seq if frame else None
            capture = frame.capture_ms if frame else None
            self.sounds.append(LiveSound(session_id, seq, capture, time.time(), _peak(pcm)))

    def pause(self, samples: int) -> None:
        with self._lock:
            self._in_gap = self._played

    def reset(self) -> None:
        with self._lock:
            self.sounds.clear()
            self.gaps, self._played, self._in_gap = 0, False, False


class AlsaLiveSink:
    """PCM onto the player's open ALSA device; the chime decoded by ffmpeg first."""

    def __init__(self, player: AlsaPlayer) -> None:
        self._player = player

    def warm_up(
        self, chime: Path | None, volume_pct: int, until_s: float, cancel: threading.Event
    ) -> None:
        if chime is not None:
            command = decode_command(self._player.ffmpeg, chime, "pipe:1", volume_pct)
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                assert proc.stdout is not None
                while not cancel.is_set() and (pcm := proc.stdout.read(PCM_BYTES_PER_MS * 20)):
                    self._write(pcm)
            finally:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2)
        cancel.wait(max(0.0, until_s - time.time()))

    def play(self, session_id: str, pcm: bytes, frame: Frame | None) -> None:
        self._write(pcm)

    def pause(self, samples: int) -> None:
        self._write(bytes(samples * 2))  # silence keeps the device from underrunning

    def _write(self, pcm: bytes) -> None:
        try:
            self._player.write_pcm(pcm)
        except OSError as exc:
            log.warning("the ALSA device failed while playing live: %s", exc)
            self._player.reset_device()


def scale_pcm(pcm: bytes, volume_pct: int) -> bytes:
    """S16_LE ``pcm`` at ``volume_pct`` of its level (linear gain, as ffmpeg's ``volume``)."""
    if volume_pct >= 100:
        return pcm
    samples = array("h", pcm)
    if sys.byteorder != "little":
        samples.byteswap()
    scaled = array("h", [s * volume_pct // 100 for s in samples])
    if sys.byteorder != "little":
        scaled.byteswap()
    return scaled.tobytes()


def _peak(pcm: bytes) -> int:
    samples = array("h", pcm[: len(pcm) // 2 * 2])
    if sys.byteorder != "little":
        samples.byteswap()
    return max((abs(s) for s in samples), default=0)


class _Stats:
    """What one session sounded like here, for the station's log (and the netns test)."""

    def __init__(self) -> None:
        self.frames = 0
        self.concealed = 0
        self.gaps = 0
        self._in_gap = False
        self._latency_ms: list[float] = []

    def played(self, frame: Frame) -> None:
        if self._in_gap:
            self.gaps += 1
        self._in_gap = False
        self.frames += 1
        self._latency_ms.append(time.time() * 1000 - frame.capture_ms)

    def missing(self, *, concealed: bool) -> None:
        self.concealed += concealed
        self._in_gap = self.frames > 0

    def summary(self) -> str:
        ordered = sorted(self._latency_ms) or [float("nan")]

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

        return (
            f"played {self.frames} frames, concealed {self.concealed}, gaps {self.gaps}, "
            f"capture to output p50 {pct(50):.0f} ms p95 {pct(95):.0f} ms"
        )


class _Session:
    def __init__(self, session_id: str, volume_pct: int) -> None:
        self.session_id = session_id
        self.volume_pct = volume_pct
        self.buffer: JitterBuffer[Frame] = JitterBuffer(frame_ms=DEFAULT_FRAME_MS)
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.samples = int(DEFAULT_FRAME_MS * 48)


class LiveOutput:
    """Plays one live session at a time; a new one replaces the old."""

    def __init__(self, sink: LiveSink) -> None:
        self.sink = sink
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(
        self, session_id: str, chime: Path | None, warmup_ms: int, volume_pct: int = 100
    ) -> None:
        if not 0 <= volume_pct <= 100:
            raise ValueError(f"volume {volume_pct} is not 0-100")
        self.stop(None)
        session = _Session(session_id, volume_pct)
        thread = threading.Thread(
            target=self._run, args=(session, chime, time.time() + warmup_ms / 1000),
            name=f"live-{session_id}", daemon=True,
        )  # fmt: skip
        with self._lock:
            self._session, self._thread = session, thread
        thread.start()

    def push(self, session_id: str, frame: Frame) -> None:
        with self._lock:
            session = self._session
        if session is None or session.session_id != session_id:
            return
        with session.lock:
            if frame.samples != session.samples and not session.buffer.depth_ms():
                session.samples = frame.samples
                session.buffer.frame_ms = frame.duration_ms
            session.buffer.push(frame.seq, frame)

    def set_volume(self, percent: int) -> None:
        """The station's volume changed: the session that plays follows from its next frame."""
        if not 0 <= percent <= 100:
            raise ValueError(f"volume {percent} is not 0-100")
        with self._lock:
            session = self._session
        if session is not None:
            with session.lock:
                session.volume_pct = percent

    def stop(self, session_id: str | None) -> None:
        """Silence ``session_id`` (None: whatever plays) at once."""
        with self._lock:
            session, thread = self._session, self._thread
            if session is None or (session_id is not None and session.session_id != session_id):
                return
            self._session = self._thread = None
        session.cancel.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)

    def close(self) -> None:
        self.stop(None)

    def _run(self, session: _Session, chime: Path | None, sound_from_s: float) -> None:
        try:
            self.sink.warm_up(chime, session.volume_pct, sound_from_s, session.cancel)
            decoder = OpusDecoder()
        except (AudioError, OSError) as exc:
            log.error("live output for %s cannot start: %s", session.session_id, exc)
            return
        try:
            self._play(session, decoder)
        except AudioError as exc:
            log.error("live output for %s failed: %s", session.session_id, exc)
        finally:
            decoder.close()

    def _play(self, session: _Session, decoder: OpusDecoder) -> None:
        stats = _Stats()
        try:
            self._loop(session, decoder, stats)
        finally:
            log.info("live output %s: %s", session.session_id, stats.summary())

    def _loop(self, session: _Session, decoder: OpusDecoder, stats: _Stats) -> None:
        tick = time.monotonic()
        while not session.cancel.is_set():
            with session.lock:
                what, frame = session.buffer.pop(tick)
                period_s = session.buffer.frame_ms / 1000
                samples = session.samples
                volume = session.volume_pct
            if what is Playout.PLAY:
                assert frame is not None
                pcm = scale_pcm(decoder.decode(frame.opus, frame.samples), volume)
                self.sink.play(session.session_id, pcm, frame)
                stats.played(frame)
            elif what is Playout.CONCEAL:
                pcm = scale_pcm(decoder.decode(None, samples), volume)
                self.sink.play(session.session_id, pcm, None)
                stats.missing(concealed=True)
            else:
                self.sink.pause(samples)
                stats.missing(concealed=False)
            tick += period_s
            delay = tick - time.monotonic()
            if delay < -period_s:  # the thread was starved: do not race to catch up
                tick = time.monotonic()
            elif delay > 0 and session.cancel.wait(delay):
                return
