"""Upload -> delivery audio: decode, loudness-normalise, limit, encode once, verify.

Theory of operation
-------------------
Memory stays flat whatever the length: the programme is never held whole. It lives
on disk as 48 kHz mono float32 PCM next to its true-peak envelope (11.5 MB per
minute each, in a scratch directory removed afterwards) and every pass streams it
in blocks of :data:`server.audio.blocks.BLOCK_SAMPLES`.

1. ``ffmpeg`` decodes whatever was uploaded to PCM on a pipe. The input is a file,
   not a pipe, because MP4/M4A files from phones often keep their index at the end.
   As the blocks arrive, the integrated loudness (BS.1770) is metered, the true-peak
   envelope (4x oversampling) computed, and both are written to the scratch files.
2. A static gain takes the programme to ``integrated_lufs``. Where that would push
   true peaks over ``true_peak_dbtp - codec_headroom_db`` a look-ahead limiter
   shaves them, by at most ``max_limiter_db``; beyond that the gain itself is
   lowered, so the result is quieter than the target and says so. Finding that gain
   may take up to two metering passes over the limited stream.
3. The gained, limited stream is encoded once to the delivery codec and, in the same
   pass, the encoder's output is piped into a second ffmpeg that decodes it again;
   ``lufs_after`` and ``true_peak_after_dbtp`` are metered on that decoded stream:
   what stations play. Limiter, encoder, decoder and meters run at once. If the codec
   pushed a peak over the ceiling, the pass is repeated a little quieter from the
   same PCM (still one lossy generation). Only the encoded file (240 kB per minute
   of Opus) is kept in memory.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from loaxa_protocol.errors import AudioError
from server.audio.blocks import read_blocks, windowed, write_block
from server.audio.ffmpeg import FfmpegLog, encoders, ffmpeg_exe, ffmpeg_process, run_ffmpeg
from server.audio.limiter import Limiter
from server.audio.measure import (
    ABSOLUTE_GATE_LUFS,
    TRUE_PEAK_MARGIN,
    LoudnessMeter,
    Samples,
    true_peak_envelope,
)
from server.audio.synth import speech_like_wav

log = logging.getLogger(__name__)

RATE = 48_000  # Opus always runs at 48 kHz; decoding everything to it avoids a resample later
_VERIFY_ATTEMPTS = 3
_PIPE_CHUNK = 1 << 16


@dataclass(frozen=True)
class AudioTargets:
    """What delivery audio must look like (defaults: the design brief's -16 LUFS, -1 dBTP)."""

    integrated_lufs: float = -16.0
    true_peak_dbtp: float = -1.0
    bitrate_kbps: int = 32
    max_duration_s: float = 900  # 15 min; memory no longer grows with it, only disk (23 MB/min)
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
    data: bytes | Path,
    filename: str,
    targets: AudioTargets = AudioTargets(),
    scratch_dir: Path | None = None,
) -> ProcessedAudio:
    """Turn an uploaded file (its bytes, or a file holding them) into normalised
    delivery audio, or raise AudioError saying why.

    ``scratch_dir`` holds the decoded PCM while it works (23 MB per minute of audio;
    default: the system's temporary directory, which may be RAM-backed tmpfs).
    """
    with tempfile.TemporaryDirectory(prefix="loaxa-audio-", dir=scratch_dir) as tmp:
        work = Path(tmp)
        if isinstance(data, bytes):
            source = work / "upload"
            source.write_bytes(data)
        else:
            source = data
        if source.stat().st_size == 0:
            raise AudioError(f"{filename}: the file is empty (0 bytes)")
        decoded = _decode(source, filename, targets, work)
        if not decoded.nonzero:
            raise AudioError(f"{filename}: the audio is entirely silent (digital zero)")
        if decoded.lufs < ABSOLUTE_GATE_LUFS:
            raise AudioError(
                f"{filename}: the audio is silent (quieter than {ABSOLUTE_GATE_LUFS:.0f} LUFS)"
            )
        tp_before = 20.0 * math.log10(decoded.peak)
        gain_db = _normalise(decoded, targets)
        codec = delivery_codec(targets)
        trim_db = 0.0
        for attempt in range(1, _VERIFY_ATTEMPTS + 1):
            shaping = _Shaping(decoded, gain_db, trim_db, targets)
            encoded = _encode_and_verify(shaping.blocks, codec, filename, targets)
            excess_db = encoded.true_peak_dbtp - targets.true_peak_dbtp
            if excess_db <= 0 or attempt == _VERIFY_ATTEMPTS:
                break
            log.info("audio: %s codec overshoot %.2f dB, re-encoding quieter", filename, excess_db)
            trim_db += excess_db + 0.5  # the codec's overshoot varies with level: aim lower
    if excess_db > 0:
        log.warning(
            "audio: %s true peak %.2f dBTP after encoding", filename, encoded.true_peak_dbtp
        )

    digest = hashlib.sha256(encoded.data).hexdigest()
    log.info(
        "audio: %s %.1f LUFS/%.1f dBTP -> %.1f LUFS/%.1f dBTP (gain %.1f dB, limiter %.1f dB),"
        " %s %d bytes",
        filename, decoded.lufs, tp_before, encoded.lufs, encoded.true_peak_dbtp,
        gain_db - trim_db, shaping.reduction_db, codec.name, len(encoded.data),
    )  # fmt: skip
    return ProcessedAudio(
        encoded=encoded.data,
        sha256=digest,
        size_bytes=len(encoded.data),
        duration_ms=round(encoded.samples * 1000 / RATE),
        codec=codec.name,
        mime_type=codec.mime_type,
        lufs_before=decoded.lufs,
        lufs_after=encoded.lufs,
        true_peak_before_dbtp=tp_before,
        true_peak_after_dbtp=encoded.true_peak_dbtp,
        sample_rate=RATE,
        gain_db=gain_db - trim_db,
        limiter_reduction_db=shaping.reduction_db,
    )


@dataclass(frozen=True)
class _Decoded:
    """The decoded programme on disk and what was measured on the way."""

    pcm: Path
    envelope: Path
    samples: int
    nonzero: bool
    lufs: float
    peak: float  # linear true peak

    def blocks(self) -> Iterator[Samples]:
        with self.pcm.open("rb") as pcm:
            yield from read_blocks(pcm)

    def blocks_with_envelope(self) -> Iterator[tuple[Samples, Samples]]:
        with self.pcm.open("rb") as pcm, self.envelope.open("rb") as envelope:
            yield from zip(read_blocks(pcm), read_blocks(envelope), strict=True)


@dataclass(frozen=True)
class _Verified:
    """The encoded file and what a station will play when it decodes it."""

    data: bytes
    samples: int
    lufs: float
    true_peak_dbtp: float


class _StreamMeter:
    """Loudness and true peak of a stream of blocks, kept beside the stream."""

    def __init__(self) -> None:
        self.loudness = LoudnessMeter(RATE)
        self.peak = 0.0
        self.nonzero = False

    def blocks(self, source: Iterator[Samples]) -> Iterator[tuple[Samples, Samples]]:
        """(block, true-peak envelope) of each block of ``source``, metered on the way."""
        pairs = ((block, block) for block in source)
        for block, envelope in windowed(pairs, TRUE_PEAK_MARGIN, true_peak_envelope):
            self.loudness.add(block)
            if envelope.size:
                self.peak = max(self.peak, float(envelope.max()))
            self.nonzero = self.nonzero or bool(block.any())
            yield block, envelope


def _decode(source: Path, filename: str, targets: AudioTargets, work: Path) -> _Decoded:
    """Decode any ffmpeg-readable file to 48 kHz mono PCM on disk, metering it."""
    args = [
        "-i", str(source), "-map", "0:a:0", "-vn", "-sn", "-dn",
        # decode one second past the limit: enough to know it is too long, no more
        "-t", f"{targets.max_duration_s + 1:.3f}",
        "-ac", "1", "-ar", str(RATE), "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    meter = _StreamMeter()
    pcm_path, envelope_path = work / "pcm.f32", work / "envelope.f32"
    with (
        tempfile.TemporaryFile() as stderr,
        pcm_path.open("wb") as pcm,
        envelope_path.open("wb") as envelope_out,
    ):
        with ffmpeg_process(
            args, stdin=subprocess.DEVNULL, stderr=stderr,
            timeout_s=targets.ffmpeg_timeout_s, what=filename,
        ) as proc:  # fmt: skip
            assert proc.stdout is not None
            for block, envelope in meter.blocks(read_blocks(proc.stdout)):
                write_block(pcm, block)
                write_block(envelope_out, envelope)
        stderr.seek(0)
        ffmpeg_log = FfmpegLog.parse(stderr.read())
    if proc.returncode != 0:
        raise AudioError(_explain_failure(filename, ffmpeg_log, str(source)))
    samples = meter.loudness.samples
    if samples == 0:
        raise AudioError(f"{filename}: the audio stream holds no samples")
    duration_s = samples / RATE
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
    return _Decoded(
        pcm_path, envelope_path, samples, meter.nonzero, meter.loudness.integrated_lufs(),
        meter.peak,
    )  # fmt: skip


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


class _Shaping:
    """The programme with a static gain, limited, then trimmed: a stream of blocks.

    ``trim_db`` turns the limited result down after the fact (a re-encode after a
    codec overshoot), so it changes the level, not what the limiter shaved.
    ``reduction_db`` is final once :meth:`blocks` has been read to the end.
    """

    def __init__(
        self, decoded: _Decoded, gain_db: float, trim_db: float, targets: AudioTargets
    ) -> None:
        self._decoded = decoded
        self._factor = np.float32(10.0 ** (gain_db / 20.0))
        self._trim = np.float32(10.0 ** (-trim_db / 20.0))
        self._ceiling_db = targets.true_peak_dbtp - targets.codec_headroom_db
        self.needs_limiter = decoded.peak * self._factor > 10.0 ** (self._ceiling_db / 20.0)
        self.reduction_db = 0.0

    def blocks(self) -> Iterator[Samples]:
        factor, trim = self._factor, self._trim
        if not self.needs_limiter:
            for block in self._decoded.blocks():
                yield block * (factor * trim)
            return
        limiter = Limiter(self._ceiling_db, RATE)
        gained = (
            (block * factor, envelope * factor)
            for block, envelope in self._decoded.blocks_with_envelope()
        )
        for block in limiter.run(gained):
            yield block * trim if trim != 1 else block
        self.reduction_db = limiter.reduction_db


def _normalise(decoded: _Decoded, targets: AudioTargets) -> float:
    """The static gain (dB) that takes the limited programme nearest the target.

    Limiting a loud vowel turns the whole vowel down, so the limited programme is
    quieter than gain alone predicts. Up to two metering passes raise the gain along
    the measured gain -> loudness curve (secant steps), never past the limiter budget.
    """
    ceiling_db = targets.true_peak_dbtp - targets.codec_headroom_db
    tp_db = 20.0 * math.log10(decoded.peak)
    highest_db = min(targets.max_gain_db, ceiling_db - tp_db + targets.max_limiter_db)
    gain_db = min(targets.integrated_lufs - decoded.lufs, highest_db)
    tried: list[tuple[float, float]] = []  # (gain dB, loudness LUFS) of earlier passes
    for attempt in range(3):
        shaping = _Shaping(decoded, gain_db, 0.0, targets)
        if not shaping.needs_limiter or attempt == 2 or gain_db >= highest_db:
            break
        meter = LoudnessMeter(RATE)
        for block in shaping.blocks():
            meter.add(block)
        if shaping.reduction_db == 0.0:
            break
        loudness = meter.integrated_lufs()
        shortfall = targets.integrated_lufs - loudness
        if shortfall < 0.1:
            break
        slope = 1.0
        if tried and loudness > tried[-1][1]:
            slope = (loudness - tried[-1][1]) / (gain_db - tried[-1][0])
        tried.append((gain_db, loudness))
        gain_db = min(gain_db + shortfall / max(slope, 0.25), highest_db)
    return gain_db


def _encode_and_verify(
    blocks: Callable[[], Iterator[Samples]], codec: _Codec, filename: str, targets: AudioTargets
) -> _Verified:
    """Encode the stream and decode the result again, all at once.

    One thread feeds the encoder, one tees its output into the decoder, and this one
    meters what the decoder gives back; on two cores the verification costs almost
    no extra wall time, and nothing but the encoded file accumulates.
    """
    encode_args = [
        "-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0",
        *codec.args,
        # bit-exact output: the same upload always yields the same sha256
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", "pipe:1",
    ]  # fmt: skip
    decode_args = [
        "-i", "pipe:0", "-ac", "1", "-ar", str(RATE), "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    encoded: list[bytes] = []
    meter = _StreamMeter()
    timeout_s = targets.ffmpeg_timeout_s
    with tempfile.TemporaryFile() as enc_err, tempfile.TemporaryFile() as dec_err:
        with (
            ffmpeg_process(
                encode_args, stdin=subprocess.PIPE, stderr=enc_err, timeout_s=timeout_s,
                what=filename, doing="encoding",
            ) as encoder,
            ffmpeg_process(
                decode_args, stdin=subprocess.PIPE, stderr=dec_err, timeout_s=timeout_s,
                what=filename, doing="encoding",
            ) as decoder,
        ):  # fmt: skip
            _run_encode(blocks, encoder, decoder, encoded, meter)
        for proc, err in ((encoder, enc_err), (decoder, dec_err)):
            if proc.returncode != 0:
                err.seek(0)
                problem = FfmpegLog.parse(err.read()).first_error()
                raise AudioError(f"{filename}: encoding to {codec.name} failed (ffmpeg: {problem})")
    return _Verified(
        b"".join(encoded), meter.loudness.samples, meter.loudness.integrated_lufs(),
        20.0 * math.log10(meter.peak) if meter.peak > 0 else -math.inf,
    )  # fmt: skip


def _run_encode(
    blocks: Callable[[], Iterator[Samples]],
    encoder: subprocess.Popen[bytes],
    decoder: subprocess.Popen[bytes],
    encoded: list[bytes],
    meter: _StreamMeter,
) -> None:
    enc_in, enc_out = _pipes(encoder)
    dec_in, dec_out = _pipes(decoder)
    failures: list[BaseException] = []

    def feed() -> None:
        try:
            for block in blocks():
                if not _write_quietly(enc_in, block.astype("<f4", copy=False).tobytes()):
                    break
        except BaseException as exc:  # raised again in the caller's thread below
            failures.append(exc)
            encoder.kill()
        finally:
            _close_quietly(enc_in)

    def tee() -> None:
        for chunk in iter(lambda: enc_out.read(_PIPE_CHUNK), b""):
            encoded.append(chunk)
            _write_quietly(dec_in, chunk)
        _close_quietly(dec_in)

    workers = [threading.Thread(target=job, daemon=True) for job in (feed, tee)]
    for worker in workers:
        worker.start()
    for _block in meter.blocks(read_blocks(dec_out)):
        pass
    for worker in workers:
        worker.join()
    if failures:
        raise failures[0]


def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    if proc.stdin is None or proc.stdout is None:
        raise AudioError("ffmpeg started without pipes")  # cannot happen with PIPE; for mypy
    return proc.stdin, proc.stdout


def _write_quietly(stream: IO[bytes], data: bytes) -> bool:
    """Write to a child's stdin; False if the child died (its exit code will tell why)."""
    try:
        stream.write(data)
    except (BrokenPipeError, ValueError):
        return False
    return True


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
