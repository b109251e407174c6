"""The audio cache on a real directory: pinning, LRU eviction, disk-full."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from loaxa_protocol.errors import FetchError
from node_firmware.drivers.audio_cache import AudioCache, library_hold, reserve_for_disk

A, B, C, D = (ch * 64 for ch in "abcd")


def put(cache: AudioCache, sha: str, size: int, age_s: int, partial: bool = False) -> None:
    """A file of ``size`` bytes last used ``age_s`` seconds ago."""
    path = cache.partial_path(sha) if partial else cache.root / sha
    path.write_bytes(b"x" * size)
    ns = (1_700_000_000 - age_s) * 10**9
    os.utime(path, ns=(ns, ns))


@pytest.fixture
def cache(tmp_path: Path) -> AudioCache:
    cache = AudioCache(tmp_path / "audio", max_bytes=300, reserve_bytes=0)
    put(cache, A, 100, age_s=300)  # oldest, but the plan needs it
    put(cache, B, 100, age_s=200)
    put(cache, C, 100, age_s=100)
    cache.pin(frozenset({A}))
    return cache


def test_evicts_oldest_unpinned_and_never_pinned(cache: AudioCache) -> None:
    assert cache.used_bytes() == 300

    assert cache.make_room(100) == [B]
    assert cache.hashes() == {A, C}
    assert cache.make_room(100) == []  # already fits


def test_impossible_room_evicts_nothing(cache: AudioCache) -> None:
    with pytest.raises(FetchError, match="disk full: need 250 bytes"):
        cache.make_room(250)  # would need 250 freed, only B and C (200) may go
    assert cache.hashes() == {A, B, C}


def test_path_marks_audio_as_recently_used(cache: AudioCache) -> None:
    cache.path(B)  # about to be played
    assert cache.make_room(100) == [C]


def test_abandoned_partials_are_evicted_but_not_the_one_asking(cache: AudioCache) -> None:
    put(cache, D, 50, age_s=1000, partial=True)
    assert cache.used_bytes() == 350
    assert cache.make_room(50, for_sha=D) == [B]
    assert cache.partial_path(D).exists()
    assert cache.make_room(100) == [D]  # 50 over budget: the abandoned partial goes first


def test_disk_reserve_counts_as_well_as_the_budget(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=10**12, reserve_bytes=10**15)
    with pytest.raises(FetchError, match="disk full"):
        cache.make_room(1)
    assert cache.free_disk_bytes() > 0


def test_names_are_strict_sha256(cache: AudioCache) -> None:
    for bad in ("../../etc/passwd", A.upper(), A[:-1], A + "0", ""):
        with pytest.raises(ValueError, match="not a sha256"):
            cache.path(bad)
        with pytest.raises(ValueError, match="not a sha256"):
            cache.partial_path(bad)
    with pytest.raises(ValueError, match="not a sha256"):
        cache.pin(frozenset({"nope"}))


def test_hashes_lists_only_complete_well_named_files(cache: AudioCache) -> None:
    put(cache, D, 10, age_s=0, partial=True)
    (cache.root / "README").write_text("not audio")
    assert cache.hashes() == {A, B, C}
    assert cache.has(A) and not cache.has(D)


# ---------------------------------------------------------------- inline audio (alerts)


def test_store_commits_verified_inline_audio(cache: AudioCache) -> None:
    data = b"inline alert audio " * 3  # 57 bytes
    sha = hashlib.sha256(data).hexdigest()
    path = cache.store(sha, data)
    assert path == cache.root / sha and path.read_bytes() == data
    assert sha in cache.hashes()
    assert list(cache.partial_path(sha).parent.iterdir()) == []  # no temporary left behind
    assert cache.store(sha, data) == path  # a second copy (a re-sent alert) is a no-op
    # It took its room like any download: the oldest unpinned file made way.
    assert B not in cache.hashes() and A in cache.hashes()


def test_store_refuses_bytes_that_do_not_match_their_hash(cache: AudioCache) -> None:
    claimed = hashlib.sha256(b"the real message").hexdigest()
    with pytest.raises(FetchError, match="hash_mismatch"):
        cache.store(claimed, b"something else")
    assert not cache.has(claimed)
    assert cache.hashes() == {A, B, C}
    assert list(cache.partial_path(claimed).parent.iterdir()) == []


def test_store_when_nothing_can_make_room(cache: AudioCache) -> None:
    cache.pin(frozenset({A, B, C}))
    data = b"y" * 150
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(FetchError, match="disk full"):
        cache.store(sha, data)
    assert not cache.has(sha)


def test_the_free_space_reserve_follows_the_size_of_the_disk() -> None:
    assert reserve_for_disk(2 * 1024**2) == 104_857  # 5 % of a 2 MB data partition
    assert reserve_for_disk(200 * 1024) == 64 * 1024  # the floor
    assert reserve_for_disk(32 * 1024**3) == 64 * 1024**2  # an SD card: capped at 64 MiB


def test_by_default_the_reserve_is_that_of_the_disk_the_cache_is_on(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=10**9)
    assert cache.reserve_bytes == reserve_for_disk(shutil.disk_usage(tmp_path).total)


def test_a_file_whose_bytes_changed_is_named_and_discarded_at_once(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=10**9, reserve_bytes=0)
    data = b"bulletin" * 1000
    sha = hashlib.sha256(data).hexdigest()
    cache.store(sha, data)
    assert cache.verify(sha) is None
    with cache.path(sha).open("r+b") as f:  # one byte flips on the card
        f.seek(100)
        f.write(b"X")
    problem = cache.verify(sha)
    assert problem is not None and problem.startswith("hash_mismatch")
    assert not cache.has(sha)
    assert cache.verify(sha) == "missing: the file is gone from the cache"


def test_room_for_the_library_not_yet_on_disk_is_held_back_from_other_audio(
    tmp_path: Path,
) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=500, reserve_bytes=0)
    put(cache, A, 100, age_s=100)  # a library file already here
    put(cache, B, 30, age_s=50, partial=True)  # another one, 30 of its 120 bytes fetched
    cache.pin(frozenset({A, B, C}), keep={A: 100, B: 120, C: 150})
    # Held: B's missing 90 and C's 150. A 200-byte bulletin would fit the 370 bytes left
    # in the budget alone but would leave the library short: refused, saying why.
    with pytest.raises(FetchError, match="240 bytes held for 2 alert library files"):
        cache.make_room(200, for_sha=D)
    assert cache.make_room(130, for_sha=D) == []  # what the library leaves is usable
    # The library itself is not held back from itself.
    assert cache.make_room(150, for_sha=C) == []
    cache.pin(frozenset({D}))  # a plan without a library holds nothing back
    assert cache.make_room(370, for_sha=D) == []


def test_only_library_files_that_can_fit_are_held_smallest_first() -> None:
    assert library_hold([90, 150], room=500) == (240, 2)
    assert library_hold([150, 90], room=200) == (90, 1)  # both cannot; the smaller can
    assert library_hold([3_000_000], room=1_800_000) == (0, 0)  # never fits: holds nothing
    assert library_hold([], room=0) == (0, 0)


def test_a_library_file_too_big_for_the_disk_does_not_block_other_audio(
    tmp_path: Path,
) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=500, reserve_bytes=0)
    put(cache, A, 100, age_s=100)  # pinned audio already here
    cache.pin(frozenset({A, B, C}), keep={B: 450, C: 150})
    # B (450) can never fit beside A in 500 bytes: only C's 150 is held, so a 250-byte
    # bulletin fits and a 251-byte one would crowd C out.
    with pytest.raises(FetchError, match="150 bytes held for 1 alert library files"):
        cache.make_room(251, for_sha=D)
    assert cache.make_room(250, for_sha=D) == []
    with pytest.raises(FetchError, match="disk full"):
        cache.make_room(450, for_sha=B)  # B's own download reports it cannot fit


def test_a_half_fetched_item_does_not_make_the_library_look_too_big_to_hold(
    tmp_path: Path,
) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=500, reserve_bytes=0)
    put(cache, D, 250, age_s=10, partial=True)  # a bulletin half fetched before the plan
    cache.pin(frozenset({C, D}), keep={C: 300})
    # Its partial is dropped when it is refused, so C's 300 bytes fit and are held.
    with pytest.raises(FetchError, match="300 bytes held for 1 alert library files"):
        cache.make_room(200, for_sha=D)
