"""The programme calendar's recurrence picker and approval, and the alert pages, through
TestClient on the real app (stations in the database, no MQTT).

A weekly programme is described back in plain words ("Thứ 2 đến Thứ 7, 05:00"), a
clash with another programme is written under the time field, and only a second person
approves. An alert is composed, previewed (exactly who will hear it), sent, followed and
cancelled from its page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from server.app import create_app
from server.auth.permissions import Role
from server.models import Station, StationStatus
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_server_api import RecordingBus, make_settings

COMMUNE = "01273"
NOW = datetime(2025, 7, 1, 1, 30, tzinfo=UTC)  # Tuesday 1 July 2025, 08:30 in Vietnam


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
                        latitude=22.6 + n / 100,
                        longitude=106.2,
                        mqtt_username=f"st-{n}",
                        mqtt_password_hash="-",
                        status=StationStatus.ONLINE,
                        status_at=NOW,
                    )
                )
            session.commit()
        yield client


def field_error(html: str, name: str) -> str:
    found = re.search(rf'<p class="field-error" id="{name}-error" role="alert">([^<]*)</p>', html)
    assert found, f"no error shown under {name}"
    return found.group(1)


def weekly(audio_id: int, title: str, days: list[str], at: str = "05:00") -> dict[str, object]:
    return {
        "title": title,
        "audio_id": str(audio_id),
        "day": "2025-07-02",
        "at": at,
        "priority": "normal",
        "areas": COMMUNE,
        "repeat": "weekly",
        "days": days,
    }


def test_a_weekly_programme_in_plain_words_clashes_and_approval(app: TestClient) -> None:
    operator = authenticate(app, Role.COMMUNE_OPERATOR, COMMUNE)
    audio = operator.post("/audio/upload", files={"file": ("tin.wav", make_audio("wav", 60.0))})
    audio_id = audio.json()["id"]
    form = operator.get("/programmes/new").text
    assert 'id="recurrence-summary"' in form and "Hằng tuần, vào các ngày:" in form

    no_days = operator.post("/programmes/new", data=weekly(audio_id, "Tin sáng", []))
    assert no_days.status_code == 422
    assert field_error(no_days.text, "days") == "Hãy chọn ít nhất một ngày trong tuần."

    made = operator.post(
        "/programmes/new",
        data=weekly(audio_id, "Tin sáng", ["0", "1", "2", "3", "4", "5"]),
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    page_url = made.headers["location"]
    page = operator.get(page_url).text
    assert '<dd id="when">Thứ 2 đến Thứ 7, 05:00</dd>' in page
    assert "Bản nháp: chưa phát" in page
    assert "03/07/2025 05:00:00" in page  # next times, in Vietnam's time (Thursday first)

    # The same minute on Wednesdays clashes: the server's words go under the time field.
    clash = operator.post("/programmes/new", data=weekly(audio_id, "Tin trùng", ["2"]))
    assert clash.status_code == 409
    assert field_error(clash.text, "at").startswith("Giờ này trùng với chương trình khác:")

    week = operator.get("/programmes?week=2025-07-07").text  # the next week: Mon 7 – Sun 13
    for day in ("07/07", "08/07", "12/07"):
        assert re.search(rf'{day}</span></h2>\s*<ul class="plain">.*?Tin sáng', week, re.S), day
    assert re.search(r"13/07</span></h2>\s*<p class=\"muted\">Không có lịch", week)  # Sunday

    # Change it: the form comes back as it was saved; Sunday added, the words follow.
    edit = operator.get(f"{page_url}/edit").text
    assert 'name="days" value="5" data-name="Thứ 7" checked' in edit
    assert 'name="days" value="6" data-name="Chủ nhật">' in edit
    changed = operator.post(
        f"{page_url}/edit",
        data=weekly(audio_id, "Tin sáng", [str(d) for d in range(7)], at="05:15"),
        follow_redirects=False,
    )
    assert changed.status_code == 303, changed.text
    assert '<dd id="when">Hằng ngày, 05:15</dd>' in operator.get(page_url).text

    assert operator.post(f"{page_url}/submit", follow_redirects=False).status_code == 303
    assert "Chờ duyệt" in operator.get(page_url).text
    # The operator may not approve; an approver of the commune may.
    denied = operator.post(f"{page_url}/approve", follow_redirects=False)
    assert denied.headers["location"].endswith("?error=denied")
    approver = make_token(context_of(app).engine, "duyet-xa", (Role.APPROVER, COMMUNE))
    approved = app.post(f"{page_url}/approve", headers=bearer(approver), follow_redirects=False)
    assert approved.headers["location"] == f"{page_url}?done=approve"  # says it is done
    confirmed = app.get(approved.headers["location"], headers=bearer(approver)).text
    assert '<p class="notice" role="status" id="done">Đã duyệt.' in confirmed
    assert "Đã duyệt: đang phát theo lịch" in app.get(page_url, headers=bearer(approver)).text


def test_an_alert_is_composed_previewed_sent_and_cancelled(app: TestClient) -> None:
    officer = authenticate(app, Role.ALERT_OFFICER, "04")
    empty = officer.post("/alerts/new", data={"step": "preview", "kind": "canned"})
    assert empty.status_code == 422
    assert field_error(empty.text, "title").startswith("Hãy viết tiêu đề ngắn")
    assert field_error(empty.text, "canned") == "Hãy chọn một bản tin thu sẵn."
    assert field_error(empty.text, "areas") == "Hãy chọn ít nhất một địa bàn."

    form = officer.get("/alerts/new").text
    assert 'value="typhoon"' in form and f'name="areas" value="{COMMUNE}"' in form
    alert = {
        "title": "Bão số 3",
        "severity": "severe",
        "kind": "canned",
        "canned": "typhoon",
        "repeat": "2",
        "tone": "1",
        "areas": COMMUNE,
    }
    preview = officer.post("/alerts/new", data={**alert, "step": "preview"})
    assert preview.status_code == 200, preview.text
    assert '<p class="big">3 trạm loa</p>' in preview.text
    assert 'name="step" value="send"' in preview.text and "Phát ngay" in preview.text

    sent = officer.post("/alerts/new", data={**alert, "step": "send"}, follow_redirects=False)
    assert sent.status_code == 303, sent.text
    page = officer.get(sent.headers["location"]).text
    assert "Bão số 3" in page and "Đang phát" in page
    assert page.count('<progress id="bar-') == 2
    assert '<span data-count="finished">0</span> / 3' in page  # nothing played yet
    assert "/static/alert.js" in page and 'id="cancel-form"' in page

    cancelled = officer.post(f"{sent.headers['location']}/cancel", follow_redirects=False)
    assert cancelled.status_code == 303
    after = officer.get(sent.headers["location"]).text
    assert '<strong id="alert-state" data-state="cancelled">Đã huỷ</strong>' in after
    assert 'id="cancel-form"' not in after
    listed = officer.get("/alerts").text
    assert "Bão số 3" in listed and "Đã huỷ" in listed


def test_an_alert_beyond_one_commune_waits_for_a_second_officer(app: TestClient) -> None:
    with Session(context_of(app).engine) as session:
        session.add(
            Station(
                id="st-other",
                name="Cụm loa xã bên",
                area_code="01279",
                latitude=22.7,
                longitude=106.3,
                mqtt_username="st-other",
                mqtt_password_hash="-",
                status=StationStatus.ONLINE,
                status_at=NOW,
            )
        )
        session.commit()
    alert = {
        "title": "Xả lũ hồ chứa",
        "severity": "extreme",
        "kind": "canned",
        "canned": "dam_release",
        "repeat": "1",
        "areas": [COMMUNE, "01279"],
    }
    first = authenticate(app, Role.ALERT_OFFICER, "04")
    preview = first.post("/alerts/new", data={**alert, "step": "preview"}).text
    assert '<p class="big">4 trạm loa</p>' in preview
    assert "cần một cán bộ thứ hai xác nhận" in preview and "Gửi chờ xác nhận" in preview
    held = first.post("/alerts/new", data={**alert, "step": "send"}, follow_redirects=False)
    url = held.headers["location"]
    page = first.get(url).text
    assert "Chờ cán bộ thứ hai xác nhận" in page
    assert "Xác nhận và phát" not in page  # never by the officer who wrote it

    second = make_token(context_of(app).engine, "canbo-2", (Role.ALERT_OFFICER, "04"))
    page = app.get(url, headers=bearer(second)).text
    assert f'action="{url}/confirm"' in page
    app.post(f"{url}/confirm", headers={**bearer(second)}, follow_redirects=False)
    assert 'data-state="active">Đang phát</strong>' in app.get(url, headers=bearer(second)).text
