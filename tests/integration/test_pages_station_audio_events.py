"""The station page shows what the station says about its audio (issue 11, §3.2–3.3).

A canned-library download that failed (``library_failed``) and a cached file found
changed (``audio_corrupt``) go through the server's real ingest and appear, in words
and flagged, in the station's log on the technician's page: the flood drill must not be
the first place anyone learns the library is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from loaxa_protocol import Event, EventKind, topics
from server.app import create_app
from server.auth.permissions import Role
from tests.integration.auth_helpers import authenticate, context_of
from tests.integration.test_pages_technician import MINE, STATIONS, _station
from tests.integration.test_server_api import RecordingBus, make_settings

STATION = "st-north"
SIREN = "5" * 64


@pytest.fixture
def page_client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path), bus=RecordingBus())) as client:
        with Session(context_of(client).engine) as session:
            for spec in STATIONS:
                session.add(_station(MINE, spec))
            session.commit()
        yield authenticate(client, Role.TECHNICIAN, MINE)


def reported(client: TestClient, kind: EventKind, reason: str, detail: str) -> None:
    event = Event(
        station_id=STATION,
        kind=kind,
        at=datetime.now(UTC) - timedelta(seconds=5),
        reason=reason,
        detail=detail,
    )
    payload = event.model_dump_json(exclude_none=True).encode()
    context_of(client).ingestor.handle([(topics.event(STATION), payload)])


def test_library_and_corrupt_audio_events_are_shown_flagged_on_the_station_page(
    page_client: TestClient,
) -> None:
    reported(page_client, EventKind.LIBRARY_FAILED, "disk_full", f"{SIREN}: disk full")
    reported(page_client, EventKind.AUDIO_CORRUPT, "hash_mismatch", f"{SIREN}: discarded")
    html = page_client.get(f"/stations/{STATION}").text
    for words in ("Tải thư viện âm thanh cảnh báo lỗi", "Âm thanh lưu trên trạm bị hỏng"):
        assert re.search(rf'<td[^>]*class="bad"[^>]*>{words}', html), words
    assert "disk_full" in html
