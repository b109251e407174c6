"""Every page family, rendered in Vietnamese with real data behind it, shows no server English.

The data is what a working installation holds: alerts sent and cancelled, programmes,
bulletins, users with roles, the audit log those made (commands, refusals, approvals),
and a station's play log with the details stations really send (``played 1 time(s)``,
``stopped after 0 of 3 repetitions``, plan item ids). ``tests/vietnamese.py`` is the
check; the last two tests prove it can fail: the same page in English is caught, and so
is one Vietnamese translation broken on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from server.alerts.models import AlertRecord
from server.app import create_app
from server.i18n import translations
from server.models import StationEvent
from server.programmes.timeline import occurrence_stamp
from tests.integration.auth_helpers import authenticate
from tests.integration.test_auth_matrix import COMMUNE_A, STATION, World, make_world
from tests.integration.test_http_edge import page_families
from tests.integration.test_server_api import RecordingBus, context_of, make_settings
from tests.vietnamese import english_in, english_on_page, readable_texts

API = "/api/v1"


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path), bus=RecordingBus())) as client:
        yield authenticate(client)


def station_log(client: TestClient, world: World) -> None:
    """A station's play log as its agent writes it (node_firmware/core/machine.py words)."""
    engine = context_of(client).engine
    programme = world.programme[COMMUNE_A]["read"]
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    item = f"p{programme}.1.1.{occurrence_stamp(at)}"
    with Session(engine) as session:
        alert = session.get(AlertRecord, world.alert[COMMUNE_A]["read"])
        assert alert is not None
        said = [
            ("plan_accepted", None, None, None),
            ("audio_fetched", item, None, "already in the cache"),
            ("played", item, None, None),
            ("failed", item, "late", "could not start within 30 s"),
            ("interrupted", item, "preempted", f"pre-empted by {alert.alert_id} (emergency)"),
            ("alert_finished", alert.alert_id, None, "played 1 time(s)"),
            ("alert_cancelled", alert.alert_id, "cancelled", "stopped after 0 of 3 repetitions"),
            ("rejected", None, "bad_signature", None),
        ]
        for n, (kind, item_id, reason, detail) in enumerate(said):
            session.add(StationEvent(
                station_id=STATION[COMMUNE_A], kind=kind, item_id=item_id, reason=reason,
                detail=detail, at=at + timedelta(seconds=n),
            ))  # fmt: skip
        session.commit()


def busy_world(client: TestClient) -> World:
    world = make_world(client)
    station_log(client, world)
    # A station command, a cancelled alert and a refused attempt land in the audit log.
    client.post(f"{API}/stations/{STATION[COMMUNE_A]}/commands", json={"name": "test_tone"})
    client.post(f"{API}/alerts/{world.alert[COMMUNE_A]['read']}/cancel")
    return world


def test_every_page_family_reads_in_vietnamese_with_real_data(admin: TestClient) -> None:
    world = busy_world(admin)
    paths = [*page_families(world), "/audit?verify=1", "/alarms?state=all", "/no-such-page"]
    found: dict[str, list[str]] = {}
    for path in paths:
        response = admin.get(path)
        assert response.status_code in (200, 404), path
        if english := english_on_page(response.text):
            found[path] = english
    assert found == {}
    # The station's own words reached the page as Vietnamese sentences.
    station = admin.get(f"/stations/{STATION[COMMUNE_A]}").text
    assert "đã phát 1 lần" in station and "dừng sau 0 trên 3 lần phát" in station
    assert "Đã phát âm thử trên một trạm" in admin.get("/audit").text


def test_the_check_catches_the_same_pages_in_english(admin: TestClient) -> None:
    busy_world(admin)
    admin.cookies.set("loaxa_lang", "en")
    for path in ("/", f"/stations/{STATION[COMMUNE_A]}", "/audit", "/alerts/new"):
        assert english_on_page(admin.get(path).text), path


def test_the_check_catches_one_broken_translation(
    admin: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = english_on_page(admin.get("/fleet").text)
    assert before == []
    # "Stations" (the menu) left untranslated, as a missing msgstr would leave it.
    catalogue = translations("vi")._catalog  # type: ignore[attr-defined]
    monkeypatch.setitem(catalogue, "Stations", "Stations")
    assert "an English message: 'Stations'" in english_on_page(admin.get("/fleet").text)


def test_the_check_reads_what_a_person_reads() -> None:
    html = (
        '<p title="Played">Đã phát</p><script>var x = "the station";</script>'
        '<button lang="en">English</button><code lang="zxx">{"state": "active"}</code>'
        "<td>played 1 time(s)</td><td>p2.1.1.202612090530</td><td>programme.create</td>"
        "<td>ban-tin.wav</td><td>Xã Thanh Long</td><td>2026-12-07T05:30:00+00:00</td>"
    )
    assert readable_texts(html) == [
        "Played", "Đã phát", "played 1 time(s)", "p2.1.1.202612090530", "programme.create",
        "ban-tin.wav", "Xã Thanh Long", "2026-12-07T05:30:00+00:00",
    ]  # fmt: skip
    found = english_in(readable_texts(html))
    assert [f.split(":")[0] for f in found] == [
        "an English message", "English word 'played'", "a plan item id", "an action code",
        "an ISO (UTC) time",
    ]  # fmt: skip


def test_an_unknown_address_answers_a_page_but_the_api_stays_json(admin: TestClient) -> None:
    page = admin.get("/khong-co-trang-nay")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Trang này không tồn tại" in page.text and english_on_page(page.text) == []
    assert admin.post("/fleet").status_code == 405  # a page's wrong method: a page too
    api = admin.get(f"{API}/khong-co")
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}


def test_the_alert_report_downloads_in_the_pages_language(admin: TestClient) -> None:
    world = busy_world(admin)
    alert = world.alert[COMMUNE_A]["read"]
    page = admin.get(f"/alerts/{alert}").text
    href = f"/api/v1/alerts/{alert}/report.csv?lang=vi"
    assert f'href="{href}"' in page
    report = admin.get(href).text.lstrip("\ufeff")
    assert report.startswith("# CẢNH BÁO THẬT\n") or report.startswith("# DIỄN TẬP")
    assert "Mã trạm,Trạm,Mã địa bàn,Trạng thái,Nhận lúc (giờ Việt Nam)" in report
    assert "station_id" not in report and "state " not in report
    # Without a language the API keeps its machine names for programs that read it.
    machine = admin.get(f"/api/v1/alerts/{alert}/report.csv").text
    assert "drill,station_id,name,area_code,state," in machine
