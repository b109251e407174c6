"""Content-addressed audio on the station's disk.

Layout: ``<root>/<sha256>`` for verified files (the name *is* the hash, so a file
can be re-verified at any time) and ``<root>/partial/<sha256>`` for downloads in
progress, which the fetcher resumes. Only the fetcher and :meth:`AudioCache.store`
(audio carried inline by a custom alert) write here, and only by ``os.replace`` from
``partial/`` after checking the hash, so a complete-looking name is always whole.

Eviction is least-recently-used by mtime: ``path()`` touches the file, because the
agent asks for the path exactly when it schedules playback. (atime is unreliable on
``noatime``/``relatime`` SD cards.) Audio the current plan needs is pinned and is
never evicted, whatever the disk says.

The canned alert library (the plan's keep list) comes before everything else: room for
any of it not yet on disk is held back from every other download, so a programme item
that arrives first, or a big one, can be refused but can never crowd the library out.
Only room the library could actually use is held (:func:`library_hold`): a library file
that cannot fit on this disk even with everything evictable gone is reported as failed
by its own download and holds nothing, or it would block every other download forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
from pathlib import Path

from loaxa_protocol.durable import write_atomically
from loaxa_protocol.errors import FetchError
from node_firmware.drivers.disk import sha256_of

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
RESERVE_MAX_BYTES = 64 * 1024**2
RESERVE_SHARE = 0.05
RESERVE_MIN_BYTES = 64 * 1024
"""Free space left for logs, the state, the outbox and the OS whatever the budget says:
5 % of the disk, at most 64 MiB (an SD card), at least 64 KiB (a tiny data partition)."""


def reserve_for_disk(total_bytes: int) -> int:
    """The free space a disk of ``total_bytes`` keeps beyond the audio (see above)."""
    return max(RESERVE_MIN_BYTES, min(RESERVE_MAX_BYTES, int(total_bytes * RESERVE_SHARE)))


def library_hold(missing: list[int], room: int) -> tuple[int, int]:
    """(bytes, files) to hold back for library files still missing ``missing`` bytes each.

    ``room`` is what the library could have if every evictable file went. Files are
    held smallest first while they fit in ``room`` together (the most alerts that can be
    on this disk); one that cannot fit holds nothing, since holding for it would only
    refuse every other download without ever letting it in.
    """
    held, files = 0, 0
    for size in sorted(missing):
        if held + size > room:
            break
        held += size
        files += 1
    return held, files


class AudioCache:
    """A bounded, pinned, LRU store of audio files named by sha256."""

    def __init__(self, root: Path, max_bytes: int, reserve_bytes: int | None = None) -> None:
        """``reserve_bytes`` None: :func:`reserve_for_disk` of the disk ``root`` is on."""
        self.root = root
        self.max_bytes = max_bytes
        self._partial_dir = root / "partial"
        self._partial_dir.mkdir(parents=True, exist_ok=True)
        if reserve_bytes is None:
            reserve_bytes = reserve_for_disk(shutil.disk_usage(root).total)
        self.reserve_bytes = reserve_bytes
        self._lock = threading.Lock()
        self._pinned: frozenset[str] = frozenset()
        self._keep: dict[str, int] = {}

    def has(self, sha: str) -> bool:
        return self._final(sha).is_file()

    def path(self, sha: str) -> Path:
        """Where ``sha`` lives (or will); marks it recently used if it is there."""
        target = self._final(sha)
        with contextlib.suppress(FileNotFoundError):
            os.utime(target)
        return target

    def partial_path(self, sha: str) -> Path:
        return self._partial_dir / _checked(sha)

    def hashes(self) -> frozenset[str]:
        return frozenset(sha for sha, _ in self._entries(self.root))

    def store(self, sha: str, data: bytes) -> Path:
        """Add audio that arrived whole (a custom alert's inline audio); returns its path.

        Verified against ``sha`` first and committed by ``fsync`` + ``os.replace``, so
        a power cut leaves no half file under a real name. Raises ``FetchError``
        (``hash_mismatch: …`` or ``disk full: …``); the cache is then unchanged.
        """
        target = self._final(sha)
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha:
            raise FetchError(f"hash_mismatch: inline audio has sha256 {digest}, expected {sha}")
        if target.is_file():
            return self.path(sha)  # marks it used
        self.make_room(len(data), for_sha=sha)
        try:
            write_atomically(target, data)
        except OSError as exc:
            raise FetchError(f"io_error: storing inline audio {sha[:12]}: {exc}") from exc
        log.info("stored inline audio %s (%s bytes)", sha[:12], len(data))
        return target

    def verify(self, sha: str) -> str | None:
        """Re-hash the cached file of ``sha``: None if intact, else what is wrong.

        A file whose bytes no longer hash to its name is deleted at once, so nothing
        (the player, a stream's fallback) can pick it up before it is fetched again.
        """
        target = self._final(sha)
        try:
            digest = sha256_of(target)
        except FileNotFoundError:
            return "missing: the file is gone from the cache"
        except OSError as exc:
            return f"io_error: cannot read it: {exc}"
        if digest == sha:
            return None
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        log.error("cached audio %s changed on disk (now %s): discarded", sha, digest)
        return f"hash_mismatch: its bytes now hash to {digest}"

    def pin(self, shas: frozenset[str], keep: dict[str, int] | None = None) -> None:
        """Replace the pinned set with the complete set the plan needs; ``keep`` (hash →
        size) is the alert library among it, whose missing files' room is held."""
        for sha in [*shas, *(keep or {})]:
            _checked(sha)
        with self._lock:
            self._pinned = frozenset(shas)
            self._keep = dict(keep or {})

    def _library_missing(self, for_sha: str | None) -> list[int]:
        """Bytes still missing of each library file not yet on disk, beyond ``for_sha``.

        A library file's partial download already occupies its share of the disk.
        """
        missing = []
        for sha, size in self._keep.items():
            if sha == for_sha or self._final(sha).is_file():
                continue
            missing.append(max(0, size - self._partial_size(sha)))
        return missing

    def _partial_size(self, sha: str) -> int:
        try:
            return (self._partial_dir / sha).stat().st_size
        except FileNotFoundError:
            return 0

    def used_bytes(self) -> int:
        """Bytes of complete and partial files (both occupy the budget)."""
        entries = self._entries(self.root) + self._entries(self._partial_dir)
        return sum(size for _, (size, _) in entries)

    def free_disk_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def make_room(self, needed_bytes: int, for_sha: str | None = None) -> list[str]:
        """Evict least-recently-used unpinned audio until ``needed_bytes`` fit.

        Fits means within ``max_bytes`` and leaving ``reserve_bytes`` free on the
        disk. Abandoned partial downloads are evicted like files, except the one of
        ``for_sha`` (the download asking for room). Nothing is evicted when even
        evicting everything allowed would not be enough; then
        ``FetchError("disk full …")`` says by how much. Returns the evicted hashes.
        """
        own = frozenset() if for_sha is None else frozenset({_checked(for_sha)})
        with self._lock:
            keep = self._pinned | own
            used = self.used_bytes()
            free = self.free_disk_bytes()
            candidates = sorted(
                (
                    (mtime_ns, sha, size, folder)
                    for folder in (self._partial_dir, self.root)
                    for sha, (size, mtime_ns) in self._entries(folder)
                    if sha not in keep
                ),
            )
            evictable = sum(size for _, _, size, _ in candidates)
            held, held_files = 0, 0
            if for_sha not in self._keep:
                # The asker's own partial counts as room too: a refused download drops it.
                room = min(self.max_bytes - used, free - self.reserve_bytes) + evictable
                room += 0 if for_sha is None else self._partial_size(for_sha)
                held, held_files = library_hold(self._library_missing(for_sha), room)
            over_budget = used + held + needed_bytes - self.max_bytes
            short_on_disk = self.reserve_bytes + held + needed_bytes - free
            if max(over_budget, short_on_disk) > evictable:
                library = (
                    f", {held} bytes held for {held_files} alert library files not yet on disk"
                    if held
                    else ""
                )
                raise FetchError(
                    f"disk full: need {needed_bytes} bytes; cache uses {used} of "
                    f"{self.max_bytes}, disk has {free} free (reserve {self.reserve_bytes}"
                    f"{library}), only {evictable} bytes are evictable"
                )
            evicted: list[str] = []
            for _, sha, size, folder in candidates:
                if over_budget <= 0 and short_on_disk <= 0:
                    break
                with contextlib.suppress(FileNotFoundError):
                    (folder / sha).unlink()
                evicted.append(sha)
                over_budget -= size
                short_on_disk -= size
            if evicted:
                log.info(
                    "evicted %s audio files to make room for %s bytes", len(evicted), needed_bytes
                )
            return evicted

    def _final(self, sha: str) -> Path:
        return self.root / _checked(sha)

    @staticmethod
    def _entries(folder: Path) -> list[tuple[str, tuple[int, int]]]:
        """(sha, (size, mtime_ns)) of every well-named regular file in ``folder``."""
        found = []
        with os.scandir(folder) as it:
            for entry in it:
                if _SHA256.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat(follow_symlinks=False)
                        found.append((entry.name, (st.st_size, st.st_mtime_ns)))
        return found


def _checked(sha: str) -> str:
    """Refuse anything but 64 lower-case hex digits: the name becomes a file path."""
    if not _SHA256.fullmatch(sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return sha
