"""Download plan audio into the cache: resumable, verified, atomic.

A 4G link in a commune drops often, so every byte received is kept in
``partial/<sha>`` and the next attempt asks only for the rest (``Range``). Nothing
enters the cache until its size and sha256 match the plan; the commit is an
``os.replace`` after ``fsync``, so a power cut leaves either the old state or the
whole file. A cut that made progress is resumed at once (a few times); any other
failure is raised for the core to retry later with back-off.
"""

from __future__ import annotations

import enum
import errno
import http.client
import logging
import os
import threading
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from urllib.parse import urlsplit

from loaxa_protocol import AudioRef
from loaxa_protocol.errors import FetchError
from node_firmware.drivers.audio_cache import AudioCache
from node_firmware.drivers.disk import fsync_dir, sha256_of

log = logging.getLogger(__name__)


class FetchFailure(enum.StrEnum):
    """Machine-readable reason codes, suitable for ``Event.reason``."""

    HTTP_STATUS = "http_status"
    NETWORK = "network"
    SIZE_MISMATCH = "size_mismatch"
    HASH_MISMATCH = "hash_mismatch"
    DISK_FULL = "disk_full"
    IO_ERROR = "io_error"


class DownloadError(FetchError):
    """A fetch failed; ``reason`` is the code, ``str()`` starts with it too."""

    def __init__(self, reason: FetchFailure, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class _StartOver(Exception):
    """The server would not resume our partial file; it was dropped."""


class AudioFetcher:
    """Fetches ``AudioRef``s into an ``AudioCache``; blocking, safe from worker threads."""

    def __init__(self, cache: AudioCache, timeout_s: float = 30, max_attempts: int = 3) -> None:
        self._cache = cache
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        # The standard library, not httpx: on a Pi every megabyte of RSS counts, and
        # httpx with its CLI extras costs ~15 MiB. urllib follows redirects and sends
        # no Accept-Encoding, so byte ranges address the file itself.
        self._opener = urllib.request.build_opener()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        """Nothing to release: every download opens and closes its own connection."""

    def fetch(self, ref: AudioRef) -> Path:
        """Return the cached path of ``ref``, downloading it first if needed.

        Raises ``DownloadError`` (a ``FetchError``) with a specific ``reason``.
        """
        with self._lock_for(ref.sha256):
            if self._cache.has(ref.sha256):
                return self._cache.path(ref.sha256)
            partial = self._cache.partial_path(ref.sha256)
            try:
                return self._fetch(ref, partial)
            except DownloadError as exc:
                if exc.reason == FetchFailure.DISK_FULL:
                    # A download refused for space must not keep the space it took: its
                    # partial would crowd out the next file (the alert library above all).
                    partial.unlink(missing_ok=True)
                raise

    def _fetch(self, ref: AudioRef, partial: Path) -> Path:
        """The attempts (a cut that made progress resumes at once, a few times)."""
        for attempt in range(1, self._max_attempts + 1):
            have = _usable_size(partial, ref.size_bytes)
            if have == ref.size_bytes:  # complete before a crash: only verify it
                return self._commit(ref, partial)
            try:
                self._cache.make_room(ref.size_bytes - have, for_sha=ref.sha256)
            except FetchError as exc:
                raise DownloadError(FetchFailure.DISK_FULL, str(exc)) from exc
            try:
                self._download(ref, partial, have)
            except _StartOver:
                continue
            except DownloadError as exc:
                progressed = _usable_size(partial, ref.size_bytes) > have
                last = attempt == self._max_attempts
                if exc.reason != FetchFailure.NETWORK or not progressed or last:
                    raise
                log.info("connection lost fetching %s; resuming: %s", ref.sha256[:12], exc)
                continue
            return self._commit(ref, partial)
        raise DownloadError(
            FetchFailure.HTTP_STATUS,
            f"{_where(ref)} refused to resume {self._max_attempts} times",
        )

    def _download(self, ref: AudioRef, partial: Path, have: int) -> None:
        headers = {"Range": f"bytes={have}-"} if have else {}
        request = urllib.request.Request(ref.url, headers=headers)
        try:
            with self._opener.open(request, timeout=self._timeout_s) as response:
                mode = self._write_mode(ref, response.status, response.headers, partial, have)
                self._save_body(ref, response, partial, have if mode == "ab" else 0, mode)
        except urllib.error.HTTPError as exc:  # 4xx/5xx (416 included) arrive as errors
            exc.close()
            self._write_mode(ref, exc.code, exc.headers, partial, have)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise DownloadError(
                FetchFailure.NETWORK, f"{type(exc).__name__} fetching {_where(ref)}: {exc}"
            ) from exc

    @staticmethod
    def _write_mode(ref: AudioRef, status: int, headers: Message, partial: Path, have: int) -> str:
        if status == 200:
            return "wb"  # server ignored Range (or none was sent): start from zero
        if status == 206 and _range_start(headers) == have:
            return "ab"
        if status in (206, 416):
            # 416: our partial is longer than the file; 206 at another offset: a
            # server we cannot trust to resume. Either way, begin again.
            log.warning("%s answered %s to Range %s-; starting over", _where(ref), status, have)
            partial.unlink(missing_ok=True)
            raise _StartOver
        raise DownloadError(FetchFailure.HTTP_STATUS, f"HTTP {status} fetching {_where(ref)}")

    @staticmethod
    def _save_body(
        ref: AudioRef, response: http.client.HTTPResponse, partial: Path, have: int, mode: str
    ) -> None:
        """Append what arrives; a network error propagates, a disk error is classified.

        ``read1`` returns bytes as they arrive, so a cut loses none of them, and what
        was written is flushed and fsynced even then, so the next attempt resumes.
        """
        try:
            out = partial.open(mode)
        except OSError as exc:
            raise _disk_error(partial, exc) from exc
        with out:
            try:
                while have < ref.size_bytes and (chunk := response.read1(64 * 1024)):
                    # Never store more than the plan promised: a broken or hostile
                    # server must not be able to fill the disk.
                    room = ref.size_bytes - have
                    try:
                        out.write(chunk[:room])
                    except OSError as exc:
                        raise _disk_error(partial, exc) from exc
                    have += min(len(chunk), room)
                promised = getattr(response, "length", None)  # what Content-Length still owes
                if have < ref.size_bytes and promised:
                    raise http.client.IncompleteRead(b"", promised)  # cut: resume later
            finally:
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise _disk_error(partial, exc) from exc

    def _commit(self, ref: AudioRef, partial: Path) -> Path:
        size = partial.stat().st_size
        if size != ref.size_bytes:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                FetchFailure.SIZE_MISMATCH,
                f"{_where(ref)} ended after {size} of {ref.size_bytes} bytes",
            )
        digest = sha256_of(partial)
        if digest != ref.sha256:
            partial.unlink(missing_ok=True)
            raise DownloadError(
                FetchFailure.HASH_MISMATCH,
                f"{_where(ref)} has sha256 {digest}, the plan says {ref.sha256}",
            )
        final = self._cache.path(ref.sha256)
        try:
            os.replace(partial, final)
            fsync_dir(final.parent)
        except OSError as exc:
            raise DownloadError(FetchFailure.IO_ERROR, f"storing {final.name}: {exc}") from exc
        log.info("fetched %s (%s bytes)", ref.sha256[:12], size)
        return final

    def _lock_for(self, sha: str) -> threading.Lock:
        # Two workers fetching the same hash would interleave writes to one partial.
        with self._locks_guard:
            return self._locks.setdefault(sha, threading.Lock())


def _usable_size(partial: Path, size_bytes: int) -> int:
    """Bytes already downloaded; a partial longer than the file cannot be right."""
    try:
        have = partial.stat().st_size
    except FileNotFoundError:
        return 0
    if have > size_bytes:
        partial.unlink(missing_ok=True)
        return 0
    return have


def _disk_error(partial: Path, exc: OSError) -> DownloadError:
    reason = FetchFailure.DISK_FULL if exc.errno == errno.ENOSPC else FetchFailure.IO_ERROR
    return DownloadError(reason, f"writing {partial.name}: {exc}")


def _range_start(headers: Message) -> int | None:
    """First byte of ``Content-Range: bytes <first>-<last>/<total>``."""
    unit, _, rest = (headers.get("content-range") or "").partition(" ")
    first = rest.partition("-")[0]
    return int(first) if unit == "bytes" and first.isdigit() else None


def _where(ref: AudioRef) -> str:
    """The URL without its query: signed URLs carry credentials we must not log."""
    parts = urlsplit(ref.url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
