"""What an approver sees before approving, and states that say what really happened.

Real app and SQLite through TestClient, a clock the test moves, stations registered
through the API and their reports fed through the real event ingestor. Each test asks
the operator's question: can the approver hear and place everything, and does the
page tell the truth after the fact?
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from loaxa_protocol import Event, EventKind, topics
from server.app import create_app
from server.auth.permissions import Role
from server.programmes.models import Programme
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_alerts_api import (
    API as ALERTS,
)
from tests.integration.test_alerts_api import (
    Officer,
    alert_body,
    app_client,  # noqa: F401  (fixture)
    bus,  # noqa: F401  (fixture)
    clock,  # noqa: F401  (fixture)
    officer,  # noqa: F401  (fixture)
    send_event,
)
from tests.integration.test_server_api import RecordingBus, make_settings, register, upload

COMMUNE = "01273"
API = "/api/v1"
START = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)  # Monday 7 December 2026, 11:00 in Vietnam


class MovingClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def moving() -> MovingClock:
    return MovingClock()


@pytest.fixture
def app(tmp_path: Path, moving: MovingClock) -> Iterator[TestClient]:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, bus=RecordingBus(), clock=moving)) as client:
        authenticate(client)  # the province administrator registers and uploads
        for n, name in enumerate(("Cụm loa thôn Nà Rị", "Cụm loa chợ Bản Giới", "Loa Pác Bó")):
            register(client, COMMUNE, id=f"st-{n}", name=name)
        yield client


def headers(client: TestClient, name: str, role: Role) -> dict[str, str]:
    return bearer(make_token(context_of(client).engine, name, (role, COMMUNE)))


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": "tin-sang",
        "title": "Tin sáng",
        "area": COMMUNE,
        "start": "2026-12-08T05:00:00",
        "rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA",
        "targets": {"stations": ["st-0", "st-1"]},
        "items": [{"kind": "silence", "seconds": 5}],
    }
    body.update(overrides)
    return body


def approved(client: TestClient, body: dict[str, Any]) -> int:
    """Saved by an operator, sent for approval, approved by an approver."""
    operator = headers(client, "van-thu", Role.COMMUNE_OPERATOR)
    made = client.post(f"{API}/programmes", json=body, headers=operator)
    assert made.status_code == 201, made.text
    pid = int(made.json()["id"])
    assert client.post(f"{API}/programmes/{pid}/submit", headers=operator).status_code == 200
    approver = headers(client, "duyet", Role.APPROVER)
    assert client.post(f"{API}/programmes/{pid}/approve", headers=approver).status_code == 200
    return pid


def queue_count(html: str) -> int:
    found = re.search(r'<span id="approval-count">(\d+)</span>', html)
    assert found, "the overview shows no approval queue"
    return int(found.group(1))


# ------------------------------------------------------------------ the approval page


def test_the_approver_hears_every_item_sees_the_stations_and_what_changed(
    app: TestClient,
) -> None:
    audio = upload(app, make_audio("wav", 2.0), "ban-tin-xa.wav")
    operator = headers(app, "van-thu", Role.COMMUNE_OPERATOR)
    approver = headers(app, "duyet", Role.APPROVER)
    body = spec(
        items=[
            {"kind": "audio", "audio_id": audio["id"], "title": "Bản tin xã"},
            {"kind": "tts", "text": "Ngày mai tiêm chủng tại trạm y tế xã.", "title": "Tiêm"},
        ]
    )
    made = app.post(f"{API}/programmes", json=body, headers=operator)
    assert made.status_code == 201, made.text
    pid = made.json()["id"]
    assert queue_count(app.get("/", headers=approver).text) == 0
    assert app.post(f"{API}/programmes/{pid}/submit", headers=operator).status_code == 200

    # The overview counts it; the queue lists it with who sent it.
    assert queue_count(app.get("/", headers=approver).text) == 1
    queue = app.get("/programmes/approvals", headers=approver).text
    assert f'href="/programmes/p/{pid}">Tin sáng</a>' in queue and "van-thu" in queue
    assert "Thứ 2 đến Thứ 7, 05:00" in queue

    page = app.get(f"/programmes/p/{pid}", headers=approver).text
    speech_id = app.get(f"{API}/programmes/{pid}", headers=approver).json()["rendered"]["2"]
    assert f'src="/audio/{audio["id"]}/listen"' in page  # the file
    assert f'src="/audio/{speech_id}/listen"' in page  # the speech, as it will sound
    assert "Ngày mai tiêm chủng tại trạm y tế xã." in page
    names = re.search(r'<ul class="plain columns" id="station-names">(.*?)</ul>', page, re.S)
    assert names and "Cụm loa thôn Nà Rị" in names.group(1)
    assert "Cụm loa chợ Bản Giới" in names.group(1) and "Loa Pác Bó" not in names.group(1)
    assert '<dd id="when">Thứ 2 đến Thứ 7, 05:00</dd>' in page
    assert "08/12/2026 05:00:00" in page  # the next times, Tuesday first
    assert re.search(r'<dd id="submitted-by">van-thu', page)
    assert "Chưa được duyệt lần nào" in page

    # Approving says so, and the queue empties.
    done = app.post(f"/programmes/p/{pid}/approve", headers=approver, follow_redirects=False)
    assert done.headers["location"] == f"/programmes/p/{pid}?done=approve"
    notice = app.get(done.headers["location"], headers=approver).text
    assert "Đã duyệt. Chương trình được phát theo lịch" in notice
    assert queue_count(app.get("/", headers=approver).text) == 0

    # The operator moves it, adds a notice and a loudspeaker: the approver sees each change.
    changed = spec(
        start="2026-12-08T06:15:00",
        targets={"stations": ["st-0", "st-1", "st-2"]},
        items=[*body["items"], {"kind": "tts", "text": "Mất điện chiều nay.", "title": "Điện"}],
    )
    put = app.put(f"{API}/programmes/{pid}", json=changed, headers=operator)
    assert put.status_code == 200, put.text
    assert app.post(f"{API}/programmes/{pid}/submit", headers=operator).status_code == 200
    page = app.get(f"/programmes/p/{pid}", headers=approver).text
    changes = re.search(r'<section aria-labelledby="changes-title".*?</section>', page, re.S)
    assert changes, "no list of changes since the last approval"
    text = changes.group(0)
    assert "Lịch phát: Thứ 2 đến Thứ 7, 05:00 → Thứ 2 đến Thứ 7, 06:15" in text
    assert "Thêm mục 3: Văn bản đọc: “Mất điện chiều nay.”" in text
    assert "Thêm cụm loa: Loa Pác Bó" in text
    assert "Bỏ mục" not in text and "Bỏ cụm loa" not in text
    assert "đã sửa sau khi duyệt" in app.get("/programmes/approvals", headers=approver).text


def test_a_programme_approved_again_unchanged_says_nothing_changed(app: TestClient) -> None:
    pid = approved(app, spec())
    operator = headers(app, "van-thu", Role.COMMUNE_OPERATOR)
    other = spec(title="Tin sáng mới")
    assert app.put(f"{API}/programmes/{pid}", json=other, headers=operator).status_code == 200
    assert app.put(f"{API}/programmes/{pid}", json=spec(), headers=operator).status_code == 200
    page = app.get(f"/programmes/p/{pid}", headers=operator).text
    assert "Không có: chương trình giống hệt bản đã duyệt." in page


def test_a_programme_approved_before_copies_were_kept_is_not_called_new(app: TestClient) -> None:
    pid = approved(app, spec())
    with Session(context_of(app).engine) as session:  # as a programme approved before 0005
        row = session.get(Programme, pid)
        assert row is not None and row.approved_spec is not None
        row.approved_spec, row.approved_stations = None, None
        session.add(row)
        session.commit()
    operator = headers(app, "van-thu", Role.COMMUNE_OPERATOR)
    other = spec(title="Tin sáng mới")
    assert app.put(f"{API}/programmes/{pid}", json=other, headers=operator).status_code == 200
    assert app.post(f"{API}/programmes/{pid}/submit", headers=operator).status_code == 200
    page = app.get(f"/programmes/p/{pid}", headers=operator).text
    assert "Chưa được duyệt lần nào" not in page
    assert "Đã được duyệt trước đây nhưng không lưu bản đã duyệt" in page


# ------------------------------------------------------------------ true states


def played(client: TestClient, station_id: str, item_id: str, at: datetime) -> None:
    event = Event(station_id=station_id, kind=EventKind.PLAYED, at=at, item_id=item_id)
    context_of(client).ingestor.handle(
        [(topics.event(station_id), event.model_dump_json().encode())]
    )


def test_a_one_off_that_has_played_says_so_not_on_the_air(
    app: TestClient, moving: MovingClock
) -> None:
    audio = upload(app, make_audio("wav", 2.0), "hop-dan.wav")
    pid = approved(
        app,
        spec(
            key="hop-dan",
            title="Họp dân",
            start="2026-12-07T12:00:00",
            rrule=None,
            items=[{"kind": "audio", "audio_id": audio["id"]}],
        ),
    )
    reader = headers(app, "xem", Role.VIEWER)
    before = app.get(f"/programmes/p/{pid}", headers=reader).text
    assert "Đã duyệt: đang phát theo lịch" in before

    moving.now = START + timedelta(hours=2)  # 13:00: its noon slot has passed
    unreported = app.get(f"/programmes/p/{pid}", headers=reader).text
    assert "đang phát theo lịch" not in unreported
    assert "Đã duyệt: đã qua giờ phát, chưa cụm loa nào báo đã phát" in unreported
    assert "Lần phát cuối lúc 07/12/2026 12:00:00" in unreported

    played(app, "st-0", f"p{pid}.1.1.202612071200", START + timedelta(hours=1, seconds=5))
    page = app.get(f"/programmes/p/{pid}", headers=reader).text
    assert "Đã duyệt: đã phát xong, không phát lại" in page
    assert "1 cụm loa báo đã phát" in page
    calendar = app.get("/programmes", headers=reader).text
    assert "Đã duyệt: đã phát xong, không phát lại" in calendar
    assert "đang phát theo lịch" not in calendar
    today = app.get("/", headers=reader).text
    assert re.search(
        rf'<strong>12:00</strong> <a href="/programmes/p/{pid}">Họp dân</a>\s*'
        r'<span class="muted">· Đã phát xong</span>',
        today,
    )


def test_an_occurrence_before_the_programme_was_written_is_not_shown(app: TestClient) -> None:
    # Written at 11:00 on Monday, daily at 05:30 from Monday: the first one is Tuesday's.
    pid = approved(
        app, spec(key="the-duc", title="Thể dục", start="2026-12-07T05:30:00", rrule="FREQ=DAILY")
    )
    reader = headers(app, "xem", Role.VIEWER)
    today = app.get("/", headers=reader).text
    assert f'href="/programmes/p/{pid}"' not in today
    week = app.get("/programmes?week=2026-12-07", headers=reader).text
    monday = re.search(r"07/12</span></h2>(.*?)</li>\s*<li class=\"day", week, re.S)
    tuesday = re.search(r"08/12</span></h2>(.*?)</li>\s*<li class=\"day", week, re.S)
    assert monday and tuesday
    assert "Thể dục" not in monday.group(1)
    assert "<strong>05:30</strong> Thể dục" in tuesday.group(1)
    page = app.get(f"/programmes/p/{pid}", headers=reader).text
    assert "08/12/2026 05:30:00" in page and "07/12/2026 05:30:00" not in page


def test_after_a_cancel_the_received_counter_keeps_every_station_that_received_it(
    app_client: TestClient,  # noqa: F811
    officer: Officer,  # noqa: F811
) -> None:
    headers_ = officer("o1")
    created = app_client.post(ALERTS, json=alert_body(), headers=headers_).json()
    common = {"alert_id": created["alert_id"], "drill": False}
    for station_id in ("a-1", "a-2"):
        send_event(app_client, station_id, EventKind.ALERT_RECEIVED, **common)
    send_event(app_client, "a-1", EventKind.ALERT_PLAYING, **common)
    page_url = f"/alerts/{created['id']}"
    during = app_client.get(page_url, headers=headers_).text
    assert '<span data-count="received">2</span> / 2' in during

    assert app_client.post(f"{page_url}/cancel", headers=officer("o2"), follow_redirects=False)
    for station_id in ("a-1", "a-2"):
        send_event(app_client, station_id, EventKind.ALERT_CANCELLED, **common)
    after = app_client.get(page_url, headers=headers_).text
    assert 'data-state="cancelled"' in after
    rows = re.findall(r'data-field="received_at">([^<]*)</td>', after)
    assert len(rows) == 2 and all(r.strip() not in ("", "—") for r in rows)
    assert '<span data-count="received">2</span> / 2' in after
    assert '<span data-pct="received">100</span>' in after
    assert '<span data-count="finished">0</span> / 2' in after  # stopped, not played out
