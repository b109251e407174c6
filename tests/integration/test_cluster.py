"""What replicas share through PostgreSQL, part by part (``server/cluster``).

Two engines stand for two replicas. The sequence: the clock is frozen so that only the
sequence rule keeps numbers apart (two file sequences on one shared data dir, the old
way, hand out the same numbers here: the test checks that too, so it can fail). The
leader lock and the alert change feed: one replica's act is seen by the other.
``test_replicas.py`` runs the same with two real ``loaxa serve`` processes.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from server.cluster.feed import ChangeFeed
from server.cluster.leader import Leadership
from server.cluster.sequence import DatabaseSequence
from server.db import create_tables, make_engine
from server.keys import Sequence
from tests.database import ADMIN_PG, postgres_available, postgres_database

NOW_MS = 1_800_000_000_000
DRAWS = 300


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


needs_postgres = pytest.mark.skipif(not postgres_available(), reason="needs a PostgreSQL server")


@pytest.fixture
def two_engines() -> Iterator[list[Engine]]:
    with postgres_database(ADMIN_PG, "loaxa_cluster") as url:
        engines = [make_engine(url) for _ in range(2)]
        create_tables(engines[0])
        try:
            yield engines
        finally:
            for engine in engines:
                engine.dispose()


def _within(check: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@needs_postgres
def test_one_leader_and_the_other_takes_over_when_it_stops(two_engines: list[Engine]) -> None:
    changes: list[str] = []
    replicas = [
        Leadership(
            engine,
            on_gain=lambda n=n: changes.append(f"{n} leads"),
            on_lose=lambda n=n: changes.append(f"{n} follows"),
            check_s=0.1,
        )
        for n, engine in enumerate(two_engines)
    ]
    for replica in replicas:
        replica.start()
    try:
        time.sleep(0.5)
        assert [r.leading for r in replicas] == [True, False]
        replicas[0].stop()
        assert _within(lambda: replicas[1].leading, 2.0)
        assert changes == ["0 leads", "0 follows", "1 leads"]
    finally:
        for replica in replicas:
            replica.stop()


@needs_postgres
def test_an_alert_change_reaches_the_other_replica_at_commit(two_engines: list[Engine]) -> None:
    writer, reader = (ChangeFeed(engine) for engine in two_engines)
    reader.start()
    try:
        with Session(two_engines[0]) as session:
            writer.bump(7, session)
            time.sleep(0.3)
            assert reader.version(7) == 0  # not before the rows it announces are visible
            session.commit()
        assert _within(lambda: reader.version(7) == 1, 2.0)
        writer.bump(7)  # outside a transaction: at once
        assert _within(lambda: reader.version(7) == 2, 2.0)
        assert writer.version(7) == 2 and reader.version(8) == 0
    finally:
        reader.stop()


@needs_postgres
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
