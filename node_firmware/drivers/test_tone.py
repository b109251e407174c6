"""The station's own test tone, generated locally so a test needs no download."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import wave

from loaxa_protocol import AudioRef
from loaxa_protocol.durable import write_atomically
from node_firmware.drivers.audio_cache import AudioCache

RATE_HZ = 16_000
"""Ample for a 1 kHz tone, and a third of the disk of 48 kHz: on a nearly full data
disk this file competes with the alert library."""
DURATION_MS = 5_000
FREQUENCY_HZ = 1_000.0
LEVEL_DBFS = -12.0
FADE_S = 0.05


def tone_wav() -> bytes:
    """5 s of 1 kHz at −12 dBFS with short fades (no click on the loudspeakers).

    Made afresh at each start and not kept: its 480 KB would stay in the agent's memory
    for its whole life only to be hashed once.
    """
    amplitude = 32767 * 10 ** (LEVEL_DBFS / 20)
    frames = RATE_HZ * DURATION_MS // 1000
    fade = int(RATE_HZ * FADE_S)
    samples = bytearray()
    for n in range(frames):
        envelope = min(1.0, n / fade, (frames - n) / fade)
        value = amplitude * envelope * math.sin(2 * math.pi * FREQUENCY_HZ * n / RATE_HZ)
        samples += struct.pack("<h", round(value))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE_HZ)
        out.writeframes(bytes(samples))
    return buffer.getvalue()


def ensure_test_tone(cache: AudioCache) -> AudioRef:
    """Put the tone in the cache (once) and describe it like any other audio."""
    data = tone_wav()
    sha = hashlib.sha256(data).hexdigest()
    target = cache.path(sha)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data)
    return AudioRef(
        sha256=sha,
        size_bytes=len(data),
        duration_ms=DURATION_MS,
        url="local:test-tone",
        codec="wav",
    )
