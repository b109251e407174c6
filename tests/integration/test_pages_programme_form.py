"""The programme form builds what the programmes API accepts: items from a file, typed
text read aloud (with a preview of what will be said), a stream relay window with a
fallback file, silence; volume and repeat per item; one-off or weekly; communes, single
stations or station groups. Refusals come back under their field in the reader's
language, and the language follows the person from one sign-in to the next.

Real app, real espeak-ng and ffmpeg, a real local HTTP "radio" for the stream probe.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from server.app import create_app
from server.auth.models import User
from server.auth.permissions import Role
from server.i18n import LANGUAGE_COOKIE
from server.models import Station, StationStatus
from server.programmes.models import Programme, StationGroup, StationGroupMember
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_server_api import RecordingBus, make_settings
from tests.intranet import intranet_server

COMMUNE = "01273"
NOW = datetime(2025, 7, 1, 1, 30, tzinfo=UTC)  # Tuesday 1 July 2025, 08:30 in Vietnam


class Radio(BaseHTTPRequestHandler):
    """``/vov1.mp3`` answers like an Icecast channel; ``/page`` is a web page."""

    def do_GET(self) -> None:
        audio = self.path.endswith(".mp3")
        self.send_response(200)
        self.send_header("Content-Type", "audio/mpeg" if audio else "text/html")
        self.end_headers()
        self.wfile.write(b"\xff\xfb\x90d" + b"\0" * 4000 if audio else b"<html>VOV</html>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def radio(app: TestClient) -> Iterator[str]:
    """The channel on the province's intranet, which the settings allow the check to reach."""
    with intranet_server(Radio) as server:
        context_of(app).settings.stream_allowed_networks = [server.network]
        yield server.base_url


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, bus=RecordingBus(), clock=lambda: NOW)) as client:
        with Session(context_of(client).engine) as session:
            for n in range(3):
                session.add(
                    Station(
                        id=f"st-{n}",
                        name=f"Cụm loa thôn {n}",
                        area_code=COMMUNE,
                        latitude=22.6,
                        longitude=106.2,
                        mqtt_username=f"st-{n}",
                        mqtt_password_hash="-",
                        status=StationStatus.ONLINE,
                        status_at=NOW,
                    )
                )
            group = StationGroup(name="cho", title="Loa khu chợ", area_code=COMMUNE)
            session.add(group)
            session.flush()
            assert group.id is not None
            session.add(StationGroupMember(group_id=group.id, station_id="st-2"))
            session.commit()
        yield client


def field_error(html: str, name: str) -> str:
    found = re.search(rf'<p class="field-error" id="{name}-error" role="alert">([^<]*)</p>', html)
    assert found, f"no error shown under {name}"
    return found.group(1).replace("&#39;", "'")


def test_a_programme_of_text_relay_and_silence_to_stations_and_a_group(
    app: TestClient, radio: str
) -> None:
    operator = authenticate(app, Role.COMMUNE_OPERATOR, COMMUNE)
    fallback = operator.post("/audio/upload", files={"file": ("nhac.wav", make_audio("wav", 3.0))})
    fallback_id = fallback.json()["id"]
    form: dict[str, object] = {
        "title": "Buổi sáng",
        "day": "2025-07-02",
        "at": "05:00",
        "priority": "normal",
        "repeat": "weekly",
        "days": ["0", "1", "2", "3", "4", "5"],
        "stations": ["st-0", "st-1"],
        "groups": "cho",
    }
    # Built row by row with the add buttons, as a person without scripts would.
    page = operator.post("/programmes/new", data={**form, "op": "add:tts"})
    assert page.status_code == 200 and 'name="item_text"' in page.text
    rows = {
        "item_kind": ["tts", "stream", "silence"],
        "item_audio": ["", "", ""],
        "item_text": ["Thông báo lúc 17h30 ngày 2/7: họp thôn.", "", ""],
        "item_url": ["", f"{radio}/vov1.mp3", ""],
        "item_minutes": ["", "30", ""],
        "item_fallback": ["", str(fallback_id), ""],
        "item_seconds": ["", "", "5"],
        "item_volume": ["90", "", ""],
        "item_repeat": ["2", "1", "1"],
    }
    preview = operator.post("/programmes/new", data={**form, **rows, "op": "preview:1"})
    spoken = re.search(
        r'id="item-1-spoken"><strong>Sẽ được đọc là:</strong> ([^<]*)<', preview.text
    )
    assert spoken and "mười bảy giờ ba mươi" in spoken.group(1), preview.text[-3000:]
    assert "Tiếp sóng (ví dụ VOV1)" in preview.text and "Khoảng lặng" in preview.text

    made = operator.post("/programmes/new", data={**form, **rows}, follow_redirects=False)
    assert made.status_code == 303, made.text
    with Session(context_of(app).engine) as session:
        programme = session.exec(select(Programme)).one()
    spec = programme.spec
    assert spec["rrule"] == "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA"
    assert spec["targets"] == {"stations": ["st-0", "st-1"], "groups": ["cho"], "areas": []}
    tts, stream, silence = spec["items"]
    assert (tts["kind"], tts["volume"], tts["repeat"]) == ("tts", 90, 2)
    assert tts["text"] == "Thông báo lúc 17h30 ngày 2/7: họp thôn."
    assert (stream["kind"], stream["url"], stream["window_min"]) == (
        "stream",
        f"{radio}/vov1.mp3",
        30,
    )
    assert stream["fallback"] == {"audio_id": fallback_id, "file": None}
    assert (silence["kind"], silence["seconds"]) == ("silence", 5)
    assert programme.state == "draft" and programme.area_code == COMMUNE

    # The saved programme opens again in the same form, every row as it was.
    edit = operator.get(f"{made.headers['location']}/edit").text
    assert "Thông báo lúc 17h30 ngày 2/7: họp thôn.</textarea>" in edit
    assert f'value="{radio}/vov1.mp3"' in edit and 'name="stations" value="st-1" checked' in edit


def test_refusals_under_their_field_in_vietnamese_then_english(app: TestClient, radio: str) -> None:
    operator = authenticate(app, Role.COMMUNE_OPERATOR, COMMUNE)
    audio_id = operator.post(
        "/audio/upload", files={"file": ("tin.wav", make_audio("wav", 60.0))}
    ).json()["id"]
    weekly = {
        "title": "Tin sáng",
        "day": "2025-07-02",
        "at": "05:00",
        "priority": "normal",
        "repeat": "weekly",
        "days": ["2"],
        "areas": COMMUNE,
        "item_kind": "audio",
        "item_audio": str(audio_id),
    }
    first = operator.post("/programmes/new", data=weekly, follow_redirects=False)
    assert first.status_code == 303, first.text

    clash = operator.post("/programmes/new", data={**weekly, "title": "Tin trùng"})
    assert clash.status_code == 409
    said = field_error(clash.text, "at")
    assert said.startswith("Giờ này trùng với chương trình khác: 'Tin trùng' mục 1"), said
    assert "lúc 02/07/2025 05:00" in said and "overlap" not in said

    page = {  # a stream address that is a web page: named under that item, in Vietnamese
        **weekly,
        "at": "06:00",
        "item_kind": "stream",
        "item_audio": "",
        "item_url": f"{radio}/page",
        "item_minutes": "30",
    }
    refused = operator.post("/programmes/new", data=page)
    assert refused.status_code == 422
    assert field_error(refused.text, "items-1") == (
        f"Địa chỉ {radio}/page không phát ra âm thanh (có thể là một trang web). "
        "Hãy kiểm tra lại địa chỉ."
    )
    bad = operator.post(
        "/programmes/new",
        data={**page, "item_url": "vov1", "item_minutes": "0", "item_volume": "120"},
    )
    assert field_error(bad.text, "items-1-url").startswith("Hãy nhập địa chỉ kênh phát")
    assert field_error(bad.text, "items-1-minutes") == "Thời gian tiếp sóng từ 1 đến 1440 phút."
    assert field_error(bad.text, "items-1-volume") == "Âm lượng là số nguyên từ 0 đến 100."

    operator.cookies.set(LANGUAGE_COOKIE, "en")
    english = operator.post("/programmes/new", data={**weekly, "title": "Tin trùng"})
    assert field_error(english.text, "at").startswith(
        "This time clashes with another programme: 'Tin trùng' item 1"
    )


def test_the_language_is_kept_on_the_account(app: TestClient) -> None:
    admin = make_token(context_of(app).engine, "admin", (Role.PROVINCE_ADMIN, "04"))
    created = app.post(
        "/api/v1/users",
        headers=bearer(admin),
        json={
            "username": "lan",
            "display_name": "Lan",
            "password": "mat-khau-dai-1",
            "grants": [{"role": "commune_operator", "area_code": COMMUNE}],
        },
    )
    assert created.status_code == 201, created.text
    same_site = {"Origin": "http://testserver"}
    signed = app.post("/login", data={"username": "lan", "password": "mat-khau-dai-1"})
    assert '<html lang="vi">' in signed.text
    app.post("/language", data={"lang": "en", "next": "/"}, headers=same_site)
    with Session(context_of(app).engine) as session:
        assert session.exec(select(User).where(User.username == "lan")).one().language == "en"

    app.cookies.clear()  # another phone, set to nothing: English follows the person
    again = app.post("/login", data={"username": "lan", "password": "mat-khau-dai-1"})
    assert app.cookies.get(LANGUAGE_COOKIE) == "en"
    assert '<html lang="en">' in again.text


def test_an_unreachable_stream_is_saved_with_a_warning_and_a_one_off_is_a_programme(
    app: TestClient,
) -> None:
    operator = authenticate(app, Role.COMMUNE_OPERATOR, COMMUNE)
    made = operator.post(
        "/programmes/new",
        data={
            "title": "Tiếp sóng VOV1",
            "day": "2025-07-02",
            "at": "05:00",
            "priority": "background",
            "repeat": "once",
            "areas": COMMUNE,
            "item_kind": "stream",
            "item_url": "http://127.0.0.1:9/vov1.mp3",  # nothing listens on the discard port
            "item_minutes": "60",
        },
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    assert made.headers["location"].endswith("?warned=stream")
    page = operator.get(made.headers["location"]).text
    assert 'id="stream-warning">Đã lưu. Lúc này máy chủ không bắt được' in page
    assert '<dd id="when">Một lần, 02/07/2025 05:00</dd>' in page
