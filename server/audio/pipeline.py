"""Upload -> delivery audio: decode, loudness-normalise, limit, encode once, verify.

Theory of operation
-------------------
1. ``ffmpeg`` decodes whatever was uploaded to 48 kHz mono float32 PCM. The input
   goes through a temporary file, not a pipe, because MP4/M4A files from phones
   often keep their index at the end and cannot be read from a pipe.
2. Integrated loudness (BS.1770, pyloudnorm) and the true-peak envelope (4x
   oversampling) of the PCM are measured, in parallel on two cores.
3. A static gain takes the programme to ``integrated_lufs``. Where that would push
   true peaks over ``true_peak_dbtp - codec_headroom_db`` a look-ahead limiter
   shaves them, by at most ``max_limiter_db``; beyond that the gain itself is
   lowered, so the result is quieter than the target and says so.
4. The PCM is encoded once to the delivery codec and, in the same pass, the encoder's
   output is piped into a second ffmpeg that decodes it again. ``lufs_after`` and
   ``true_peak_after_dbtp`` are measured on that decoded copy: what stations play.
   If the codec pushed a peak over the ceiling, the PCM is turned down by the excess
   and encoded again from the same PCM (still one lossy generation).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from loaxa_protocol.errors import AudioError
from server.audio.ffmpeg import BASE_FLAGS, FfmpegLog, encoders, ffmpeg_exe, run_ffmpeg
from server.audio.limiter import limit
from server.audio.measure import (
    Samples,
    integrated_lufs,
    true_peak_dbtp,
    true_peak_envelope,
)
from server.audio.synth import speech_like_wav

log = logging.getLogger(__name__)

RATE = 48_000  # Opus always runs at 48 kHz; decoding everything to it avoids a resample later
ABSOLUTE_GATE_LUFS = -70.0
_VERIFY_ATTEMPTS = 3


@dataclass(frozen=True)
class AudioTargets:
    """What delivery audio must look like (defaults: the design brief's -16 LUFS, -1 dBTP)."""

    integrated_lufs: float = -16.0
    true_peak_dbtp: float = -1.0
    bitrate_kbps: int = 32
    max_duration_s: float = 900  # whole-array processing: ~170 MB of RAM per minute
    codec_headroom_db: float = 2.0  # limiter ceiling under the target: Opus moves peaks ~1-2 dB
    max_limiter_db: float = 8.0  # deepest peak reduction before gain is lowered instead
    max_gain_db: float = 30.0  # never boost a near-silent recording's hiss by more
    opus_complexity: int = 5  # libopus 0-10; 5 keeps speech quality and doubles speed
    ffmpeg_timeout_s: float = 300.0  # per ffmpeg run; a hung decoder must not pin a worker


@dataclass(frozen=True)
class ProcessedAudio:
    """Delivery-ready audio plus the measurements that justify it."""

    encoded: bytes
    sha256: str
    size_bytes: int
    duration_ms: int
    codec: str
    mime_type: str
    lufs_before: float | None
    lufs_after: float
    true_peak_before_dbtp: float
    true_peak_after_dbtp: float
    sample_rate: int
    gain_db: float
    limiter_reduction_db: float = 0.0  # deepest peak reduction by the limiter (0 = untouched)


@dataclass(frozen=True)
class _Codec:
    name: str
    mime_type: str
    args: tuple[str, ...]


def delivery_codec(targets: AudioTargets) -> _Codec:
    """Ogg Opus when this ffmpeg has libopus, else MP3 (48 kbit/s to match speech quality)."""
    available = encoders(ffmpeg_exe())
    if "libopus" in available:
        return _Codec(
            "opus",
            "audio/ogg",
            (
                "-c:a", "libopus", "-b:a", f"{targets.bitrate_kbps}k", "-ac", "1",
                "-application", "voip", "-compression_level", str(targets.opus_complexity),
                "-f", "ogg",
            ),
        )  # fmt: skip
    if "libmp3lame" in available:
        log.warning("audio: ffmpeg has no libopus, delivering MP3 48 kbit/s instead")
        return _Codec(
            "mp3", "audio/mpeg", ("-c:a", "libmp3lame", "-b:a", "48k", "-ac", "1", "-f", "mp3")
        )
    raise AudioError(f"ffmpeg at {ffmpeg_exe()} has neither libopus nor libmp3lame")


def process_audio(
    data: bytes, filename: str, targets: AudioTargets = AudioTargets()
) -> ProcessedAudio:
    """Turn an uploaded file into normalised delivery audio, or raise AudioError saying why."""
    samples = decode(data, filename, targets)
    if not np.any(samples):
        raise AudioError(f"{filename}: the audio is entirely silent (digital zero)")
    with ThreadPoolExecutor(max_workers=1) as pool:
        envelope_job = pool.submit(true_peak_envelope, samples)
        lufs_before = integrated_lufs(samples, RATE)
        envelope = envelope_job.result()
    if lufs_before < ABSOLUTE_GATE_LUFS:
        raise AudioError(
            f"{filename}: the audio is silent (quieter than {ABSOLUTE_GATE_LUFS:.0f} LUFS)"
        )
    peak_before = float(envelope.max())
    tp_before = 20.0 * math.log10(peak_before)

    gain_db, shaped, reduction_db = _normalise(samples, envelope, lufs_before, tp_before, targets)
    del samples, envelope  # an hour of PCM is 700 MB per copy: drop what is no longer needed
    codec = delivery_codec(targets)
    for attempt in range(1, _VERIFY_ATTEMPTS + 1):
        encoded, played = _encode_and_decode(shaped, codec, filename, targets)
        with ThreadPoolExecutor(max_workers=1) as pool:
            peak_job = pool.submit(true_peak_dbtp, played)
            lufs_after = integrated_lufs(played, RATE)
            tp_after = peak_job.result()
        excess_db = tp_after - targets.true_peak_dbtp
        if excess_db <= 0 or attempt == _VERIFY_ATTEMPTS:
            break
        log.info("audio: %s codec overshoot %.2f dB, re-encoding quieter", filename, excess_db)
        trim_db = excess_db + 0.5  # the codec's overshoot varies with level: aim lower
        shaped = shaped * np.float32(10.0 ** (-trim_db / 20.0))
        gain_db -= trim_db
    if excess_db > 0:
        log.warning("audio: %s true peak %.2f dBTP after encoding", filename, tp_after)

    digest = hashlib.sha256(encoded).hexdigest()
    log.info(
        "audio: %s %.1f LUFS/%.1f dBTP -> %.1f LUFS/%.1f dBTP (gain %.1f dB, limiter %.1f dB),"
        " %s %d bytes",
        filename, lufs_before, tp_before, lufs_after, tp_after, gain_db, reduction_db,
        codec.name, len(encoded),
    )  # fmt: skip
    return ProcessedAudio(
        encoded=encoded,
        sha256=digest,
        size_bytes=len(encoded),
        duration_ms=round(played.size * 1000 / RATE),
        codec=codec.name,
        mime_type=codec.mime_type,
        lufs_before=lufs_before,
        lufs_after=lufs_after,
        true_peak_before_dbtp=tp_before,
        true_peak_after_dbtp=tp_after,
        sample_rate=RATE,
        gain_db=gain_db,
        limiter_reduction_db=reduction_db,
    )


def decode(data: bytes, filename: str, targets: AudioTargets = AudioTargets()) -> Samples:
    """Decode any ffmpeg-readable file to 48 kHz mono float32, or raise AudioError."""
    if not data:
        raise AudioError(f"{filename}: the file is empty (0 bytes)")
    with tempfile.TemporaryDirectory(prefix="loaxa-audio-") as tmp:
        source = Path(tmp) / "upload"
        source.write_bytes(data)
        args = [
            "-i", str(source), "-map", "0:a:0", "-vn", "-sn", "-dn",
            # decode one second past the limit: enough to know it is too long, no more
            "-t", f"{targets.max_duration_s + 1:.3f}",
            "-ac", "1", "-ar", str(RATE), "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
        ]  # fmt: skip
        raw, ffmpeg_log, code = run_ffmpeg(
            args, stdin=None, timeout_s=targets.ffmpeg_timeout_s, what=filename
        )
    if code != 0:
        raise AudioError(_explain_failure(filename, ffmpeg_log, str(source)))
    samples = np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False)
    if samples.size == 0:
        raise AudioError(f"{filename}: the audio stream holds no samples")
    duration_s = samples.size / RATE
    declared_s = ffmpeg_log.declared_duration_s()
    if duration_s > targets.max_duration_s:
        shown = declared_s if declared_s and declared_s > duration_s else duration_s
        raise AudioError(
            f"{filename}: too long ({_clock(shown)}); the limit is {_clock(targets.max_duration_s)}"
        )
    if (
        declared_s is not None
        and not ffmpeg_log.contains("Estimating duration from bitrate")
        and declared_s - duration_s > max(0.5, 0.05 * declared_s)
    ):
        raise AudioError(
            f"{filename}: truncated or corrupt: the file says {declared_s:.1f} s"
            f" but only {duration_s:.1f} s could be decoded"
        )
    return samples


def _explain_failure(filename: str, ffmpeg_log: FfmpegLog, temp_path: str) -> str:
    if ffmpeg_log.contains("matches no streams"):
        return f"{filename}: contains no audio stream"
    first = (ffmpeg_log.first_error() or "no error message").replace(temp_path, filename)
    if ffmpeg_log.contains("Decoder not found") or ffmpeg_log.contains("unsupported"):
        return f"{filename}: unsupported audio format (ffmpeg: {first})"
    return f"{filename}: not readable audio, or corrupt (ffmpeg: {first})"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _normalise(
    samples: Samples, envelope: Samples, lufs: float, tp_db: float, targets: AudioTargets
) -> tuple[float, Samples, float]:
    """Return (static gain dB, shaped PCM, limiter reduction dB) aiming at the targets.

    Limiting a loud vowel turns the whole vowel down, so the limited programme is
    quieter than gain alone predicts. Up to three passes raise the gain along the
    measured gain -> loudness curve (secant steps), never past the limiter budget.
    """
    ceiling_db = targets.true_peak_dbtp - targets.codec_headroom_db
    highest_db = min(targets.max_gain_db, ceiling_db - tp_db + targets.max_limiter_db)
    gain_db = min(targets.integrated_lufs - lufs, highest_db)
    tried: list[tuple[float, float]] = []  # (gain dB, loudness LUFS) of earlier passes
    for attempt in range(3):
        factor = np.float32(10.0 ** (gain_db / 20.0))
        shaped, reduction_db = limit(samples * factor, envelope * factor, ceiling_db, RATE)
        if reduction_db == 0.0 or attempt == 2 or gain_db >= highest_db:
            break
        loudness = integrated_lufs(shaped, RATE)
        shortfall = targets.integrated_lufs - loudness
        if shortfall < 0.1:
            break
        slope = 1.0
        if tried and loudness > tried[-1][1]:
            slope = (loudness - tried[-1][1]) / (gain_db - tried[-1][0])
        tried.append((gain_db, loudness))
        gain_db = min(gain_db + shortfall / max(slope, 0.25), highest_db)
    return gain_db, shaped, reduction_db


def _encode_and_decode(
    pcm: Samples, codec: _Codec, filename: str, targets: AudioTargets
) -> tuple[bytes, Samples]:
    """Encode ``pcm`` and decode the result again, both ffmpegs running at once.

    The encoder's output is teed into the decoder as it appears, so on two cores the
    verification decode costs almost no extra wall time.
    """
    exe = ffmpeg_exe()
    encode_cmd = [
        exe, *BASE_FLAGS, "-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0",
        *codec.args,
        # bit-exact output: the same upload always yields the same sha256
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", "pipe:1",
    ]  # fmt: skip
    decode_cmd = [
        exe, *BASE_FLAGS, "-i", "pipe:0", "-ac", "1", "-ar", str(RATE),
        "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    encoded: list[bytes] = []
    decoded: list[bytes] = []
    with tempfile.TemporaryFile() as enc_err, tempfile.TemporaryFile() as dec_err:
        encoder = subprocess.Popen(
            encode_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=enc_err
        )
        decoder = subprocess.Popen(
            decode_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=dec_err
        )
        enc_in, enc_out = _pipes(encoder)
        dec_in, dec_out = _pipes(decoder)

        def feed() -> None:
            _write_quietly(enc_in, pcm.tobytes())
            _close_quietly(enc_in)

        def tee() -> None:
            for chunk in iter(lambda: enc_out.read(1 << 16), b""):
                encoded.append(chunk)
                _write_quietly(dec_in, chunk)
            _close_quietly(dec_in)

        def drain() -> None:
            decoded.append(dec_out.read())

        workers = [threading.Thread(target=job, daemon=True) for job in (feed, tee, drain)]
        try:
            for worker in workers:
                worker.start()
            deadline = time.monotonic() + targets.ffmpeg_timeout_s
            for worker in workers:
                worker.join(max(0.0, deadline - time.monotonic()))
            if any(worker.is_alive() for worker in workers):
                raise AudioError(
                    f"{filename}: encoding took longer than {targets.ffmpeg_timeout_s:.0f} s"
                )
        finally:
            for proc in (encoder, decoder):
                if proc.poll() is None and any(worker.is_alive() for worker in workers):
                    proc.kill()
                    proc.wait(timeout=10)
        for proc, err in ((encoder, enc_err), (decoder, dec_err)):
            if proc.wait(timeout=10) != 0:
                err.seek(0)
                problem = FfmpegLog.parse(err.read()).first_error()
                raise AudioError(f"{filename}: encoding to {codec.name} failed (ffmpeg: {problem})")
    return b"".join(encoded), np.frombuffer(b"".join(decoded), dtype="<f4")


def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    if proc.stdin is None or proc.stdout is None:
        raise AudioError("ffmpeg started without pipes")  # cannot happen with PIPE; for mypy
    return proc.stdin, proc.stdout


def _write_quietly(stream: IO[bytes], data: bytes) -> None:
    """Write to a child's stdin; if the child died, its exit code will tell why."""
    with contextlib.suppress(BrokenPipeError, ValueError):
        stream.write(data)


def _close_quietly(stream: IO[bytes]) -> None:
    with contextlib.suppress(BrokenPipeError):
        stream.close()


def bench_audio(seconds: float = 60.0, runs: int = 3) -> dict[str, float]:
    """Time ``process_audio`` on a generated speech-like MP3; median of ``runs``.

    The input is MP3 because that is what operators upload most; generating it is
    not timed.
    """
    wav = speech_like_wav(seconds)
    mp3, ffmpeg_log, code = run_ffmpeg(
        ["-f", "wav", "-i", "pipe:0", "-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3", "pipe:1"],
        stdin=wav,
        timeout_s=120,
        what="bench input",
    )
    if code != 0:
        raise AudioError(f"bench input: {ffmpeg_log.first_error()}")
    process_audio(mp3, "bench.mp3")  # warm caches (encoder list, page cache)
    walls = []
    for _ in range(runs):
        started = time.perf_counter()
        process_audio(mp3, "bench.mp3")
        walls.append(time.perf_counter() - started)
    wall_s = float(np.median(walls))
    return {"audio_s": seconds, "wall_s": wall_s, "x_realtime": seconds / wall_s}
