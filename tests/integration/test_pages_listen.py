"""Residents hear the commune's bulletins again (issue 15): a public page and a podcast.

Real app, real SQLite, real ffmpeg (the audio is uploaded and converted as operators
do; the programmes are made through the pages and approved). What the stations played
is stored as the server stores it (the as-run end-to-end test covers how it arrives).
A resident, signed in nowhere, must find exactly the approved bulletins that aired in
the last week, hear and download them, and learn nothing private.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from server.app import create_app
from server.auth.permissions import Role
from server.models import Station, StationEvent, StationStatus
from server.programmes.timeline import occurrence_stamp
from server.reports.planned import PlannedItem
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import bearer, context_of, make_token
from tests.integration.test_server_api import RecordingBus, make_settings

MINE, OTHER = "01273", "01279"
NOW = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)  # Monday 08:30 in Vietnam
YESTERDAY = datetime(2026, 12, 5, 22, 30, tzinfo=UTC)  # Sunday 05:30 in Vietnam
OPERATOR = "can-bo-van-hoa-xa"


def _station(station_id: str, area: str) -> Station:
    return Station(
        id=station_id, name=f"Cụm loa {station_id}", area_code=area, latitude=22.6,
        longitude=106.2, mqtt_username=station_id, mqtt_password_hash="-",
        status=StationStatus.ONLINE, status_at=NOW,
    )  # fmt: skip


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, bus=RecordingBus(), clock=lambda: NOW)) as client:
        with Session(context_of(client).engine) as session:
            for station_id, area in (("st-north", MINE), ("st-south", MINE), ("st-far", OTHER)):
                session.add(_station(station_id, area))
            session.commit()
        yield client


def as_user(client: TestClient, name: str, role: Role, area: str) -> dict[str, str]:
    return bearer(make_token(context_of(client).engine, name, (role, area)))


def approved_programme(client: TestClient, title: str, seconds: float, area: str, at: str) -> Any:
    """Upload (real ffmpeg), schedule through the form, submit and approve."""
    operator = as_user(client, f"{OPERATOR}-{area}", Role.COMMUNE_OPERATOR, area)
    audio = client.post(
        "/audio/upload", headers=operator,
        files={"file": (f"{title}.wav", make_audio("wav", seconds))},
    ).json()  # fmt: skip
    audio = client.get(f"/api/v1/audio/{audio['id']}", headers=operator).json()
    form = {"title": title, "audio_id": str(audio["id"]), "day": "2026-12-20", "at": at,
            "priority": "normal", "areas": area, "repeat": "weekly",
        "days": ["6"]}  # fmt: skip
    made = client.post("/programmes/new", data=form, headers=operator, follow_redirects=False)
    assert made.status_code == 303, made.text
    page = made.headers["location"]
    assert client.post(f"{page}/submit", headers=operator).status_code == 200
    approver = as_user(client, f"duyet-{area}", Role.APPROVER, area)
    assert client.post(f"{page}/approve", headers=approver).status_code == 200
    programme = client.get(f"/api/v1/programmes/{page.rsplit('/', 1)[1]}", headers=approver)
    assert programme.json()["state"] == "approved", programme.text
    return {"id": programme.json()["id"], "audio": audio, "page": page}


def aired(
    client: TestClient, programme_id: int | None, sha256: str, station: str, at: datetime,
    kind: str = "played", rep: int = 1, item_id: str | None = None,
) -> None:  # fmt: skip
    """What the publisher records for a plan item, and the station's outcome for it."""
    item = item_id or f"p{programme_id}.1.{rep}.{occurrence_stamp(at)}"
    with Session(context_of(client).engine) as session:
        session.add(PlannedItem(
            station_id=station, item_id=item, start_at=at, length_ms=2000, priority="normal",
            title="Bản tin sáng" + (f" (lần {rep})" if rep > 1 else ""), source="audio",
            sha256=sha256, first_plan_seq=1, last_plan_seq=1,
        ))  # fmt: skip
        session.add(StationEvent(station_id=station, kind=kind, at=at, item_id=item,
                                 started_at=at, finished_at=at + timedelta(seconds=2)))  # fmt: skip
        session.commit()


@pytest.fixture
def week(app: TestClient) -> dict[str, Any]:
    """A commune's week: one bulletin to list, and every kind of thing that must not be."""
    morning = approved_programme(app, "Bản tin sáng", 2.0, MINE, "05:30")
    meeting = approved_programme(app, "Thông báo họp tổ dân phố", 1.5, MINE, "06:00")
    stale = approved_programme(app, "Tin tuần trước", 1.2, MINE, "06:30")
    failed = approved_programme(app, "Tin không phát được", 1.7, MINE, "07:00")
    far = approved_programme(app, "Tin phường bên", 1.3, OTHER, "05:30")
    sha = {name: p["audio"]["sha256"] for name, p in
           {"morning": morning, "meeting": meeting, "stale": stale, "failed": failed,
            "far": far}.items()}  # fmt: skip
    # The morning bulletin: two stations, played twice each, plus an earlier day.
    for station in ("st-north", "st-south"):
        for rep in (1, 2):
            aired(app, morning["id"], sha["morning"], station, YESTERDAY, rep=rep)
    aired(app, morning["id"], sha["morning"], "st-north", YESTERDAY - timedelta(days=2))
    aired(app, meeting["id"], sha["meeting"], "st-north", YESTERDAY)  # hidden below
    aired(app, stale["id"], sha["stale"], "st-north", NOW - timedelta(days=8))
    aired(app, failed["id"], sha["failed"], "st-north", YESTERDAY, kind="failed")
    aired(app, far["id"], sha["far"], "st-far", YESTERDAY)
    # A one-off broadcast (no approval) and an alert: never on the public page.
    aired(app, None, sha["failed"], "st-south", YESTERDAY, item_id="b-7")
    with Session(context_of(app).engine) as session:
        session.add(StationEvent(station_id="st-north", kind="alert_finished",
                                 at=YESTERDAY, alert_id="al-1"))  # fmt: skip
        session.commit()
    operator = as_user(app, f"{OPERATOR}-{MINE}", Role.COMMUNE_OPERATOR, MINE)
    hidden = app.post(f"/programmes/public/{meeting['id']}", data={"public": "false"},
                      headers=operator, follow_redirects=False)  # fmt: skip
    assert hidden.status_code == 303, hidden.text
    return {"morning": morning, "meeting": meeting, "sha": sha, "operator": operator}


def audio_links(html: str) -> list[str]:
    return re.findall(r'<audio controls preload="none" src="([^"]+)">', html)


def test_a_resident_hears_the_weeks_approved_bulletins_without_signing_in(
    app: TestClient, week: dict[str, Any]
) -> None:
    index = app.get("/nghe")
    assert index.status_code == 200
    assert 'href="/nghe/01273">Phường Thục Phán' in index.text
    assert 'href="/nghe/01279">Phường Nùng Trí Cao' in index.text

    page = app.get(f"/nghe/{MINE}")
    assert page.status_code == 200, page.text
    html = page.text
    assert "<h1>Phường Thục Phán</h1>" in html and "Nghe lại bản tin" in html
    sha = week["sha"]["morning"]
    # One entry per occurrence: two stations and two repetitions count once.
    assert audio_links(html) == [f"/nghe/{MINE}/audio/{sha}.ogg",
                                 f"/nghe/{MINE}/audio/{sha}.ogg"]  # fmt: skip
    assert html.count("<h2>Bản tin sáng</h2>") == 2
    assert "06/12/2026 05:30" in html and "04/12/2026 05:30" in html
    for absent in ("Thông báo họp", "Tin tuần trước", "Tin không phát", "Tin phường bên"):
        assert absent not in html
    # Nothing private: no station, operator, approver or internal id; no script.
    for private in ("st-north", "Cụm loa", OPERATOR, "duyet-", f"p{week['morning']['id']}.",
                    "/programmes/", "<script"):  # fmt: skip
        assert private not in html, private


def test_pages_and_audio_are_cached_and_only_listed_audio_is_served(
    app: TestClient, week: dict[str, Any]
) -> None:
    page = app.get(f"/nghe/{MINE}")
    # Light on 3G: a few kB of HTML; the only other fetches are the shared stylesheet and
    # the tab's icon (a 0.4 kB SVG).
    css = app.get("/static/app.css")
    assert len(app.get("/static/favicon.svg").content) < 1_000
    print(f"replay page {len(page.content)} B, stylesheet {len(css.content)} B")
    assert len(page.content) < 8_000 and len(css.content) < 32_000
    assert re.findall(r'(?:href|src)="(/[^"]*)"', page.text) == [
        "/static/app.css",
        "/static/favicon.svg",
        f"/nghe/{MINE}/rss.xml",
        "/nghe",
        *[link for src in audio_links(page.text) for link in (src, src)],
        f"/nghe/{MINE}/rss.xml",
    ]
    assert page.headers["cache-control"].startswith("public, max-age=")
    again = app.get(f"/nghe/{MINE}", headers={"if-none-match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""

    src = audio_links(page.text)[0]
    audio = app.get(src)
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/ogg"
    assert hashlib.sha256(audio.content).hexdigest() == week["sha"]["morning"]
    assert audio.headers["cache-control"].startswith("public")
    assert app.get(src, headers={"if-none-match": audio.headers["etag"]}).status_code == 304
    assert app.get(src, headers={"range": "bytes=0-99"}).status_code == 206  # seeking on 3G

    # The hidden, the stale, the failed and the neighbour's audio are not served here,
    # nor any other file of the store (the alert library included).
    for name in ("meeting", "stale", "failed", "far"):
        assert app.get(f"/nghe/{MINE}/audio/{week['sha'][name]}.ogg").status_code == 404, name
    assert app.get(f"/nghe/{MINE}/audio/{week['sha']['morning']}.mp3").status_code == 404
    assert app.get(f"/nghe/{OTHER}/audio/{week['sha']['morning']}.ogg").status_code == 404
    assert app.get("/nghe/99999").status_code == 404
    assert app.get("/nghe/04").status_code == 404  # a province is not a commune page


def test_the_podcast_feed_is_valid_rss_with_enclosures(
    app: TestClient, week: dict[str, Any]
) -> None:
    response = app.get(f"/nghe/{MINE}/rss.xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/rss+xml")
    again = app.get(f"/nghe/{MINE}/rss.xml", headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304  # podcast apps poll: unchanged means nothing to send
    root = ET.fromstring(response.content)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel = root.find("channel")
    assert channel is not None
    assert channel.findtext("title") == "Đài truyền thanh Phường Thục Phán"
    assert channel.findtext("language") == "vi"
    assert parsedate_to_datetime(channel.findtext("lastBuildDate") or "") == YESTERDAY
    items = channel.findall("item")
    assert [i.findtext("title") for i in items] == [
        "Bản tin sáng — 06/12/2026 05:30", "Bản tin sáng — 04/12/2026 05:30"]  # fmt: skip
    newest = items[0]
    enclosure = newest.find("enclosure")
    assert enclosure is not None and enclosure.get("type") == "audio/ogg"
    url = enclosure.get("url", "")
    assert url.startswith("http://testserver/nghe/01273/audio/")
    body = app.get(url.removeprefix("http://testserver")).content
    assert int(enclosure.get("length", "0")) == len(body)
    assert parsedate_to_datetime(newest.findtext("pubDate") or "") == YESTERDAY
    guids = [i.findtext("guid") for i in items]
    assert len(set(guids)) == 2  # the same audio on two days: two episodes
    assert "st-" not in response.text and OPERATOR not in response.text


def test_the_operator_shows_and_hides_a_programme_only_in_their_commune(
    app: TestClient, week: dict[str, Any]
) -> None:
    morning, operator = week["morning"], week["operator"]
    page = app.get(morning["page"], headers=operator).text
    assert "Ẩn khỏi trang công khai" in page and 'action="/programmes/public/' in page
    hide = app.post(f"/programmes/public/{morning['id']}", data={"public": "false"},
                    headers=operator, follow_redirects=False)  # fmt: skip
    assert hide.status_code == 303
    assert audio_links(app.get(f"/nghe/{MINE}").text) == []
    assert app.get(f"/nghe/{MINE}/audio/{week['sha']['morning']}.ogg").status_code == 404
    assert "Hiện trên trang công khai" in app.get(morning["page"], headers=operator).text

    neighbour = as_user(app, "van-hoa-phuong-ben", Role.COMMUNE_OPERATOR, OTHER)
    refused = app.post(f"/programmes/public/{morning['id']}", data={"public": "true"},
                       headers=neighbour, follow_redirects=False)  # fmt: skip
    assert refused.status_code == 403
    assert audio_links(app.get(f"/nghe/{MINE}").text) == []
    shown = app.post(f"/programmes/public/{morning['id']}", data={"public": "true"},
                     headers=operator, follow_redirects=False)  # fmt: skip
    assert shown.status_code == 303 and len(audio_links(app.get(f"/nghe/{MINE}").text)) == 2
    audit = app.get("/api/v1/audit", params={"action": "programme.public"},
                    headers=as_user(app, "tinh", Role.PROVINCE_ADMIN, "04"))  # fmt: skip
    assert audit.status_code == 200, audit.text
