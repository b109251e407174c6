"""A bounded queue between a producer that must never block and one consumer thread.

Used for the fleet ingest (paho's network thread → the ingest worker), the health
writer and the alarm notifier. Memory holds at most ``limit`` items; what happens to
one more depends on its *kind*:

- a **sheddable** kind (health reports, alarm notifications) sheds the oldest queued
  sheddable item, counted per kind: the newest heartbeat says more than the oldest;
- any other **kept** kind (station events, status, replies, down-topic copies) is never
  dropped: it takes the place of the oldest sheddable item, and when memory holds none,
  it is appended to a :class:`SpillFile` on disk and read back, in arrival order, once
  the consumer has caught up. The producer never waits, so paho keeps answering the
  broker (and keeps sending alerts) however slow the database is;
- **control** items (kind ``None``: jobs, the stop marker) always enter memory; they are
  few and cannot be written to disk.

Every item carries an arrival number; :meth:`Backlog.get` returns the oldest of the
heads of the three lanes (kept, sheddable, spilled), so the consumer sees one FIFO.
Without a spill file (or when the disk refuses a write) a kept item goes over the
bound rather than being lost, and the refusal is logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_HEADER = struct.Struct(">QI")  # arrival number, body length


class SpillFile(Generic[T]):
    """Kept items that found memory full, on disk in arrival order (one consumer).

    Records left by a process that died are read back first at the next start (the
    broker had already been told they were received). The file is emptied whenever the
    consumer has read everything, so it only grows while the consumer is behind.
    """

    def __init__(
        self, path: Path, encode: Callable[[T], bytes], decode: Callable[[bytes], T]
    ) -> None:
        self.path = path
        self._encode = encode
        self._decode = decode
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = open(path, "ab")  # noqa: SIM115 - lives as long as the queue
        self._reader = open(path, "rb")  # noqa: SIM115
        self._head: tuple[int, T] | None = None
        self.count = 0
        self.last_number = -1
        self._recover()

    def _recover(self) -> None:
        """Count the records a previous run left; cut a torn or unreadable tail."""
        good = 0
        while (record := self._read_intact()) is not None:
            self.count += 1
            self.last_number = max(self.last_number, record[0])
            good = self._reader.tell()
        if good != os.fstat(self._writer.fileno()).st_size:
            log.warning("cutting a torn record at the end of %s", self.path)
            self._writer.truncate(good)
        self._reader.seek(0)
        if self.count:
            log.warning("%s station messages left in %s are read back first", self.count, self.path)

    def _read_intact(self) -> tuple[int, T] | None:
        try:
            return self._read()
        except ValueError:  # UnicodeDecodeError included: bytes a power cut garbled
            return None

    def _read(self) -> tuple[int, T] | None:
        header = self._reader.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        number, length = _HEADER.unpack(header)
        body = self._reader.read(length)
        if len(body) < length:
            return None
        return number, self._decode(body)

    def append(self, number: int, item: T) -> None:
        """Write one item; raises OSError when the disk refuses."""
        body = self._encode(item)
        self._writer.write(_HEADER.pack(number, len(body)) + body)
        self._writer.flush()  # the reader's handle must see it
        self.count += 1

    def head_number(self) -> int | None:
        if not self.count:
            return None
        if self._head is None:
            self._head = self._read()
            assert self._head is not None, f"{self.path} is shorter than its count"
        return self._head[0]

    def pop(self) -> T:
        self.head_number()
        assert self._head is not None
        item, self._head = self._head[1], None
        self.count -= 1
        if not self.count:  # caught up: start the file afresh
            self._writer.truncate(0)
            self._reader.seek(0)
        return item

    def close(self) -> None:
        self._writer.close()
        self._reader.close()


class Backlog(Generic[T]):
    """The bounded FIFO described in the module docstring; thread-safe.

    ``kind_of`` names an item's kind (a counter name) or returns None for a control
    item; ``sheddable`` lists the kinds that may be dropped.
    """

    def __init__(
        self,
        limit: int,
        kind_of: Callable[[T], str | None],
        sheddable: Collection[str],
        spill: SpillFile[T] | None = None,
        what: str = "queue",
    ) -> None:
        self.limit = limit
        self._kind_of = kind_of
        self._sheddable = frozenset(sheddable)
        self._spill = spill
        self._what = what
        self._kept: deque[tuple[int, T]] = deque()
        self._shed_lane: deque[tuple[int, T]] = deque()
        self._numbers = itertools.count(spill.last_number + 1 if spill is not None else 0)
        self._cond = threading.Condition()
        self._warned_at = -float("inf")
        self.peak = 0
        self.spilled_total = 0
        self.dropped: dict[str, int] = {}
        """sheddable items dropped, per kind"""

    # ------------------------------------------------------------- producer

    def put(self, item: T) -> None:
        """Queue an item; never blocks (see the module docstring for a full queue)."""
        kind = self._kind_of(item)
        with self._cond:
            entry = (next(self._numbers), item)
            full = len(self._kept) + len(self._shed_lane) >= self.limit
            if kind is None or not full:
                self._lane(kind).append(entry)
            elif kind in self._sheddable or self._shed_lane:
                self._shed_oldest(kind, entry)
            elif not self._spill_out(entry):
                self._kept.append(entry)
            self.peak = max(self.peak, len(self._kept) + len(self._shed_lane))
            self._cond.notify()

    def _lane(self, kind: str | None) -> deque[tuple[int, T]]:
        return self._shed_lane if kind in self._sheddable else self._kept

    def _shed_oldest(self, kind: str, entry: tuple[int, T]) -> None:
        """Make room by dropping the oldest sheddable item (maybe ``entry`` itself)."""
        if self._shed_lane:
            _number, oldest = self._shed_lane.popleft()
            dropped = self._kind_of(oldest) or "?"
            self._lane(kind).append(entry)
        else:
            dropped = kind
        self.dropped[dropped] = self.dropped.get(dropped, 0) + 1
        now = time.monotonic()
        if now - self._warned_at >= 10:
            self._warned_at = now
            log.warning("%s full (%s): dropping the oldest %s", self._what, self.limit, dropped)

    def _spill_out(self, entry: tuple[int, T]) -> bool:
        if self._spill is None:
            return False
        try:
            self._spill.append(*entry)
        except OSError:
            log.exception(
                "%s: cannot spill to %s; keeping it in memory", self._what, self._spill.path
            )
            return False
        self.spilled_total += 1
        return True

    # ------------------------------------------------------------- consumer

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """The oldest item; raises ``queue.Empty`` like ``queue.Queue.get``."""
        with self._cond:
            if block and not self._cond.wait_for(self._has_items, timeout):
                raise queue.Empty
            if not self._has_items():
                raise queue.Empty
            heads: list[tuple[int, Callable[[], T]]] = []
            if self._kept:
                heads.append((self._kept[0][0], lambda: self._kept.popleft()[1]))
            if self._shed_lane:
                heads.append((self._shed_lane[0][0], lambda: self._shed_lane.popleft()[1]))
            if self._spill is not None and (number := self._spill.head_number()) is not None:
                heads.append((number, self._spill.pop))
            return min(heads, key=lambda head: head[0])[1]()

    def get_nowait(self) -> T:
        return self.get(block=False)

    def _has_items(self) -> bool:
        return bool(self._kept or self._shed_lane or (self._spill and self._spill.count))

    # ------------------------------------------------------------- counters

    def qsize(self) -> int:
        """Items waiting, in memory and on disk."""
        with self._cond:
            return len(self._kept) + len(self._shed_lane) + self.spilled_now

    @property
    def spilled_now(self) -> int:
        return self._spill.count if self._spill is not None else 0

    def as_dict(self) -> dict[str, Any]:
        """``queued`` (memory and disk), ``max``, ``peak``, spill and drop counters."""
        with self._cond:
            in_memory = len(self._kept) + len(self._shed_lane)
            return {
                "queued": in_memory + self.spilled_now,
                "max": self.limit,
                "peak": self.peak,
                "spilled_now": self.spilled_now,
                "spilled_total": self.spilled_total,
                "dropped": dict(self.dropped),
            }

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
