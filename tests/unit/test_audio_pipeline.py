"""The audio pipeline on tiny real files through the real ffmpeg (no mocks)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from loaxa_protocol.errors import AudioError, StorageError
from server.audio import ffmpeg as ffmpeg_module
from server.audio import pipeline
from server.audio.limiter import limit
from server.audio.measure import integrated_lufs, true_peak_dbtp, true_peak_envelope
from server.audio.pipeline import AudioTargets, process_audio
from server.audio.store import AudioStore
from server.audio.synth import demo_bulletin_wav, sine_wav, speech_like
from tests.audio_samples import FORMATS, loud_audio, make_audio, quiet_audio, truncated

TARGETS = AudioTargets()
# The pipeline verifies the decoded delivery file and re-encodes while it is over the
# ceiling, so the only slack needed is float rounding in the meter.
TP_TOLERANCE_DB = 1e-3


def assert_on_target(result: pipeline.ProcessedAudio) -> None:
    """-16 LUFS +-1 LU, or quieter only because the limiter used its whole budget."""
    assert result.true_peak_after_dbtp <= TARGETS.true_peak_dbtp + TP_TOLERANCE_DB
    if result.lufs_after < TARGETS.integrated_lufs - 1.0:
        assert result.limiter_reduction_db >= TARGETS.max_limiter_db - 0.01
    else:
        assert result.lufs_after <= TARGETS.integrated_lufs + 1.0


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_becomes_normalised_opus(fmt: str) -> None:
    result = process_audio(make_audio(fmt, 1.5), f"upload.{fmt}")

    assert result.codec == "opus"
    assert result.mime_type == "audio/ogg"
    assert result.encoded[:4] == b"OggS" and b"OpusHead" in result.encoded[:64]
    assert result.sample_rate == 48_000
    assert abs(result.duration_ms - 1500) <= 50
    assert result.sha256 == hashlib.sha256(result.encoded).hexdigest()
    assert result.size_bytes == len(result.encoded)
    assert_on_target(result)


def test_a_steady_tone_lands_on_target_exactly() -> None:
    result = process_audio(make_audio("wav", 2.0, kind="tone", peak_dbfs=-30.0), "tone.wav")

    assert result.lufs_after == pytest.approx(-16.0, abs=0.5)
    assert result.limiter_reduction_db == 0.0
    assert result.lufs_before is not None
    assert result.gain_db == pytest.approx(-16.0 - result.lufs_before, abs=0.01)


def test_quiet_input_is_boosted_and_loud_input_attenuated() -> None:
    quiet = process_audio(quiet_audio(), "quiet.mp3")
    loud = process_audio(loud_audio(), "loud.wav")

    assert quiet.lufs_before is not None and loud.lufs_before is not None
    assert quiet.gain_db > 15 and quiet.lufs_after > quiet.lufs_before + 15
    assert loud.gain_db < 0 and loud.lufs_after < loud.lufs_before
    assert loud.true_peak_before_dbtp > -0.5
    for result in (quiet, loud):
        assert_on_target(result)


def test_stereo_44k_input_is_downmixed_and_resampled() -> None:
    result = process_audio(make_audio("flac", 1.0, channels=2, rate=44_100), "stereo.flac")

    assert abs(result.duration_ms - 1000) <= 50
    assert_on_target(result)


def test_a_clip_shorter_than_a_gating_block_is_measured() -> None:
    result = process_audio(make_audio("wav", 0.25, kind="tone"), "blip.wav")

    assert abs(result.duration_ms - 250) <= 50
    assert result.lufs_after == pytest.approx(-16.0, abs=1.0)


def test_same_upload_gives_the_same_bytes() -> None:
    data = make_audio("mp3", 1.0)
    assert process_audio(data, "a.mp3").sha256 == process_audio(data, "b.mp3").sha256


def test_mp3_fallback_when_ffmpeg_lacks_libopus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "encoders", lambda exe: frozenset({"libmp3lame"}))

    result = process_audio(make_audio("wav", 1.0), "fallback.wav")

    assert (result.codec, result.mime_type) == ("mp3", "audio/mpeg")
    assert abs(result.duration_ms - 1000) <= 80  # MP3 adds encoder delay and padding
    assert_on_target(result)


def test_the_imageio_ffmpeg_binary_works_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    ffmpeg_module.ffmpeg_exe.cache_clear()
    try:
        exe = ffmpeg_module.ffmpeg_exe()
        assert exe == imageio_ffmpeg.get_ffmpeg_exe()
        assert "libopus" in ffmpeg_module.encoders(exe)
        result = process_audio(make_audio("m4a", 1.0), "phone.m4a")
    finally:
        ffmpeg_module.ffmpeg_exe.cache_clear()
    assert result.codec == "opus"
    assert_on_target(result)


# --- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (b"", "empty.mp3", "empty.mp3: the file is empty"),
        # seeded: about 1 random file in 130 sniffs as a non-audio container instead
        (np.random.default_rng(0).bytes(4000), "noise.mp3", "noise.mp3: not readable audio"),
        (b"Thong bao: hop dan luc 8 gio\n" * 40, "notes.mp3", "notes.mp3: not readable audio"),
    ],
)
def test_garbage_is_refused_with_a_clear_message(data: bytes, name: str, expected: str) -> None:
    with pytest.raises(AudioError) as caught:
        process_audio(data, name)
    message = str(caught.value)
    assert message.startswith(expected)
    assert "loaxa-audio-" not in message  # the temp path is replaced by the upload's name


def test_a_truncated_mp3_is_refused() -> None:
    with pytest.raises(AudioError, match=r"cut\.mp3: truncated or corrupt: the file says 4\.0"):
        process_audio(truncated(make_audio("mp3", 4.0)), "cut.mp3")


def test_a_video_without_sound_has_no_audio_stream(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    ffmpeg_module.run_ffmpeg(
        ["-f", "lavfi", "-i", "testsrc=d=0.5:s=64x64", "-pix_fmt", "yuv420p", str(video)],
        stdin=None, timeout_s=30, what="fixture",
    )  # fmt: skip
    with pytest.raises(AudioError, match=r"clip\.mp4: contains no audio stream"):
        process_audio(video.read_bytes(), "clip.mp4")


def test_digital_silence_is_refused() -> None:
    with pytest.raises(AudioError, match=r"silence\.wav: the audio is entirely silent"):
        process_audio(sine_wav(1.0, amplitude_dbfs=-200), "silence.wav")


def test_sub_gate_hiss_is_refused_as_silent() -> None:
    with pytest.raises(AudioError, match=r"hiss\.wav: the audio is silent \(quieter than -70"):
        process_audio(sine_wav(1.0, amplitude_dbfs=-85), "hiss.wav")


def test_too_long_is_refused_without_decoding_it_all() -> None:
    with pytest.raises(AudioError, match=r"long\.flac: too long \(0:00:03\); the limit is 0:00:01"):
        process_audio(make_audio("flac", 3.0), "long.flac", AudioTargets(max_duration_s=1))


def test_a_hung_decoder_is_killed() -> None:
    with pytest.raises(AudioError, match=r"slow\.wav: ffmpeg took longer than 0 s"):
        process_audio(make_audio("wav", 1.0), "slow.wav", AudioTargets(ffmpeg_timeout_s=0.0001))


def test_a_hung_encoder_is_killed() -> None:
    pcm = speech_like(5.0)
    codec = pipeline.delivery_codec(TARGETS)
    with pytest.raises(AudioError, match=r"slow\.wav: encoding took longer than 0 s"):
        pipeline._encode_and_verify(
            lambda: iter([pcm]), codec, "slow.wav", AudioTargets(ffmpeg_timeout_s=0.001)
        )


# --- meters and limiter ---------------------------------------------------------


def test_true_peak_sees_the_intersample_peak() -> None:
    # fs/4 sine at 45 degrees: every sample is at 0.707 of the real peak (-3 dB).
    n = np.arange(48_000)
    samples = (0.5 * np.sin(np.pi / 2 * n + np.pi / 4)).astype(np.float32)
    assert 20 * np.log10(np.abs(samples).max()) == pytest.approx(-9.03, abs=0.01)
    assert true_peak_dbtp(samples) == pytest.approx(-6.02, abs=0.3)


def test_meter_reads_a_1k_sine_per_bs1770() -> None:
    # BS.1770: a 0 dBFS 997 Hz sine reads -3.01 LUFS in one channel.
    t = np.arange(48_000 * 2) / 48_000
    samples = np.sin(2 * np.pi * 997 * t).astype(np.float32)
    assert integrated_lufs(samples, 48_000) == pytest.approx(-3.01, abs=0.05)


def test_limiter_holds_the_ceiling_everywhere() -> None:
    samples = speech_like(3.0) * np.float32(4.0)  # peaks near +6 dBFS
    limited, reduction = limit(samples, true_peak_envelope(samples), -3.0, 48_000)

    assert reduction > 8
    assert true_peak_dbtp(limited) <= -3.0 + 0.05
    quiet = np.abs(samples) < 0.05  # far from any peak the signal is left alone
    assert np.allclose(limited[quiet][:1000], samples[quiet][:1000], atol=0.05)


# --- store -----------------------------------------------------------------------


def test_store_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = AudioStore(tmp_path)
    sha = store.put(b"OggS fake audio")

    assert sha == hashlib.sha256(b"OggS fake audio").hexdigest()
    assert store.path(sha) == tmp_path / sha[:2] / sha
    assert store.put(b"OggS fake audio") == sha
    assert store.exists(sha) and store.size(sha) == 15
    assert list(store.path(sha).parent.iterdir()) == [store.path(sha)]  # no temp left
    assert store.delete(sha) and not store.exists(sha) and not store.delete(sha)


@pytest.mark.parametrize(
    "bad", ["../x", "", "a" * 63, "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 64 + "\n"]
)
def test_store_refuses_anything_but_a_sha256(tmp_path: Path, bad: str) -> None:
    with pytest.raises(StorageError, match="not a sha256"):
        AudioStore(tmp_path).path(bad)


def test_store_leaves_nothing_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AudioStore(tmp_path)

    def power_cut(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(OSError, match="disk gone"):
        store.put(b"half written")
    sha = hashlib.sha256(b"half written").hexdigest()
    assert not store.exists(sha)
    assert list(store.path(sha).parent.iterdir()) == []


# --- synth -----------------------------------------------------------------------


def test_demo_bulletin_is_a_playable_wav() -> None:
    data = demo_bulletin_wav(seconds=4.0)
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (1, 48_000)
        assert wav.getnframes() >= 4 * 48_000
    assert process_audio(data, "demo.wav").codec == "opus"
