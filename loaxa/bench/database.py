"""``loaxa bench database``: upgrade, backup and restore times on a province-sized database.

A SQLite database at the baseline revision (the release of 2026-11-25) is filled with
generated rows — stations, programmes, a year of planned items and station events — then
``loaxa db upgrade``, ``loaxa backup`` and ``loaxa restore`` run as an operator runs them
(separate processes), and each is timed. The rows are typed by the models but carry no
meaning: the figures are about volume, not about what is in the rows.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from server.db import make_engine
from server.schema import BASELINE, load_metadata, upgrade

AREA = "04"


def _value(column: sa.Column[Any], i: int, stations: int) -> Any:
    kind = column.type
    if isinstance(kind, sa.TypeDecorator) and not isinstance(kind.impl_instance, sa.DateTime):
        kind = kind.impl_instance
    if column.name == "station_id":
        return f"st-{i % stations:05d}"
    if column.name == "area_code":
        return AREA
    if column.foreign_keys and column.nullable:
        return None
    if isinstance(kind, sa.Enum):
        first = kind.enums[0]
        return kind.enum_class(first) if kind.enum_class else first
    if isinstance(kind, sa.Integer):
        return i
    if isinstance(kind, sa.Float):
        return 0.0
    if isinstance(kind, sa.Boolean):
        return False
    if isinstance(kind, sa.TypeDecorator | sa.DateTime):
        return dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
    if isinstance(kind, sa.JSON):
        return {}
    if isinstance(kind, sa.String):
        return f"{column.name[:3]}{i}"[: kind.length or 40]
    return None


def fill(url: str, rows: dict[str, int]) -> None:
    """A database at the baseline revision holding ``rows[table]`` generated rows each."""
    engine = make_engine(url)
    upgrade(engine, BASELINE)
    models = load_metadata()
    present = sa.MetaData()
    present.reflect(engine)
    stations = rows.get("station", 1)
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO area (code, name, level) VALUES (:c, 'Cao Bằng', 'province')"),
            {"c": AREA},
        )
        for name, count in rows.items():
            have = set(present.tables[name].columns.keys())
            columns = [
                c for c in models.tables[name].columns
                if c.name in have and not (c.primary_key and isinstance(c.type, sa.Integer))
            ]  # fmt: skip
            table = sa.Table(name, sa.MetaData(), *(c._copy() for c in columns))
            for start in range(0, count, 20_000):
                batch = []
                for i in range(start, min(count, start + 20_000)):
                    row = {c.name: _value(c, i, stations) for c in columns}
                    if name == "station":
                        row["id"] = f"st-{i:05d}"
                    batch.append(row)
                connection.execute(table.insert(), batch)
    engine.dispose()


def _timed(env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "loaxa", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"loaxa {' '.join(args)} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def bench_database(stations: int, days: int) -> dict[str, Any]:
    """Fill, then time upgrade, backup and restore; the figures as one dict."""
    items = stations * 2 * days  # a morning and an evening bulletin a day
    rows = {"station": stations, "programme": 100, "planneditem": items, "stationevent": items}
    with tempfile.TemporaryDirectory(prefix="loaxa-bench-db-") as work:
        root = Path(work)
        url = f"sqlite:///{root / 'loaxa.db'}"
        fill(url, rows)
        env = {**os.environ, "LOAXA_DATABASE_URL": url, "LOAXA_DATA_DIR": str(root / "data")}
        upgrade_s = _timed(env, "db", "upgrade")
        archive = root / "backup.tar.gz"
        backup_s = _timed(env, "backup", "--out", str(archive))
        restored = {**os.environ, "LOAXA_DATA_DIR": str(root / "restored")}
        restored.pop("LOAXA_DATABASE_URL", None)
        restore_s = _timed(restored, "restore", str(archive))
        return {
            "stations": stations,
            "rows": sum(rows.values()),
            "database_mb": round((root / "loaxa.db").stat().st_size / 1e6, 1),
            "upgrade_s": round(upgrade_s, 1),
            "backup_s": round(backup_s, 1),
            "archive_mb": round(archive.stat().st_size / 1e6, 1),
            "restore_s": round(restore_s, 1),
        }
