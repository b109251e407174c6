"""Audio output: start a cached file at an exact wall-clock instant.

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
- Play length comes from the file itself, never from the plan.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from loaxa_protocol.errors import AudioError
from node_firmware.config import PlayerConfig
from node_firmware.drivers.ogg import audio_duration_ms

log = logging.getLogger(__name__)

StartedCallback = Callable[[str, datetime], None]
FinishedCallback = Callable[[str, datetime], None]
FailedCallback = Callable[[str, str], None]

SPIN_S = 0.002
"""Busy-wait this long before the instant: thread wake-ups are late by up to ~1 ms."""
SPIN_STEP_S = 0.000_05
"""Nap length while spinning: about the kernel's timer slack, so ~0.1 ms precision."""
MAX_NAP_S = 1.0
"""Re-read the wall clock at least this often so an NTP step during a long wait counts."""

PCM_RATE_HZ = 48_000
PCM_BYTES_PER_MS = PCM_RATE_HZ * 2 // 1000  # S16_LE mono
PCM_CHUNK_BYTES = PCM_BYTES_PER_MS * 20  # small chunks so a stop is noticed quickly
PREDECODE_LEAD_S = 30.0
"""Decode this long before the instant (a Pi decodes Opus at well over 100× real time)."""


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
    ) -> None:
        """Schedule ``path`` to sound at ``start_at`` (aware datetime); returns at once."""

    def stop(self, item_id: str) -> None:
        """Silence or unschedule ``item_id``; unknown or finished items are ignored."""

    def set_volume(self, percent: int) -> None:
        """Output level for items started from now on (0-100)."""

    def close(self) -> None:
        """Stop everything and release the audio device."""


@dataclass(frozen=True)
class PlayRecord:
    """What a simulated station "played": the swarm's stand-in for a microphone."""

    item_id: str
    audio: str  # file name; in the audio cache that is the sha256
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    interrupted: bool


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
    ) -> None:
        self.item_id = item_id
        self.path = path
        self.start_s = start_at.timestamp()
        self.on_started = on_started
        self.on_finished = on_finished
        self.on_failed = on_failed
        self.cancel = threading.Event()
        # Re-entrant: a callback may call stop() for its own item.
        self._lock = threading.RLock()
        self._stopped = False

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self.cancel.set()

    def started(self, at_s: float) -> None:
        self._emit(self.on_started, self.item_id, utc(at_s))

    def finished(self, at_s: float) -> None:
        self._emit(self.on_finished, self.item_id, utc(at_s))

    def failed(self, reason: str) -> None:
        log.warning("playback of %s failed: %s", self.item_id, reason)
        self._emit(self.on_failed, self.item_id, reason)

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
    ) -> None:
        if start_at.tzinfo is None:
            raise ValueError(f"start_at of {item_id} must be timezone-aware")
        playback = _Playback(item_id, path, start_at, on_started, on_finished, on_failed)
        thread = threading.Thread(
            target=self._run_and_forget, args=(playback,), name=f"play-{item_id}", daemon=True
        )
        with self._lock:
            if item_id in self._active:
                # Our own core never double-books an item: that is a bug, not a fault.
                raise ValueError(f"item {item_id} is already scheduled on this player")
            self._active[item_id] = (playback, thread)
        log.debug(
            "scheduled %s at %s (plan says %s ms)", item_id, start_at.isoformat(), duration_ms
        )
        thread.start()

    def stop(self, item_id: str) -> None:
        with self._lock:
            entry = self._active.get(item_id)
        if entry is not None:
            entry[0].stop()

    def close(self) -> None:
        with self._lock:
            entries = list(self._active.values())
        for playback, _ in entries:
            playback.stop()
        for _, thread in entries:
            thread.join(timeout=2)

    def _run_and_forget(self, playback: _Playback) -> None:
        try:
            self._run(playback)
        finally:
            with self._lock:
                self._active.pop(playback.item_id, None)

    def _run(self, playback: _Playback) -> None:
        raise NotImplementedError


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
        with self._records_lock:
            self._records.append(
                PlayRecord(
                    playback.item_id,
                    playback.path.name,
                    utc(started),
                    utc(finished),
                    duration_ms,
                    interrupted,
                )
            )
        if not interrupted:
            playback.finished(finished)


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
    """Real sound through ALSA, started from pre-decoded PCM into a warm ``aplay``.

    A cold ``aplay`` (or ffmpeg) needs tens of milliseconds to open the device; here
    the file is decoded to 48 kHz mono PCM ahead of the instant and one aplay
    process sits waiting on its stdin, so the first sample is written at the instant.
    aplay starts the device once its buffer is full, which pre-decoded data achieves
    in well under a millisecond. A stop kills aplay (dropping buffered audio at once)
    and a fresh one is started for the next item.
    """

    def __init__(self, device: str = "default") -> None:
        super().__init__()
        aplay = shutil.which("aplay")
        if aplay is None:
            raise AudioError("aplay not found; install alsa-utils")
        self._aplay_cmd = [
            aplay, "-q", "-D", device, "-t", "raw", "-f", "S16_LE",
            "-r", str(PCM_RATE_HZ), "-c", "1",
        ]  # fmt: skip
        self._ffmpeg = find_ffmpeg()
        self._work_dir = Path(tempfile.mkdtemp(prefix="loaxa-pcm-"))
        self._device_lock = threading.Lock()  # one item at a time on the device
        self._proc_lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._last_stderr = ""
        self._ensure_aplay()

    def close(self) -> None:
        super().close()
        self._kill_aplay()
        shutil.rmtree(self._work_dir, ignore_errors=True)

    def _run(self, playback: _Playback) -> None:
        if not playback.path.is_file():
            playback.failed(f"cannot read {playback.path.name}: no such file")
            return
        # Decode shortly before the instant, not when scheduled hours ahead: the PCM
        # of a long bulletin is tens of megabytes.
        if not wait_until(playback.start_s - PREDECODE_LEAD_S, playback.cancel):
            return
        pcm_path = self._work_dir / f"{uuid.uuid4().hex}.pcm"
        try:
            try:
                self._decode(playback.path, pcm_path)
            except AudioError as exc:
                playback.failed(str(exc))
                return
            duration_ms = pcm_path.stat().st_size // PCM_BYTES_PER_MS
            if not wait_until(playback.start_s, playback.cancel):
                return
            if not self._device_lock.acquire(blocking=False):
                playback.failed("audio device busy with another item")
                return
            try:
                with pcm_path.open("rb") as pcm:
                    self._play(playback, pcm, duration_ms)
            finally:
                self._device_lock.release()
        finally:
            pcm_path.unlink(missing_ok=True)

    def _play(self, playback: _Playback, pcm: IO[bytes], duration_ms: int) -> None:
        try:
            stdin = self._ensure_aplay()
            started = time.time()
            stdin.write(pcm.read(PCM_CHUNK_BYTES))
            playback.started(started)
            while not playback.cancel.is_set() and (chunk := pcm.read(PCM_CHUNK_BYTES)):
                stdin.write(chunk)  # blocks at the device's pace once its buffer is full
        except OSError as exc:
            self._kill_aplay()
            playback.failed(f"aplay failed: {exc} {self._last_stderr}".strip())
            return
        # The pipe and the device buffer still hold audio: sound ends at start + duration.
        if playback.cancel.wait(max(0.0, started + duration_ms / 1000 - time.time())):
            self._kill_aplay()
            try:
                self._ensure_aplay()  # warm again for the next item
            except OSError as exc:
                log.warning("cannot restart aplay: %s", exc)
            return
        playback.finished(time.time())

    def _decode(self, source: Path, target: Path) -> None:
        cmd = [
            self._ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(source),
            "-filter:a", f"volume={self.volume_pct / 100:.2f}",
            "-f", "s16le", "-ac", "1", "-ar", str(PCM_RATE_HZ), str(target),
        ]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AudioError(f"cannot decode {source.name}: {exc}") from exc
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip()[-300:]
            raise AudioError(f"cannot decode {source.name}: {detail}")

    def _ensure_aplay(self) -> IO[bytes]:
        with self._proc_lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    self._aplay_cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    bufsize=0,
                )
                threading.Thread(
                    target=self._drain_stderr, args=(self._proc,), name="aplay-stderr", daemon=True
                ).start()
            assert self._proc.stdin is not None
            return self._proc.stdin

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        # Without a reader, aplay's underrun messages would fill the pipe and block it.
        assert proc.stderr is not None
        for raw in proc.stderr:
            self._last_stderr = raw.decode(errors="replace").strip()
            log.debug("aplay: %s", self._last_stderr)

    def _kill_aplay(self) -> None:
        with self._proc_lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)


def open_player(cfg: PlayerConfig) -> Player:
    if cfg.driver == "alsa":
        return AlsaPlayer(cfg.device)
    return SimulatedPlayer()
