"""State store on a real directory, including the debris a power cut leaves."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from loaxa_protocol.errors import StorageError
from node_firmware.drivers.state_store import CURRENT, PREVIOUS, TEMP, StateStore

REPLAY = {"server": [41, "ab" * 32]}


def test_round_trip_survives_a_restart(tmp_path: Path) -> None:
    StateStore(tmp_path).save(b'{"signed": "plan"}', REPLAY)
    assert StateStore(tmp_path).load() == (b'{"signed": "plan"}', REPLAY)


def test_empty_directory_means_no_plan(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "new").load() == (None, {})


def test_previous_generation_is_kept(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(b"plan-1", {"s": [1, "x"]})
    store.save(b"plan-2", {"s": [2, "y"]})
    assert (tmp_path / PREVIOUS).exists() and not (tmp_path / TEMP).exists()
    (tmp_path / CURRENT).unlink()
    assert StateStore(tmp_path).load() == (b"plan-1", {"s": [1, "x"]})


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: data[:-9] + bytes([data[-9] ^ 4]) + data[-8:], id="bit-rot"),
        pytest.param(lambda data: b"\0" * len(data), id="zeroed"),
    ],
)
def test_corrupt_current_and_stale_temp_fall_back_to_previous(
    tmp_path: Path, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    store.save(b"plan-1", {"s": [1, "x"]})
    store.save(b"plan-2", {"s": [2, "y"]})
    current = tmp_path / CURRENT
    current.write_bytes(damage(current.read_bytes()))  # type: ignore[operator]
    (tmp_path / TEMP).write_bytes(b"loaxa-state 1 gen=9 len=500 sha256=")  # died mid-write

    with caplog.at_level(logging.WARNING):
        assert StateStore(tmp_path).load() == (b"plan-1", {"s": [1, "x"]})
    assert "using state.prev.json" in caplog.text


def test_a_complete_temp_file_wins_after_a_crash_between_renames(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(b"plan-1", {})
    store.save(b"plan-2", {})
    (tmp_path / CURRENT).rename(tmp_path / TEMP)  # as if plan-2 was never renamed into place
    (tmp_path / PREVIOUS).write_bytes((tmp_path / TEMP).read_bytes().replace(b"gen=2", b"gen=1"))
    assert StateStore(tmp_path).load()[0] == b"plan-2"


def test_saving_after_a_fallback_keeps_the_good_fallback(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(b"plan-1", {})
    store.save(b"plan-2", {})
    (tmp_path / CURRENT).write_bytes(b"garbage")
    store = StateStore(tmp_path)
    assert store.load()[0] == b"plan-1"

    store.save(b"plan-3", {})
    (tmp_path / CURRENT).write_bytes(b"garbage again")
    assert StateStore(tmp_path).load()[0] == b"plan-1"  # not the garbage of plan-2


def test_nothing_sound_is_an_empty_state_not_a_crash(tmp_path: Path) -> None:
    for name in (CURRENT, PREVIOUS, TEMP):
        (tmp_path / name).write_bytes(b"\xff\xfe not a state file")
    assert StateStore(tmp_path).load() == (None, {})


def test_unserialisable_memory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not JSON-serialisable"):
        StateStore(tmp_path).save(b"plan", {"when": object()})
    assert not (tmp_path / CURRENT).exists()
