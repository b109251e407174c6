"""Duration of real files made by ffmpeg, read from the container alone."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import pytest

from node_firmware.drivers.ogg import audio_duration_ms, ogg_opus_duration_ms
from node_firmware.drivers.player import find_ffmpeg


@pytest.fixture(scope="module")
def opus_1500ms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ogg") / "sine.ogg"
    subprocess.run(
        [
            find_ffmpeg(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=d=1.5",
            "-c:a",
            "libopus",
            str(out),
        ],
        check=True,
        timeout=30,
    )
    return out


def test_opus_duration_is_last_granule_minus_pre_skip(opus_1500ms: Path) -> None:
    assert abs(ogg_opus_duration_ms(opus_1500ms) - 1500) <= 5
    assert ogg_opus_duration_ms(opus_1500ms.read_bytes()) == ogg_opus_duration_ms(opus_1500ms)
    assert audio_duration_ms(str(opus_1500ms)) == ogg_opus_duration_ms(opus_1500ms)


def test_wav_duration(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0\0" * 4000)
    assert audio_duration_ms(path) == 250


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ID3\x04 an mp3 perhaps", "unsupported audio container"),
        (b"", "unsupported audio container"),
    ],
)
def test_unknown_containers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        audio_duration_ms(data)


def test_non_ogg_and_truncated_ogg_are_refused(opus_1500ms: Path) -> None:
    data = opus_1500ms.read_bytes()
    with pytest.raises(ValueError, match="not an Ogg stream"):
        ogg_opus_duration_ms(b"RIFF" + data)
    with pytest.raises(ValueError, match="truncated"):
        ogg_opus_duration_ms(data[:-100])
    with pytest.raises(ValueError, match="not Opus"):
        ogg_opus_duration_ms(data.replace(b"OpusHead", b"VorbHead", 1))
