"""The signing sequence drawn from PostgreSQL by several processes never repeats.

Two engines stand for two replicas; the clock is frozen so that only the sequence rule
keeps numbers apart (two file sequences on one shared data dir, the old way, hand out
the same numbers here: the test checks that too, so it can fail).
"""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import pytest

from server.cluster.sequence import DatabaseSequence
from server.db import create_tables, make_engine
from server.keys import Sequence
from tests.database import ENV, postgres_database

ADMIN_PG = os.environ.get(ENV, "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
NOW_MS = 1_800_000_000_000
DRAWS = 300


def _postgres_available() -> bool:
    try:
        engine = make_engine(ADMIN_PG)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def _draw_together(sources: list[object]) -> list[list[int]]:
    """Each source drawn from by two threads at once; each thread's numbers in order."""
    drawn: list[list[int]] = []
    threads = []
    for source in sources:
        for _ in range(2):
            numbers: list[int] = []
            drawn.append(numbers)

            def run(source: object = source, numbers: list[int] = numbers) -> None:
                for _ in range(DRAWS):
                    numbers.append(source.next(NOW_MS))  # type: ignore[attr-defined]

            threads.append(threading.Thread(target=run))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return drawn


@pytest.mark.skipif(not _postgres_available(), reason="needs a PostgreSQL server")
def test_two_replicas_never_draw_the_same_number() -> None:
    with postgres_database(ADMIN_PG, "loaxa_sequence") as url:
        engines = [make_engine(url) for _ in range(2)]
        try:
            create_tables(engines[0])
            sources = [DatabaseSequence(engine, floor=NOW_MS + 5) for engine in engines]
            drawn = _draw_together(sources)
        finally:
            for engine in engines:
                engine.dispose()
    every = [n for numbers in drawn for n in numbers]
    assert len(set(every)) == len(every) == 4 * DRAWS
    assert min(every) == NOW_MS + 6  # above the floor (an upgraded server's file ceiling)
    assert all(a < b for numbers in drawn for a, b in itertools.pairwise(numbers))


def test_file_sequences_of_two_processes_collide(tmp_path: Path) -> None:
    """Why the database holds the sequence: the file cannot keep two processes apart."""
    drawn = _draw_together([Sequence(tmp_path / "sequence.json") for _ in range(2)])
    every = [n for numbers in drawn for n in numbers]
    assert len(set(every)) < len(every)
