"""The report page and the residents' replay page in Chromium on a 360 px phone (issue 15).

A province viewer reads the month's report (chart and table, no sideways scroll) and
prints it (menu gone, heading and signatures shown); a resident, signed in nowhere,
opens the commune's replay page and the player loads the bulletin's real audio.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from loaxa.stack import LocalStack
from server.local_time import LOCAL_TZ
from server.models import StationEvent
from server.programmes.approval import ProgrammeState
from server.programmes.models import Programme
from server.programmes.timeline import occurrence_stamp
from server.reports.planned import PlannedItem
from tests.audio_samples import make_audio
from tests.browser.conftest import COMMUNE, PHONE, PROVINCE, make_user, screenshot
from tests.browser.test_web_pages import no_sideways_scroll

TITLE = "Thông báo lịch tiêm phòng vắc-xin cho gia súc, gia cầm đợt II năm 2026 toàn phường"


def aired_yesterday(stack: LocalStack) -> datetime:
    """An approved programme that a station of the commune played whole yesterday."""
    config = stack.register_station(
        "Cụm loa tổ dân phố số 12 Nà Rị (cạnh nhà văn hoá)", COMMUNE, 22.66, 106.25
    )
    audio = stack.upload(make_audio("wav", 3.0), "tiem-phong.wav")
    at = (datetime.now(UTC) - timedelta(days=1)).replace(second=0, microsecond=0)
    with Session(stack.context.engine) as session:
        programme = Programme(
            key="tiem-phong", title=TITLE, area_code=COMMUNE, state=ProgrammeState.APPROVED,
            spec={}, duration_ms=audio["duration_ms"], created_by="admin", updated_by="admin",
        )  # fmt: skip
        session.add(programme)
        session.flush()
        item = f"p{programme.id}.1.1.{occurrence_stamp(at)}"
        session.add(PlannedItem(
            station_id=config.station_id, item_id=item, start_at=at,
            length_ms=audio["duration_ms"], priority="normal", title=TITLE, source="audio",
            sha256=audio["sha256"], first_plan_seq=1, last_plan_seq=1,
        ))  # fmt: skip
        session.add(StationEvent(
            station_id=config.station_id, kind="played", at=at, item_id=item, started_at=at,
            finished_at=at + timedelta(milliseconds=audio["duration_ms"]),
        ))  # fmt: skip
        session.commit()
    return at


def test_report_and_replay_pages_on_a_360_px_phone(
    stack: LocalStack, browser: Any, page_for: Callable[..., Any]
) -> None:
    at = aired_yesterday(stack)
    password = make_user(stack, "tinh-baocao", "viewer", PROVINCE)
    page = page_for("tinh-baocao", password, viewport=PHONE)
    page.goto(f"/reports?area={COMMUNE}&month={at.astimezone(LOCAL_TZ):%Y-%m}")
    assert page.get_by_role("heading", name="Báo cáo phát thanh — Phường Thục Phán").is_visible()
    assert page.locator(".report-chart svg rect.o-played").count() == 1
    assert page.locator("tfoot td").first.inner_text().strip() == "Tổng cộng"
    assert no_sideways_scroll(page) <= 0
    assert not page.get_by_text("Người lập biểu").is_visible()  # only on paper
    screenshot(page, "web-report-phone.png")

    page.set_viewport_size({"width": 794, "height": 1123})  # A4 at 96 dpi
    page.emulate_media(media="print")
    assert page.get_by_text("Người lập biểu").is_visible()
    assert page.get_by_text("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM").is_visible()
    assert not page.get_by_role("navigation", name="Chính").is_visible()
    assert not page.get_by_role("link", name="Tải về CSV").is_visible()
    screenshot(page, "web-report-print.png")

    resident = browser.new_context(viewport=PHONE, base_url=stack.base_url, locale="vi-VN")
    try:
        phone = resident.new_page()
        phone.goto("/nghe")
        phone.get_by_role("link", name="Phường Thục Phán").click()
        assert phone.get_by_role("heading", name=TITLE).is_visible()
        assert no_sideways_scroll(phone) <= 0
        duration = phone.evaluate(
            """() => new Promise((resolve, reject) => {
                const player = document.querySelector("audio");
                player.addEventListener("loadedmetadata", () => resolve(player.duration));
                player.addEventListener("error", () => reject(new Error("audio error")));
                player.load();
            })"""
        )
        assert abs(duration - 3.0) < 0.2
        screenshot(phone, "web-replay-phone.png")
    finally:
        resident.close()
