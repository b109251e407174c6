"""The report page (issue 15): a month of as-run figures for a commune, per station and
summed, drills apart from real alerts, with a chart, a CSV and a print layout to sign.

Plan records and station events are stored as the server stores them (the as-run
end-to-end test covers how they get there from real stations); the page must show the
same figures as the as-run API, in Vietnamese, only for the reader's areas.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from server.alerts.models import AlertRecord
from server.app import create_app
from server.auth.permissions import Role
from server.i18n import LANGUAGE_COOKIE
from server.local_time import LOCAL_TZ
from server.models import StationEvent
from server.reports.planned import PlannedItem
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_pages_technician import MINE, OTHER, _station
from tests.integration.test_server_api import RecordingBus, make_settings

DAY = datetime(2026, 11, 10, 22, 30, tzinfo=UTC)  # 05:30 on 11/11 in Vietnam
MONTH = "2026-11"
MINUTE = 60_000


def _plan(station: str, item: str, start: datetime, length_ms: int, **kw: str) -> PlannedItem:
    return PlannedItem(
        station_id=station, item_id=item, start_at=start, length_ms=length_ms,
        priority=kw.get("priority", "normal"), title=kw.get("title", "Bản tin sáng"),
        source="audio", first_plan_seq=1, last_plan_seq=1,
    )  # fmt: skip


def _event(station: str, kind: str, at: datetime, **kw: object) -> StationEvent:
    return StationEvent(station_id=station, kind=kind, at=at, **kw)


def _alert(alert_id: str, drill: bool) -> AlertRecord:
    return AlertRecord(
        alert_id=alert_id, title="Bão số 3", severity="severe", drill=drill, payload="canned",
        created_by="canbo-tinh", expires_at=DAY + timedelta(hours=6),
    )  # fmt: skip


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path), bus=RecordingBus())) as test_client:
        with Session(context_of(test_client).engine) as session:
            for spec in (
                {"id": "st-north", "lat": 22.7, "lon": 106.2, "status": "online"},
                {"id": "st-south", "lat": 22.6, "lon": 106.3, "status": "online"},
            ):
                session.add(_station(MINE, {**spec, "health": {}}))
            session.add(_station(OTHER, {"id": "st-far", "lat": 22.9, "lon": 106.0,
                                         "status": "online", "health": {}}))  # fmt: skip
            later = DAY + timedelta(days=1)
            session.add_all([
                # North: a whole bulletin and a pre-empted one; South: one silent miss.
                _plan("st-north", "p1.1.1.a", DAY, 2 * MINUTE),
                _event("st-north", "played", DAY, item_id="p1.1.1.a", started_at=DAY,
                       finished_at=DAY + timedelta(minutes=2)),
                _plan("st-north", "p1.1.1.b", later, 2 * MINUTE),
                _event("st-north", "interrupted", later, item_id="p1.1.1.b", started_at=later,
                       finished_at=later + timedelta(seconds=30)),
                _plan("st-south", "p1.1.1.a", DAY, 2 * MINUTE),
                # A real typhoon warning and a drill, both heard at North.
                _alert("al-real", drill=False), _alert("al-drill", drill=True),
                _event("st-north", "alert_finished", DAY + timedelta(hours=3), alert_id="al-real"),
                _event("st-north", "alert_finished", DAY + timedelta(hours=5),
                       alert_id="al-drill"),
                # Another commune's station, and a bulletin in December: not in the report.
                _plan("st-far", "p9.1.1.a", DAY, MINUTE),
                _plan("st-north", "p1.1.1.dec", datetime(2026, 12, 2, tzinfo=UTC), MINUTE),
            ])  # fmt: skip
            session.commit()
        yield test_client


def cells(html: str, label: str) -> list[str]:
    """The text of every cell labelled ``label`` (one per row, the total last)."""
    found = re.findall(rf'<td data-label="{re.escape(label)}">(.*?)</td>', html, re.S)
    return [re.sub(r"<[^>]+>|\s+", " ", cell).strip() for cell in found]


def test_the_commune_operator_reads_the_month_per_station_and_summed(client: TestClient) -> None:
    authenticate(client, Role.COMMUNE_OPERATOR, MINE)
    response = client.get("/reports", params={"month": MONTH})
    assert response.status_code == 200, response.text
    html = response.text
    assert 'href="/reports" aria-current="page">Báo cáo</a>' in html
    assert "Kỳ báo cáo: 01/11/2026 – 30/11/2026 (giờ Việt Nam)" in html
    typed = client.get("/reports", params={"month": "11/2026"}).text  # as the box writes it
    assert "Kỳ báo cáo: 01/11/2026 – 30/11/2026 (giờ Việt Nam)" in typed
    assert cells(html, "Trạm") == ["Cụm loa st-north", "Cụm loa st-south", "Tổng cộng"]
    assert cells(html, "Kế hoạch") == ["2", "1", "3"]
    assert cells(html, "Đã phát xong") == ["1", "0", "1"]
    assert cells(html, "Bị ngắt") == ["1", "0", "1"]
    assert cells(html, "Lỗi hoặc bỏ lỡ") == ["0", "1", "1"]
    assert cells(html, "Khẩn cấp (đã phát)") == ["1 (1)", "0 (0)", "1 (1)"]
    assert cells(html, "Diễn tập (đã phát)") == ["1 (1)", "0 (0)", "1 (1)"]
    # 2:30 of 4:00 asked at North; 2:30 of 6:00 in all (41,7 % with a decimal comma).
    played = cells(html, "Thời lượng phát / yêu cầu")
    assert played == ["0:02:30 / 0:04:00 (62,5 %)", "0:00:00 / 0:02:00 (0,0 %)",
                      "0:02:30 / 0:06:00 (41,7 %)"]  # fmt: skip
    assert "st-far" not in html
    # The chart: one bar per station, its segments sized by outcome.
    svg = html[html.index('<figure class="report-chart">') : html.index("</figure>")]
    assert svg.count('<rect class="o-played"') == 1 and 'class="o-missed"' in svg
    widths = [float(w) for w in re.findall(r'width="([\d.]+)" height', svg)]
    assert widths == [300.0, 300.0, 300.0]  # North: 1 played + 1 cut of 2; South: 1 missed
    assert svg.count("<svg") == 2 and "Cụm loa st-south (1)" in svg
    # The printable report: the official heading and the two signatures.
    for words in ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Người lập biểu", "Thủ trưởng đơn vị"):
        assert words in html
    assert "TỈNH CAO BẰNG" in html.upper()


def test_the_csv_link_downloads_the_same_figures(client: TestClient) -> None:
    authenticate(client, Role.COMMUNE_OPERATOR, MINE)
    html = client.get("/reports", params={"month": MONTH}).text
    href = re.search(r'<a class="button" href="([^"]+)" download>', html)
    assert href is not None
    response = client.get(href[1].replace("&amp;", "&"))
    assert response.status_code == 200, response.text
    # The page's language heads the columns (the API alone keeps the machine names).
    rows = list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert [r["Mã trạm"] for r in rows] == ["st-north", "st-south", ""]
    total = rows[-1]
    assert total["Trạm"] == "Tổng cộng"
    assert (total["Kế hoạch"], total["Đã phát xong"], total["Bỏ lỡ"]) == ("3", "1", "1")
    assert (total["Mục khẩn cấp"], total["Diễn tập"]) == ("1", "1")
    assert total["Thời gian đã phát (giây)"] == "150.0"
    machine = client.get(href[1].replace("&amp;", "&").replace("lang=vi", ""))
    assert machine.text.lstrip("\ufeff").startswith("station_id,station_name,")


def test_another_commune_and_bad_months_are_refused_in_words(client: TestClient) -> None:
    authenticate(client, Role.COMMUNE_OPERATOR, MINE)
    refused = client.get("/reports", params={"area": OTHER, "month": MONTH})
    assert refused.status_code == 403 and "không được mở trang này" in refused.text
    wrong = client.get("/reports", params={"month": "13/2026"})
    assert wrong.status_code == 422 and "11/2026 (tháng/năm)" in wrong.text
    # The default is this month in Vietnam's time, written month/year in a plain text box
    # (a native month box shows the browser's language, not the page's).
    now = datetime.now(UTC).astimezone(LOCAL_TZ)
    page = client.get("/reports").text
    assert f'type="text" name="month" value="{now:%m/%Y}"' in page
    assert 'type="month"' not in page and 'type="date"' not in page


def test_a_province_officer_sees_every_commune_and_may_pick_one(client: TestClient) -> None:
    token = make_token(context_of(client).engine, "tinh", (Role.VIEWER, "04"))
    client.headers.update(bearer(token))
    html = client.get("/reports", params={"month": MONTH}).text
    assert cells(html, "Kế hoạch")[-1] == "4"  # the far commune's bulletin counts too
    one = client.get("/reports", params={"month": MONTH, "area": OTHER}).text
    assert cells(one, "Kế hoạch") == ["1", "1"]


def test_english_readers_get_the_catalogue(client: TestClient) -> None:
    authenticate(client, Role.COMMUNE_OPERATOR, MINE)
    client.cookies.set(LANGUAGE_COOKIE, "en")
    html = client.get("/reports", params={"month": MONTH}).text
    assert "Prepared by" in html and "Played time / requested" in html


def test_other_periods_are_days_both_included_and_bounded(client: TestClient) -> None:
    authenticate(client, Role.COMMUNE_OPERATOR, MINE)
    # 11/11 only (Vietnam days): North's first bulletin and South's miss, not 12/11's cut.
    one_day = client.get("/reports", params={"from": "2026-11-11", "to": "2026-11-11"}).text
    assert "Kỳ báo cáo: 11/11/2026 – 11/11/2026" in one_day
    # As the page's boxes write days (and a clerk types them): the same report.
    typed = client.get("/reports", params={"from": "11/11/2026", "to": "11/11/2026"}).text
    assert cells(typed, "Kế hoạch") == cells(one_day, "Kế hoạch")
    assert cells(one_day, "Kế hoạch") == ["1", "1", "2"]
    assert cells(one_day, "Bị ngắt") == ["0", "0", "0"]
    # A quarter across the year's end includes December's bulletin.
    quarter = client.get("/reports", params={"from": "2026-11-01", "to": "2027-01-31"}).text
    assert cells(quarter, "Kế hoạch")[-1] == "4"
    for params, words in (
        ({"from": "2026-11-20", "to": "2026-11-10"}, "Ngày cuối đứng trước ngày đầu."),
        ({"from": "2026-01-01", "to": "2026-12-31"}, "tối đa 93 ngày"),
        ({"from": "2026-11-01"}, "ví dụ 25/11/2026"),
        ({"from": "31/02/2026", "to": "01/03/2026"}, "ví dụ 25/11/2026"),
    ):
        refused = client.get("/reports", params=params)
        assert refused.status_code == 422 and words in refused.text, params
