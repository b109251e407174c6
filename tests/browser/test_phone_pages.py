"""Every page family on a 360 px phone in Chromium: no sideways scroll, a compact menu, and
every word from the server in Vietnamese — with what a working commune holds behind them.

Two real stations play a bulletin (its file name long, as clerks name files) and a drill
alert; a programme waits for approval; the administrator has commanded a station and
granted roles, so the audit log and the play logs carry what stations really send. Then
each page is opened at 360 px: ``document.scrollWidth`` must stay within the screen and
the page's text must pass ``tests/vietnamese.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loaxa.stack import LocalStack
from server.local_time import LOCAL_TZ
from tests.audio_samples import make_audio
from tests.browser.conftest import COMMUNE, PHONE, screenshot
from tests.vietnamese import english_in

LONG_NAME = "Thông-báo-lịch-tiêm-phòng-vắc-xin-cho-gia-súc-gia-cầm-đợt-II-năm-2026-toàn-xã.wav"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def commune(stack: LocalStack) -> dict[str, Any]:
    """Two stations that played a bulletin and a drill; a programme waiting for approval."""
    nodes = []
    for n, (lat, lon) in enumerate(((22.70, 106.20), (22.66, 106.24))):
        config = stack.register_station(f"Cụm loa xóm Nà Rị {n + 1}", COMMUNE, lat, lon)
        nodes.append(stack.start_node(config))
    ids = [node.station_id for node in nodes]
    wait_until(
        lambda: all(stack.api("GET", f"/api/v1/stations/{s}")["status"] == "online" for s in ids),
        20,
        "stations online",
    )
    audio = stack.upload(make_audio("wav", 2.0), LONG_NAME)
    broadcast = stack.broadcast(audio["id"], datetime.now(UTC) + timedelta(seconds=3), ids)
    stack.wait_for_states(broadcast["id"], {"played"}, 30)
    alert = stack.api(
        "POST",
        "/api/v1/alerts",
        json={"title": "Diễn tập: lũ quét", "text": "Đây là diễn tập.", "tts": True,
              "area_codes": [COMMUNE], "drill": True, "repeat": 1},
    )  # fmt: skip
    wait_until(
        lambda: stack.api("GET", f"/api/v1/alerts/{alert['id']}")["counts"].get("finished") == 2,
        60,
        "the drill to finish on both stations",
    )
    start = (datetime.now(LOCAL_TZ) + timedelta(days=1)).replace(hour=5, minute=30, second=0)
    programme = stack.api(
        "POST",
        "/api/v1/programmes",
        json={
            "key": "ban-tin-sang", "title": "Bản tin sáng xóm Nà Rị", "area": COMMUNE,
            "priority": "normal", "start": start.replace(tzinfo=None, microsecond=0).isoformat(),
            "targets": {"areas": [COMMUNE]},
            "items": [{"kind": "audio", "title": "Bản tin", "audio_id": audio["id"]}],
        },
    )  # fmt: skip
    stack.api("POST", f"/api/v1/programmes/{programme['id']}/submit")
    stack.api("POST", f"/api/v1/stations/{ids[0]}/commands", json={"name": "test_tone"})
    return {
        "station": ids[0], "broadcast": broadcast["id"], "alert": alert["id"],
        "programme": programme["id"],
    }  # fmt: skip


def families(data: dict[str, Any]) -> list[str]:
    programme = data["programme"]
    return [
        "/", "/fleet", f"/stations/{data['station']}", "/enrolment", "/audio", "/programmes",
        "/programmes/new", "/programmes/approvals", f"/programmes/p/{programme}",
        f"/programmes/p/{programme}/edit", "/live", "/updates",
        f"/broadcasts/{data['broadcast']}", "/reports", "/alerts", "/alerts/new",
        f"/alerts/{data['alert']}", "/alarms", "/users", "/audit", "/nghe", f"/nghe/{COMMUNE}",
        "/khong-co-trang-nay",
    ]  # fmt: skip


def overflow(page: Any) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width - PHONE["width"]


def shown_texts(page: Any) -> list[str]:
    """What the person sees now, scripts' words included (after they ran)."""
    texts: list[str] = page.evaluate(
        """() => {
          const out = [];
          const skip = (el) => el.closest("script, style, [lang]:not([lang^='vi']):not(html)");
          const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
          for (let n = walker.nextNode(); n; n = walker.nextNode()) {
            const text = n.textContent.replace(/\\s+/g, " ").trim();
            if (text && !skip(n.parentElement)) out.push(text);
          }
          for (const el of document.querySelectorAll("[title], [aria-label], [placeholder]")) {
            if (skip(el)) continue;
            for (const a of ["title", "aria-label", "placeholder"]) {
              const v = el.getAttribute(a);
              if (v) out.push(v);
            }
          }
          return out;
        }"""
    )
    return texts


def test_every_page_family_fits_a_phone_and_reads_in_vietnamese(
    stack: LocalStack, commune: dict[str, Any], page_for: Callable[..., Any]
) -> None:
    page = page_for(stack.admin_username, stack.admin_password, viewport=PHONE)
    wide: dict[str, int] = {}
    english: dict[str, list[str]] = {}
    for path in families(commune):
        page.goto(path)
        page.wait_for_load_state("load")
        if (extra := overflow(page)) > 0:
            wide[path] = extra
        if found := english_in(shown_texts(page)):
            english[path] = found
    assert wide == {}, "pages wider than a 360 px phone (px too wide)"
    assert english == {}
    page.goto("/audio")
    screenshot(page, "web-phone-audio.png")


def test_the_menu_folds_into_one_button_on_a_phone(
    stack: LocalStack, page_for: Callable[..., Any]
) -> None:
    page = page_for(stack.admin_username, stack.admin_password, viewport=PHONE)
    menu = page.get_by_role("button", name="Danh mục")
    nav = page.locator("#main-menu")
    assert menu.get_attribute("aria-expanded") == "false" and not nav.is_visible()
    header = page.locator("header.top").bounding_box()
    assert header is not None and header["height"] <= PHONE["height"] / 6, header
    menu.click()
    assert menu.get_attribute("aria-expanded") == "true" and nav.is_visible()
    screenshot(page, "web-phone-menu.png")
    nav.get_by_role("link", name="Trạm loa").click()
    page.wait_for_url("**/fleet")
    assert not page.locator("#main-menu").is_visible()  # folded again on the next page
    assert overflow(page) <= 0


def test_the_province_roles_form_fits_a_phone(
    stack: LocalStack, page_for: Callable[..., Any]
) -> None:
    page = page_for(stack.admin_username, stack.admin_password, viewport=PHONE)
    page.goto("/users")
    page.get_by_text("Cấp thêm vai trò").first.click()
    grant = page.locator("form.grant").first
    grant.wait_for()
    box = grant.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"], box
    assert overflow(page) <= 0


def test_the_programme_form_keeps_the_days_speaks_and_writes_dates_day_first(
    stack: LocalStack, browser: Any
) -> None:
    """An English-language Chromium: the date and time still read 07/12/2026 and 05:30."""
    context = browser.new_context(
        viewport=PHONE, base_url=stack.base_url, locale="en-US", timezone_id="UTC"
    )
    context.set_default_timeout(30_000)
    try:
        page = context.new_page()
        page.goto("/login")
        page.get_by_label("Tên đăng nhập").fill(stack.admin_username)
        page.get_by_label("Mật khẩu").fill(stack.admin_password)
        page.get_by_role("button", name="Đăng nhập").click()
        page.wait_for_url(f"{stack.base_url}/")
        page.goto("/programmes/new")
        day = page.get_by_label("Ngày (lần đầu)")
        shown = day.input_value()
        assert day.get_attribute("type") == "text"
        assert datetime.strptime(shown, "%d/%m/%Y")  # day first, as the page writes dates
        day.fill("25/12/2026")
        page.get_by_label("Giờ (Việt Nam)").fill("05:30")
        assert page.locator("#recurrence-summary").inner_text() == "Một lần, Thứ 6 25/12/2026 05:30"
        page.get_by_label("Tiêu đề").fill("Thông báo họp xóm")
        page.get_by_label("Hằng tuần, vào các ngày:").check()
        page.get_by_label("Thứ 7").uncheck()
        page.get_by_label("Chủ nhật").check()
        # Replace the file row with a text, then add one more row: the days stay ticked.
        page.get_by_role("button", name="Bỏ mục này").click()
        page.get_by_role("button", name="+ Văn bản đọc").click()
        page.get_by_label("Văn bản cần đọc (tiếng Việt)").fill("Tối nay 19h họp xóm.")
        page.get_by_role("button", name="+ Khoảng lặng").click()
        ticked = page.locator('input[name="days"]:checked')
        assert [ticked.nth(i).get_attribute("value") for i in range(ticked.count())] == [
            "0", "1", "2", "3", "4", "6",
        ]  # fmt: skip
        assert page.locator("#recurrence-summary").inner_text() == (
            "Thứ 2, Thứ 3, Thứ 4, Thứ 5, Thứ 6, Chủ nhật, 05:30"
        )
        # The speech can be heard right here, before saving.
        page.get_by_role("button", name="Xem văn bản sẽ được đọc").click()
        player = page.locator("#item-1-listen")
        player.wait_for()
        duration = player.evaluate(
            """(a) => new Promise((ok) => { if (a.readyState >= 1) ok(a.duration);
                 a.preload = "metadata"; a.onloadedmetadata = () => ok(a.duration); a.load(); })"""
        )
        assert duration > 1, duration
        assert overflow(page) <= 0
    finally:
        context.close()
