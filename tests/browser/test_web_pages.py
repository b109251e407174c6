"""The issue's stories, done by a person in a real browser on real pages.

An operator signs in, uploads a bulletin and schedules it; a province officer sends an
alert and watches delivery reach 100 % on simulated stations; a technician finds the
silent station on the map; the pages read in English after switching; and a 360 px
phone never has to scroll sideways. Screenshots of the main pages (Vietnamese) are
saved to docs/img/ for the README.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from loaxa.stack import LocalStack, RunningNode
from server.web.common import LOCAL_TZ
from tests.audio_samples import make_audio
from tests.browser.conftest import COMMUNE, PHONE, PROVINCE, make_user, screenshot

PageFor = Callable[..., Any]


@pytest.fixture(scope="module")
def stations(stack: LocalStack) -> list[RunningNode]:
    """Three simulated stations of one commune, running the real agent on real MQTT."""
    nodes = []
    for index, (lat, lon) in enumerate(((22.70, 106.20), (22.66, 106.24), (22.62, 106.28))):
        config = stack.register_station(f"Cụm loa thôn {index + 1}", COMMUNE, lat, lon)
        nodes.append(stack.start_node(config))
    wait_until(lambda: all(online(stack, n.station_id) for n in nodes), 20, "stations online")
    return nodes


def online(stack: LocalStack, station_id: str) -> bool:
    with stack.client() as http:
        return bool(http.get(f"/api/v1/stations/{station_id}").json()["status"] == "online")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def no_sideways_scroll(page: Any) -> int:
    overflow: int = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return overflow


def test_operator_uploads_a_bulletin_and_schedules_it(
    stack: LocalStack, stations: list[RunningNode], page_for: PageFor, tmp_path: Path
) -> None:
    password = make_user(stack, "vanhanh-xa", "commune_operator", COMMUNE)
    page = page_for("vanhanh-xa", password)
    assert page.locator("h1").inner_text() == "Tổng quan"
    screenshot(page, "index.png")

    page.get_by_role("link", name="Âm thanh").click()
    bulletin = tmp_path / "bản-tin-sáng.wav"
    bulletin.write_bytes(make_audio("wav", 20.0))
    # A failed upload first: the error sits under the field, in Vietnamese.
    junk = tmp_path / "không-phải-âm-thanh.mp3"
    junk.write_bytes(b"ID3 but not really audio" * 100)
    page.get_by_label("Tệp âm thanh (MP3, WAV, M4A, OGG…)").set_input_files(str(junk))
    page.get_by_role("button", name="Tải lên", exact=True).click()
    error = page.locator("#upload-file-error")
    error.wait_for(state="visible")
    assert error.inner_text().startswith("⚠") or "Không đọc được tệp này" in error.inner_text()

    page.get_by_label("Tệp âm thanh (MP3, WAV, M4A, OGG…)").set_input_files(str(bulletin))
    page.get_by_role("button", name="Tải lên", exact=True).click()
    status = page.locator("#upload-status")
    status.filter(has_text="Đã tải lên").wait_for()
    assert page.locator("#upload-progress").evaluate("p => p.value") == 100
    assert "0:20" in status.inner_text() and "LUFS" in status.inner_text()
    page.wait_for_load_state("load")
    row = page.locator("tr[data-audio]", has_text="bản-tin-sáng.wav")
    row.wait_for()
    assert row.locator("audio").get_attribute("src", timeout=1000)
    screenshot(page, "web-audio.png")

    # A notice recorded on the spot, from the microphone, lands in the library too.
    page.get_by_role("button", name="Bắt đầu ghi âm").click()
    page.locator("#rec-status").filter(has_text="Đang ghi âm").wait_for()
    page.wait_for_timeout(2500)
    page.get_by_role("button", name="Dừng").click()
    page.get_by_role("button", name="Lưu bản ghi âm").click()
    page.locator("#rec-status").filter(has_text="Đã tải lên").wait_for(timeout=30_000)
    page.wait_for_load_state("load")
    recorded = page.locator("tr[data-audio]", has_text="ghi-am-")
    recorded.first.wait_for()
    assert recorded.first.locator("td").nth(1).inner_text() in ("0:02", "0:03")
    row = page.locator("tr[data-audio]", has_text="bản-tin-sáng.wav")

    audio_id = row.get_attribute("data-audio")
    row.get_by_role("link", name="Lên lịch phát").click()
    page.wait_for_url("**/programmes/new?audio_id=*")
    start = (stack.context.clock() + timedelta(minutes=3)).astimezone(LOCAL_TZ)
    page.get_by_label("Tiêu đề").fill("Bản tin sáng thôn Nà Rị")
    page.get_by_label("Ngày (lần đầu)").fill(start.strftime("%d/%m/%Y"))  # day first, typed
    page.get_by_label("Giờ (Việt Nam)").fill(start.strftime("%H:%M"))
    # The day is repeated in words, in Vietnamese order, whatever the date input shows.
    said = page.locator("#recurrence-summary").inner_text()
    assert said.startswith("Một lần, Thứ") and start.strftime("%d/%m/%Y, %H:%M") not in said
    assert start.strftime("%d/%m/%Y %H:%M") in said
    screenshot(page, "web-schedule.png")
    page.get_by_role("button", name="Lên lịch", exact=True).click()

    page.wait_for_url("**/broadcasts/*")
    assert "Bản tin sáng thôn Nà Rị" in page.locator("h1").inner_text()
    assert start.strftime("%d/%m/%Y %H:%M") in page.content()  # shown in Vietnam's time
    rows = page.locator("tbody tr")
    assert rows.count() == 3
    # The stations take the new plan: each row reaches "Đã nhận lịch" (or further).
    wait_until(
        lambda: (
            page.reload() is not None and page.locator("td.s-delivered, td.s-fetched").count() == 3
        ),
        30,
        "all three stations to receive the schedule",
    )
    screenshot(page, "broadcast.png")
    page.goto("/programmes")
    assert page.locator(".day.today, .day").filter(has_text="Bản tin sáng thôn Nà Rị").count() == 1
    screenshot(page, "web-programme.png")

    # The same bulletin every morning but Sunday: the picker says so in plain words.
    page.goto(f"/programmes/new?audio_id={audio_id}")
    page.get_by_label("Tiêu đề").fill("Bản tin sáng hằng ngày")
    page.get_by_label("Hằng tuần, vào các ngày:").check()
    page.get_by_label("Giờ (Việt Nam)").fill("05:00")
    summary = page.locator("#recurrence-summary")
    assert summary.inner_text() == "Thứ 2 đến Thứ 7, 05:00"  # Monday–Saturday is the default
    page.get_by_label("Thứ 7").uncheck()
    assert summary.inner_text() == "Thứ 2 đến Thứ 6, 05:00"
    page.get_by_label("Thứ 7").check()
    screenshot(page, "web-recurrence.png")
    page.get_by_role("button", name="Lên lịch", exact=True).click()
    page.wait_for_url("**/programmes/p/*")
    assert page.locator("#when").inner_text() == "Thứ 2 đến Thứ 7, 05:00"
    page.get_by_role("button", name="Gửi duyệt").click()
    assert page.locator(".p-submitted").first.inner_text() == "Chờ duyệt"


def test_officer_sends_an_alert_and_sees_every_station_finish(
    stack: LocalStack, stations: list[RunningNode], page_for: PageFor
) -> None:
    password = make_user(stack, "canbo-canhbao", "alert_officer", PROVINCE)
    page = page_for("canbo-canhbao", password)
    page.get_by_role("link", name="Cảnh báo khẩn").click()
    page.get_by_role("link", name="Soạn cảnh báo").click()
    page.get_by_role("button", name="Xem ai sẽ nghe thấy").click()  # empty: refused
    assert page.locator("#title-error").inner_text().startswith("Hãy viết tiêu đề ngắn")
    assert page.locator("#areas-error").is_visible()

    page.get_by_label("Tiêu đề").fill("Diễn tập: lũ quét")
    page.get_by_label("Văn bản cần đọc").fill("Đây là diễn tập. Lũ quét có thể xảy ra.")
    page.get_by_label("Văn bản đọc thành tiếng").check()
    page.locator(f'input[name="areas"][value="{COMMUNE}"]').check()
    page.get_by_label("Số lần phát lại").fill("1")
    page.get_by_label("Đây là diễn tập").check()
    page.get_by_role("button", name="Xem ai sẽ nghe thấy").click()

    preview = page.locator("#preview")
    assert "3 trạm loa" in preview.inner_text()
    screenshot(page, "web-alert-preview.png")
    preview.get_by_role("button", name="Phát ngay").click()

    page.wait_for_url("**/alerts/*")
    finished = page.locator('[data-pct="finished"]')
    wait_until(lambda: finished.inner_text() == "100", 60, "every station to finish the alert")
    assert page.locator('[data-count="finished"]').inner_text() == "3"
    assert page.locator("td.d-finished").count() == 3
    screenshot(page, "web-alert.png")


def test_technician_finds_the_silent_station_on_the_map(
    stack: LocalStack, stations: list[RunningNode], page_for: PageFor
) -> None:
    silent = stations[-1]
    silent.stop()  # the agent stops: the loudspeaker is silent
    wait_until(lambda: not online(stack, silent.station_id), 20, "the station to go offline")
    password = make_user(stack, "kythuat-xa", "technician", COMMUNE)
    page = page_for("kythuat-xa", password)
    page.get_by_role("link", name="Trạm loa").click()
    marker = page.locator('svg.map a.station[data-state="offline"]')
    assert marker.count() == 1 and marker.get_attribute("data-station") == silent.station_id
    screenshot(page, "web-fleet-map.png")
    marker.focus()  # keyboard users reach it too
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/stations/{silent.station_id}")
    assert "Cụm loa thôn 3" in page.locator("h1").inner_text()
    assert page.locator(".badge.st-offline").count() >= 1


def test_the_pages_in_english_after_switching(stack: LocalStack, page_for: PageFor) -> None:
    password = make_user(stack, "xem-en", "viewer", COMMUNE)
    page = page_for("xem-en", password)
    page.get_by_role("button", name="English").click()
    page.wait_for_url(f"{stack.base_url}/")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text() == "Overview"
    page.get_by_role("link", name="Stations").click()
    assert page.locator("h1").inner_text() == "State of the loudspeaker stations"
    page.get_by_role("button", name="Tiếng Việt").click()
    assert page.locator("h1").inner_text() == "Tình trạng các trạm loa"


MAIN_PAGES = ("/", "/fleet", "/audio", "/programmes", "/programmes/new", "/alarms", "/alerts")


def test_a_360_px_phone_never_scrolls_sideways(
    stack: LocalStack, stations: list[RunningNode], page_for: PageFor
) -> None:
    password = make_user(stack, "dienthoai", "commune_operator", COMMUNE)
    page = page_for("dienthoai", password, viewport=PHONE)
    for path in MAIN_PAGES:
        page.goto(path)
        assert no_sideways_scroll(page) <= 0, path
    page.goto("/")
    screenshot(page, "web-phone.png")


@pytest.fixture(scope="module")
def radio(stack: LocalStack) -> Iterator[str]:
    """A "VOV1" on the province's intranet: an HTTP audio stream the server's probe accepts."""
    from tests.integration.test_pages_programme_form import Radio
    from tests.intranet import intranet_server

    with intranet_server(Radio) as server:
        stack.context.settings.stream_allowed_networks = [server.network]
        yield f"{server.base_url}/vov1.mp3"


MORNING_TEXT = "Sáng nay 6h30, thôn Nà Rị họp tại nhà văn hoá; mời 2 người mỗi hộ."


def test_a_programme_of_read_text_and_a_vov_relay_then_a_clash_in_both_languages(
    stack: LocalStack, stations: list[RunningNode], page_for: PageFor, radio: str
) -> None:
    password = make_user(stack, "xa-chuongtrinh", "commune_operator", COMMUNE)
    page = page_for("xa-chuongtrinh", password, viewport=PHONE)
    page.goto("/programmes/new")
    page.get_by_label("Tiêu đề").fill("Buổi sáng thôn Nà Rị")
    # Replace the file row with a text read aloud, preview what will be said.
    page.get_by_role("button", name="Bỏ mục này").click()
    page.get_by_role("button", name="+ Văn bản đọc").click()
    page.get_by_label("Văn bản cần đọc (tiếng Việt)").fill(MORNING_TEXT)
    page.get_by_role("button", name="Xem văn bản sẽ được đọc").click()
    spoken = page.locator("#item-1-spoken").inner_text()
    assert "sáu giờ ba mươi" in spoken and "hai người" in spoken, spoken
    page.get_by_label("Âm lượng (0–100, để trống: theo trạm)").fill("90")
    page.get_by_label("Số lần phát").fill("2")
    # Then half an hour of VOV1, relayed.
    page.get_by_role("button", name="+ Tiếp sóng (ví dụ VOV1)").click()
    page.get_by_label("Địa chỉ kênh phát (ví dụ kênh VOV1)").fill(radio)
    page.get_by_label("Tiếp sóng trong (phút)").fill("30")
    assert page.locator("#item-1-text").input_value() == MORNING_TEXT  # kept across rows
    page.get_by_label("Hằng tuần, vào các ngày:").check()
    page.get_by_label("Giờ (Việt Nam)").fill("05:30")  # after the 05:00 bulletin above
    assert no_sideways_scroll(page) <= 0
    # A full-page screenshot with a text box focused leaves Chromium's next click unsent.
    page.locator("#at").blur()
    screenshot(page, "web-programme-items.png")
    page.get_by_role("button", name="Lên lịch", exact=True).click()
    page.wait_for_url("**/programmes/p/*")
    assert page.locator("#when").inner_text() == "Thứ 2 đến Thứ 7, 05:30"
    with stack.client() as http:
        programme_id = int(page.url.rsplit("/", 1)[1])
        spec = http.get(f"/api/v1/programmes/{programme_id}").json()["spec"]
    assert [i["kind"] for i in spec["items"]] == ["tts", "stream"]
    assert spec["items"][0]["volume"] == 90 and spec["items"][1]["url"] == radio

    # The same minute again: refused, in Vietnamese, right under the time.
    def clashing(words: dict[str, str]) -> str:
        page.goto("/programmes/new")
        page.fill("#title", words["title"])
        page.click('button[name="op"][value="remove:1"]')
        page.click('button[name="op"][value="add:tts"]')
        page.fill("#item-1-text", MORNING_TEXT)
        page.check('input[name="repeat"][value="weekly"]')
        page.fill("#at", "05:30")
        page.get_by_role("button", name=words["save"], exact=True).click()
        page.locator("#at-error").wait_for()
        assert page.locator("#at").get_attribute("aria-describedby") == "at-error"
        text: str = page.locator("#at-error").inner_text()
        return text

    said = clashing({"title": "Trùng giờ", "save": "Lên lịch"})
    assert said.startswith("⚠") is False and "Giờ này trùng với chương trình khác" in said
    assert "Buổi sáng thôn Nà Rị" in said and "overlaps" not in said
    screenshot(page, "web-programme-clash.png")
    page.get_by_role("button", name="English").click()
    said = clashing({"title": "Same time", "save": "Schedule"})
    assert "This time clashes with another programme" in said and "Buổi sáng thôn Nà Rị" in said
