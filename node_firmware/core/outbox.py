"""What the station has said but the broker has not yet acknowledged.

Theory of operation
-------------------
Events (``playing``, ``played``, ``failed``, alert acknowledgements…) are the as-run
record a province is judged on; a station that reboots while offline must still
deliver them. Each event therefore enters the :class:`Outbox` and an on-disk log
(``drivers/outbox_file.py``) *before* it is handed to MQTT, and leaves both only when
the broker's PUBACK for it arrives (QoS 1). After a reboot the log is read back and
every unacknowledged event is sent again, in the order it was produced. Delivery is
at least once: a power cut between the broker's PUBACK and the note of it on disk
sends that event twice.

An entry is *unsent* (waiting for a connection), then *handed over* (paho has it,
with its message id; paho itself re-sends it after a reconnect), then gone (acked).
Events are never dropped, whatever their number.

Heartbeats are different: a fresh one says more than a stale one. While the broker
is away the last :data:`HEALTH_BACKLOG` are held in memory (:class:`HealthBacklog`);
older ones are dropped oldest-first and counted, and the count travels in the next
heartbeat sent (``health_dropped``).

The on-disk record format is a pure function here (``encode_*`` / :func:`decode`), so
a torn or corrupt log can be tested without a disk: one line per record::

    A <seq> <crc32 hex> <topic> <base64 payload>\\n     an event entered the outbox
    K <seq> <crc32 hex>\\n                              the broker acknowledged it

The CRC covers the rest of the line. A line without its newline (the write a power
cut tore) or with a wrong CRC is skipped and counted, never fatal.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass

HEALTH_BACKLOG = 60
"""Heartbeats held while offline (an hour at the default 60 s interval)."""


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    topic: str
    payload: bytes


class Outbox:
    """Events in production order, from entry until the broker acknowledges them."""

    def __init__(self, pending: list[OutboxEntry] | None = None, next_seq: int = 1) -> None:
        self._entries: OrderedDict[int, OutboxEntry] = OrderedDict(
            (e.seq, e) for e in pending or []
        )
        self._unsent: deque[int] = deque(self._entries)
        self._by_mid: dict[int, int] = {}
        self._next_seq = max([next_seq, *(seq + 1 for seq in self._entries)])

    def add(self, topic: str, payload: bytes) -> OutboxEntry:
        entry = OutboxEntry(self._next_seq, topic, payload)
        self._next_seq += 1
        self._entries[entry.seq] = entry
        self._unsent.append(entry.seq)
        return entry

    def take_unsent(self) -> list[OutboxEntry]:
        """Entries never handed to the transport, oldest first; the caller hands them all."""
        taken = [self._entries[seq] for seq in self._unsent if seq in self._entries]
        self._unsent.clear()
        return taken

    def handed(self, entry: OutboxEntry, mid: int) -> None:
        """The transport took ``entry`` as message ``mid``."""
        self._by_mid[mid] = entry.seq

    def acked(self, mid: int) -> OutboxEntry | None:
        """The broker acknowledged message ``mid``; the entry, or None if not ours."""
        seq = self._by_mid.pop(mid, None)
        return None if seq is None else self._entries.pop(seq, None)

    def pending(self) -> list[OutboxEntry]:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


class HealthBacklog:
    """Heartbeats held while the broker is away; the oldest go first, counted."""

    def __init__(self, limit: int = HEALTH_BACKLOG) -> None:
        if limit < 1:
            raise ValueError(f"a health backlog holds at least one heartbeat, not {limit}")
        self._held: deque[bytes] = deque()
        self._limit = limit
        self.dropped = 0

    def hold(self, payload: bytes) -> None:
        if len(self._held) == self._limit:
            self._held.popleft()
            self.dropped += 1
        self._held.append(payload)

    def drain(self) -> tuple[list[bytes], int]:
        """Everything held, oldest first, and how many were dropped; both reset."""
        held, dropped = list(self._held), self.dropped
        self._held.clear()
        self.dropped = 0
        return held, dropped

    def __len__(self) -> int:
        return len(self._held)


# ---------------------------------------------------------------- record format


def encode_add(entry: OutboxEntry) -> bytes:
    if any(c.isspace() for c in entry.topic):
        raise ValueError(f"an MQTT topic with white space cannot be logged: {entry.topic!r}")
    body = f"{entry.seq} {entry.topic} {base64.b64encode(entry.payload).decode('ascii')}"
    return _line("A", body)


def encode_ack(seq: int) -> bytes:
    return _line("K", str(seq))


def _line(tag: str, body: str) -> bytes:
    crc = zlib.crc32(body.encode())
    head, _, rest = body.partition(" ")
    return f"{tag} {head} {crc:08x}{' ' + rest if rest else ''}\n".encode()


@dataclass(frozen=True)
class Decoded:
    """What a log says: the unacknowledged entries in order, and what had to be skipped."""

    pending: list[OutboxEntry]
    next_seq: int
    skipped: int
    """torn or corrupt lines (a power cut's last write, bit rot)"""
    records: int


def decode(data: bytes) -> Decoded:
    added: OrderedDict[int, OutboxEntry] = OrderedDict()
    acked: set[int] = set()
    skipped = records = 0
    top = 0
    lines = data.split(b"\n")
    complete, torn = lines[:-1], lines[-1]
    if torn:
        skipped += 1  # the last write did not finish: never acknowledged, never sent
    for line in complete:
        record = _parse(line)
        if record is None:
            skipped += 1
            continue
        records += 1
        top = max(top, record.seq)
        if isinstance(record, OutboxEntry):
            added[record.seq] = record
        else:
            acked.add(record.seq)
    pending = [e for seq, e in added.items() if seq not in acked]
    return Decoded(pending, top + 1, skipped, records)


@dataclass(frozen=True)
class _Ack:
    seq: int


def _parse(line: bytes) -> OutboxEntry | _Ack | None:
    try:
        text = line.decode("ascii")
        tag, seq_text, crc_text, *rest = text.split(" ")
        seq = int(seq_text)
        body = " ".join([seq_text, *rest])
        if int(crc_text, 16) != zlib.crc32(body.encode()) or seq < 1:
            return None
        if tag == "K" and not rest:
            return _Ack(seq)
        if tag == "A" and len(rest) == 2:
            return OutboxEntry(seq, rest[0], base64.b64decode(rest[1], validate=True))
    except (UnicodeDecodeError, ValueError, binascii.Error):
        return None
    return None
