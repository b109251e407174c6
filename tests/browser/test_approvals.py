"""An approver in Chromium: the queue on the overview, every item heard, every change seen.

A commune operator's programme (a recorded bulletin and a text read aloud, two named
loudspeakers) waits for approval; the approver finds it from the overview's count,
plays the speech in the page, reads the stations by name and the schedule in words,
approves and is told so. The operator then moves it, adds a notice and a loudspeaker,
and sends it again: the page lists exactly those changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loaxa.stack import LocalStack
from tests.audio_samples import make_audio
from tests.browser.conftest import COMMUNE, PHONE, make_user, screenshot
from tests.browser.test_web_pages import no_sideways_scroll

API = "/api/v1"
WEEKDAYS = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA"


def test_an_approver_hears_sees_and_approves_then_sees_what_changed(
    stack: LocalStack, page_for: Callable[..., Any]
) -> None:
    ids = [
        stack.register_station(name, COMMUNE, 22.66, 106.25 + n / 100).station_id
        for n, name in enumerate(("Cụm loa thôn Nà Rị", "Cụm loa chợ Bản Giới", "Loa Pác Bó"))
    ]
    audio = stack.upload(make_audio("wav", 2.0), "ban-tin-xa.wav")
    spec: dict[str, Any] = {
        "key": "tin-sang-duyet",
        "title": "Tin sáng của xã",
        "area": COMMUNE,
        "start": "2027-01-04T05:00:00",
        "rrule": WEEKDAYS,
        "targets": {"stations": ids[:2]},
        "items": [
            {"kind": "audio", "audio_id": audio["id"], "title": "Bản tin xã"},
            {"kind": "tts", "text": "Sáng mai tiêm chủng tại trạm y tế xã.", "title": "Tiêm"},
        ],
    }
    with stack.client() as http:  # written and sent by the province administrator
        made = http.post(f"{API}/programmes", json=spec)
        assert made.status_code == 201, made.text
        pid = made.json()["id"]
        assert http.post(f"{API}/programmes/{pid}/submit").status_code == 200

    password = make_user(stack, "duyet-xa", "approver", COMMUNE)
    page = page_for("duyet-xa", password)
    assert page.locator("#approval-count").inner_text() == "1"
    page.get_by_role("link", name="Xem 1 chương trình").click()
    page.wait_for_url("**/programmes/approvals")
    page.get_by_role("link", name="Tin sáng của xã").click()
    page.wait_for_url(f"**/programmes/p/{pid}")

    assert page.locator("#when").inner_text() == "Thứ 2 đến Thứ 7, 05:00"
    assert page.locator("#submitted-by").inner_text().strip() != ""
    stations = page.locator("#station-names").inner_text()
    assert "Cụm loa thôn Nà Rị" in stations and "Cụm loa chợ Bản Giới" in stations
    assert "Loa Pác Bó" not in stations
    players = page.locator("#items audio")
    assert players.count() == 2
    # The speech plays in the page, as the loudspeakers will say it.
    seconds = players.nth(1).evaluate(
        """a => new Promise((ok, fail) => {
             a.addEventListener("loadedmetadata", () => ok(a.duration));
             a.addEventListener("error", () => fail(new Error("the speech did not load")));
             a.preload = "auto"; a.load();
           })"""
    )
    assert seconds > 0.5
    assert "Sáng mai tiêm chủng tại trạm y tế xã." in page.locator("#items").inner_text()
    assert page.locator("#changes").inner_text().startswith("Chưa được duyệt lần nào")
    screenshot(page, "web-approval.png")

    page.get_by_role("button", name="Duyệt", exact=True).click()
    page.wait_for_url(f"**/programmes/p/{pid}?done=approve")
    assert page.locator("#done").inner_text().startswith("Đã duyệt.")
    page.goto("/")
    assert page.locator("#approval-count").inner_text() == "0"

    spec["start"] = "2027-01-04T06:15:00"
    spec["targets"] = {"stations": ids}
    spec["items"].append({"kind": "tts", "text": "Chiều nay mất điện.", "title": "Điện"})
    with stack.client() as http:
        assert http.put(f"{API}/programmes/{pid}", json=spec).status_code == 200
        assert http.post(f"{API}/programmes/{pid}/submit").status_code == 200
    page.reload()
    assert page.locator("#approval-count").inner_text() == "1"
    page.goto(f"/programmes/p/{pid}")
    changes = page.locator("#changes").inner_text()
    assert "Lịch phát: Thứ 2 đến Thứ 7, 05:00 → Thứ 2 đến Thứ 7, 06:15" in changes
    assert "Thêm mục 3: Văn bản đọc: “Chiều nay mất điện.”" in changes
    assert "Thêm cụm loa: Loa Pác Bó" in changes
    assert "Bỏ mục" not in changes
    screenshot(page, "web-approval-changes.png")

    phone = page_for("duyet-xa", password, viewport=PHONE)
    phone.goto(f"/programmes/p/{pid}")
    assert no_sideways_scroll(phone) <= 0
