"""Audio output: start a cached file (or relay a stream) at an exact wall-clock instant.

Neighbouring stations stay in step because each one waits for the same UTC instant
on its own (NTP-disciplined) clock, so the player, not the agent loop, owns that
wait: a thread per scheduled item sleeps coarsely, then spins the last ~2 ms.

Contract for every player:
- ``start`` returns at once; callbacks arrive on the player's thread and must only
  hand the news over (e.g. put an input on the agent's queue).
- ``on_started`` carries the instant sound actually began (it is later than
  ``start_at`` if ``start`` was called late: the item then plays from its beginning).
- ``stop`` is final: once it returns, no callback fires for that item. The core
  asked for the stop, so it already knows.
- Play length comes from the file itself, never from the plan; a relayed stream
  (``start_stream``) plays for exactly its window instead (see ``drivers/stream.py``).
- Volume: an item's own ``volume_pct`` when it has one, else the station's
  (``set_volume``) as it was when the item was scheduled.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from loaxa_protocol.errors import AudioError
from node_firmware.config import PlayerConfig
from node_firmware.drivers.ogg import audio_duration_ms
from node_firmware.drivers.stream import (
    PRECONNECT_S,
    FfmpegStreamSource,
    HttpStreamSource,
    RelayOutcome,
    StreamSink,
    StreamSource,
    relay_window,
    where,
)

log = logging.getLogger(__name__)

StartedCallback = Callable[[str, datetime], None]
FinishedCallback = Callable[[str, datetime], None]
FailedCallback = Callable[[str, str], None]
UnreachableCallback = Callable[[str, str], None]

SPIN_S = 0.002
"""Busy-wait this long before the instant: thread wake-ups are late by up to ~1 ms."""
SPIN_STEP_S = 0.000_05
"""Nap length while spinning: about the kernel's timer slack, so ~0.1 ms precision."""
MAX_NAP_S = 1.0
"""Re-read the wall clock at least this often so an NTP step during a long wait counts."""

PCM_RATE_HZ = 48_000
PCM_BYTES_PER_MS = PCM_RATE_HZ * 2 // 1000  # S16_LE mono
PCM_CHUNK_BYTES = PCM_BYTES_PER_MS * 20  # small chunks so a stop is noticed quickly
DECODE_LEAD_S = 5.0
"""Start the decoder this long before the instant at the earliest (the core cues later)."""
PRIME_MS = 100
"""PCM read before the instant, so the first write is not waiting on the decoder."""
READY_MAX_MS = 4_000
"""Files at most this long are kept decoded in memory when asked: the alert tone (3 s,
288 KB of PCM), not the station's own 5 s test tone."""
READY_MAX_FILES = 4
DEVICE_HANDOVER_S = 1.0
"""How long an item waits for the previous one (just stopped or ending) to free the device."""


class Player(Protocol):
    """Plays cached audio at planned instants."""

    def start(
        self,
        item_id: str,
        path: Path,
        start_at: datetime,
        duration_ms: int,
        on_started: StartedCallback,
        on_finished: FinishedCallback,
        on_failed: FailedCallback,
        volume_pct: int | None = None,
    ) -> None:
        """Schedule ``path`` to sound at ``start_at`` (aware datetime); returns at once."""

    def start_stream(
        self,
        item_id: str,
        url: str,
        fallback: Path | None,
        start_at: datetime,
        duration_ms: int,
        on_started: StartedCallback,
        on_finished: FinishedCallback,
        on_failed: FailedCallback,
        on_unreachable: UnreachableCallback,
        volume_pct: int | None = None,
    ) -> None:
        """Relay ``url`` over ``[start_at, start_at + duration_ms)``; returns at once.

        ``on_unreachable(item_id, reason)`` fires once per outage, while the cached
        ``fallback`` (if any) plays instead; the item still ends with finished.
        """

    def stop(self, item_id: str) -> None:
        """Silence or unschedule ``item_id``; unknown or finished items are ignored."""

    def set_volume(self, percent: int) -> None:
        """Output level for items started from now on (0-100)."""

    def keep_ready(self, paths: list[Path]) -> None:
        """Hold these cached files ready to sound at once (an alert's tone); returns at once."""

    def restart(self) -> None:
        """Abandon every item, however stuck, and be ready for the next (after a hang)."""

    def close(self) -> None:
        """Stop everything and release the audio device."""

    def answers(self, timeout_s: float) -> bool:
        """Whether the player can take an order within ``timeout_s`` (not deadlocked)."""


@dataclass(frozen=True)
class StreamSegment:
    """A stretch of a relayed window: the stream itself, or the fallback meanwhile."""

    source: str  # "stream" or "fallback"
    started_at: datetime
    finished_at: datetime
    bytes: int  # stream bytes consumed (0 for the fallback)


@dataclass(frozen=True)
class PlayRecord:
    """What a simulated station "played": the swarm's stand-in for a microphone."""

    item_id: str
    audio: str  # file name (in the audio cache that is the sha256), or a stream's URL
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    interrupted: bool
    volume_pct: int = 100
    segments: tuple[StreamSegment, ...] = ()
    """For a relayed stream: what sounded when, in order."""

    @property
    def stream_bytes(self) -> int:
        return sum(s.bytes for s in self.segments)


def wait_until(deadline_s: float, cancel: threading.Event) -> bool:
    """Block until ``time.time()`` reaches ``deadline_s``; False if cancelled first."""
    while (remaining := deadline_s - time.time()) > SPIN_S:
        if cancel.wait(min(remaining - SPIN_S, MAX_NAP_S)):
            return False
    while (remaining := deadline_s - time.time()) > 0:
        # Micro-naps rather than a hot loop: a spinning thread that only yields the
        # GIL (sleep(0)) starves its neighbours for up to the 5 ms switch interval
        # when several players in one process (the swarm, the tests) await one instant.
        time.sleep(min(remaining, SPIN_STEP_S))
    return not cancel.is_set()


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True)
class _Stream:
    url: str
    fallback: Path | None
    duration_ms: int
    on_unreachable: UnreachableCallback


class _Playback:
    """One scheduled item: its callbacks and the stop switch."""

    def __init__(
        self,
        item_id: str,
        path: Path,
        start_at: datetime,
        on_started: StartedCallback,
        on_finished: FinishedCallback,
        on_failed: FailedCallback,
        volume_pct: int = 100,
        stream: _Stream | None = None,
    ) -> None:
        self.item_id = item_id
        self.path = path
        self.start_s = start_at.timestamp()
        self.on_started = on_started
        self.on_finished = on_finished
        self.on_failed = on_failed
        self.volume_pct = volume_pct
        self.stream = stream
        self.stopped_s: float | None = None
        """When ``stop()`` was called: a simulated sound ends there, not when its thread wakes."""
        self.cancel = threading.Event()
        # Re-entrant: a callback may call stop() for its own item.
        self._lock = threading.RLock()
        self._stopped = False

    def stop(self) -> None:
        with self._lock:
            if not self._stopped:
                self.stopped_s = time.time()
            self._stopped = True
            self.cancel.set()

    def started(self, at_s: float) -> None:
        self._emit(self.on_started, self.item_id, utc(at_s))

    def finished(self, at_s: float) -> None:
        self._emit(self.on_finished, self.item_id, utc(at_s))

    def failed(self, reason: str) -> None:
        log.warning("playback of %s failed: %s", self.item_id, reason)
        self._emit(self.on_failed, self.item_id, reason)

    def unreachable(self, reason: str) -> None:
        assert self.stream is not None
        self._emit(self.stream.on_unreachable, self.item_id, reason)

    def _emit(self, callback: Callable[..., None], *args: object) -> None:
        with self._lock:
            if not self._stopped:
                callback(*args)


class _ThreadedPlayer:
    """Bookkeeping shared by the real players: one thread per scheduled item."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, tuple[_Playback, threading.Thread]] = {}
        self.volume_pct = 100

    def set_volume(self, percent: int) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"volume {percent} is not 0-100")
        self.volume_pct = percent

    def start(
        self,
        item_id: str,
        path: Path,
        start_at: datetime,
        duration_ms: int,
        on_started: StartedCallback,
        on_finished: FinishedCallback,
        on_failed: FailedCallback,
        volume_pct: int | None = None,
    ) -> None:
        playback = _Playback(
            item_id, path, _aware(item_id, start_at), on_started, on_finished, on_failed,
            self._volume_for(volume_pct),
        )  # fmt: skip
        log.debug(
            "scheduled %s at %s (plan says %s ms)", item_id, start_at.isoformat(), duration_ms
        )
        self._schedule(playback)

    def start_stream(
        self,
        item_id: str,
        url: str,
        fallback: Path | None,
        start_at: datetime,
        duration_ms: int,
        on_started: StartedCallback,
        on_finished: FinishedCallback,
        on_failed: FailedCallback,
        on_unreachable: UnreachableCallback,
        volume_pct: int | None = None,
    ) -> None:
        if duration_ms <= 0:
            raise ValueError(f"window of stream item {item_id} must be positive: {duration_ms}")
        stream = _Stream(url, fallback, duration_ms, on_unreachable)
        playback = _Playback(
            item_id, fallback or Path(where(url)), _aware(item_id, start_at), on_started,
            on_finished, on_failed, self._volume_for(volume_pct), stream,
        )  # fmt: skip
        log.debug("scheduled relay %s of %s at %s", item_id, where(url), start_at.isoformat())
        self._schedule(playback)

    def keep_ready(self, paths: list[Path]) -> None:
        """Nothing to prepare: a player without a device has no start-up to hide."""

    def _volume_for(self, volume_pct: int | None) -> int:
        if volume_pct is None:
            return self.volume_pct
        if not 0 <= volume_pct <= 100:
            raise ValueError(f"volume {volume_pct} is not 0-100")
        return volume_pct

    def _schedule(self, playback: _Playback) -> None:
        item_id = playback.item_id
        thread = threading.Thread(
            target=self._run_and_forget, args=(playback,), name=f"play-{item_id}", daemon=True
        )
        with self._lock:
            if item_id in self._active:
                # Our own core never double-books an item: that is a bug, not a fault.
                raise ValueError(f"item {item_id} is already scheduled on this player")
            self._active[item_id] = (playback, thread)
        thread.start()

    def answers(self, timeout_s: float) -> bool:
        # Every order goes through this lock: a thread stuck while holding it wedges them all.
        if not self._lock.acquire(timeout=timeout_s):
            return False
        self._lock.release()
        return True

    def stop(self, item_id: str) -> None:
        with self._lock:
            entry = self._active.get(item_id)
        if entry is not None:
            entry[0].stop()

    def restart(self) -> None:
        """Stop everything and forget it: a thread stuck on the device cannot hold up the
        next item (its callbacks are silenced by the stop)."""
        with self._lock:
            entries = list(self._active.values())
            self._active.clear()
        for playback, _ in entries:
            playback.stop()
        log.warning("player restarted; %s item(s) abandoned", len(entries))

    def close(self) -> None:
        with self._lock:
            entries = list(self._active.values())
        for playback, _ in entries:
            playback.stop()
        for _, thread in entries:
            thread.join(timeout=2)

    def _run_and_forget(self, playback: _Playback) -> None:
        try:
            if playback.stream is not None:
                self._run_stream(playback, playback.stream)
            else:
                self._run(playback)
        except Exception as exc:  # the core must hear of it, or it waits for the item forever
            log.exception("player thread of %s crashed", playback.item_id)
            playback.failed(f"internal error: {exc}")
        finally:
            with self._lock:
                if self._active.get(playback.item_id, (None,))[0] is playback:
                    del self._active[playback.item_id]

    def _run(self, playback: _Playback) -> None:
        raise NotImplementedError

    def _run_stream(self, playback: _Playback, stream: _Stream) -> None:
        raise NotImplementedError

    def _relay(
        self,
        playback: _Playback,
        stream: _Stream,
        connect: Callable[[], StreamSource],
        sink: StreamSink,
        segments: list[StreamSegment],
    ) -> RelayOutcome:
        """Run the relay policy for one item; the caller reports the outcome."""
        return relay_window(
            start_s=playback.start_s,
            end_s=playback.start_s + stream.duration_ms / 1000,
            connect=connect,
            sink=sink,
            has_fallback=stream.fallback is not None,
            cancel=playback.cancel,
            wait_until=wait_until,
            on_started=playback.started,
            on_unreachable=playback.unreachable,
            on_segment=lambda kind, a, b, n: segments.append(
                StreamSegment(kind, utc(a), utc(b), n)
            ),
        )


def _aware(item_id: str, start_at: datetime) -> datetime:
    if start_at.tzinfo is None:
        raise ValueError(f"start_at of {item_id} must be timezone-aware")
    return start_at


def _usable_fallback(playback: _Playback, stream: _Stream) -> Path | None:
    """The fallback file if it can be played; a broken one is logged and left out."""
    if stream.fallback is None:
        return None
    try:
        audio_duration_ms(stream.fallback)
    except (OSError, ValueError) as exc:
        log.warning("fallback of %s unusable: %s", playback.item_id, exc)
        return None
    return stream.fallback


def _report(playback: _Playback, outcome: RelayOutcome) -> None:
    """Finished, or failed when nothing at all could be played in the window."""
    if outcome.cancelled:
        return
    if outcome.started_s is not None:
        assert outcome.finished_s is not None
        playback.finished(outcome.finished_s)
    else:
        cause = outcome.last_error or "no answer before the window ended"
        playback.failed(f"stream unreachable for the whole window and no fallback: {cause}")


class SimulatedPlayer(_ThreadedPlayer):
    """Keeps perfect time and records what it would have played; makes no sound.

    The swarm and the tests measure start skew from ``records``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._records: list[PlayRecord] = []
        self._records_lock = threading.Lock()

    @property
    def records(self) -> list[PlayRecord]:
        with self._records_lock:
            return list(self._records)

    def _run(self, playback: _Playback) -> None:
        try:
            duration_ms = audio_duration_ms(playback.path)
        except (OSError, ValueError) as exc:
            playback.failed(f"cannot read {playback.path.name}: {exc}")
            return
        if not wait_until(playback.start_s, playback.cancel):
            return
        started = time.time()
        playback.started(started)
        interrupted = playback.cancel.wait(max(0.0, started + duration_ms / 1000 - time.time()))
        finished = time.time()
        if interrupted and playback.stopped_s is not None:
            finished = min(finished, max(started, playback.stopped_s))
        with self._records_lock:
            self._records.append(
                PlayRecord(
                    playback.item_id,
                    playback.path.name,
                    utc(started),
                    utc(finished),
                    duration_ms,
                    interrupted,
                    playback.volume_pct,
                )
            )
        if not interrupted:
            playback.finished(finished)

    def _run_stream(self, playback: _Playback, stream: _Stream) -> None:
        """Really connect and consume the stream as the server sends it; no sound card."""
        fallback = _usable_fallback(playback, stream)
        segments: list[StreamSegment] = []
        outcome = self._relay(
            playback,
            _Stream(stream.url, fallback, stream.duration_ms, stream.on_unreachable),
            lambda: HttpStreamSource.connect(stream.url),
            _SimulatedSink(),
            segments,
        )
        if outcome.started_s is not None:
            finished_s = outcome.finished_s if outcome.finished_s is not None else time.time()
            if outcome.cancelled and playback.stopped_s is not None:
                finished_s = min(finished_s, max(outcome.started_s, playback.stopped_s))
            with self._records_lock:
                self._records.append(
                    PlayRecord(
                        playback.item_id,
                        where(stream.url),
                        utc(outcome.started_s),
                        utc(finished_s),
                        stream.duration_ms,
                        outcome.cancelled,
                        playback.volume_pct,
                        tuple(segments),
                    )
                )
        _report(playback, outcome)


class _SimulatedSink:
    """Stream bytes are consumed (and counted by the relay); the fallback "plays" in time."""

    def stream(self, chunk: bytes) -> None:
        pass

    def fallback(self, until_s: float, cancel: threading.Event) -> None:
        cancel.wait(max(0.0, until_s - time.time()))

    def end_fallback(self) -> None:
        pass


def find_ffmpeg() -> str:
    """ffmpeg from PATH (the distribution's, on a Pi) or the imageio-ffmpeg wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise AudioError("ffmpeg not found on PATH and imageio-ffmpeg is missing") from exc
    return str(imageio_ffmpeg.get_ffmpeg_exe())


class AlsaPlayer(_ThreadedPlayer):
    """Real sound through ALSA: the device kept open, short files kept decoded in memory.

    The PCM is opened once when the agent starts (:class:`AlsaPcm`, libasound itself)
    and stays prepared between items, so no process starts and no device opens on the
    way to the first sample. Files the agent asks to keep ready (:meth:`keep_ready`:
    the short files of its library, of which the attention tone that opens every alert)
    are decoded into memory ahead, at the station's volume: an alert cued for *now*
    writes its first period to the device straight from memory. Any other file is
    decoded by ffmpeg as it plays, started when the item is cued (the core cues 300 ms
    ahead); the first ``PRIME_MS`` of PCM are read before the instant, and the rest
    follows from the pipe (ffmpeg decodes Opus at well over 100x real time, on a Pi
    too). A stop drops what the device holds at once.

    ``first_samples`` records, per item, the monotonic instant its first frames were on
    the device (``loaxa bench sound`` measures the alert path with it).
    """

    def __init__(self, device: str = "default") -> None:
        from node_firmware.drivers.alsa_pcm import AlsaPcm  # ctypes: only a station with sound

        super().__init__()
        self._ffmpeg = find_ffmpeg()
        self._pcm = AlsaPcm(device, PCM_RATE_HZ)
        # The device starts once one period is written: the first write is at least that.
        self._first_bytes = max(PCM_CHUNK_BYTES, self._pcm.period_frames * 2)
        self._device_lock = threading.Lock()  # one item at a time on the device
        self.first_samples: deque[tuple[str, float]] = deque(maxlen=100)
        self._ready: dict[Path, tuple[int, bytes]] = {}  # path -> (volume, PCM)
        self._ready_wanted: list[Path] = []
        self._ready_change = threading.Condition()
        self._ready_closed = False
        self._ready_thread = threading.Thread(
            target=self._keep_ready_loop, name="pcm-ready", daemon=True
        )
        self._ready_thread.start()

    @property
    def ffmpeg(self) -> str:
        return self._ffmpeg

    def keep_ready(self, paths: list[Path]) -> None:
        """Hold the short ones among ``paths`` decoded in memory (a worker does it)."""
        with self._ready_change:
            self._ready_wanted = list(paths)
            self._ready_change.notify()

    def set_volume(self, percent: int) -> None:
        super().set_volume(percent)
        with self._ready_change:  # decode the ready files again at the new level
            self._ready_change.notify()

    def ready_files(self) -> list[Path]:
        """The files now held decoded at the station's volume."""
        with self._ready_change:
            return [p for p, (vol, _) in self._ready.items() if vol == self.volume_pct]

    def close(self) -> None:
        super().close()
        with self._ready_change:
            self._ready_closed = True
            self._ready_change.notify()
        if self._device_lock.acquire(timeout=2):
            try:
                self._pcm.close()
            finally:
                self._device_lock.release()

    def write_pcm(self, data: bytes) -> None:
        """Onto the device; blocks at the device's pace once its buffer is full."""
        self._pcm.write(data)

    def reset_device(self) -> None:
        """Drop what the device holds (the sound stops) and make it ready again."""
        try:
            self._pcm.reset()
        except AudioError as exc:
            log.warning("cannot reset the ALSA device: %s", exc)

    # ------------------------------------------------------------ ready files

    def _keep_ready_loop(self) -> None:
        """Decode what ``keep_ready`` named (and drop the rest) whenever it changes."""
        while True:
            with self._ready_change:
                self._ready_change.wait()
                if self._ready_closed:
                    return
                wanted, volume = list(self._ready_wanted), self.volume_pct
            try:
                self._sync_ready(wanted, volume)
            except Exception:  # the next change tries again; plays fall back to ffmpeg
                log.exception("keeping audio ready failed")

    def _sync_ready(self, wanted: list[Path], volume: int) -> None:
        short: list[tuple[int, Path]] = []
        for path in dict.fromkeys(wanted):
            try:
                duration_ms = audio_duration_ms(path)
            except (OSError, ValueError):
                continue  # not cached yet, or damaged: the player decodes it when it plays
            if duration_ms <= READY_MAX_MS:
                short.append((duration_ms, path))
        keep = [path for _, path in sorted(short)[:READY_MAX_FILES]]
        with self._ready_change:
            for path in list(self._ready):
                if path not in keep:
                    del self._ready[path]
            todo = [p for p in keep if self._ready.get(p, (None,))[0] != volume]
        for path in todo:
            pcm = _decode_all(self._ffmpeg, path, volume)
            if pcm is None:
                continue
            with self._ready_change:
                if self.volume_pct == volume and path in self._ready_wanted:
                    self._ready[path] = (volume, pcm)
            log.debug("%s kept ready: %d ms of PCM", path.name, len(pcm) // PCM_BYTES_PER_MS)

    def _ready_pcm(self, path: Path, volume: int) -> bytes | None:
        with self._ready_change:
            entry = self._ready.get(path)
        return entry[1] if entry is not None and entry[0] == volume else None

    # ------------------------------------------------------------ playing

    def _run(self, playback: _Playback) -> None:
        if not playback.path.is_file():
            playback.failed(f"cannot read {playback.path.name}: no such file")
            return
        ready = self._ready_pcm(playback.path, playback.volume_pct)
        if ready is not None:
            if wait_until(playback.start_s, playback.cancel) and self._acquire_device(playback):
                try:
                    self._play(playback, ready, None)
                finally:
                    self._device_lock.release()
            return
        # Not when scheduled hours ahead: a decoder would sit on a full pipe meanwhile.
        if not wait_until(playback.start_s - DECODE_LEAD_S, playback.cancel):
            return
        decoder = _Decoder(self._ffmpeg, playback.path, playback.volume_pct)
        try:
            try:
                first = decoder.prime(PRIME_MS * PCM_BYTES_PER_MS)
            except AudioError as exc:
                playback.failed(str(exc))
                return
            if not wait_until(playback.start_s, playback.cancel):
                return
            if not self._acquire_device(playback):
                return
            try:
                self._play(playback, first, decoder)
            finally:
                self._device_lock.release()
        finally:
            decoder.close()

    def _acquire_device(self, playback: _Playback) -> bool:
        """Take the device; an item just stopped (pre-empted) gets a moment to let go."""
        wait_s = max(0.0, playback.start_s - time.time()) + DEVICE_HANDOVER_S
        if self._device_lock.acquire(timeout=wait_s):
            return True
        playback.failed("audio device busy with another item")
        return False

    def _run_stream(self, playback: _Playback, stream: _Stream) -> None:
        """ffmpeg reads and decodes the stream; its PCM goes to the device."""
        fallback = _usable_fallback(playback, stream)
        if not wait_until(playback.start_s - PRECONNECT_S, playback.cancel):
            return
        if not self._acquire_device(playback):
            return
        sink = _AlsaSink(self, fallback, playback.volume_pct)
        try:
            outcome = self._relay(
                playback,
                _Stream(stream.url, fallback, stream.duration_ms, stream.on_unreachable),
                lambda: FfmpegStreamSource.connect(self._ffmpeg, stream.url, playback.volume_pct),
                sink,
                [],
            )
            # The device still holds a moment of sound: the window ends now, so drop it.
            outcome.finished_s = time.time()
            self.reset_device()
        finally:
            sink.close()
            self._device_lock.release()
        _report(playback, outcome)

    def _play(self, playback: _Playback, first: bytes, decoder: _Decoder | None) -> None:
        """``first`` is the PCM at hand (all of it for a ready file), then the decoder's."""
        cancel = playback.cancel
        try:
            started = time.time()
            written = self._pcm.write(first[: self._first_bytes], cancel)
            self.first_samples.append((playback.item_id, time.monotonic()))
            playback.started(started)
            written += self._pcm.write(first[self._first_bytes :], cancel)
            while decoder is not None and not cancel.is_set():
                chunk = decoder.read(PCM_CHUNK_BYTES)
                if not chunk:
                    break
                written += self._pcm.write(chunk[: len(chunk) - len(chunk) % 2], cancel)
        except AudioError as exc:
            self.reset_device()
            playback.failed(str(exc))
            return
        # The device still holds audio: sound ends at start + duration.
        duration_ms = written // PCM_BYTES_PER_MS
        if cancel.wait(max(0.0, started + duration_ms / 1000 - time.time())):
            self.reset_device()
            return
        playback.finished(time.time())
        self._pcm.settle(cancel)  # the tail a late device still holds, then a clean start
        self.reset_device()


def _decode_all(ffmpeg: str, path: Path, volume_pct: int) -> bytes | None:
    """The whole of a short file as PCM, or None (logged) if ffmpeg cannot decode it."""
    try:
        done = subprocess.run(
            decode_command(ffmpeg, path, "pipe:1", volume_pct),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot decode %s ahead: %s", path.name, exc)
        return None
    if done.returncode != 0 or not done.stdout:
        log.warning(
            "cannot decode %s ahead: %s", path.name, done.stderr.decode(errors="replace")[-200:]
        )
        return None
    return done.stdout[: len(done.stdout) - len(done.stdout) % 2]


def decode_command(
    ffmpeg: str, source: Path, target: str, volume_pct: int, *, loop: bool = False
) -> list[str]:
    """ffmpeg decoding ``source`` to 48 kHz mono S16_LE at ``volume_pct`` (software gain)."""
    looped = ["-stream_loop", "-1"] if loop else []
    return [
        ffmpeg, "-nostdin", "-v", "error", "-y", *looped, "-i", str(source),
        "-filter:a", f"volume={volume_pct / 100:.2f}",
        "-f", "s16le", "-ac", "1", "-ar", str(PCM_RATE_HZ), target,
    ]  # fmt: skip


class _Decoder:
    """ffmpeg decoding one cached file into a pipe, read as the device consumes it."""

    def __init__(self, ffmpeg: str, source: Path, volume_pct: int) -> None:
        self._name = source.name
        self._error = ""
        self._stderr: deque[str] = deque(maxlen=10)
        self._stderr_done = threading.Event()
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                decode_command(ffmpeg, source, "pipe:1", volume_pct),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
            )
        except OSError as exc:
            self._proc = None
            self._error = f"cannot decode {source.name}: {exc}"
            return
        # Read stderr all along: a damaged file makes ffmpeg complain per frame, and a
        # full stderr pipe would stall the decoder mid-bulletin.
        threading.Thread(
            target=self._drain_stderr, args=(self._proc.stderr,), name="decode-err", daemon=True
        ).start()

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError), stream:
            for raw in stream:
                self._stderr.append(raw.decode(errors="replace").strip())
        self._stderr_done.set()

    def prime(self, size: int) -> bytes:
        """The first ``size`` bytes of PCM (less for a short file); AudioError if none."""
        if self._proc is None:
            raise AudioError(self._error)
        data = b""
        while len(data) < size and (chunk := self.read(size - len(data))):
            data += chunk
        if not data:
            self._stderr_done.wait(5)
            detail = " | ".join(line for line in self._stderr if line)[-300:]
            raise AudioError(f"cannot decode {self._name}: {detail or 'no audio in it'}")
        return data

    def read(self, size: int) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        return self._proc.stdout.read(size) or b""

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        if proc.stdout is not None:
            proc.stdout.close()


class _AlsaSink:
    """Stream PCM and the (looped) fallback onto the player's device, frame-aligned."""

    def __init__(self, player: AlsaPlayer, fallback: Path | None, volume_pct: int) -> None:
        self._player = player
        self._fallback = fallback
        self._volume_pct = volume_pct
        self._decoder: subprocess.Popen[bytes] | None = None
        self._carry = b""  # an odd byte: S16 frames must never be split across sources
        self._source = ""

    def stream(self, chunk: bytes) -> None:
        self._write("stream", chunk)

    def fallback(self, until_s: float, cancel: threading.Event) -> None:
        if self._fallback is None:
            cancel.wait(max(0.0, until_s - time.time()))
            return
        if self._decoder is None:
            self._decoder = subprocess.Popen(
                decode_command(
                    self._player.ffmpeg, self._fallback, "pipe:1", self._volume_pct, loop=True
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
            )
        assert self._decoder.stdout is not None
        # Writes block at the device's pace once its buffer is full.
        while not cancel.is_set() and time.time() < until_s:
            pcm = self._decoder.stdout.read(PCM_CHUNK_BYTES)
            if not pcm:
                log.warning("fallback decoder ended early; silence until the next attempt")
                cancel.wait(max(0.0, until_s - time.time()))
                return
            self._write("fallback", pcm)

    def end_fallback(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                decoder.wait(timeout=2)
            if decoder.stdout is not None:
                decoder.stdout.close()

    def close(self) -> None:
        self.end_fallback()

    def _write(self, source: str, data: bytes) -> None:
        if source != self._source:
            self._source, self._carry = source, b""
        data = self._carry + data
        cut = len(data) - len(data) % 2
        data, self._carry = data[:cut], data[cut:]
        try:
            self._player.write_pcm(data)
        except AudioError as exc:
            log.warning("the ALSA device failed while relaying: %s", exc)
            self._player.reset_device()


def open_player(cfg: PlayerConfig) -> Player:
    if cfg.driver == "alsa":
        return AlsaPlayer(cfg.device)
    return SimulatedPlayer()
