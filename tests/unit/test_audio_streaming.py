"""The audio pipeline works block by block: same answers as on the whole programme, and
memory that does not grow with its length (real ffmpeg, real files)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyloudnorm
import pytest

from server.audio.blocks import BLOCK_SAMPLES, windowed
from server.audio.limiter import Limiter, limit
from server.audio.measure import (
    TRUE_PEAK_MARGIN,
    LoudnessMeter,
    true_peak_dbtp,
    true_peak_envelope,
)
from server.audio.pipeline import process_audio
from server.audio.synth import speech_like
from tests.audio_samples import long_noise_opus

RATE = 48_000


def in_blocks(signal: np.ndarray, size: int) -> list[np.ndarray]:
    return [signal[start : start + size] for start in range(0, signal.size, size)]


@pytest.mark.parametrize("seconds", [0.45, 1.0, 7.3, 61.37])
@pytest.mark.parametrize("block", [4_799, BLOCK_SAMPLES])
def test_the_meter_fed_in_blocks_reads_what_pyloudnorm_reads_on_the_whole(
    seconds: float, block: int
) -> None:
    signal = speech_like(seconds) * np.float32(0.7)
    meter = LoudnessMeter(RATE)
    for part in in_blocks(signal, block):
        meter.add(part)

    expected = pyloudnorm.Meter(RATE).integrated_loudness(signal)
    assert meter.integrated_lufs() == pytest.approx(expected, abs=0.01)


def test_the_envelope_in_blocks_is_the_envelope_of_the_whole() -> None:
    signal = speech_like(5.0) * np.float32(3.0)
    pairs = ((part, part) for part in in_blocks(signal, 10_000))
    streamed = np.concatenate(
        [envelope for _part, envelope in windowed(pairs, TRUE_PEAK_MARGIN, true_peak_envelope)]
    )
    np.testing.assert_allclose(streamed, true_peak_envelope(signal), rtol=0, atol=1e-6)


def test_the_limiter_in_blocks_shapes_exactly_as_on_the_whole_programme() -> None:
    signal = speech_like(6.0) * np.float32(4.0)  # peaks near +6 dBFS: much to shave
    envelope = true_peak_envelope(signal)
    whole, whole_reduction = limit(signal, envelope, -3.0, RATE)

    limiter = Limiter(-3.0, RATE)
    pairs = zip(in_blocks(signal, 7_000), in_blocks(envelope, 7_000), strict=True)
    streamed = np.concatenate(list(limiter.run(pairs)))

    assert streamed.size == signal.size
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)
    assert limiter.reduction_db == pytest.approx(whole_reduction, abs=1e-4)
    assert true_peak_dbtp(streamed) <= -3.0 + 0.05


def peak_traced_mb(data: bytes, name: str) -> float:
    """Peak MB that Python and numpy allocated while processing ``data``."""
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        process_audio(data, name)
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_length_of_the_programme() -> None:
    one_minute = peak_traced_mb(long_noise_opus(60.0), "one-minute.ogg")
    five_minutes = peak_traced_mb(long_noise_opus(300.0), "five-minutes.ogg")

    # One copy of the PCM is 11.5 MB per minute; the old pipeline held several at once
    # (about 170 MB per minute). What still grows, by about 1 MB per minute, is the
    # delivery file kept for the store (240 kB/min of Opus, gathered then joined) and
    # one loudness sum per 100 ms.
    assert five_minutes < 20, f"{five_minutes:.1f} MB at the peak for 5 min of audio"
    per_minute = (five_minutes - one_minute) / 4
    assert per_minute < 1.5, f"{one_minute:.1f} MB for 1 min, {five_minutes:.1f} MB for 5"
