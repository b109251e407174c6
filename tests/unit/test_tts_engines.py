"""Speech engines: real espeak-ng, and piper's command-line contract with a stand-in binary.

No piper voice can be downloaded here, so ``PiperEngine`` runs a small script that
behaves like the ``piper`` binary (``--model``, ``--output_file``, text on stdin, a
WAV out). What is checked is our side of that contract and every missing-piece error.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from server.settings import Settings
from server.tts.engines import EspeakEngine, PiperEngine, TtsEngine, wav_duration_ms
from server.tts.errors import TtsEngineMissing, TtsSynthesisError, TtsVoiceError
from server.tts.normalise import normalise
from server.tts.service import engine_from_settings

SENTENCE = "UBND xã Cao Bồ thông báo bà con đến nhà văn hóa họp lúc 7h sáng."


def samples_of(wav: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav), "rb") as reader:
        assert reader.getsampwidth() == 2 and reader.getnchannels() == 1
        rate = reader.getframerate()
        raw = reader.readframes(reader.getnframes() or 10**9)
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0, rate


def test_espeak_speaks_a_vietnamese_sentence_audibly_and_at_a_plausible_length() -> None:
    engine = EspeakEngine()
    spoken = normalise(SENTENCE)
    assert len(spoken.split()) == 20
    wav = engine.synthesise(spoken, "vi")
    pcm, rate = samples_of(wav)
    seconds = pcm.size / rate
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(pcm**2)))
    print(f"espeak-ng vi: {len(spoken.split())} words -> {seconds:.2f} s, RMS {rms_dbfs:.1f} dBFS")
    assert 1.5 <= seconds <= 12.0
    assert rms_dbfs > -35.0
    assert wav_duration_ms(wav) == pytest.approx(seconds * 1000, abs=2)
    with wave.open(io.BytesIO(wav), "rb") as reader:  # the pipe's placeholder length is fixed
        assert reader.getnframes() == pcm.size
    # Speech has pauses and syllables: the level must move, unlike a hum or a click.
    frames = pcm[: pcm.size // 480 * 480].reshape(-1, 480)
    frame_db = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)
    assert np.percentile(frame_db, 90) - np.percentile(frame_db, 10) > 20


def test_espeak_regional_voices_differ_and_speed_is_honoured() -> None:
    north = EspeakEngine().synthesise("Xin chào bà con", "vi")
    south = EspeakEngine().synthesise("Xin chào bà con", "vi-vn-x-south")
    slow = EspeakEngine(words_per_minute=100).synthesise("Xin chào bà con", "vi")
    assert north != south
    assert wav_duration_ms(slow) > wav_duration_ms(north) * 1.2


@pytest.mark.parametrize("voice", ["en", "vi;rm -rf /", "../vi", "vi+", "VI", ""])
def test_espeak_refuses_voices_that_are_not_vietnamese(voice: str) -> None:
    with pytest.raises(TtsVoiceError, match="not a Vietnamese espeak-ng voice"):
        EspeakEngine().check_voice(voice)


def test_espeak_identity_names_version_voice_and_speed() -> None:
    identity = EspeakEngine(words_per_minute=140).identity("vi+f3")
    assert identity.startswith("espeak-ng/1.") and identity.endswith("/vi+f3/140wpm")


def test_a_missing_espeak_is_a_clear_error() -> None:
    engine = EspeakEngine(executable="espeak-ng-not-installed")
    with pytest.raises(TtsEngineMissing, match="apt-get install espeak-ng"):
        engine.synthesise("Xin chào", "vi")


def test_espeak_speed_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="80-450"):
        EspeakEngine(words_per_minute=20)


def test_both_engines_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(EspeakEngine(), TtsEngine)
    assert isinstance(PiperEngine(tmp_path / "x.onnx"), TtsEngine)


# ------------------------------------------------------------------ piper

FAKE_PIPER = """#!{python}
import argparse, math, struct, sys, wave
parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--output_file", required=True)
args = parser.parse_args()
text = sys.stdin.read()
with open(args.output_file + ".args", "w", encoding="utf-8") as log:
    log.write(args.model + "\\n" + text)
if "FAIL" in text:
    print("piper: phonemizer exploded", file=sys.stderr)
    sys.exit(3)
rate = 22050
frames = b"".join(
    struct.pack("<h", int(8000 * math.sin(2 * math.pi * 220 * i / rate)))
    for i in range(int(rate * 0.06 * len(text.split())))
)
with wave.open(args.output_file, "wb") as out:
    out.setnchannels(1); out.setsampwidth(2); out.setframerate(rate); out.writeframes(frames)
"""


@pytest.fixture
def voice_dir(tmp_path: Path) -> Path:
    for stem in ("vi_VN-vais1000-medium", "vi_VN-25hours-low"):
        (tmp_path / f"{stem}.onnx").write_bytes(b"onnx")
        (tmp_path / f"{stem}.onnx.json").write_text("{}")
    script = tmp_path / "piper"
    script.write_text(FAKE_PIPER.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def test_piper_gets_the_model_and_speaks_every_sentence(voice_dir: Path) -> None:
    engine = PiperEngine(
        voice_dir / "vi_VN-vais1000-medium.onnx", executable=str(voice_dir / "piper")
    )
    assert engine.default_voice == "vi_VN-vais1000-medium"
    wav = engine.synthesise("Câu thứ nhất.\n\n  Câu thứ hai.  ", "vi_VN-25hours-low")
    assert wav_duration_ms(wav) == pytest.approx(6 * 60, abs=2)
    logged = next(voice_dir.glob("loaxa-piper-*"), None)
    assert logged is None  # the temporary directory is gone
    identity_a = engine.identity("vi_VN-vais1000-medium")
    identity_b = engine.identity("vi_VN-25hours-low")
    assert identity_a != identity_b and identity_a.startswith("piper/vi_VN-vais1000-medium/")


def test_piper_passes_text_on_stdin(voice_dir: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    engine = PiperEngine(
        voice_dir / "vi_VN-vais1000-medium.onnx", executable=str(voice_dir / "piper")
    )
    captured: list[str] = []
    real_read = Path.read_bytes

    def spy(path: Path) -> bytes:
        args_file = Path(str(path) + ".args")
        if args_file.is_file():
            captured.append(args_file.read_text(encoding="utf-8"))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", spy)
    engine.synthesise("Dòng một.\nDòng hai.", "vi_VN-vais1000-medium")
    model, _, text = captured[0].partition("\n")
    assert model.endswith("vi_VN-vais1000-medium.onnx")
    assert text == "Dòng một. Dòng hai.\n"  # one line: the binary rewrites its file per line


def test_a_replaced_voice_file_changes_the_identity(voice_dir: Path) -> None:
    model = voice_dir / "vi_VN-vais1000-medium.onnx"
    engine = PiperEngine(model, executable=str(voice_dir / "piper"))
    before = engine.identity(engine.default_voice)
    model.write_bytes(b"a better voice")
    os.utime(model, ns=(1, 2))
    assert engine.identity(engine.default_voice) != before


def test_piper_failure_carries_its_message(voice_dir: Path) -> None:
    engine = PiperEngine(
        voice_dir / "vi_VN-vais1000-medium.onnx", executable=str(voice_dir / "piper")
    )
    with pytest.raises(TtsSynthesisError, match=r"exit 3.*phonemizer exploded"):
        engine.synthesise("FAIL", engine.default_voice)


def test_piper_missing_pieces_are_named(voice_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TtsEngineMissing, match="set tts_piper_model"):
        PiperEngine(None).check_voice("vi")
    missing = PiperEngine(tmp_path / "nothing.onnx", executable=str(voice_dir / "piper"))
    with pytest.raises(TtsEngineMissing, match=r"nothing\.onnx does not exist"):
        missing.check_voice("nothing")
    (voice_dir / "vi_VN-25hours-low.onnx.json").unlink()
    engine = PiperEngine(
        voice_dir / "vi_VN-vais1000-medium.onnx", executable=str(voice_dir / "piper")
    )
    with pytest.raises(TtsEngineMissing, match=r"vi_VN-25hours-low\.onnx\.json does not exist"):
        engine.check_voice("vi_VN-25hours-low")
    no_binary = PiperEngine(voice_dir / "vi_VN-vais1000-medium.onnx", executable="/nope/piper")
    with pytest.raises(TtsEngineMissing, match="tts_piper_executable"):
        no_binary.check_voice("vi_VN-vais1000-medium")
    with pytest.raises(TtsVoiceError, match="not a piper voice name"):
        engine.check_voice("../../etc/passwd")


def test_settings_choose_the_engine(tmp_path: Path) -> None:
    espeak = engine_from_settings(Settings(data_dir=tmp_path, tts_voice="vi-vn-x-south"))
    assert isinstance(espeak, EspeakEngine) and espeak.default_voice == "vi-vn-x-south"
    piper = engine_from_settings(
        Settings(data_dir=tmp_path, tts_engine="piper", tts_piper_model=tmp_path / "v.onnx")
    )
    assert isinstance(piper, PiperEngine) and piper.default_voice == "v"
    with pytest.raises(ValueError, match="tts_engine"):
        Settings(data_dir=tmp_path, tts_engine="festival")
