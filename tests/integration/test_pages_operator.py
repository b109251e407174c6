"""The operator's and administrator's pages, rendered by the real app through TestClient:
sign-in, overview, the audio library, scheduling a bulletin, users and the audit log,
in Vietnamese by default and in English on request.

What is checked is what a clerk reads: the words in Vietnamese with their diacritics,
local times, and each refusal written next to the field it is about.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from server.app import create_app
from server.auth.permissions import Role
from server.i18n import LANGUAGE_COOKIE
from server.models import AudioAsset, Broadcast, Station, StationStatus
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate, context_of
from tests.integration.test_server_api import RecordingBus, make_settings

COMMUNE = "01273"
NOW = datetime(2025, 7, 1, 1, 30, tzinfo=UTC)  # Tuesday 08:30 in Vietnam


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, bus=RecordingBus(), clock=lambda: NOW)) as client:
        with Session(context_of(client).engine) as session:
            for n, status in enumerate(("online", "offline")):
                session.add(
                    Station(
                        id=f"st-{n}",
                        name=f"Cụm loa thôn {n}",
                        area_code=COMMUNE,
                        latitude=22.6 + n / 100,
                        longitude=106.2,
                        mqtt_username=f"st-{n}",
                        mqtt_password_hash="-",
                        status=StationStatus(status),
                        status_at=NOW,
                    )
                )
            session.commit()
        yield client


@pytest.fixture
def operator(app: TestClient) -> TestClient:
    return authenticate(app, Role.COMMUNE_OPERATOR, COMMUNE)


def field_error(html: str, name: str) -> str:
    found = re.search(rf'<p class="field-error" id="{name}-error" role="alert">([^<]*)</p>', html)
    assert found, f"no error shown under {name}"
    return found.group(1)


def asset_count(client: TestClient) -> int:
    with Session(context_of(client).engine) as session:
        return session.exec(select(func.count()).select_from(AudioAsset)).one()


def test_sign_in_errors_sit_next_to_their_field_in_either_language(app: TestClient) -> None:
    empty = app.post("/login", data={"username": "", "password": ""})
    assert empty.status_code == 422
    assert field_error(empty.text, "username") == "Hãy nhập tên đăng nhập."
    assert field_error(empty.text, "password") == "Hãy nhập mật khẩu."
    assert 'aria-describedby="username-error"' in empty.text

    switched = app.post("/language", data={"lang": "en", "next": "/login"}, follow_redirects=False)
    assert switched.status_code == 303 and switched.headers["location"] == "/login"
    assert app.cookies.get(LANGUAGE_COOKIE) == "en"
    english = app.post("/login", data={"username": "x", "password": ""})
    assert '<html lang="en">' in english.text
    assert field_error(english.text, "password") == "Enter your password."
    wrong = app.post("/login", data={"username": "nobody", "password": "wrong-password"})
    assert wrong.status_code == 401 and "wrong username or password" in wrong.text

    app.post("/language", data={"lang": "xx"})  # unknown: back to Vietnamese
    assert app.cookies.get(LANGUAGE_COOKIE) == "vi"
    assert (
        "sai tên đăng nhập"
        in app.post("/login", data={"username": "nobody", "password": "wrong-password"}).text
    )


def test_overview_shows_states_programme_and_menu_for_the_role(operator: TestClient) -> None:
    html = operator.get("/").text
    assert '<html lang="vi">' in html and "Tổng quan" in html
    tiles = dict(
        re.findall(r'class="tile fill-(\w+)[^"]*">\s*<a href="/fleet"><span class="n">(\d+)<', html)
    )
    assert tiles["online"] == "1" and tiles["offline"] == "1"
    assert "Hôm nay không có gì trong lịch phát." in html
    assert "cập nhật lúc 01/07/2025 08:30:00" in html  # local time
    menu = re.findall(r'<nav id="main-menu" aria-label="Chính">(.*?)</nav>', html, re.S)[0]
    assert "Âm thanh" in menu and "Lịch phát" in menu
    assert "Người dùng" not in menu and "Nhật ký thao tác" not in menu  # not an admin


def test_a_bad_upload_is_refused_under_the_field_and_stores_nothing(operator: TestClient) -> None:
    before = asset_count(operator)
    audio_dir = context_of(operator).settings.audio_dir
    files_before = sorted(audio_dir.rglob("*"))  # the canned alert library is already there
    bad = operator.post("/audio/upload", files={"file": ("tin.mp3", b"not audio at all" * 50)})
    assert bad.status_code == 422
    said = bad.json()["errors"]["file"]  # all of it in Vietnamese: no ffmpeg English inside
    assert said == "Không đọc được tệp này: đây không phải tệp âm thanh, hoặc tệp đã hỏng.", said
    empty = operator.post("/audio/upload", files={"file": ("rỗng.wav", b"")})
    assert empty.json()["errors"]["file"] == "Tệp trống."
    assert asset_count(operator) == before
    assert sorted(audio_dir.rglob("*")) == files_before  # not a byte of it was kept

    good = operator.post(
        "/audio/upload", files={"file": ("bản tin sáng.wav", make_audio("wav", 2.0))}
    )
    assert good.status_code == 201, good.text
    body = good.json()
    assert body["duration"] == "0:02" and "LUFS" in body["loudness"] and "," in body["loudness"]
    page = operator.get("/audio").text
    assert "bản tin sáng.wav" in page and f'src="/audio/{body["id"]}/listen"' in page
    listen = operator.get(body["listen_url"], follow_redirects=False)
    assert listen.status_code == 303 and "sig=" in listen.headers["location"]
    audio = operator.get(listen.headers["location"])
    assert audio.status_code == 200 and audio.content[:4] in (b"OggS", b"ID3\x03", b"\xff\xfb\x90d")


def test_scheduling_a_bulletin_validates_each_field_then_creates_it(operator: TestClient) -> None:
    uploaded = operator.post("/audio/upload", files={"file": ("tin.wav", make_audio("wav", 1.0))})
    audio_id = uploaded.json()["id"]
    form = operator.get(f"/programmes/new?audio_id={audio_id}").text
    assert f'<option value="{audio_id}" selected>' in form
    assert 'name="areas" value="01273" checked' in form  # a clerk's only commune, pre-chosen

    refused = operator.post(
        "/programmes/new",
        data={
            "title": "Tin sáng",
            "item_kind": "audio",
            "item_audio": "",
            "day": "2025-07-01",
            "at": "07:00",
        },
    )
    assert refused.status_code == 422
    assert field_error(refused.text, "items-1-audio") == "Hãy chọn âm thanh sẽ phát."
    assert field_error(refused.text, "at") == "Giờ này đã qua; hãy chọn giờ muộn hơn."
    assert field_error(refused.text, "targets") == (
        "Hãy chọn ít nhất một xã, một trạm loa hoặc một nhóm trạm."
    )
    assert 'value="Tin sáng"' in refused.text  # what was typed is kept

    created = operator.post(
        "/programmes/new",
        data={
            "title": "Tin sáng",
            "audio_id": str(audio_id),
            "day": "2025-07-02",
            "at": "05:30",
            "priority": "normal",
            "areas": COMMUNE,
        },
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    with Session(context_of(operator).engine) as session:
        broadcast = session.exec(select(Broadcast)).one()
    assert broadcast.start_at == datetime(2025, 7, 1, 22, 30, tzinfo=UTC)  # 05:30 in Vietnam
    week = operator.get("/programmes").text
    assert "Thứ 2" in week and "Chủ nhật" in week
    wednesday = re.search(
        r"Thứ 4 <span class=\"muted\">02/07</span></h2>(.*?)</li>\s*</ul>", week, re.S
    )
    assert wednesday and "05:30" in wednesday.group(1) and "Tin sáng" in wednesday.group(1)


def test_users_and_audit_pages_for_the_administrator(app: TestClient) -> None:
    admin = authenticate(app, Role.PROVINCE_ADMIN, "04")
    page = admin.get("/users")
    assert page.status_code == 200 and "Người dùng và vai trò" in page.text
    refused = admin.post(
        "/users", data={"username": "", "password": "short", "role": "technician", "area_code": ""}
    )
    assert refused.status_code == 422
    assert field_error(refused.text, "username") == "Hãy nhập tên đăng nhập."
    assert field_error(refused.text, "password") == "Mật khẩu cần ít nhất 10 ký tự."
    assert field_error(refused.text, "area_code") == "Hãy chọn địa bàn bạn quản lý."
    made = admin.post(
        "/users",
        data={
            "username": "ktv-lan",
            "display_name": "Nguyễn Thị Lan",
            "password": "mật-khẩu-dài-đủ",
            "role": "technician",
            "area_code": COMMUNE,
        },
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    listed = admin.get("/users").text
    assert "Nguyễn Thị Lan" in listed and "Kỹ thuật viên" in listed
    user_id = re.search(r'action="/users/(\d+)/revoke"', listed)
    assert user_id
    admin.post(f"/users/{user_id.group(1)}/grant", data={"role": "viewer", "area_code": COMMUNE})
    assert "Người xem — Phường Thục Phán" in admin.get("/users").text
    again = admin.post(
        "/users",
        data={"username": "ktv-lan", "password": "x" * 12, "role": "viewer", "area_code": COMMUNE},
    )
    assert field_error(again.text, "username") == "Tên đăng nhập này đã có người dùng."

    audit = admin.get("/audit?verify=1").text
    assert "Tạo người dùng" in audit and "ktv-lan" not in audit.split("<table")[0]
    assert "còn nguyên vẹn" in audit
    assert "Hãy nhập ngày" in admin.get("/audit?day=hôm-qua").text


def test_pages_need_their_roles_and_refuse_in_words(operator: TestClient) -> None:
    for path in ("/users", "/audit"):
        refused = operator.get(path)
        assert refused.status_code == 403
        assert "<h1>Tài khoản của bạn không được mở trang này.</h1>" in refused.text
    missing = operator.get("/stations/no-such-station")
    assert missing.status_code == 404 and "không thuộc địa bàn của bạn" in missing.text


PAGES = ("/", "/audio", "/programmes", "/programmes/new", "/fleet", "/alarms", "/alerts")


@pytest.mark.parametrize("path", [*PAGES, "/users", "/audit", "/alerts/new"])
def test_pages_send_strangers_to_sign_in(app: TestClient, path: str) -> None:
    response = app.get(path, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_every_page_is_local_utf8_and_fully_translated(app: TestClient) -> None:
    admin = authenticate(app, Role.PROVINCE_ADMIN, "04")
    for path in (*PAGES, "/users", "/audit", "/alerts/new"):
        page = admin.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        html = page.text
        assert '<meta charset="utf-8">' in html, path
        assert (
            "http://" not in html.replace('"http://www.w3.org/2000/svg"', "")
            and "https://" not in html
        ), path
        for url in re.findall(r'(?:src|href|action)="([^"]*)"', html):
            assert url.startswith(("/", "#")), (path, url)
    # English: the same pages, no Vietnamese menu left.
    admin.cookies.set(LANGUAGE_COOKIE, "en")
    english = admin.get("/").text
    assert '<html lang="en">' in english and "Overview" in english and "Tổng quan" not in english
    assert "Programme calendar" in admin.get("/programmes").text
    for script in ("audio.js", "alert.js", "i18n.js"):
        served = admin.get(f"/static/{script}")
        assert served.status_code == 200 and "https://" not in served.text
        assert not re.search(r"[À-ỹ]", served.text), f"{script} holds text of its own"


def test_text_to_speech_preview_says_what_will_be_read(operator: TestClient) -> None:
    empty = operator.post("/audio/tts", data={"text": "   "})
    assert empty.status_code == 422 and empty.json()["errors"]["text"] == "Hãy gõ văn bản cần đọc."
    spoken = operator.post("/audio/tts", data={"text": "Họp thôn lúc 19 giờ, mang 50.000 đ."})
    assert spoken.status_code == 201, spoken.text
    body = spoken.json()
    assert "năm mươi nghìn đồng" in body["spoken"]  # what the clerk will hear, in words
    assert body["listen_url"] == f"/audio/{body['id']}/listen" and body["duration"] != "0:00"
    assert operator.get(body["listen_url"], follow_redirects=False).status_code == 303
    # In the library it is speech, named by its words, not an uploaded file.
    library = operator.get("/audio").text
    assert "Giọng đọc: " in library and "tts: " not in library
