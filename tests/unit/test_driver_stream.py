"""Stream relay parts on real sockets and the real ffmpeg: sniffing, ICY, stalls, commands.

The whole relay against a real-time stream server is in
``tests/integration/test_node_stream_relay.py``; these pin the pieces down.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loaxa.broker import free_port
from node_firmware.drivers import stream
from node_firmware.drivers.player import SimulatedPlayer, decode_command, find_ffmpeg
from node_firmware.drivers.stream import (
    SNIFF_BYTES,
    FfmpegStreamSource,
    HttpStreamSource,
    StreamError,
    StreamFailure,
    classify_ffmpeg_error,
    sniff_audio,
    stream_decoder_command,
)
from tests.audio_samples import make_audio


@pytest.mark.parametrize("fmt", ["ogg", "mp3", "wav", "flac"])
def test_sniff_recognises_real_files(fmt: str) -> None:
    expected = {"ogg": "ogg", "mp3": "mp3", "wav": "wav", "flac": "flac"}[fmt]
    assert sniff_audio(make_audio(fmt, 0.2)[:16]) == expected


def raw_stream(fmt: str, *args: str) -> bytes:
    """Two seconds of a bare stream as a live encoder sends it (no file header)."""
    done = subprocess.run(
        [find_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "sine=d=2", *args, "-f", fmt,
         "pipe:1"],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    return done.stdout


@pytest.mark.parametrize(
    ("fmt", "args", "codec"),
    [
        ("mp3", ("-c:a", "libmp3lame", "-b:a", "32k", "-id3v2_version", "0", "-write_xing", "0"),
         "mp3"),
        ("adts", ("-c:a", "aac", "-b:a", "32k"), "aac"),
        ("ogg", ("-c:a", "libopus", "-b:a", "32k", "-page_duration", "20000"), "ogg"),
    ],
)  # fmt: skip
def test_sniff_finds_frames_when_joining_a_live_stream_midway(
    fmt: str, args: tuple[str, ...], codec: str
) -> None:
    data = raw_stream(fmt, *args)
    assert sniff_audio(data[:SNIFF_BYTES]) == codec
    for offset in (1, 333, 1001):  # a listener joins wherever the broadcast is
        assert sniff_audio(data[offset : offset + SNIFF_BYTES]) == codec, offset


def test_sniff_refuses_text_and_lone_sync_bytes() -> None:
    assert sniff_audio(b"<!DOCTYPE html><html>" * 50) is None
    assert sniff_audio(b"\xff") is None
    assert sniff_audio(b"\xff\xfb\x00\x00" * 200) is None  # a bitrate index of 0: no frame


def test_decoder_commands_carry_url_gain_and_pcm_format() -> None:
    cmd = stream_decoder_command("/usr/bin/ffmpeg", "http://vov.example/vov1?t=1", 40)
    assert cmd[0] == "/usr/bin/ffmpeg" and cmd[cmd.index("-i") + 1] == "http://vov.example/vov1?t=1"
    assert "volume=0.40" in cmd and cmd[-1] == "pipe:1"
    assert cmd[cmd.index("-f", cmd.index("-i")) + 1] == "s16le"
    assert cmd[cmd.index("-ar") + 1] == "48000" and cmd[cmd.index("-ac") + 1] == "1"
    assert cmd[cmd.index("-rw_timeout") + 1] == str(int(stream.STALL_S * 1_000_000))

    looped = decode_command("ffmpeg", Path("/cache/abc"), "pipe:1", 100, loop=True)
    assert looped.index("-stream_loop") < looped.index("-i") and "volume=1.00" in looped
    assert "-stream_loop" not in decode_command("ffmpeg", Path("/cache/abc"), "out.pcm", 70)


def test_ffmpeg_complaints_become_reason_codes() -> None:
    opening = {
        "http://x/y: Server returned 404 Not Found": StreamFailure.HTTP_STATUS,
        "Connection to tcp://127.0.0.1:9 failed: Connection refused": StreamFailure.NETWORK,
        "http://x/y: Invalid data found when processing input": StreamFailure.UNDECODABLE,
    }
    for text, reason in opening.items():
        assert classify_ffmpeg_error(text, opening=True) is reason
    assert classify_ffmpeg_error("Connection reset by peer", opening=False) is StreamFailure.ENDED


def test_ffmpeg_source_reports_a_refused_connection() -> None:
    with pytest.raises(StreamError) as caught:
        FfmpegStreamSource.connect(find_ffmpeg(), f"http://127.0.0.1:{free_port()}/x", 100)
    assert caught.value.reason is StreamFailure.NETWORK
    assert "refused" in str(caught.value).lower()


# ---------------------------------------------------------------- raw servers


class RawServer:
    """Answers every connection with ``head`` + ``body`` and then keeps it open, silent."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head, self.body = head, body
        self.connections = 0
        self.requests: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with contextlib.suppress(OSError):
                self.requests.append(conn.recv(4096))
                conn.sendall(self.head + self.body)
            self._open.append(conn)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for conn in self._open:
            conn.close()


@pytest.fixture
def ogg_head() -> bytes:
    return make_audio("ogg", 0.3)[:2000]


@pytest.fixture
def stalled(ogg_head: bytes) -> Iterator[RawServer]:
    server = RawServer(b"HTTP/1.0 200 OK\r\nContent-Type: application/ogg\r\n\r\n", ogg_head)
    yield server
    server.close()


def test_a_shoutcast_icy_status_line_is_accepted() -> None:
    server = RawServer(b"ICY 200 OK\r\nicy-name: VOV1\r\ncontent-type: audio/mpeg\r\n\r\n", b"")
    server.body = make_audio("mp3", 0.3)
    try:
        source = HttpStreamSource.connect(f"http://127.0.0.1:{server.port}/;")
        try:
            assert source.codec == "mp3" and source.content_type == "audio/mpeg"
            assert source.read(1.0)
        finally:
            source.close()
    finally:
        server.close()


def test_a_stalled_stream_is_dropped_and_reconnected(
    stalled: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "STALL_S", 0.4)
    player = SimulatedPlayer()
    done = threading.Event()
    unreachable: list[str] = []
    start_at = datetime.now(UTC) + timedelta(seconds=0.1)
    player.start_stream(
        "s-1", f"http://127.0.0.1:{stalled.port}/live", None, start_at, 1500,
        lambda *_: None, lambda *_: done.set(), lambda *_: done.set(),
        lambda _i, reason: unreachable.append(reason),
    )  # fmt: skip
    assert done.wait(4)
    player.close()
    [record] = player.records
    # 1.5 s at a stall every 0.4 s: connected, stalled, reconnected, stalled, …
    assert stalled.connections >= 3, stalled.connections
    assert unreachable == []  # each reconnect succeeded at once: never an outage
    assert all(s.source == "stream" for s in record.segments)


def test_a_server_that_never_sends_a_body_times_out() -> None:
    server = RawServer(b"HTTP/1.0 200 OK\r\nContent-Type: audio/ogg\r\n\r\n", b"")
    try:
        started = time.monotonic()
        with pytest.raises(StreamError) as caught:
            HttpStreamSource.connect(f"http://127.0.0.1:{server.port}/live", timeout_s=0.5)
        assert time.monotonic() - started < 2
        assert caught.value.reason is StreamFailure.NETWORK
    finally:
        server.close()


def test_credentials_in_the_url_become_basic_auth_and_never_reach_a_log(ogg_head: bytes) -> None:
    server = RawServer(b"HTTP/1.0 200 OK\r\nContent-Type: audio/ogg\r\n\r\n", ogg_head)
    url = f"http://relay:s%40cret@127.0.0.1:{server.port}/vov1?token=abc"
    try:
        HttpStreamSource.connect(url).close()
    finally:
        server.close()
    [request] = server.requests
    assert request.startswith(b"GET /vov1?token=abc HTTP/1.0\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
    assert b"Authorization: Basic cmVsYXk6c0BjcmV0\r\n" in request  # relay:s@cret
    assert stream.where(url) == f"http://127.0.0.1:{server.port}/vov1"
