"""The outbox log on a real disk: fsynced appends, torn tails, rewrites."""

from __future__ import annotations

from pathlib import Path

from node_firmware.drivers.outbox_file import COMPACT_AFTER, OutboxFile

TOPIC = "loaxa/v1/station/st-1/event"


def test_what_was_not_acknowledged_comes_back_after_a_restart(tmp_path: Path) -> None:
    log = OutboxFile(tmp_path)
    box = log.load()
    entries = [box.add(TOPIC, f'{{"n":{n}}}'.encode()) for n in range(3)]
    for mid, entry in enumerate(entries):
        log.added(entry)
        box.handed(entry, mid)
    acked = box.acked(1)
    assert acked is not None
    log.acked(acked, box)

    after = OutboxFile(tmp_path).load()
    assert [e.payload for e in after.take_unsent()] == [b'{"n":0}', b'{"n":2}']


def test_a_power_cut_mid_append_loses_only_the_torn_record(tmp_path: Path) -> None:
    log = OutboxFile(tmp_path)
    box = log.load()
    log.added(box.add(TOPIC, b'{"kind":"played"}'))
    with log.path.open("ab") as f:  # the write the power cut tore
        f.write(b"A 2 0000")
    again = OutboxFile(tmp_path)
    box = again.load()
    assert [e.payload for e in box.pending()] == [b'{"kind":"played"}']
    # the log was rewritten: a new record is not glued to the torn one
    again.added(box.add(TOPIC, b'{"kind":"failed"}'))
    assert len(OutboxFile(tmp_path).load().pending()) == 2


def test_the_log_is_rewritten_to_what_is_pending_once_mostly_acknowledged(
    tmp_path: Path,
) -> None:
    log = OutboxFile(tmp_path)
    box = log.load()
    for mid in range(COMPACT_AFTER):
        entry = box.add(TOPIC, b'{"kind":"playing"}')
        log.added(entry)
        box.handed(entry, mid)
        done = box.acked(mid)
        assert done is not None
        log.acked(done, box)
    assert log.path.stat().st_size < 200  # not 2 × COMPACT_AFTER records
    assert OutboxFile(tmp_path).load().pending() == []
