"""The fetcher against a real local HTTP server that supports Range and misbehaves on cue."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from loaxa_protocol import AudioRef
from node_firmware.drivers.audio_cache import AudioCache
from node_firmware.drivers.fetcher import AudioFetcher, DownloadError, FetchFailure

AUDIO = bytes(range(256)) * 1000  # 256 kB, enough for several chunks
SHA = hashlib.sha256(AUDIO).hexdigest()


class AudioServer(ThreadingHTTPServer):
    """Serves ``files`` with Range support; ``cut_next`` responses stop halfway."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.files: dict[str, bytes] = {"/a.ogg": AUDIO}
        self.requests: list[str | None] = []  # the Range header of each request
        self.cut_next = 0
        self.ignore_range = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AudioServer

    def do_GET(self) -> None:
        srv = self.server
        wanted = self.headers.get("Range")
        srv.requests.append(wanted)
        body = srv.files.get(urlsplit(self.path).path)
        if body is None:
            self.send_error(404)
            return
        first = 0
        if wanted and not srv.ignore_range:
            first = int(wanted.removeprefix("bytes=").partition("-")[0])
            if first >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[first:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if srv.cut_next:
            srv.cut_next -= 1
            self.wfile.write(payload[: len(payload) // 2])
            self.close_connection = True  # the 4G link drops mid-transfer
            return
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[AudioServer]:
    srv = AudioServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path: Path) -> AudioCache:
    return AudioCache(tmp_path / "audio", max_bytes=10 * len(AUDIO), reserve_bytes=0)


@pytest.fixture
def fetcher(cache: AudioCache) -> Iterator[AudioFetcher]:
    f = AudioFetcher(cache, timeout_s=5)
    yield f
    f.close()


def ref_for(url: str, data: bytes = AUDIO, sha: str = SHA) -> AudioRef:
    return AudioRef(sha256=sha, size_bytes=len(data), duration_ms=1000, url=url)


def test_fetch_verifies_and_commits(
    server: AudioServer, cache: AudioCache, fetcher: AudioFetcher
) -> None:
    path = fetcher.fetch(ref_for(server.url("/a.ogg")))

    assert path == cache.path(SHA) and path.read_bytes() == AUDIO
    assert cache.hashes() == {SHA}
    assert not cache.partial_path(SHA).exists()
    assert fetcher.fetch(ref_for(server.url("/a.ogg"))) == path  # cached: no second request
    assert server.requests == [None]


def test_cut_connection_is_resumed_with_range(server: AudioServer, fetcher: AudioFetcher) -> None:
    server.cut_next = 1

    path = fetcher.fetch(ref_for(server.url("/a.ogg")))

    assert path.read_bytes() == AUDIO
    assert server.requests == [None, f"bytes={len(AUDIO) // 2}-"]


def test_partial_survives_a_failed_fetch_and_the_next_fetch_resumes(
    server: AudioServer, cache: AudioCache
) -> None:
    server.cut_next = 1
    impatient = AudioFetcher(cache, timeout_s=5, max_attempts=1)
    with pytest.raises(DownloadError) as failure:
        impatient.fetch(ref_for(server.url("/a.ogg")))
    impatient.close()
    assert failure.value.reason == FetchFailure.NETWORK
    assert str(failure.value).startswith("network: ")
    assert cache.partial_path(SHA).stat().st_size == len(AUDIO) // 2

    later = AudioFetcher(cache, timeout_s=5)
    assert later.fetch(ref_for(server.url("/a.ogg"))).read_bytes() == AUDIO
    later.close()
    assert server.requests[-1] == f"bytes={len(AUDIO) // 2}-"


def test_hash_mismatch_deletes_the_partial(
    server: AudioServer, cache: AudioCache, fetcher: AudioFetcher
) -> None:
    wrong = hashlib.sha256(b"another bulletin").hexdigest()

    with pytest.raises(DownloadError, match=f"has sha256 {SHA}, the plan says {wrong}") as failure:
        fetcher.fetch(ref_for(server.url("/a.ogg"), sha=wrong))

    assert failure.value.reason == FetchFailure.HASH_MISMATCH
    assert not cache.partial_path(wrong).exists() and not cache.has(wrong)


def test_http_status_is_named_and_the_signature_is_not_logged(
    server: AudioServer, fetcher: AudioFetcher
) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as failure:
        fetcher.fetch(ref_for(server.url("/missing.ogg?sig=SECRET")))
    assert failure.value.reason == FetchFailure.HTTP_STATUS
    assert "SECRET" not in str(failure.value)


def test_server_ignoring_range_restarts_from_zero(
    server: AudioServer, cache: AudioCache, fetcher: AudioFetcher
) -> None:
    cache.partial_path(SHA).write_bytes(b"junk from some other attempt")
    server.ignore_range = True

    assert fetcher.fetch(ref_for(server.url("/a.ogg"))).read_bytes() == AUDIO
    assert server.requests == ["bytes=28-"]


def test_416_drops_the_partial_and_a_short_file_is_a_size_mismatch(
    server: AudioServer, cache: AudioCache, fetcher: AudioFetcher
) -> None:
    server.files["/short.ogg"] = AUDIO[:1000]  # the server has a different, shorter file
    cache.partial_path(SHA).write_bytes(AUDIO[:2000])

    with pytest.raises(DownloadError, match="ended after 1000 of") as failure:
        fetcher.fetch(ref_for(server.url("/short.ogg")))

    assert failure.value.reason == FetchFailure.SIZE_MISMATCH
    assert server.requests == ["bytes=2000-", None]
    assert not cache.partial_path(SHA).exists()


def test_a_complete_partial_is_verified_without_downloading(
    server: AudioServer, cache: AudioCache, fetcher: AudioFetcher
) -> None:
    cache.partial_path(SHA).write_bytes(AUDIO)  # power cut between fsync and rename
    assert fetcher.fetch(ref_for(server.url("/a.ogg"))).read_bytes() == AUDIO
    assert server.requests == []


def test_no_room_is_disk_full_before_any_request(server: AudioServer, tmp_path: Path) -> None:
    tiny = AudioCache(tmp_path / "tiny", max_bytes=len(AUDIO) - 1, reserve_bytes=0)
    fetcher = AudioFetcher(tiny)
    with pytest.raises(DownloadError, match="disk full") as failure:
        fetcher.fetch(ref_for(server.url("/a.ogg")))
    fetcher.close()
    assert failure.value.reason == FetchFailure.DISK_FULL
    assert server.requests == []


def test_unreachable_server_is_a_network_error(cache: AudioCache) -> None:
    fetcher = AudioFetcher(cache, timeout_s=1)
    with pytest.raises(DownloadError) as failure:
        fetcher.fetch(ref_for("http://127.0.0.1:9/a.ogg"))  # discard port: refused
    fetcher.close()
    assert failure.value.reason == FetchFailure.NETWORK


def test_a_download_refused_for_space_gives_back_the_space_its_partial_took(
    server: AudioServer, tmp_path: Path
) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=len(AUDIO), reserve_bytes=0)
    server.cut_next = 1
    with pytest.raises(DownloadError, match="network"):
        AudioFetcher(cache, timeout_s=5, max_attempts=1).fetch(ref_for(server.url("/a.ogg")))
    assert cache.partial_path(SHA).stat().st_size == len(AUDIO) // 2
    # The plan now names a library file that needs the room: the rest of the bulletin
    # no longer fits, and its half must not stay to crowd the library out.
    library = "e" * 64
    cache.pin(frozenset({SHA, library}), keep={library: len(AUDIO) // 2 + 1})
    with pytest.raises(DownloadError, match="held for 1 alert library file") as failure:
        AudioFetcher(cache, timeout_s=5).fetch(ref_for(server.url("/a.ogg")))
    assert failure.value.reason == FetchFailure.DISK_FULL
    assert not cache.partial_path(SHA).exists()
    assert cache.used_bytes() == 0
