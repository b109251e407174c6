"""The bounded queue: heartbeats shed oldest-first, events never dropped (they spill to a
real file), one FIFO order for the consumer whatever lane an item took."""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path

import pytest

from server.fleet.backlog import Backlog, SpillFile
from server.fleet.link import Message, decode_message, encode_message, kind_of

STOP = object()


def health(n: int) -> Message:
    return (f"loaxa/v1/station/s{n}/health", f'{{"n":{n}}}'.encode())


def event(n: int) -> Message:
    return (f"loaxa/v1/station/s{n}/event", f'{{"n":{n}, "kind":"played"}}'.encode())


def make(tmp_path: Path, limit: int) -> Backlog[object]:
    spill = SpillFile(tmp_path / "spool" / "ingest.spill", encode_message, decode_message)
    return Backlog(limit, kind_of, {"health"}, spill, "test queue")


def drain(backlog: Backlog[object]) -> list[object]:
    out = []
    while True:
        try:
            out.append(backlog.get_nowait())
        except queue.Empty:
            return out


def test_message_kinds_follow_the_topic() -> None:
    assert kind_of(health(1)) == "health"
    assert kind_of(event(1)) == "event"
    assert kind_of(("loaxa/v1/station/s1/plan", b"")) == "down"
    assert kind_of(("loaxa/v1/area/04/alert", b"")) == "down"
    assert kind_of(("elsewhere", b"")) == "other"
    assert kind_of(STOP) is None


def test_a_full_queue_sheds_the_oldest_heartbeats_and_counts_them(tmp_path: Path) -> None:
    backlog = make(tmp_path, limit=3)
    for n in range(1, 6):
        backlog.put(health(n))
    assert backlog.as_dict()["dropped"] == {"health": 2}
    assert drain(backlog) == [health(3), health(4), health(5)]


def test_an_event_takes_the_place_of_the_oldest_heartbeat(tmp_path: Path) -> None:
    backlog = make(tmp_path, limit=3)
    for item in (health(1), event(2), health(3), event(4)):
        backlog.put(item)
    assert drain(backlog) == [event(2), health(3), event(4)]
    assert backlog.as_dict()["dropped"] == {"health": 1}


def test_events_beyond_the_bound_spill_to_disk_and_come_back_in_order(tmp_path: Path) -> None:
    backlog = make(tmp_path, limit=2)
    backlog.put(event(1))
    backlog.put(event(2))
    backlog.put(event(3))  # memory holds only events: to disk
    backlog.put(STOP)  # a control item always enters memory
    backlog.put(health(5))  # no older heartbeat to shed: this one goes
    backlog.put(event(6))
    stats = backlog.as_dict()
    assert (stats["queued"], stats["spilled_now"], stats["dropped"]) == (5, 2, {"health": 1})
    assert (tmp_path / "spool" / "ingest.spill").stat().st_size > 0

    assert drain(backlog) == [event(1), event(2), event(3), STOP, event(6)]
    assert (tmp_path / "spool" / "ingest.spill").stat().st_size == 0  # emptied once read
    assert backlog.as_dict()["spilled_total"] == 2
    assert backlog.as_dict()["peak"] == 3


def end_with_two_events_spilled(tmp_path: Path) -> Path:
    """A process that ends with events 2 and 3 on disk (event 1 was in memory)."""
    first = make(tmp_path, limit=1)
    for n in range(1, 4):
        first.put(event(n))
    first.close()
    return tmp_path / "spool" / "ingest.spill"


def test_spilled_events_outlive_the_process_and_come_first_at_the_next_start(
    tmp_path: Path,
) -> None:
    end_with_two_events_spilled(tmp_path)
    second = make(tmp_path, limit=1)
    second.put(event(9))
    assert drain(second) == [event(2), event(3), event(9)]


def test_a_record_torn_by_a_power_cut_is_cut_and_the_rest_kept(tmp_path: Path) -> None:
    path = end_with_two_events_spilled(tmp_path)
    path.write_bytes(path.read_bytes()[:-5])
    assert drain(make(tmp_path, limit=1)) == [event(2)]


def test_garbled_bytes_in_the_spill_do_not_stop_the_server_from_starting(
    tmp_path: Path,
) -> None:
    path = end_with_two_events_spilled(tmp_path)
    raw = path.read_bytes()
    second = len(raw) // 2  # two records of the same size
    path.write_bytes(raw[: second + 14] + b"\xff\xfe" + raw[second + 16 :])  # in its topic
    assert drain(make(tmp_path, limit=1)) == [event(2)]


def test_without_a_spill_file_an_event_goes_over_the_bound_rather_than_be_lost() -> None:
    backlog: Backlog[object] = Backlog(1, kind_of, {"health"})
    backlog.put(event(1))
    backlog.put(event(2))
    assert backlog.qsize() == 2
    assert drain(backlog) == [event(1), event(2)]


@pytest.mark.parametrize("block", [True, False])
def test_an_empty_queue_raises_empty_like_queue_queue(tmp_path: Path, block: bool) -> None:
    backlog = make(tmp_path, limit=2)
    get: Callable[[], object] = (lambda: backlog.get(timeout=0.05)) if block else backlog.get_nowait
    with pytest.raises(queue.Empty):
        get()
