"""Backups while the server runs, restored into an empty data directory.

A technician checks what matters after a restore: the same accounts, stations,
programmes and alerts; the same audio bytes; the same keys (stations keep trusting the
server's plans); an audit chain that still verifies.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.keys import ServerKeys
from server.settings import Settings
from tests.audio_samples import make_audio
from tests.database import ENV, postgres_database
from tests.integration.auth_helpers import authenticate, context_of
from tests.integration.test_server_api import RecordingBus, register, upload

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database for the restored server, of the kind this run uses."""
    base = os.environ.get(ENV)
    if not base:
        yield f"sqlite:///{tmp_path / 'restored' / 'loaxa.db'}"
        return
    with postgres_database(base, "loaxa_restore") as url:
        yield url


def _loaxa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loaxa", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True, text=True, timeout=300, check=False,
    )


def _settings_env(settings: Settings) -> dict[str, str]:
    return {"LOAXA_DATA_DIR": str(settings.data_dir), "LOAXA_DATABASE_URL": settings.db_url}


def _what_a_technician_sees(client: TestClient, audio_ids: list[int]) -> dict[str, object]:
    context = context_of(client)
    audio = {}
    for audio_id in audio_ids:
        meta = client.get(f"/api/v1/audio/{audio_id}").json()
        url = context.keys.urls.sign_url(audio_id, timedelta(minutes=5), context.clock())
        body = client.get(url).content
        audio[audio_id] = (meta["sha256"], hashlib.sha256(body).hexdigest())
    return {
        "stations": sorted(
            (s["id"], s["name"], s["area_code"]) for s in client.get("/api/v1/stations").json()
        ),
        "audio": audio,
        "broadcasts": sorted(b["id"] for b in client.get("/api/v1/broadcasts").json()),
        "alerts": sorted(a["id"] for a in client.get("/api/v1/alerts").json()),
    }


@pytest.mark.timeout(600)
def test_a_backup_taken_while_serving_restores_the_same_server(
    tmp_path: Path, restore_database_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "server", public_url="http://testserver")
    archive = tmp_path / "backups" / "loaxa-2026-12-07.tar.gz"
    with TestClient(create_app(settings, bus=RecordingBus())) as client:
        authenticate(client)
        station = register(client)["station"]["id"]
        audio = upload(client, make_audio("wav", seconds=2.0), "ban-tin.wav")
        made = client.post(
            "/api/v1/broadcasts",
            json={"audio_id": audio["id"], "start_at": "2030-01-02T05:00:00+07:00",
                  "station_ids": [station], "priority": "normal", "title": "Bản tin sáng"},
        )
        assert made.status_code == 201, made.text
        drill = client.post(
            "/api/v1/alerts",
            json={"title": "Diễn tập lũ", "canned": "flood", "area_codes": ["01273"],
                  "drill": True},
        )
        assert drill.status_code == 201, drill.text
        before = _what_a_technician_sees(client, [audio["id"]])
        public_key = ServerKeys.load(settings).signing_key.public_b64

        # The server is running (its scheduler and health writer too) while this runs.
        done = _loaxa(_settings_env(settings), "backup", "--out", str(archive))
        assert done.returncode == 0, done.stderr
        assert "rows in" in done.stdout
    sha256, served = before["audio"][audio["id"]]  # type: ignore[index]
    assert sha256 == served and before["stations"] and before["alerts"]

    restored = Settings(
        data_dir=tmp_path / "restored", public_url="http://testserver",
        database_url=restore_database_url,
    )
    back = _loaxa(_settings_env(restored), "restore", str(archive))
    assert back.returncode == 0, back.stderr
    assert ServerKeys.load(restored).signing_key.public_b64 == public_key
    verified = _loaxa(_settings_env(restored), "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with TestClient(create_app(restored, bus=RecordingBus())) as client:
        authenticate(client)
        assert _what_a_technician_sees(client, [audio["id"]]) == before

    # Restoring twice would overwrite a living server: refused, nothing touched.
    again = _loaxa(_settings_env(restored), "restore", str(archive))
    assert again.returncode == 2 and "not empty" in again.stderr


def test_a_damaged_backup_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        member = tmp_path / "manifest.json"
        member.write_text('{"format": "loaxa-backup/1", "sha256": {"files/x": "00"}}')
        handle.add(member, arcname="manifest.json")
    target = tmp_path / "empty"
    done = _loaxa({"LOAXA_DATA_DIR": str(target)}, "restore", str(archive))
    assert done.returncode == 2
    assert "files/x is missing" in done.stderr
    assert not any(target.rglob("*.db"))
