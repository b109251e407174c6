"""An ALSA playback device kept open, through libasound itself (ctypes, no extra package).

Why not ``aplay`` on a pipe: a warm aplay still decides for itself when the device
starts (when its 0.5 s buffer is full, after reading a whole period from the pipe), so
nobody can say when the first sample reached the device, and a stop must kill it. Here
the agent opens the PCM once at start, keeps it prepared, and writes to it directly:
the first ``writei`` of an item starts the device (start threshold: one period), its
return is the measured instant, and a stop drops what is buffered at once.

Why ctypes and not a binding from PyPI: libasound2 is on every Raspberry Pi OS image
(aplay and ffmpeg need it), ctypes is in the standard library, and the dozen calls
below are all a player needs; ``pyalsaaudio`` would need a compiler or piwheels on
armv7 for the same calls.

The PCM is non-blocking and every wait has a timeout, so a writer thread always comes
back within a quarter period to see a stop, and a device that stops consuming (a USB card
unplugged, a hung sound server) is an :class:`AudioError` after ``STALL_S``, never a
thread stuck forever.
"""

from __future__ import annotations

import ctypes
import errno
import threading
import time

from loaxa_protocol.errors import AudioError

_PLAYBACK = 0  # SND_PCM_STREAM_PLAYBACK
_NONBLOCK = 1  # SND_PCM_NONBLOCK
_FORMAT_S16_LE = 2  # SND_PCM_FORMAT_S16_LE
_ACCESS_RW_INTERLEAVED = 3  # SND_PCM_ACCESS_RW_INTERLEAVED
_STATE_RUNNING = 3  # SND_PCM_STATE_RUNNING

STALL_S = 2.0
"""A device that takes no sample for this long has failed."""
SETTLE_MAX_S = 1.0
"""Longest wait for the buffered tail to sound at the end of an item."""

_lib: ctypes.CDLL | None = None


def libasound() -> ctypes.CDLL:
    """libasound.so.2, loaded once with the prototypes used here."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL("libasound.so.2")
    except OSError as exc:
        raise AudioError(f"libasound.so.2 not found ({exc}); install libasound2") from exc
    pcm, uframes, sframes = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_long
    c_int, c_uint = ctypes.c_int, ctypes.c_uint
    for name, restype, argtypes in (
        ("snd_pcm_open", c_int, [ctypes.POINTER(pcm), ctypes.c_char_p, c_int, c_int]),
        ("snd_pcm_set_params", c_int, [pcm, c_int, c_int, c_uint, c_uint, c_int, c_uint]),
        ("snd_pcm_get_params", c_int, [pcm, ctypes.POINTER(uframes), ctypes.POINTER(uframes)]),
        ("snd_pcm_sw_params_malloc", c_int, [ctypes.POINTER(ctypes.c_void_p)]),
        ("snd_pcm_sw_params_free", None, [ctypes.c_void_p]),
        ("snd_pcm_sw_params_current", c_int, [pcm, ctypes.c_void_p]),
        ("snd_pcm_sw_params_set_start_threshold", c_int, [pcm, ctypes.c_void_p, uframes]),
        ("snd_pcm_sw_params", c_int, [pcm, ctypes.c_void_p]),
        ("snd_pcm_writei", sframes, [pcm, ctypes.c_void_p, uframes]),
        ("snd_pcm_recover", c_int, [pcm, c_int, c_int]),
        ("snd_pcm_delay", c_int, [pcm, ctypes.POINTER(sframes)]),
        ("snd_pcm_state", c_int, [pcm]),
        ("snd_pcm_drop", c_int, [pcm]),
        ("snd_pcm_prepare", c_int, [pcm]),
        ("snd_pcm_close", c_int, [pcm]),
        ("snd_strerror", ctypes.c_char_p, [c_int]),
    ):
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    _lib = lib
    return lib


def _error(lib: ctypes.CDLL, what: str, code: int) -> AudioError:
    reason = lib.snd_strerror(code)
    return AudioError(f"{what}: {reason.decode(errors='replace') if reason else code}")


class AlsaPcm:
    """One ALSA playback PCM (S16_LE), opened at once and kept ready between items.

    One writer at a time (the player's device lock); :meth:`close` only after the
    writers have ended.
    """

    def __init__(self, device: str, rate_hz: int, channels: int = 1, latency_ms: int = 100) -> None:
        self._lib = lib = libasound()
        self.device = device
        self.rate_hz = rate_hz
        self._frame_bytes = 2 * channels
        self._lock = threading.Lock()
        handle = ctypes.c_void_p()
        code = lib.snd_pcm_open(ctypes.byref(handle), device.encode(), _PLAYBACK, _NONBLOCK)
        if code < 0:
            raise _error(lib, f"cannot open ALSA device {device!r}", code)
        self._pcm: ctypes.c_void_p | None = handle
        try:
            self._configure(channels, latency_ms)
        except AudioError:
            self.close()
            raise

    def _configure(self, channels: int, latency_ms: int) -> None:
        lib, pcm = self._lib, self._pcm
        code = lib.snd_pcm_set_params(
            pcm, _FORMAT_S16_LE, _ACCESS_RW_INTERLEAVED, channels, self.rate_hz, 1,
            latency_ms * 1000,
        )  # fmt: skip
        if code < 0:
            raise _error(lib, f"cannot set up ALSA device {self.device!r}", code)
        buffer, period = ctypes.c_ulong(), ctypes.c_ulong()
        self._check("snd_pcm_get_params", lib.snd_pcm_get_params(pcm, buffer, period))
        self.buffer_frames, self.period_frames = buffer.value, period.value
        # The device starts with the first period written, not once its buffer is full:
        # the first write of an item is the instant its sound begins.
        sw = ctypes.c_void_p()
        self._check("snd_pcm_sw_params_malloc", lib.snd_pcm_sw_params_malloc(ctypes.byref(sw)))
        try:
            self._check("snd_pcm_sw_params_current", lib.snd_pcm_sw_params_current(pcm, sw))
            code = lib.snd_pcm_sw_params_set_start_threshold(pcm, sw, self.period_frames)
            self._check("snd_pcm_sw_params_set_start_threshold", code)
            self._check("snd_pcm_sw_params", lib.snd_pcm_sw_params(pcm, sw))
        finally:
            lib.snd_pcm_sw_params_free(sw)

    def _check(self, what: str, code: int) -> None:
        if code < 0:
            raise _error(self._lib, f"{what} on {self.device!r}", code)

    def _handle(self) -> ctypes.c_void_p:
        if self._pcm is None:
            raise AudioError(f"ALSA device {self.device!r} is closed")
        return self._pcm

    def write(self, data: bytes, cancel: threading.Event | None = None) -> int:
        """Queue ``data`` (whole frames), waiting for room at the device's pace.

        Returns the bytes queued (fewer only when ``cancel`` was set meanwhile). The
        first frames are on the device when the first ``writei`` returns.
        """
        lib, pcm = self._lib, self._handle()
        frames = len(data) // self._frame_bytes
        buf = (ctypes.c_char * len(data)).from_buffer_copy(data) if data else None
        done, stalled_since = 0, time.monotonic()
        while done < frames:
            if cancel is not None and cancel.is_set():
                break
            offset = ctypes.byref(buf, done * self._frame_bytes)  # type: ignore[arg-type]
            n = lib.snd_pcm_writei(pcm, offset, frames - done)
            if n > 0:
                done += n
                stalled_since = time.monotonic()
            elif n == -errno.EAGAIN or n == 0:
                if time.monotonic() - stalled_since > STALL_S:
                    raise AudioError(f"ALSA device {self.device!r} took no sample for {STALL_S} s")
                # A nap of a quarter period, not snd_pcm_wait: the pulse plugin's poll
                # wakes late, and a late writer starves the stream (it then plays slow).
                nap = self.period_frames / self.rate_hz / 4
                if cancel is not None:
                    cancel.wait(nap)
                else:
                    time.sleep(nap)
            elif (code := lib.snd_pcm_recover(pcm, n, 1)) < 0:  # an underrun, a suspend
                raise _error(lib, f"writing to ALSA device {self.device!r}", code)
        return done * self._frame_bytes

    def queued_s(self) -> float:
        """Seconds of sound written but not yet heard (0 when the device is not running)."""
        lib, pcm = self._lib, self._handle()
        if lib.snd_pcm_state(pcm) != _STATE_RUNNING:
            return 0.0
        delay = ctypes.c_long()
        if lib.snd_pcm_delay(pcm, ctypes.byref(delay)) < 0:
            return 0.0
        return max(0, delay.value) / self.rate_hz

    def settle(self, cancel: threading.Event) -> bool:
        """Wait until what was written has sounded; False if ``cancel`` came first."""
        deadline = time.monotonic() + SETTLE_MAX_S
        while (left := self.queued_s()) > 0 and time.monotonic() < deadline:
            if cancel.wait(min(left, 0.05)):
                return False
        return not cancel.is_set()

    def reset(self) -> None:
        """Silence at once: drop whatever is buffered and be ready for the next write."""
        lib, pcm = self._lib, self._handle()
        lib.snd_pcm_drop(pcm)
        self._check("snd_pcm_prepare", lib.snd_pcm_prepare(pcm))

    def close(self) -> None:
        with self._lock:
            pcm, self._pcm = self._pcm, None
        if pcm is not None:
            self._lib.snd_pcm_drop(pcm)
            self._lib.snd_pcm_close(pcm)


def why_unusable(device: str, rate_hz: int = 48_000) -> str | None:
    """Why ``device`` cannot be opened for playback here, or None when it can (checks, tests)."""
    try:
        AlsaPcm(device, rate_hz).close()
    except AudioError as exc:
        return str(exc)
    return None
