"""The one place that knows how to find and run ffmpeg.

Loaxa never uses ffprobe or pydub's ``mediainfo``: the ffmpeg shipped in the
``imageio-ffmpeg`` wheel has no ffprobe, and a server must work with that binary
alone. Everything (probing, decoding, encoding) goes through ``ffmpeg`` itself,
with ``-v level+info`` so each log line carries its level and can be parsed.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import imageio_ffmpeg
from pydub import AudioSegment

from loaxa_protocol.errors import AudioError

log = logging.getLogger(__name__)

PIPE_BYTES = 1 << 20  # a 64 KiB pipe makes ffmpeg and the reader take turns instead of overlapping

# Flags for every run: no stdin prompt, no banner, no progress, one level tag per line.
BASE_FLAGS: tuple[str, ...] = ("-nostdin", "-hide_banner", "-nostats", "-v", "level+info")

_LINE_PREFIX = re.compile(r"^(\[[^\]]* @ 0x[0-9a-f]+\] )?\[(\w+)\] ?")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg to use: the system one on PATH, else the imageio-ffmpeg wheel's.

    The system binary comes first because the distribution patches it for security
    (it parses untrusted uploads); the wheel's static binary makes a bare
    ``pip install`` work anywhere. pydub is pointed at the same binary so that any
    pydub export elsewhere in the project agrees with this pipeline.
    """
    exe = shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe()
    AudioSegment.converter = exe
    log.info("audio: using ffmpeg at %s", exe)
    return exe


@functools.cache
def encoders(exe: str) -> frozenset[str]:
    """Names of the audio encoders ``exe`` was built with (e.g. ``libopus``)."""
    done = subprocess.run(
        [exe, "-hide_banner", "-encoders"], capture_output=True, timeout=30, check=False
    )
    names = set()
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("A") and len(parts[0]) == 6:
            names.add(parts[1])
    return frozenset(names)


@dataclass(frozen=True)
class FfmpegLog:
    """What an ffmpeg run said on stderr, split by level."""

    lines: tuple[tuple[str, str], ...]  # (level, message without the "[demuxer @ 0x..]" tag)

    @classmethod
    def parse(cls, stderr: bytes) -> FfmpegLog:
        parsed = []
        for raw in stderr.decode("utf-8", "replace").splitlines():
            match = _LINE_PREFIX.match(raw)
            level = match.group(2) if match else "info"
            parsed.append((level, raw[match.end() :] if match else raw))
        return cls(tuple(parsed))

    def first_error(self) -> str | None:
        """The first error/fatal line: usually the one that names the real cause."""
        for level, text in self.lines:
            if level in ("error", "fatal", "panic"):
                return text.strip()
        return None

    def contains(self, fragment: str) -> bool:
        return any(fragment in text for _, text in self.lines)

    def declared_duration_s(self) -> float | None:
        """The container's own duration ("Duration: 00:01:02.50"), when it states one."""
        for _, text in self.lines:
            match = _DURATION.search(text)
            if match:
                hours, minutes, seconds = match.groups()
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        return None


def run_ffmpeg(
    args: list[str], *, stdin: bytes | None, timeout_s: float, what: str
) -> tuple[bytes, FfmpegLog, int]:
    """Run ffmpeg with ``args`` and return (stdout, parsed stderr, exit code).

    A run that outlives ``timeout_s`` is killed and reported as an AudioError naming
    ``what``: a crafted file must never pin a worker forever.
    """
    cmd = [ffmpeg_exe(), *BASE_FLAGS, *args]
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AudioError(f"{what}: ffmpeg took longer than {timeout_s:.0f} s, gave up") from exc
    return done.stdout, FfmpegLog.parse(done.stderr), done.returncode


@contextlib.contextmanager
def ffmpeg_process(
    args: list[str],
    *,
    stdin: int | None,
    stderr: IO[bytes],
    timeout_s: float,
    what: str,
    doing: str = "ffmpeg",
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ffmpeg with ``args`` and its output on a pipe, for reading while it works.

    A watchdog kills it after ``timeout_s``; leaving the block then raises an
    AudioError ("<what>: <doing> took longer than N s"), whatever the reader saw.
    Leaving the block normally waits for ffmpeg to exit (``returncode`` is then set);
    leaving it with an exception kills it first. Either way it is reaped.
    """
    proc = subprocess.Popen(
        [ffmpeg_exe(), *BASE_FLAGS, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=stderr
    )
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            _widen(pipe)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    watchdog = threading.Timer(timeout_s, expire)
    watchdog.daemon = True
    watchdog.start()
    late = AudioError(f"{what}: {doing} took longer than {timeout_s:.0f} s, gave up")
    try:
        yield proc
        proc.wait()  # still under the watchdog: a hung ffmpeg is killed, not waited for
    except BaseException as exc:
        proc.kill()
        proc.wait()
        if expired.is_set() and isinstance(exc, Exception):
            raise late from exc
        raise
    finally:
        watchdog.cancel()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
    if expired.is_set():
        raise late


def _widen(pipe: IO[bytes]) -> None:
    """Grow a pipe to ``PIPE_BYTES`` (Linux; elsewhere, or over the system's cap, keep it)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), set_size, PIPE_BYTES)
