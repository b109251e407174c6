"""Tiny real audio files, made with the real ffmpeg, for any test that needs one.

Usage::

    from tests.audio_samples import make_audio, quiet_audio, loud_audio
    mp3 = make_audio("mp3", seconds=1.0)

Files are written to a temporary file rather than a pipe so M4A gets its index at
the end, as phone recorders write it. Results are cached: asking twice is free.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from server.audio.ffmpeg import ffmpeg_exe
from server.audio.synth import RATE, speech_like, tone, wav_bytes

FORMATS: dict[str, tuple[str, ...]] = {
    "wav": ("-c:a", "pcm_s16le"),
    "mp3": ("-c:a", "libmp3lame", "-b:a", "64k"),
    "ogg": ("-c:a", "libopus", "-b:a", "48k"),
    "m4a": ("-c:a", "aac", "-b:a", "64k"),
    "flac": ("-c:a", "flac"),
}


@functools.cache
def make_audio(
    fmt: str,
    seconds: float = 1.0,
    *,
    peak_dbfs: float = -6.0,
    kind: str = "speech",
    channels: int = 1,
    rate: int = 44_100,
) -> bytes:
    """A real ``fmt`` file ("wav", "mp3", "ogg" (Opus), "m4a" (AAC), "flac").

    ``kind`` is "speech" (speech-like, see :func:`server.audio.synth.speech_like`) or
    "tone" (440 Hz sine); ``peak_dbfs`` sets its sample peak. ``rate`` and
    ``channels`` let a test check resampling and downmixing.
    """
    if kind == "speech":
        signal = speech_like(seconds)
        signal = signal * np.float32(10.0 ** (peak_dbfs / 20.0) / np.abs(signal).max())
    elif kind == "tone":
        signal = tone(seconds, 440.0, peak_dbfs)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return encode_wav(wav_bytes(signal, RATE), fmt, channels=channels, rate=rate)


def encode_wav(wav: bytes, fmt: str, *, channels: int = 1, rate: int = 44_100) -> bytes:
    """Convert WAV bytes to ``fmt`` with ffmpeg."""
    codec = FORMATS[fmt]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"sample.{fmt}"
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-nostdin", "-f", "wav", "-i", "pipe:0",
             "-ac", str(channels), "-ar", str(48_000 if fmt == "ogg" else rate), *codec,
             str(out)],
            input=wav, check=True, timeout=30, capture_output=True,
        )  # fmt: skip
        return out.read_bytes()


def quiet_audio(fmt: str = "mp3", seconds: float = 2.0) -> bytes:
    """Speech-like audio peaking at -24 dBFS (about -43 LUFS): needs a big boost."""
    return make_audio(fmt, seconds, peak_dbfs=-24.0)


def loud_audio(fmt: str = "wav", seconds: float = 2.0) -> bytes:
    """Speech-like audio driven into clipping (peaks at 0 dBFS, flattened tops)."""
    signal = np.clip(speech_like(seconds) * np.float32(6.0), -1.0, 1.0)
    return encode_wav(wav_bytes(signal), fmt)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` fraction of a file: an upload cut off halfway."""
    return data[: int(len(data) * keep)]


@functools.cache
def long_noise_opus(seconds: float, seed: int = 0) -> bytes:
    """A long, loud white-noise recording in Opus at 6 kbit/s: a few hundred kB on the
    wire for many minutes of audio, the upload that once cost the server gigabytes of RAM
    to decode. ``seed`` makes files that differ (so none is answered from the store)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "noise.ogg"
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-nostdin", "-f", "lavfi",
             "-i", f"anoisesrc=d={seconds}:c=white:a=0.5:r=48000:seed={seed}",
             "-c:a", "libopus", "-b:a", "6k", "-ac", "1", str(out)],
            check=True, timeout=120, capture_output=True,
        )  # fmt: skip
        return out.read_bytes()
