"""The technician's pages in Chromium, as the README shows them: the fleet, a station, the
faults — and the README's screenshots of them (``fleet.png``, ``fleet-phone.png``,
``station.png``, ``alarms.png``) are taken here, so they follow the pages as they change.

Four stations of one commune with positions: one runs the real agent (it plays a bulletin
and a test tone, so its log and command result are what a station really sends), one never
connected, one offline and one with an amplifier fault. A day of synthetic health samples
and the two open alarms are written straight into the database, as a month of heartbeats
cannot be waited for; the charts then have a day to draw.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from loaxa.stack import LocalStack
from server.health.models import Alarm, AlarmEvent, HealthSample
from server.models import Station, StationStatus
from tests.audio_samples import make_audio
from tests.browser.conftest import COMMUNE, LAPTOP, PHONE, make_user, screenshot
from tests.browser.test_phone_pages import shown_texts
from tests.vietnamese import english_in

PageFor = Callable[..., Any]
NAMES = ("Cụm loa Nà Rị", "Cụm loa Bản Giới", "Cụm loa Phja Đén", "Cụm loa Khuổi Khon")
POSITIONS = ((22.70, 106.20), (22.66, 106.25), (22.62, 106.22), (22.64, 106.29))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def status(stack: LocalStack, station_id: str) -> str:
    return str(stack.api("GET", f"/api/v1/stations/{station_id}")["status"])


def seed_day(session: Session, station_id: str, now: datetime, free: int, total: int) -> None:
    """Every 5 minutes of the last day: a warm afternoon, a disk filling up to ``free`` bytes
    (so the chart meets the station's own next heartbeat), a modem's slow swing."""
    noise = random.Random(station_id)  # the same day on every run
    for step in range(288):
        at = now - timedelta(minutes=5 * (288 - step))
        hour = at.hour + at.minute / 60 + 7  # Vietnam's time of day drives the heat
        disk = free + (287 - step) * 3_000_000
        playing = step % 48 in (18, 19, 36)
        session.add(
            HealthSample(
                station_id=station_id,
                at=at,
                cpu_temp_c=48 + 9 * math.sin((hour - 9) / 24 * 2 * math.pi) + noise.gauss(0, 0.6),
                load_1m=0.3 + abs(noise.gauss(0, 0.2)),
                mem_used_pct=31 + noise.uniform(0, 2),
                disk_free_bytes=disk,
                disk_total_bytes=total,
                disk_free_pct=disk / total * 100,
                clock_offset_ms=12 + 4 * math.sin(step / 23) + noise.gauss(0, 1.2),
                modem_rssi_dbm=-84 + 5 * math.sin(step / 40) + noise.gauss(0, 0.8),
                amp_current_ma=420.0 + noise.gauss(0, 15) if playing else 0.0,
                amp_on=playing,
            )
        )


@pytest.fixture(scope="module")
def fleet(stack: LocalStack) -> dict[str, Any]:
    """The four stations; the real one played a bulletin."""
    with stack.registering():
        configs = [
            stack.register_station(name, COMMUNE, lat, lon)
            for name, (lat, lon) in zip(NAMES, POSITIONS, strict=True)
        ]
    ids = [config.station_id for config in configs]
    stack.start_node(configs[0])
    wait_until(lambda: status(stack, ids[0]) == "online", 20, "the real station online")
    audio = stack.upload(make_audio("wav", 2.0), "Bản tin sáng.wav")
    broadcast = stack.broadcast(audio["id"], datetime.now(UTC) + timedelta(seconds=3), ids[:1])
    stack.wait_for_states(broadcast["id"], {"played"}, 30)

    now = datetime.now(UTC)
    with Session(stack.context.engine) as session:
        real = session.get(Station, ids[0])
        assert real is not None and real.last_health is not None
        disk = real.last_health["disk_free_bytes"], real.last_health["disk_total_bytes"]
        seed_day(session, ids[0], now, *disk)
        seed_day(session, ids[3], now, 8_000_000_000, 16_000_000_000)
        offline = session.get(Station, ids[2])
        faulty = session.get(Station, ids[3])
        assert offline is not None and faulty is not None
        offline.status, offline.status_at = StationStatus.OFFLINE, now - timedelta(hours=3)
        faulty.status, faulty.status_at = StationStatus.DEGRADED, now - timedelta(minutes=40)
        faulty.last_health = {
            "agent_version": "0.1.0", "uptime_s": 90061, "cpu_temp_c": 52.5,
            "disk_free_bytes": 8_000_000_000, "disk_total_bytes": 16_000_000_000,
            "modem_rssi_dbm": -87, "modem_operator": "Viettel", "amp_on": True,
            "amp_fault": "no_current_while_playing", "relay_ok": True, "volume_pct": 70,
        }  # fmt: skip
        faulty.last_health_at = now - timedelta(minutes=1)
        session.add_all([offline, faulty])
        session.flush()
        for station_id, kind, severity, detail, ago in (
            (ids[2], "offline", "critical", "mất kết nối từ 3 giờ trước", 170),
            (ids[3], "amp_fault", "critical", "amply không có dòng khi đang phát", 40),
        ):
            alarm = Alarm(
                station_id=station_id, kind=kind, severity=severity, detail=detail,
                opened_at=now - timedelta(minutes=ago),
            )  # fmt: skip
            session.add(alarm)
            session.flush()
            session.add(AlarmEvent(alarm_id=alarm.id or 0, state="open", at=alarm.opened_at))
        session.commit()
    return {"ids": ids, "password": make_user(stack, "kythuat-nari", "technician", COMMUNE)}


def overflow(page: Any) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width - page.viewport_size["width"]


def assert_reads_in_vietnamese(page: Any) -> None:
    assert page.locator("html").get_attribute("lang") == "vi"
    assert english_in(shown_texts(page)) == []


def test_the_fleet_at_a_glance_on_a_laptop_and_a_phone(
    fleet: dict[str, Any], page_for: PageFor
) -> None:
    ids = fleet["ids"]
    states = {ids[0]: "online", ids[1]: "unknown", ids[2]: "offline", ids[3]: "degraded"}
    for viewport, name in ((LAPTOP, "fleet.png"), (PHONE, "fleet-phone.png")):
        page = page_for("kythuat-nari", fleet["password"], viewport=viewport)
        page.goto("/fleet")
        assert page.locator("h1").inner_text() == "Tình trạng các trạm loa"
        for station_id, state in states.items():
            marker = page.locator(f'svg.map a.station[data-station="{station_id}"]')
            assert marker.get_attribute("data-state") == state
        rows = page.locator("tr[data-station]")
        listed = [rows.nth(i).inner_text() for i in range(rows.count())]
        assert NAMES[2] in listed[0]  # the worst (offline) first
        assert all(any(n in row for row in listed) for n in NAMES)
        for word in ("Hoạt động tốt", "Có sự cố", "Mất kết nối", "Chưa rõ"):
            assert page.get_by_text(word).count() >= 1, word
        assert_reads_in_vietnamese(page)
        assert overflow(page) <= 0, name
        screenshot(page, name)


def test_a_station_with_its_charts_log_and_test_tone(
    fleet: dict[str, Any], page_for: PageFor
) -> None:
    page = page_for("kythuat-nari", fleet["password"])
    page.goto(f"/stations/{fleet['ids'][0]}")
    assert NAMES[0] in page.locator("h1").inner_text()
    assert page.get_by_text("Hoạt động tốt").count() >= 1
    # CPU heat, disk, clock, modem… drawn from the seeded day; each chart fetches its own
    # series, so wait for the fourth rather than count after the first.
    page.locator("[data-metric] svg").nth(3).wait_for()  # not a page script: the CSP forbids
    assert page.locator("[data-metric] svg polyline, [data-metric] svg path").count() >= 4
    assert page.get_by_text("Phát xong").count() >= 1  # the real agent's play log
    page.get_by_role("button", name="Phát tiếng thử").click()
    page.locator("#command-result.ok").wait_for()  # the station's own answer, in Vietnamese
    assert_reads_in_vietnamese(page)
    screenshot(page, "station.png")


def test_the_open_faults_worst_first(fleet: dict[str, Any], page_for: PageFor) -> None:
    page = page_for("kythuat-nari", fleet["password"])
    page.goto("/alarms")
    rows = page.locator("tr[data-alarm]")
    assert rows.count() == 2
    first, second = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert {NAMES[2], NAMES[3]} == {n for n in NAMES if n in first + second}
    assert "Mất kết nối quá lâu" in first + second and "Lỗi amply" in first + second
    assert page.locator("form.ack").count() == 2  # the technician can acknowledge each
    assert_reads_in_vietnamese(page)
    screenshot(page, "alarms.png")
