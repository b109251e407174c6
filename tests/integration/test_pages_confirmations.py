"""What a clerk notices: a change that took says so, the loudness figures say what they
are measured against, and the browser tab has Loaxa's icon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate
from tests.integration.test_server_api import RecordingBus, make_settings

COMMUNE = "01273"


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path), bus=RecordingBus())) as client:
        yield authenticate(client)


def test_saving_a_user_and_a_role_is_confirmed_on_the_page(admin: TestClient) -> None:
    form = {
        "username": "thu-ky-xa", "display_name": "Thư ký xã", "password": "mat-khau-dai-1",
        "role": "viewer", "area_code": COMMUNE,
    }  # fmt: skip
    saved = admin.post("/users", data=form, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "/users?done=user_added"
    page = admin.get(saved.headers["location"]).text
    assert '<p class="ok flash" role="status">Đã thêm người dùng.</p>' in page
    user_id = next(
        u["id"] for u in admin.get("/api/v1/users").json() if u["username"] == "thu-ky-xa"
    )
    granted = admin.post(
        f"/users/{user_id}/grant", data={"role": "technician", "area_code": COMMUNE}
    )
    assert "Đã cấp vai trò." in granted.text
    # Only the fixed sentences: words put in the address are never shown.
    assert "flash" not in admin.get("/users?done=Tài+khoản+bị+khoá").text.split("<main")[1]


def test_the_loudness_column_says_its_target_and_tolerance(admin: TestClient) -> None:
    admin.post("/api/v1/audio", files={"file": ("tin.wav", make_audio("wav", 2.0))})
    page = admin.get("/audio").text
    assert "Mọi tệp được chỉnh về độ to -16 LUFS (sai lệch ±1 LU)" in page
    assert "LUFS" in page


def test_every_page_links_the_icon(admin: TestClient) -> None:
    assert '<link rel="icon" href="/static/favicon.svg"' in admin.get("/").text
    icon = admin.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")
