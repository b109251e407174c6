"""Speech engines behind one small interface: text in, WAV bytes out.

The service never knows which engine speaks: it hands normalised Vietnamese text to
a :class:`TtsEngine` and runs whatever WAV comes back through the same pipeline as an
upload. Two engines exist:

- :class:`EspeakEngine` — espeak-ng's ``vi`` voices. Robotic but intelligible,
  packaged by every Linux distribution and fully offline: the default, so a fresh
  machine can always speak.
- :class:`PiperEngine` — a neural voice (piper, VITS exported to ONNX) that the
  operator installs: the ``piper`` binary or the ``piper-tts`` Python package plus a
  Vietnamese ``.onnx`` voice with its ``.onnx.json`` config. Much more natural; nothing
  is downloaded at run time, so a missing piece is a clear :class:`TtsEngineMissing`.

Each engine has an ``identity`` (engine, version, voice) that enters the cache key:
upgrading espeak-ng or swapping the voice file renders the text anew.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Protocol, runtime_checkable

from server.tts.errors import TtsEngineMissing, TtsSynthesisError, TtsVoiceError

log = logging.getLogger(__name__)

_ESPEAK_VOICE = re.compile(r"vi(-vn-x-(central|south))?(\+[a-z0-9]{1,12})?")
_PIPER_VOICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_MIN_AUDIO_MS = 50  # anything shorter is an engine that said nothing


@runtime_checkable
class TtsEngine(Protocol):
    """A speech synthesiser for Vietnamese text."""

    name: str
    """Short engine name shown to operators and stored in the cache key ("espeak-ng")."""

    default_voice: str

    def identity(self, voice: str) -> str:
        """Engine, version and voice as one string: what makes two renderings identical."""
        ...

    def check_voice(self, voice: str) -> None:
        """Raise TtsVoiceError (bad name) or TtsEngineMissing (not installed)."""
        ...

    def synthesise(self, text: str, voice: str) -> bytes:
        """Speak already-normalised ``text``; returns a complete WAV file."""
        ...


def wav_duration_ms(data: bytes) -> int:
    """Duration of a PCM WAV file; TtsSynthesisError when it is not one."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            frames, rate = reader.getnframes(), reader.getframerate()
            frame_bytes = reader.getsampwidth() * reader.getnchannels()
    except (wave.Error, EOFError) as exc:
        raise TtsSynthesisError(f"the engine's output is not a WAV file ({exc})") from exc
    start = data.find(b"data")
    present = (len(data) - start - 8) // max(frame_bytes, 1) if start >= 0 else 0
    # A writer that cannot seek (espeak-ng on a pipe) leaves a placeholder length in the
    # header: the bytes that are really there are the truth.
    return round(min(frames, present) * 1000 / rate) if rate else 0


def repair_wav_header(data: bytes) -> bytes:
    """Set the RIFF and data chunk lengths to what the bytes hold (see wav_duration_ms)."""
    start = data.find(b"data")
    if not data.startswith(b"RIFF") or start < 0:
        return data
    body = len(data) - start - 8
    return (
        data[:4]
        + struct.pack("<I", len(data) - 8)
        + data[8 : start + 4]
        + struct.pack("<I", body)
        + data[start + 8 :]
    )


def _checked_wav(data: bytes, what: str) -> bytes:
    if wav_duration_ms(data) < _MIN_AUDIO_MS:
        raise TtsSynthesisError(f"{what} produced no audio")
    return data


def _first_line(blob: bytes) -> str:
    text = blob.decode("utf-8", "replace").strip()
    return text.splitlines()[-1][:300] if text else "no message"


class EspeakEngine:
    """espeak-ng with a Vietnamese voice; input is passed on stdin as UTF-8."""

    name = "espeak-ng"

    def __init__(
        self,
        executable: str = "espeak-ng",
        default_voice: str = "vi",
        words_per_minute: int = 150,
        timeout_s: float = 120.0,
    ) -> None:
        if not 80 <= words_per_minute <= 450:
            raise ValueError(f"espeak-ng speed {words_per_minute} wpm is outside 80-450")
        self.executable = executable
        self.default_voice = default_voice
        self.words_per_minute = words_per_minute
        self.timeout_s = timeout_s
        self._version: str | None = None

    def _exe(self) -> str:
        found = shutil.which(self.executable)
        if found is None:
            raise TtsEngineMissing(
                f"text-to-speech engine espeak-ng not found ({self.executable!r} is not on "
                "PATH); install it with 'apt-get install espeak-ng'"
            )
        return found

    def version(self) -> str:
        if self._version is None:
            done = subprocess.run(
                [self._exe(), "--version"], capture_output=True, timeout=30, check=False
            )
            match = re.search(rb"\d+\.\d+(\.\d+)?", done.stdout)
            self._version = match.group().decode() if match else "unknown"
        return self._version

    def identity(self, voice: str) -> str:
        return f"espeak-ng/{self.version()}/{voice}/{self.words_per_minute}wpm"

    def check_voice(self, voice: str) -> None:
        if not _ESPEAK_VOICE.fullmatch(voice):
            raise TtsVoiceError(
                f"voice {voice!r} is not a Vietnamese espeak-ng voice; use 'vi' (northern), "
                "'vi-vn-x-central' or 'vi-vn-x-south', optionally with a variant such as "
                "'vi+f3'"
            )
        self._exe()

    def synthesise(self, text: str, voice: str) -> bytes:
        self.check_voice(voice)
        args = [self._exe(), "-v", voice, "-s", str(self.words_per_minute), "-b", "1"]
        args += ["--stdin", "--stdout"]
        try:
            done = subprocess.run(
                args, input=text.encode("utf-8"), capture_output=True,
                timeout=self.timeout_s, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise TtsSynthesisError(f"espeak-ng took longer than {self.timeout_s:.0f} s") from exc
        if done.returncode != 0:
            raise TtsSynthesisError(
                f"espeak-ng failed (exit {done.returncode}): {_first_line(done.stderr)}"
            )
        return _checked_wav(repair_wav_header(done.stdout), "espeak-ng")


class PiperEngine:
    """piper (neural VITS voices in ONNX) with a voice file the operator provides.

    ``model`` is the default voice, e.g. ``/srv/voices/vi_VN-vais1000-medium.onnx``; a
    request may name another voice by file stem, looked up next to it. The binary
    (``piper`` on PATH or ``executable``) is preferred; without one, the ``piper``
    module of the ``piper-tts`` package runs in this interpreter's environment.
    """

    name = "piper"

    def __init__(
        self,
        model: Path | None,
        executable: str | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        self.model = Path(model).expanduser() if model is not None else None
        self.executable = executable
        self.timeout_s = timeout_s
        self.default_voice = self.model.stem if self.model is not None else "vi"

    def _command(self) -> list[str]:
        if self.executable is not None:
            found = shutil.which(self.executable)
            if found is None:
                raise TtsEngineMissing(
                    f"text-to-speech engine piper not found: {self.executable!r} is not an "
                    "executable (check settings tts_piper_executable)"
                )
            return [found]
        found = shutil.which("piper")
        if found is not None:
            return [found]
        if importlib.util.find_spec("piper") is not None:
            return [sys.executable, "-m", "piper"]
        raise TtsEngineMissing(
            "text-to-speech engine piper not found: no 'piper' on PATH and no piper-tts "
            "package in this environment; install one, set tts_piper_executable, or set "
            "tts_engine to 'espeak'"
        )

    def model_path(self, voice: str) -> Path:
        """The ``.onnx`` file for ``voice``; TtsEngineMissing unless it and its config exist."""
        if self.model is None:
            raise TtsEngineMissing(
                "piper needs a voice model: set tts_piper_model to a Vietnamese .onnx voice "
                "file (with its .onnx.json config beside it)"
            )
        path = self.model if voice == self.model.stem else self.model.with_name(f"{voice}.onnx")
        if not path.is_file():
            raise TtsEngineMissing(f"piper voice model {path} does not exist")
        config = path.with_name(path.name + ".json")
        if not config.is_file():
            raise TtsEngineMissing(
                f"piper voice config {config} does not exist (every .onnx voice ships with "
                "its .onnx.json)"
            )
        return path

    def identity(self, voice: str) -> str:
        path = self.model_path(voice)
        stat = path.stat()
        # A replaced voice file with the same name must not serve stale cached speech.
        fingerprint = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        return f"piper/{voice}/{fingerprint[:16]}"

    def check_voice(self, voice: str) -> None:
        if not _PIPER_VOICE.fullmatch(voice) or ".." in voice:
            raise TtsVoiceError(
                f"voice {voice!r} is not a piper voice name (the .onnx file's stem, e.g. "
                "'vi_VN-vais1000-medium')"
            )
        self.model_path(voice)
        self._command()

    def synthesise(self, text: str, voice: str) -> bytes:
        self.check_voice(voice)
        model = self.model_path(voice)
        # All on one line: the piper binary rewrites --output_file for every input line, so
        # a second line would replace the first; piper splits sentences by itself.
        line = " ".join(text.split())
        with tempfile.TemporaryDirectory(prefix="loaxa-piper-") as tmp:
            out = Path(tmp) / "speech.wav"
            args = [*self._command(), "--model", str(model), "--output_file", str(out)]
            try:
                done = subprocess.run(
                    args, input=(line + "\n").encode("utf-8"), capture_output=True,
                    timeout=self.timeout_s, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired as exc:
                raise TtsSynthesisError(f"piper took longer than {self.timeout_s:.0f} s") from exc
            if done.returncode != 0:
                raise TtsSynthesisError(
                    f"piper failed (exit {done.returncode}): {_first_line(done.stderr)}"
                )
            if not out.is_file():
                raise TtsSynthesisError("piper exited without writing its output file")
            return _checked_wav(out.read_bytes(), "piper")
