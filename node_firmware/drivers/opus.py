"""A small ctypes binding to the system's libopus (``libopus0`` on Debian and Raspberry Pi OS).

Live frames are decoded on the station one packet at a time, with the decoder's own
packet-loss concealment for a missing one; ffmpeg cannot do that from a pipe of loose
packets, and a wheel would have to be built for armv7. The encoder is here for the
benchmark's capture side and the tests. 48 kHz mono, 16-bit PCM throughout.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from loaxa_protocol.errors import AudioError

RATE_HZ = 48_000
_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_MAX_SAMPLES = 5760  # 120 ms at 48 kHz: the largest frame Opus decodes

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _opus() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            name = ctypes.util.find_library("opus") or "libopus.so.0"
            try:
                lib = ctypes.CDLL(name)
            except OSError as exc:
                raise AudioError(f"libopus not found ({exc}); install libopus0") from exc
            lib.opus_decoder_create.restype = ctypes.c_void_p
            lib.opus_decoder_create.argtypes = [
                ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
            ]  # fmt: skip
            lib.opus_decode.argtypes = [
                ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32,
                ctypes.POINTER(ctypes.c_int16), ctypes.c_int, ctypes.c_int,
            ]  # fmt: skip
            lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_encoder_create.restype = ctypes.c_void_p
            lib.opus_encoder_create.argtypes = [
                ctypes.c_int32, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
            ]  # fmt: skip
            lib.opus_encode.argtypes = [
                ctypes.c_void_p, ctypes.POINTER(ctypes.c_int16), ctypes.c_int,
                ctypes.c_char_p, ctypes.c_int32,
            ]  # fmt: skip
            lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
            lib.opus_strerror.restype = ctypes.c_char_p
            _lib = lib
        return _lib


def _check(code: int, what: str) -> int:
    if code < 0:
        message = _opus().opus_strerror(code).decode(errors="replace")
        raise AudioError(f"opus {what} failed: {message}")
    return code


class OpusDecoder:
    """One decoder per live session (its state carries across packets)."""

    def __init__(self) -> None:
        error = ctypes.c_int(0)
        self._state = _opus().opus_decoder_create(RATE_HZ, 1, ctypes.byref(error))
        _check(error.value, "decoder_create")
        self._pcm = (ctypes.c_int16 * _MAX_SAMPLES)()

    def decode(self, packet: bytes | None, samples: int) -> bytes:
        """PCM of one packet; ``None`` conceals a lost one (``samples`` long)."""
        data, size = (packet, len(packet)) if packet else (None, 0)
        n = _check(_opus().opus_decode(self._state, data, size, self._pcm, samples, 0), "decode")
        return ctypes.string_at(self._pcm, n * 2)

    def close(self) -> None:
        if self._state:
            _opus().opus_decoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


class OpusEncoder:
    """Speech encoder (VOIP mode) at ``bitrate`` bit/s, one frame of PCM per call."""

    def __init__(self, bitrate: int = 16_000) -> None:
        error = ctypes.c_int(0)
        lib = _opus()
        self._state = lib.opus_encoder_create(RATE_HZ, 1, _APPLICATION_VOIP, ctypes.byref(error))
        _check(error.value, "encoder_create")
        set_ctl = lib.opus_encoder_ctl
        set_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int32]
        _check(set_ctl(self._state, _SET_BITRATE, bitrate), "set bitrate")
        self._out = ctypes.create_string_buffer(1275)

    def encode(self, pcm: bytes) -> bytes:
        """One Opus packet of ``pcm`` (S16 mono, 2.5 to 60 ms)."""
        samples = len(pcm) // 2
        buffer = (ctypes.c_int16 * samples).from_buffer_copy(pcm)
        n = _check(_opus().opus_encode(self._state, buffer, samples, self._out, 1275), "encode")
        return self._out.raw[:n]

    def close(self) -> None:
        if self._state:
            _opus().opus_encoder_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
