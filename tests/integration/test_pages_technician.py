"""The technician's pages: fleet at a glance with its offline map, a station, the alarms.

Rendered by the real app through TestClient. The map is parsed as the SVG it is, so the
test checks geometry (north is up, west is left) and not merely that a circle exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from server.app import create_app
from server.auth.permissions import Role
from server.health.models import Alarm, AlarmEvent, HealthSample
from server.models import Station, StationEvent, StationStatus
from server.pages import project
from tests.integration.auth_helpers import authenticate, context_of
from tests.integration.test_server_api import RecordingBus, make_settings

MINE, OTHER = "01273", "01279"  # two communes of Cao Bằng; the technician holds only MINE
NOW = datetime(2025, 7, 1, 1, 30, tzinfo=UTC)  # 08:30 in Vietnam

STATIONS: list[dict[str, Any]] = [
    # id, lat, lon, status, health
    {"id": "st-north", "lat": 22.70, "lon": 106.20, "status": "online", "health": {}},
    {"id": "st-south", "lat": 22.60, "lon": 106.30, "status": "offline", "health": {}},
    {
        "id": "st-amp",
        "lat": 22.65,
        "lon": 106.25,
        "status": "degraded",
        "health": {"amp_on": True, "amp_fault": "no_current_while_playing"},
    },
    {"id": "st-new", "lat": 22.66, "lon": 106.22, "status": "unknown", "health": None},
]
FLEET_WORDS = {  # what a Vietnamese reader sees for each state
    "online": "Hoạt động tốt",
    "degraded": "Có sự cố",
    "offline": "Mất kết nối",
    "unknown": "Chưa rõ",
}
ELSEWHERE = {"id": "st-elsewhere", "lat": 22.9, "lon": 106.0, "status": "online"}


def _station(area: str, spec: dict[str, Any]) -> Station:
    health = spec.get("health")
    return Station(
        id=spec["id"],
        name=f"Cụm loa {spec['id']}",
        area_code=area,
        latitude=spec["lat"],
        longitude=spec["lon"],
        mqtt_username=spec["id"],
        mqtt_password_hash="-",
        status=StationStatus(spec["status"]),
        status_at=NOW,
        last_health=(
            None
            if health is None
            else {
                "agent_version": "0.1.0",
                "uptime_s": 90061,
                "cpu_temp_c": 81.5,
                "disk_free_bytes": 500_000_000,
                "disk_total_bytes": 16_000_000_000,
                "modem_rssi_dbm": -87,
                "modem_operator": "Viettel",
                "amp_on": False,
                "relay_ok": True,
                "volume_pct": 70,
                **health,
            }
        ),
        last_health_at=NOW if health is not None else None,
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, bus=RecordingBus(), clock=lambda: NOW)) as client:
        with Session(context_of(client).engine) as session:
            for spec in STATIONS:
                session.add(_station(MINE, spec))
            session.add(_station(OTHER, ELSEWHERE))
            session.flush()  # stations first: events and samples refer to them
            session.add(
                StationEvent(
                    station_id="st-north",
                    kind="played",
                    item_id="b-1",
                    at=NOW - timedelta(minutes=5),
                    received_at=NOW - timedelta(minutes=5),
                )
            )
            session.add(
                StationEvent(
                    station_id="st-north",
                    kind="amp_fault",
                    reason="no_current_while_playing",
                    at=NOW,
                    received_at=NOW,
                )
            )
            # The clock offset is measured by the server, so it comes from the samples.
            session.add(HealthSample(station_id="st-north", at=NOW, clock_offset_ms=812.0))
            for station_id, kind, severity in (
                ("st-south", "offline", "critical"),
                ("st-amp", "amp_fault", "warning"),
                ("st-elsewhere", "offline", "critical"),
            ):
                alarm = Alarm(
                    station_id=station_id,
                    kind=kind,
                    severity=severity,
                    detail=f"chi tiết {station_id}",
                    opened_at=NOW - timedelta(minutes=20),
                )
                session.add(alarm)
                session.flush()
                session.add(AlarmEvent(alarm_id=alarm.id or 0, state="open", at=alarm.opened_at))
            session.commit()
        yield client


@pytest.fixture
def technician(app: TestClient) -> TestClient:
    return authenticate(app, Role.TECHNICIAN, MINE)


@dataclass
class MapStation:
    station: str
    state: str
    href: str
    cx: float = 0.0
    cy: float = 0.0
    fill: str = ""
    texts: list[str] = field(default_factory=list)


class MapParser(HTMLParser):
    """Collects each station link of the map SVG with its circle and texts."""

    def __init__(self) -> None:
        super().__init__()
        self.in_map = False
        self.current: MapStation | None = None
        self.stations: list[MapStation] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg" and "map" in a.get("class", ""):
            self.in_map = True
        elif self.in_map and tag == "a" and "station" in a.get("class", ""):
            self.current = MapStation(a["data-station"], a["data-state"], a["href"])
        elif self.current is not None and tag == "circle":
            self.current.cx, self.current.cy = float(a["cx"]), float(a["cy"])
            self.current.fill = a["class"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.current is not None:
            self.stations.append(self.current)
            self.current = None
        elif tag == "svg":
            self.in_map = False

    def handle_data(self, data: str) -> None:
        if self.current is not None and data.strip():
            self.current.texts.append(data.strip())


def map_of(html: str) -> dict[str, MapStation]:
    parser = MapParser()
    parser.feed(html)
    return {s.station: s for s in parser.stations}


def assert_good_page(html: str) -> None:
    assert '<meta charset="utf-8">' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert '<html lang="vi">' in html


# ------------------------------------------------------------------ fleet


def test_fleet_counts_map_and_list_show_only_my_area(technician: TestClient) -> None:
    page = technician.get("/fleet")
    assert page.status_code == 200
    html = page.text
    assert_good_page(html)
    assert "Tình trạng các trạm loa" in html and "Bản đồ trạm" in html
    assert "st-elsewhere" not in html  # another commune's station is nowhere on the page

    tiles = dict(re.findall(r'class="tile fill-(\w+)[^"]*"[^>]*>\s*<span class="n">(\d+)<', html))
    assert tiles == {"offline": "1", "degraded": "1", "unknown": "1", "online": "1"}

    stations = map_of(html)
    assert set(stations) == {"st-north", "st-south", "st-amp", "st-new"}
    north, south = stations["st-north"], stations["st-south"]
    assert north.cy < south.cy, "the station further north is drawn higher"
    assert north.cx < south.cx, "the station further west is drawn further left"
    expected = {
        "st-north": "online",
        "st-south": "offline",
        "st-amp": "degraded",
        "st-new": "unknown",
    }
    for station_id, state in expected.items():
        drawn = stations[station_id]
        assert drawn.state == state
        assert drawn.fill == f"fill-{state}"  # colour…
        assert any(FLEET_WORDS[state] in text for text in drawn.texts)  # …and words
        assert f"Cụm loa {station_id}" in drawn.texts  # the visible label
        assert drawn.href == f"/stations/{station_id}"  # a link: reachable by keyboard
        assert 0 <= drawn.cx <= 640 and 0 <= drawn.cy <= 420

    listed = re.findall(r'<tr data-station="([^"]+)"', html)
    assert listed == ["st-south", "st-amp", "st-new", "st-north"]  # worst first
    assert "01/07/2025 08:30:00" in html  # last heartbeat, in Vietnam's time


def test_projection_keeps_one_scale_and_centres_a_lone_station() -> None:
    lone = _station(MINE, STATIONS[0])
    (point,) = project([lone], width=100, height=80, padding=10)
    assert (point.x, point.y) == (50, 40)
    a, b = _station(MINE, STATIONS[0]), _station(MINE, STATIONS[1])
    pa, pb = project([a, b], width=600, height=400, padding=50)
    # Both lie on the padded box's edge along the limiting axis, and north is up.
    assert min(pa.y, pb.y) == 50 and max(pa.y, pb.y) == 350 and pa.y < pb.y


# ------------------------------------------------------------------ station


def test_station_page_shows_probes_log_charts_and_technician_actions(
    technician: TestClient,
) -> None:
    page = technician.get("/stations/st-north")
    assert page.status_code == 200
    html = page.text
    assert_good_page(html)
    assert "Cụm loa st-north" in html and "Hoạt động tốt" in html
    assert "Nhiệt độ CPU" in html and "81,5 °C" in html  # Vietnamese decimal comma
    assert 'class="bad"' in html  # 81.5 °C and 3 % disk are flagged
    assert "0,5 GB trống / 16,0 GB (3 %)" in html
    assert re.search(r'<dd class="bad">.*?812 ms</dd>', html)  # over the 500 ms alarm line
    assert "-87 dBm · Viettel" in html and "1 ngày 1 giờ" in html
    assert "Phát xong" in html and "Lỗi amply" in html  # the as-run log, in words
    for command in ("test_tone", "set_amp", "set_volume", "restart", "fetch_log"):
        assert f'data-command="{command}"' in html
    assert 'data-range="24h"' in html and 'data-range="7d"' in html
    assert 'data-metric="cpu_temp_c"' in html
    assert "/static/charts.js" in html and "/static/station.js" in html


def test_station_actions_need_the_command_right_and_other_areas_stay_hidden(
    app: TestClient,
) -> None:
    viewer = authenticate(app, Role.VIEWER, MINE)
    page = viewer.get("/stations/st-amp")
    assert page.status_code == 200 and "Có sự cố" in page.text
    assert "data-command" not in page.text and "/static/station.js" not in page.text
    assert viewer.get("/stations/st-elsewhere").status_code == 404
    assert viewer.get("/stations/no-such-station").status_code == 404


# ------------------------------------------------------------------ alarms


def alarm_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-alarm="(\d+)"', html)


def test_alarm_list_tabs_acknowledgement_and_history(app: TestClient) -> None:
    technician = authenticate(app, Role.TECHNICIAN, MINE)
    html = technician.get("/alarms").text
    assert_good_page(html)
    assert "Sự cố của các trạm loa" in html
    assert re.search(r'href="/alarms\?state=open" aria-current="page">Đang mở<', html)
    assert "Đã xác nhận" in html and "Đã xử lý" in html
    assert "st-elsewhere" not in html  # another commune's alarm is not listed
    assert len(alarm_ids(html)) == 2 and html.count('<form class="ack"') == 2
    # Worst first: the critical offline alarm above the amplifier warning.
    assert html.index("Nghiêm trọng") < html.index("Cần chú ý")
    assert "Mất kết nối quá lâu" in html and "Lỗi amply" in html
    assert "Cụm loa st-south" in html and "01/07/2025 08:10:00" in html  # opened, local time

    south = alarm_ids(html)[0]
    acked = technician.post(
        f"/api/v1/alarms/{south}/acknowledge", json={"note": "đang đi thay pin"}
    )
    assert acked.status_code == 200, acked.text
    assert alarm_ids(technician.get("/alarms").text) == [alarm_ids(html)[1]]
    done = technician.get("/alarms?state=acknowledged").text
    assert re.search(r'aria-current="page">Đã xác nhận<', done)
    assert alarm_ids(done) == [south] and '<form class="ack"' not in done
    assert "đang đi thay pin" in done and "technician-01273" in done  # history: who, why
    assert "Không có sự cố nào" in technician.get("/alarms?state=resolved").text
    assert 'aria-current="page">Đang mở<' in technician.get("/alarms?state=bogus").text

    app.headers.pop("Authorization")
    viewer = authenticate(app, Role.VIEWER, MINE)
    follows = viewer.get("/alarms").text
    assert len(alarm_ids(follows)) == 1 and '<form class="ack"' not in follows


def test_station_page_lists_its_own_open_alarms(technician: TestClient) -> None:
    html = technician.get("/stations/st-south").text
    assert len(alarm_ids(html)) == 1 and "Mất kết nối quá lâu" in html
    assert '<form class="ack"' in html and "/static/alarms.js" in html
    assert alarm_ids(technician.get("/stations/st-north").text) == []


# ------------------------------------------------------------------ the whole set


PAGES = ("/fleet", "/stations/st-north", "/alarms")


@pytest.mark.parametrize("path", PAGES)
def test_pages_send_strangers_to_sign_in(app: TestClient, path: str) -> None:
    response = app.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_everything_is_served_locally(technician: TestClient) -> None:
    for path in PAGES:
        html = technician.get(path).text
        assert "http://" not in html and "https://" not in html, path
        for url in re.findall(r'(?:src|href)="([^"]*)"', html):
            assert url.startswith(("/", "#")), (path, url)
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            served = technician.get(asset)
            assert served.status_code == 200, asset
            assert "https://" not in served.text and "@import" not in served.text
    css = technician.get("/static/app.css")
    assert css.headers["content-type"].startswith("text/css")
    assert ":focus-visible" in css.text  # keyboard focus is always visible
    assert "@media (max-width: 760px)" in css.text  # the phone layout
