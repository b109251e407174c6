"""When every conversion slot is taken, an upload is told "busy, retry in N s" (503 with
Retry-After), in the clerk's language on the page, and nothing is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from server.app import create_app
from server.auth.permissions import Role
from server.models import AudioAsset
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate, context_of
from tests.integration.test_server_api import RecordingBus, make_settings

COMMUNE = "01273"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, media_jobs=1, media_queue=0)
    with TestClient(create_app(settings, bus=RecordingBus())) as client:
        yield client


def asset_count(client: TestClient) -> int:
    with Session(context_of(client).engine) as session:
        return session.exec(select(func.count()).select_from(AudioAsset)).one()


def test_a_full_server_says_busy_with_retry_after_and_stores_nothing(app: TestClient) -> None:
    api = authenticate(app)
    stored = api.post("/api/v1/audio", files={"file": ("cũ.wav", make_audio("wav", 1.0))})
    assert stored.status_code == 201
    before = asset_count(api)
    gate = context_of(api).media

    with gate.slot():  # another upload is converting and nothing may wait
        busy = api.post("/api/v1/audio", files={"file": ("tin.mp3", make_audio("mp3", 2.0))})
        # the same file again needs no conversion: answered from the store even now
        repeat = api.post("/api/v1/audio", files={"file": ("cũ.wav", make_audio("wav", 1.0))})

    assert busy.status_code == 503
    retry_after = int(busy.headers["retry-after"])
    assert retry_after >= 1
    assert busy.json()["detail"] == (
        f"file: the server is busy converting other audio; retry in {retry_after} s"
    )
    assert repeat.status_code == 200 and repeat.json()["id"] == stored.json()["id"]
    assert asset_count(api) == before
    assert list((context_of(api).settings.data_dir / "scratch").iterdir()) == []

    again = api.post("/api/v1/audio", files={"file": ("tin.mp3", make_audio("mp3", 2.0))})
    assert again.status_code == 201, again.text  # once the slot is free, the retry works
    media = api.get("/api/v1/system").json()["media"]  # what an administrator watches
    assert media == {"jobs": 1, "running": 0, "queue": 0, "waiting": 0, "refused": 1}


def test_the_page_says_busy_in_vietnamese_under_the_file_field(app: TestClient) -> None:
    operator = authenticate(app, Role.COMMUNE_OPERATOR, COMMUNE)
    with context_of(operator).media.slot():
        busy = operator.post("/audio/upload", files={"file": ("tin.wav", make_audio("wav", 1.0))})

    assert busy.status_code == 503
    seconds = busy.headers["retry-after"]
    assert busy.json() == {
        "errors": {
            "file": "Máy chủ đang bận chuyển đổi các bản ghi khác. Chưa có gì được lưu; "
            f"hãy thử lại sau {seconds} giây."
        }
    }
