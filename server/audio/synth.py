"""Generated audio: demo bulletins, test tones and a speech-like benchmark signal.

Everything here is synthesised (numpy, or espeak-ng when installed), so the demo
and the tests ship no recordings and carry no licence questions.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import wave

import numpy as np
import numpy.typing as npt
from scipy.signal import butter, resample_poly, sosfilt

log = logging.getLogger(__name__)

RATE = 48_000
DEMO_TEXT = (
    "Đài truyền thanh xã xin kính chào bà con. Đây là bản tin thử nghiệm của hệ thống loa xã Loaxa."
)
_CHIME_HZ = (659.25, 523.25, 783.99)  # E5, C5, G5: the familiar three-note station call
_ESPEAK_TIMEOUT_S = 30.0

Signal = npt.NDArray[np.float32]


def wav_bytes(samples: Signal, rate: int = RATE) -> bytes:
    """16-bit mono WAV of ``samples`` (clipped to [-1, 1])."""
    pcm = np.clip(samples, -1.0, 1.0) * 32767.0
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.round(pcm).astype("<i2").tobytes())
    return buffer.getvalue()


def tone(seconds: float, freq: float, amplitude_dbfs: float, rate: int = RATE) -> Signal:
    """A sine with 10 ms fades, so it starts and stops without a click."""
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    signal = 10.0 ** (amplitude_dbfs / 20.0) * np.sin(2.0 * np.pi * freq * t)
    fade = min(n // 2, round(0.01 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        signal[:fade] *= ramp
        signal[n - fade :] *= ramp[::-1]
    return signal.astype(np.float32)


def sine_wav(
    seconds: float, freq: float = 440.0, amplitude_dbfs: float = -20.0, rate: int = RATE
) -> bytes:
    """A WAV sine tone; ``amplitude_dbfs`` is its peak level."""
    return wav_bytes(tone(seconds, freq, amplitude_dbfs, rate), rate)


def chime(rate: int = RATE) -> Signal:
    """An attention chime: three bell-like notes, each decaying, with a soft octave partial."""
    notes = []
    for freq in _CHIME_HZ:
        n = round(0.45 * rate)
        t = np.arange(n) / rate
        bell = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(2 * np.pi * 2 * freq * t)
        envelope = np.exp(-t * 6.0) * np.minimum(1.0, t / 0.005)
        notes.append((0.35 * bell * envelope).astype(np.float32))
    return np.concatenate(notes)


def speech_like(seconds: float, rate: int = RATE, seed: int = 7) -> Signal:
    """A deterministic signal with speech's shape, for benchmarks and tests.

    A gliding 110-190 Hz buzz through three formant bands, chopped into 120-320 ms
    syllables with pauses and a few noisy consonants. It has speech's crest factor
    and gating behaviour, which is what the meters and the limiter care about.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    pitch = 150.0 + 25.0 * np.sin(2 * np.pi * 0.6 * t) + 15.0 * np.sin(2 * np.pi * 2.3 * t)
    # A sawtooth softened by a low-pass: roughly the -12 dB/octave glottal source.
    saw = (np.cumsum(pitch / rate) % 1.0) - 0.5
    buzz = sosfilt(butter(1, 700.0, "lowpass", fs=rate, output="sos"), saw)
    voiced = np.zeros(n)
    for centre, width, weight in ((600.0, 200.0, 1.0), (1400.0, 300.0, 0.6), (2600.0, 400.0, 0.3)):
        band = butter(2, [centre - width, centre + width], "bandpass", fs=rate, output="sos")
        voiced += weight * sosfilt(band, buzz)
    hiss = sosfilt(butter(4, 3500.0, "highpass", fs=rate, output="sos"), rng.standard_normal(n))

    envelope = np.zeros(n)
    noisy = np.zeros(n, dtype=bool)
    start = 0
    while start < n:
        length = round(rng.uniform(0.12, 0.32) * rate)
        stop = min(n, start + length)
        envelope[start:stop] = rng.uniform(0.6, 1.0) * np.hanning(length)[: stop - start]
        noisy[start:stop] = rng.random() < 0.25
        start = stop + round(rng.choice([0.02, 0.05, 0.3]) * rate)  # gaps, sometimes a pause
    signal = np.where(noisy, 0.03 * hiss, voiced) * envelope
    return (0.5 * signal / np.abs(signal).max()).astype(np.float32)


def speech_like_wav(seconds: float, rate: int = RATE) -> bytes:
    """:func:`speech_like` as WAV bytes (peak -6 dBFS)."""
    return wav_bytes(speech_like(seconds, rate), rate)


def espeak_vi(text: str, rate: int = RATE) -> Signal | None:
    """Vietnamese speech from espeak-ng, resampled to ``rate``; None when it is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    done = subprocess.run(
        [exe, "-v", "vi", "--stdout", text],
        capture_output=True,
        timeout=_ESPEAK_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0 or not done.stdout:
        log.warning("synth: espeak-ng failed: %s", done.stderr.decode("utf-8", "replace")[:200])
        return None
    with wave.open(io.BytesIO(done.stdout)) as source:
        source_rate = source.getframerate()
        pcm = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    speech = pcm.astype(np.float32) / 32768.0
    divisor = np.gcd(rate, source_rate)
    return resample_poly(speech, rate // divisor, source_rate // divisor).astype(np.float32)


def demo_bulletin_wav(text: str = DEMO_TEXT, seconds: float = 8.0) -> bytes:
    """A demo bulletin: the chime, then ``text`` read by espeak-ng's Vietnamese voice.

    Without espeak-ng a short tone melody stands in for the speech. The result is at
    least ``seconds`` long (padded with silence); speech is never cut mid-word.
    """
    parts = [chime(), np.zeros(round(0.4 * RATE), dtype=np.float32)]
    speech = espeak_vi(text)
    if speech is None:
        melody_s = max(1.0, seconds - 2.0)
        steps = max(1, round(melody_s / 0.5))
        parts += [tone(0.5, _CHIME_HZ[i % 3] / 2, -12.0) for i in range(steps)]
    else:
        parts.append(speech)
    body = np.concatenate(parts)
    missing = round(seconds * RATE) - body.size
    if missing > 0:
        body = np.concatenate([body, np.zeros(missing, dtype=np.float32)])
    return wav_bytes(body)
