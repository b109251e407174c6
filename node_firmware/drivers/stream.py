"""Relaying a live channel (an HTTP/Icecast URL such as VOV1) for a planned window.

Theory of operation
-------------------
A stream item is a window ``[start_at, start_at + duration_ms)``, not a file: the relay
starts on the instant, ends on the instant (whatever the stream is doing), and fills
the window as well as the network allows. :func:`relay_window` is that policy, once,
for every player; a player supplies only a *source* (how to connect and read) and a
*sink* (what to do with the bytes and how to play the fallback).

* Connecting starts just before the instant (``PRECONNECT_S``), so the first bytes are
  waiting when the window opens.
* A drop mid-window (the server closed, or sent nothing for ``STALL_S``) is followed by
  reconnection attempts with a short back-off (``RETRY_MIN_S`` doubling to
  ``RETRY_MAX_S``). Only when the stream stays away for ``OUTAGE_AFTER_S`` is it an
  *outage*. At the window's start there is nothing to lose by waiting, so a definite
  refusal (connection refused, an HTTP error, not audio) is an outage at once.
* An outage is reported once (``on_unreachable``); the cached fallback, if the item has
  one, plays (looped) meanwhile, and attempts continue in the background so the relay
  goes back to the stream as soon as it answers. A later outage is reported again.
* ``on_started`` fires when the first sound comes out (stream or fallback). A window in
  which nothing could be played at all (no stream, no fallback) ends in ``failed``.

Connection attempts run on a helper thread, so the fallback keeps playing (and the
window keeps its end) while a slow server makes up its mind.

Sources: :class:`HttpStreamSource` speaks HTTP/1.0 itself (Icecast and SHOUTcast
``ICY 200`` included), checks the status and the content type and sniffs the first
bytes; the simulated player consumes it at the pace the server sends. The ALSA player
uses :class:`FfmpegStreamSource`: ffmpeg reads the URL and decodes it to PCM.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import enum
import logging
import os
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol
from urllib.parse import unquote, urljoin, urlsplit

from loaxa_protocol.errors import AudioError

log = logging.getLogger(__name__)

PRECONNECT_S = 1.0
"""Start connecting this long before the window (at most; the core cues 300 ms ahead)."""
CONNECT_TIMEOUT_S = 5.0
STALL_S = 3.0
"""A connected stream that sends nothing for this long is treated as dropped."""
OUTAGE_AFTER_S = 2.0
"""A dropped stream not back within this long is an outage: fallback, and report it."""
RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0
POLL_S = 0.05
"""Granularity of the relay loop: bounds how late the window ends and how long a stop
(an alert pre-empting the relay) takes to free the device."""
READ_CHUNK_BYTES = 16 * 1024
MAX_REDIRECTS = 3

AUDIO_TYPES = ("audio/", "application/ogg", "application/octet-stream", "video/ogg")
"""Content types worth trying; anything else (text/html, JSON) is a wrong URL."""


class StreamFailure(enum.StrEnum):
    """Machine-readable reason codes; a reported reason starts with one."""

    NETWORK = "network"
    HTTP_STATUS = "http_status"
    NOT_AUDIO = "not_audio"
    UNDECODABLE = "undecodable"
    STALLED = "stalled"
    ENDED = "ended"


DEFINITE = frozenset(
    {StreamFailure.NETWORK, StreamFailure.HTTP_STATUS, StreamFailure.NOT_AUDIO,
     StreamFailure.UNDECODABLE}
)  # fmt: skip
"""Failures that make waiting pointless at the start of a window."""


class StreamError(AudioError):
    """A stream could not be opened or was lost; ``str()`` starts with the reason code."""

    def __init__(self, reason: StreamFailure, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class StreamSource(Protocol):
    """One connection to a stream."""

    def read(self, timeout_s: float) -> bytes | None:
        """The next bytes; None if none arrived within ``timeout_s``; raises on a drop."""

    def close(self) -> None:
        """Release the connection (idempotent)."""


class StreamSink(Protocol):
    """Where the relay's sound goes."""

    def stream(self, chunk: bytes) -> None:
        """Play bytes read from the stream."""

    def fallback(self, until_s: float, cancel: threading.Event) -> None:
        """Play the fallback (looped) until ``until_s`` (wall clock) or ``cancel``."""

    def end_fallback(self) -> None:
        """The stream is back (or the window is over): stop the fallback."""


Connect = Callable[[], StreamSource]
"""Open a source or raise ``StreamError``; runs on a helper thread."""


def where(url: str) -> str:
    """The URL without its query or credentials, for logs and reports."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]  # and without credentials
    return f"{parts.scheme}://{netloc}{parts.path}"


# ---------------------------------------------------------------- the policy


@dataclass
class RelayOutcome:
    """What happened in one window, for the player's record."""

    started_s: float | None = None
    finished_s: float | None = None
    cancelled: bool = False
    outages: int = 0
    last_error: str | None = None


@dataclass
class _Segment:
    kind: str  # "stream" or "fallback"
    from_s: float
    bytes: int = 0


class _Attempt:
    """One connection attempt on its own thread; the relay polls ``done``."""

    def __init__(self, connect: Connect) -> None:
        self.done = threading.Event()
        self.source: StreamSource | None = None
        self.error: StreamError | None = None
        self._abandoned = False
        self._lock = threading.Lock()
        threading.Thread(
            target=self._run, args=(connect,), name="stream-connect", daemon=True
        ).start()

    def _run(self, connect: Connect) -> None:
        try:
            source = connect()
        except StreamError as exc:
            self.error = exc
        except Exception as exc:  # a bug in a source must not leave the relay waiting
            log.exception("stream connect crashed")
            self.error = StreamError(StreamFailure.NETWORK, f"internal error: {exc}")
        else:
            with self._lock:
                if self._abandoned:
                    source.close()
                else:
                    self.source = source
        self.done.set()

    def abandon(self) -> None:
        """The relay no longer wants this attempt: close whatever it opens."""
        with self._lock:
            self._abandoned = True
            source, self.source = self.source, None
        if source is not None:
            source.close()


def relay_window(
    *,
    start_s: float,
    end_s: float,
    connect: Connect,
    sink: StreamSink,
    has_fallback: bool,
    cancel: threading.Event,
    wait_until: Callable[[float, threading.Event], bool],
    on_started: Callable[[float], None],
    on_unreachable: Callable[[str], None],
    on_segment: Callable[[str, float, float, int], None] | None = None,
) -> RelayOutcome:
    """Relay the stream over ``[start_s, end_s)`` (wall-clock seconds); see the module doc.

    Blocks until the window ends or ``cancel`` is set. ``on_segment(source, from_s,
    to_s, bytes)`` describes each stretch of "stream" or "fallback" sound.
    """
    outcome = RelayOutcome()
    segment: _Segment | None = None

    def begin(kind: str, at_s: float) -> _Segment:
        nonlocal segment
        close_segment(at_s)
        segment = _Segment(kind, at_s)
        if outcome.started_s is None:
            outcome.started_s = at_s
            on_started(at_s)
        return segment

    def close_segment(at_s: float) -> None:
        nonlocal segment
        if segment is not None and on_segment is not None:
            on_segment(segment.kind, segment.from_s, at_s, segment.bytes)
        segment = None

    if not wait_until(min(start_s, max(time.time(), start_s - PRECONNECT_S)), cancel):
        outcome.cancelled = True
        return outcome
    first_attempt = _Attempt(connect)
    attempt: _Attempt | None = first_attempt
    source: StreamSource | None = None
    retry_s = RETRY_MIN_S
    next_attempt_s = 0.0
    down_since = start_s
    at_window_start = True  # nothing played yet since the window opened
    in_outage = False
    last_data_s = 0.0
    if not wait_until(start_s, cancel):
        first_attempt.abandon()
        outcome.cancelled = True
        return outcome
    try:
        while not cancel.is_set() and (now := time.time()) < end_s:
            if source is not None:
                try:
                    chunk = source.read(min(POLL_S, max(0.0, end_s - now)))
                    if chunk is None:
                        if time.time() - last_data_s >= STALL_S:
                            raise StreamError(StreamFailure.STALLED, f"no data for {STALL_S:g} s")
                        continue
                except StreamError as exc:
                    lost_at = time.time()
                    log.info("stream lost: %s; reconnecting", exc)
                    outcome.last_error = str(exc)
                    source.close()
                    source = None
                    close_segment(lost_at)
                    down_since, next_attempt_s, retry_s = lost_at, lost_at, RETRY_MIN_S
                    at_window_start = False
                    continue
                last_data_s = time.time()
                sink.stream(chunk)
                current = segment if segment is not None else begin("stream", last_data_s)
                current.bytes += len(chunk)
                continue

            if attempt is None and now >= next_attempt_s:
                attempt = _Attempt(connect)
            definite = False
            if attempt is not None and attempt.done.is_set():
                if attempt.source is not None:
                    source, attempt = attempt.source, None
                    if in_outage:
                        log.info("stream back after the outage; leaving the fallback")
                        sink.end_fallback()
                    in_outage, retry_s = False, RETRY_MIN_S
                    outcome.last_error = None  # a later outage reports its own cause
                    last_data_s = time.time()
                    close_segment(last_data_s)
                    continue
                assert attempt.error is not None
                outcome.last_error = str(attempt.error)
                definite = at_window_start and attempt.error.reason in DEFINITE
                log.debug("stream attempt failed: %s", attempt.error)
                attempt = None
                next_attempt_s = time.time() + retry_s
                retry_s = min(retry_s * 2, RETRY_MAX_S)
            now = time.time()
            if not in_outage and (definite or now - down_since >= OUTAGE_AFTER_S):
                in_outage = True
                outcome.outages += 1
                reason = outcome.last_error or (
                    f"{StreamFailure.NETWORK}: no answer within {now - down_since:.1f} s"
                )
                log.warning("stream unreachable: %s", reason)
                on_unreachable(reason)
                if has_fallback:
                    begin("fallback", now)
            slice_end = min(end_s, now + POLL_S)
            if in_outage and has_fallback:
                sink.fallback(slice_end, cancel)
            else:
                cancel.wait(max(0.0, slice_end - time.time()))
    finally:
        if attempt is not None:
            attempt.abandon()
        if source is not None:
            source.close()
        sink.end_fallback()
    outcome.finished_s = time.time()
    outcome.cancelled = cancel.is_set()
    close_segment(outcome.finished_s)
    return outcome


# ---------------------------------------------------------------- HTTP source


SNIFF_BYTES = 4096
"""How far into a stream to look for a frame: a listener may join mid-frame."""


def sniff_audio(head: bytes) -> str | None:
    """The container or codec the first bytes announce, or None if not audio we know.

    A live stream joined mid-way need not start on a frame, so Ogg pages and MPEG/ADTS
    frame headers are searched for in the first ``SNIFF_BYTES``; an MPEG header counts
    only when the next frame's header follows where its length says it should.
    """
    for magic, name in ((b"ID3", "mp3"), (b"fLaC", "flac"), (b"RIFF", "wav"),
                        (b"\x1a\x45\xdf\xa3", "matroska")):  # fmt: skip
        if head.startswith(magic):
            return name
    if b"OggS" in head[:SNIFF_BYTES]:
        return "ogg"
    for offset in range(min(len(head), SNIFF_BYTES) - 1):
        if head[offset] == 0xFF and head[offset + 1] & 0xE0 == 0xE0:
            codec = _mpeg_frame_at(head, offset)
            if codec is not None:
                return codec
    return None


_MP3_KBPS = {  # MPEG-1 layer III and MPEG-2/2.5 layer III bitrate tables
    3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_frame_at(data: bytes, at: int) -> str | None:
    """The codec of a frame header at ``at`` followed by another where it should be.

    A lone header (or one at the very end of ``data``) is accepted as well: too short
    a sample to see a second frame should not refuse a stream that is otherwise fine.
    """
    if at + 4 > len(data):
        return None
    b1, b2 = data[at + 1], data[at + 2]
    layer = (b1 >> 1) & 0x03
    if layer == 0:  # ADTS (AAC): length in the 13 bits across bytes 3-5
        if at + 6 > len(data):
            return None
        length = ((data[at + 3] & 0x03) << 11) | (data[at + 4] << 3) | (data[at + 5] >> 5)
        codec = "aac"
    elif layer == 1:  # layer III
        version = (b1 >> 3) & 0x03
        bitrate_index, rate_index = b2 >> 4, (b2 >> 2) & 0x03
        if version == 1 or bitrate_index in (0, 15) or rate_index == 3:
            return None
        kbps = _MP3_KBPS[3 if version == 3 else 2][bitrate_index]
        rate = _MPEG_RATES[version][rate_index]
        padding = (b2 >> 1) & 0x01
        length = (144 if version == 3 else 72) * kbps * 1000 // rate + padding
        codec = "mp3"
    else:
        return None
    if length < 7:
        return None
    after = at + length
    if after + 2 > len(data):
        return codec
    return codec if data[after] == 0xFF and data[after + 1] & 0xE0 == 0xE0 else None


class HttpStreamSource:
    """A stream over plain HTTP/1.0 (or HTTPS), read from the socket as it arrives.

    HTTP/1.0 so that servers send the body as it is, never chunked; a SHOUTcast
    ``ICY 200 OK`` status line is accepted. Redirects are followed a few times.
    """

    def __init__(self, sock: socket.socket, first: bytes, content_type: str, codec: str) -> None:
        self._sock = sock
        self._pending = first
        self.content_type = content_type
        self.codec = codec

    @classmethod
    def connect(cls, url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> HttpStreamSource:
        """Open ``url`` and check it is audio; raises ``StreamError`` with the reason."""
        deadline = time.monotonic() + timeout_s
        for _ in range(MAX_REDIRECTS + 1):
            sock, status, headers, body = _http_get(url, deadline)
            if status in (301, 302, 303, 307, 308) and headers.get("location"):
                sock.close()
                url = urljoin(url, headers["location"])
                continue
            try:
                return cls._checked(url, sock, status, headers, body, deadline)
            except BaseException:
                sock.close()
                raise
        raise StreamError(StreamFailure.HTTP_STATUS, f"more than {MAX_REDIRECTS} redirects")

    @classmethod
    def _checked(
        cls,
        url: str,
        sock: socket.socket,
        status: int,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
    ) -> HttpStreamSource:
        if status != 200:
            raise StreamError(StreamFailure.HTTP_STATUS, f"HTTP {status} from {where(url)}")
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type and not content_type.startswith(AUDIO_TYPES):
            raise StreamError(
                StreamFailure.NOT_AUDIO, f"{where(url)} serves {content_type}, not audio"
            )
        while (codec := sniff_audio(body)) is None and len(body) < SNIFF_BYTES:
            more = _recv(sock, deadline - time.monotonic())
            if more is None:
                raise StreamError(
                    StreamFailure.NETWORK, f"{where(url)} answered but sent no audio in time"
                )
            if not more:
                raise StreamError(
                    StreamFailure.UNDECODABLE, f"{where(url)} sent {len(body)} bytes, then closed"
                )
            body += more
        if codec is None:
            raise StreamError(
                StreamFailure.UNDECODABLE,
                f"{where(url)} ({content_type or 'no content type'}) starts with "
                f"{body[:8]!r}, no audio format we know",
            )
        return cls(sock, body, content_type, codec)

    def read(self, timeout_s: float) -> bytes | None:
        if self._pending:
            first, self._pending = self._pending, b""
            return first
        data = _recv(self._sock, timeout_s)
        if data is None:
            return None
        if not data:
            raise StreamError(StreamFailure.ENDED, "the server closed the stream")
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


def _recv(sock: socket.socket, timeout_s: float) -> bytes | None:
    """Bytes from ``sock`` (b"" at its end), or None after ``timeout_s`` without any."""
    try:
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            ready, _, _ = select.select([sock], [], [], max(0.0, timeout_s))
            if not ready:
                return None
        return sock.recv(READ_CHUNK_BYTES)
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    except OSError as exc:
        raise StreamError(StreamFailure.NETWORK, f"connection lost: {exc}") from exc


def _http_get(url: str, deadline: float) -> tuple[socket.socket, int, dict[str, str], bytes]:
    """Send a GET and read the head; returns the socket, status, headers and body so far."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StreamError(StreamFailure.NETWORK, f"not an http(s) URL: {where(url)}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        sock = socket.create_connection(
            (parts.hostname, port), timeout=max(0.1, deadline - time.monotonic())
        )
    except OSError as exc:
        raise StreamError(StreamFailure.NETWORK, f"{where(url)}: {_os_reason(exc)}") from exc
    try:
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        auth = ""
        if parts.username is not None:  # http://user:password@host/ (a private Icecast)
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = f"Authorization: Basic {base64.b64encode(token.encode()).decode()}\r\n"
        request = (
            f"GET {target} HTTP/1.0\r\nHost: {host}\r\n{auth}"
            "User-Agent: loaxa-node\r\nAccept: */*\r\nIcy-MetaData: 0\r\n\r\n"
        )
        sock.sendall(request.encode("ascii", errors="strict"))
        sock.setblocking(False)
        head = b""
        while b"\r\n\r\n" not in head:
            data = _recv(sock, deadline - time.monotonic())
            if data is None:
                if time.monotonic() < deadline:
                    continue  # half a TLS record
                raise StreamError(StreamFailure.NETWORK, f"{where(url)}: no answer in time")
            if not data:
                raise StreamError(StreamFailure.NETWORK, f"{where(url)}: closed before answering")
            head += data
            if len(head) > 64 * 1024:
                raise StreamError(StreamFailure.HTTP_STATUS, f"{where(url)}: header too long")
    except (OSError, UnicodeError, StreamError) as exc:
        sock.close()
        if isinstance(exc, StreamError):
            raise
        raise StreamError(StreamFailure.NETWORK, f"{where(url)}: {_os_reason(exc)}") from exc
    raw_head, _, body = head.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(None, 2)
    if len(status_line) < 2 or not status_line[1].isdigit():
        sock.close()
        raise StreamError(StreamFailure.HTTP_STATUS, f"{where(url)}: not HTTP: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return sock, int(status_line[1]), headers, body


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "connection timed out"
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------- ffmpeg source (ALSA)


PCM_RATE_HZ = 48_000
PCM_CHUNK_BYTES = PCM_RATE_HZ * 2 // 1000 * 20


def stream_decoder_command(ffmpeg: str, url: str, volume_pct: int) -> list[str]:
    """ffmpeg reading ``url`` and writing 48 kHz mono S16_LE to stdout at the stream's pace.

    Small probe sizes so the first sound comes soon (a live stream arrives at its own
    pace: probing 0.5 s of it costs 0.5 s); ``rw_timeout`` turns a silent server into an
    exit (a drop) rather than a hang.
    """
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-v", "error",
        "-rw_timeout", str(int(STALL_S * 1_000_000)),
        "-probesize", "8192", "-analyzeduration", "200000",
        "-i", url, "-vn",
        "-filter:a", f"volume={volume_pct / 100:.2f}",
        "-f", "s16le", "-ac", "1", "-ar", str(PCM_RATE_HZ), "pipe:1",
    ]  # fmt: skip


def classify_ffmpeg_error(stderr: str, *, opening: bool) -> StreamFailure:
    """Map ffmpeg's complaint to a reason code."""
    text = stderr.lower()
    if "server returned" in text or "http error" in text:
        return StreamFailure.HTTP_STATUS
    if any(
        word in text
        for word in ("connection refused", "timed out", "network is unreachable",
                     "name or service not known", "failed to resolve", "connection reset",
                     "end of file", "i/o error")
    ):  # fmt: skip
        return StreamFailure.NETWORK if opening else StreamFailure.ENDED
    if opening:
        return StreamFailure.UNDECODABLE
    return StreamFailure.ENDED


class FfmpegStreamSource:
    """ffmpeg decoding the stream URL to PCM; this source yields PCM, not the raw stream."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self._proc = proc
        self._url = url
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._pending = b""
        assert proc.stdout is not None and proc.stderr is not None
        self._fd = proc.stdout.fileno()
        self._stderr_reader = threading.Thread(
            target=self._drain_stderr, args=(proc.stderr,), name="ffmpeg-stream-err", daemon=True
        )
        self._stderr_reader.start()

    @classmethod
    def connect(
        cls, ffmpeg: str, url: str, volume_pct: int, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> FfmpegStreamSource:
        """Start ffmpeg and wait for its first PCM: the stream is reachable and decodable."""
        try:
            proc = subprocess.Popen(
                stream_decoder_command(ffmpeg, url, volume_pct),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
            )
        except OSError as exc:
            raise StreamError(StreamFailure.UNDECODABLE, f"cannot start ffmpeg: {exc}") from exc
        source = cls(proc, url)
        try:
            first = source._read_pcm(timeout_s, opening=True)
        except BaseException:
            source.close()
            raise
        if first is None:
            source.close()
            raise StreamError(
                StreamFailure.NETWORK, f"{where(url)}: no audio within {timeout_s:g} s"
            )
        source._pending = first
        return source

    def read(self, timeout_s: float) -> bytes | None:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return self._read_pcm(timeout_s, opening=False)

    def _read_pcm(self, timeout_s: float, *, opening: bool) -> bytes | None:
        ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout_s))
        if not ready:
            return None
        data = os.read(self._fd, PCM_CHUNK_BYTES)
        if data:
            return data
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=1)
        self._stderr_reader.join(timeout=1)  # its last words say why
        detail = " | ".join(self._stderr) or f"ffmpeg exited with {self._proc.returncode}"
        reason = classify_ffmpeg_error(detail, opening=opening)
        raise StreamError(reason, f"{where(self._url)}: {detail}"[:400])

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        # This thread owns stderr and closes it at EOF (ffmpeg exited or was killed).
        with contextlib.suppress(OSError, ValueError), stream:
            for raw in stream:
                line = raw.decode(errors="replace").strip()
                if line:
                    self._stderr.append(line.replace(self._url, where(self._url)))

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=2)
        if self._proc.stdout is not None:
            with contextlib.suppress(OSError):
                self._proc.stdout.close()
