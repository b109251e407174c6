"""Schema migrations: a province upgrades without losing a row.

The legacy database is made by the released code itself (commit b3b9340, taken out of
this repository's history), driven through its own API, so the test adopts exactly what
a province running the 2026-11-25 release has on disk — on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text

from server.db import create_tables, make_engine
from server.schema import BASELINE, differences, state, upgrade
from tests.database import ADMIN_PG, postgres_available, postgres_database

REPO = Path(__file__).resolve().parents[2]
RELEASE = "b3b9340"  # the release of 2026-11-25, the last one without migrations
# The PostgreSQL run names its server; otherwise the local one CI and this machine start.

# Run inside the released tree: its own app, its own test helpers, real ffmpeg.
POPULATE = """
import sys
from pathlib import Path
from fastapi.testclient import TestClient
from server.app import create_app
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate
from tests.integration.test_server_api import RecordingBus, make_settings, register, upload

settings = make_settings(Path(sys.argv[1]), database_url=sys.argv[2], plan_refresh_min=60)
with TestClient(create_app(settings, bus=RecordingBus())) as client:
    authenticate(client)
    station = register(client)["station"]["id"]
    audio = upload(client, make_audio("wav", seconds=2.0), "ban-tin.wav")
    response = client.post("/api/v1/broadcasts", json={
        "audio_id": audio["id"], "start_at": "2030-01-02T05:00:00+07:00",
        "station_ids": [station], "priority": "normal", "title": "Bản tin sáng",
    })
    assert response.status_code == 201, response.text
    alert = client.post("/api/v1/alerts", json={
        "title": "Diễn tập bão", "canned": "typhoon", "area_codes": ["01273"], "drill": True,
    })
    assert alert.status_code == 201, alert.text
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind this project supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'loaxa.db'}"
        return
    if not postgres_available():
        pytest.skip("no PostgreSQL answers on 127.0.0.1:5432 (CI starts one)")
    with postgres_database(ADMIN_PG, "loaxa_schema") as url:
        yield url


@pytest.fixture(scope="module")
def released_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2026-11-25 release's source, from this repository's own history."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs this repository's git history (a clone, not an export)")
    tree = tmp_path_factory.mktemp("release")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", RELEASE], capture_output=True, check=False
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {RELEASE} is not in this clone (shallow?)")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _loaxa(*args: str, cwd: Path, pythonpath: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [sys.executable, "-m", "loaxa", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        names = inspect(connection).get_table_names()
        return {
            name: connection.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
            for name in sorted(names)
            if name != "alembic_version"
        }


def _triggers(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
        else:
            query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        return set(connection.execute(text(query)).scalars())


def test_every_migration_from_nothing_gives_exactly_the_models(database_url: str) -> None:
    """The CI check: a missing migration (a model changed, no revision) fails here."""
    engine = make_engine(database_url)
    before, after = upgrade(engine)
    assert (before, after) == (None, state(engine).head)
    assert differences(engine) == []
    assert _triggers(engine) >= {"auditentry_no_update"} or _triggers(engine) >= {
        "auditentry_append_only"
    }
    engine.dispose()


def test_a_first_start_makes_the_same_database_as_the_migrations(
    database_url: str, tmp_path: Path
) -> None:
    fresh = make_engine(database_url)
    create_tables(fresh)  # what a first start does: the models' tables, stamped at head
    migrated_url = f"sqlite:///{tmp_path / 'migrated.db'}"
    if database_url.startswith("sqlite"):
        migrated = make_engine(migrated_url)
        upgrade(migrated)
        assert _triggers(fresh) == _triggers(migrated)
        assert inspect(fresh).get_table_names() == inspect(migrated).get_table_names()
        migrated.dispose()
    assert state(fresh).up_to_date
    assert differences(fresh) == []
    assert _row_counts(fresh)["auditchainlock"] == 1
    fresh.dispose()


@pytest.mark.timeout(900)
def test_a_database_of_the_2026_11_25_release_is_adopted_keeping_every_row(
    database_url: str, released_tree: Path, tmp_path: Path
) -> None:
    made = subprocess.run(
        [sys.executable, "-c", POPULATE, str(tmp_path / "old"), database_url],
        cwd=released_tree,
        env={**os.environ, "PYTHONPATH": str(released_tree)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    engine = make_engine(database_url)
    rows_before = _row_counts(engine)
    assert rows_before["station"] == 1 and rows_before["alert_record"] == 1
    assert rows_before["auditentry"] >= 4 and rows_before["planner_jobs"] >= 1
    assert state(engine).legacy

    # The new server refuses to start on it and names the command.
    env_dir = tmp_path / "serve"
    env_dir.mkdir()
    refused = subprocess.run(
        [sys.executable, "-m", "loaxa", "serve", "--port", "0"],
        cwd=env_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "LOAXA_DATABASE_URL": database_url,
            "LOAXA_DATA_DIR": str(tmp_path / "old" / "server"),
        },
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "loaxa db upgrade" in refused.stderr

    done = _loaxa("db", "upgrade", "--database-url", database_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"upgraded {BASELINE}" in done.stdout or "already at" in done.stdout
    rows_after = _row_counts(engine)
    assert {name: rows_after[name] for name in rows_before} == rows_before
    # Tables added by later revisions start empty.
    assert all(rows_after[name] == 0 for name in rows_after.keys() - rows_before.keys())
    assert state(engine).up_to_date and differences(engine) == []
    current = _loaxa("db", "current", "--database-url", database_url, cwd=tmp_path)
    assert current.returncode == 0, current.stdout
    # The audit chain written by the old release still verifies under the new code.
    verified = _loaxa("audit", "verify", "--database-url", database_url, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # A second upgrade is a no-op.
    again = _loaxa("db", "upgrade", "--database-url", database_url, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    engine.dispose()


def test_a_database_with_foreign_tables_only_is_refused_with_the_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE station (id TEXT PRIMARY KEY)"))
    done = _loaxa("db", "upgrade", "--database-url", url, cwd=tmp_path)
    assert done.returncode == 2
    assert "no schema revision" in done.stderr and "account" in done.stderr
    with engine.connect() as connection:  # nothing was changed
        assert inspect(connection).get_table_names() == ["station"]
    engine.dispose()
