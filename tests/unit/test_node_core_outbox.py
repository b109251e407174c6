"""The outbox's rules and its record format, without a disk or a broker."""

from __future__ import annotations

import pytest

from node_firmware.core.outbox import (
    HealthBacklog,
    Outbox,
    OutboxEntry,
    decode,
    encode_ack,
    encode_add,
)

TOPIC = "loaxa/v1/station/st-1/event"


def test_events_wait_unsent_until_handed_and_leave_only_at_their_ack() -> None:
    box = Outbox()
    first, second = box.add(TOPIC, b'{"n":1}'), box.add(TOPIC, b'{"n":2}')
    assert box.take_unsent() == [first, second]
    assert box.take_unsent() == []  # handed once; paho re-sends what it holds
    box.handed(first, 7)
    box.handed(second, 8)
    assert box.acked(8) == second
    assert box.acked(99) is None  # a heartbeat's id: not ours
    assert box.pending() == [first]


def test_events_are_never_dropped_however_many() -> None:
    box = Outbox()
    for n in range(10_000):
        box.add(TOPIC, str(n).encode())
    assert len(box) == 10_000 and box.take_unsent()[-1].payload == b"9999"


def test_heartbeats_beyond_the_backlog_drop_oldest_first_and_are_counted() -> None:
    backlog = HealthBacklog(limit=3)
    for n in range(5):
        backlog.hold(str(n).encode())
    held, dropped = backlog.drain()
    assert held == [b"2", b"3", b"4"] and dropped == 2
    assert backlog.drain() == ([], 0)
    with pytest.raises(ValueError, match="at least one"):
        HealthBacklog(limit=0)


def test_a_log_gives_back_the_unacknowledged_entries_in_order() -> None:
    entries = [OutboxEntry(n, TOPIC, f'{{"n":{n}}}'.encode()) for n in (1, 2, 3)]
    log = b"".join(encode_add(e) for e in entries) + encode_ack(2)
    decoded = decode(log)
    assert decoded.pending == [entries[0], entries[2]]
    assert decoded.next_seq == 4 and decoded.skipped == 0
    restored = Outbox(decoded.pending, decoded.next_seq)
    assert restored.take_unsent() == [entries[0], entries[2]]  # sent again after the reboot
    assert restored.add(TOPIC, b"{}").seq == 4


def test_a_torn_last_record_and_a_corrupt_one_are_skipped_not_fatal() -> None:
    good = encode_add(OutboxEntry(1, TOPIC, b'{"kind":"played"}'))
    corrupt = bytearray(encode_add(OutboxEntry(2, TOPIC, b'{"kind":"playing"}')))
    corrupt[-5] ^= 0x01  # bit rot in the payload
    torn = encode_add(OutboxEntry(3, TOPIC, b'{"kind":"failed"}'))[:-9]  # power cut mid-write
    decoded = decode(good + bytes(corrupt) + torn)
    assert [e.seq for e in decoded.pending] == [1]
    assert decoded.skipped == 2
    assert decode(b"").pending == [] and decode(b"\n\xff\xfe garbage\n").skipped == 2


def test_a_topic_with_white_space_cannot_be_logged() -> None:
    with pytest.raises(ValueError, match="white space"):
        encode_add(OutboxEntry(1, "a b", b"{}"))
