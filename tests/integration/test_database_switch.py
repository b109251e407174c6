"""The PostgreSQL run really runs on PostgreSQL (a switch that silently did nothing would
let the whole 'suite on PostgreSQL' pass on SQLite)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.database import ENV
from tests.integration.test_server_api import RecordingBus


def test_a_test_server_uses_the_database_the_run_asks_for(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "server", public_url="http://testserver")
    with TestClient(create_app(settings, bus=RecordingBus())) as client:
        dialect = client.app.state.context.engine.dialect.name  # type: ignore[attr-defined]
    if os.environ.get(ENV):
        assert dialect == "postgresql"
    else:
        assert dialect == "sqlite"
        assert (tmp_path / "server" / "loaxa.db").is_file()
