"""A technician approves a waiting station on a 360 px phone, in a real browser."""

from __future__ import annotations

from typing import Any

import httpx

from loaxa.stack import LocalStack
from loaxa_protocol.enrolment import key_fingerprint, new_station_key, public_key_text
from tests.browser.conftest import COMMUNE, PHONE, PROVINCE, make_user


def ask(stack: LocalStack, path: str, code: str, key: str) -> httpx.Response:
    body = {"claim_code": code, "public_key": key, "hostname": "loa-na-ri"}
    return httpx.post(f"{stack.base_url}/api/v1/enrolment/{path}", json=body, timeout=10)


def test_a_technician_places_and_approves_a_station_from_a_phone(
    stack: LocalStack, page_for: Any
) -> None:
    with stack.client() as http:
        made = http.post("/api/v1/enrolment/claim-codes", json={"area_code": PROVINCE, "count": 1})
    (code,) = made.json()["codes"]
    key = public_key_text(new_station_key())
    assert ask(stack, "requests", code, key).status_code == 202
    ask(stack, "requests", "AAAA-BBBB-CCCC-DDDD", public_key_text(new_station_key()))

    password = make_user(stack, "kythuat-dt", "technician", PROVINCE)
    page = page_for("kythuat-dt", password, viewport=PHONE)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/")
    page.get_by_role("button", name="Danh mục").click()  # the phone's folded menu
    page.get_by_role("link", name="Trạm chờ duyệt").click()
    page.wait_for_url("**/enrolment")
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    wide = page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
        "document.documentElement.clientWidth).map(e => e.tagName + '.' + e.className + ' ' + "
        "e.getBoundingClientRect().right).slice(0, 12)"
    )
    assert overflow <= 0, wide
    row = page.locator("tr", has_text=key_fingerprint(key))
    row.get_by_label("Tên").fill("Cụm loa thôn Nà Rị")
    row.get_by_label("Xã hoặc phường").select_option(COMMUNE)
    row.get_by_label("Vĩ độ").fill("22,666")
    row.get_by_label("Kinh độ").fill("106.257")
    row.get_by_role("button", name="Duyệt").click()
    page.wait_for_url("**/enrolment?done=station_approved")
    assert page.get_by_role("status").filter(has_text="Đã chấp nhận trạm").is_visible()
    assert page.get_by_text("Không có trạm nào đang chờ.").is_visible()
    assert (
        page.locator("#refused").get_by_role("cell", name="mã không có trong hệ thống").is_visible()
    )
    assert errors == []  # nothing refused by the page's content security policy

    answer = ask(stack, "poll", code, key)
    assert answer.status_code == 200 and answer.json()["sealed"] is not None
    with stack.client() as http:
        station = http.get(f"/api/v1/stations/{answer.json()['station_id']}").json()
    assert (station["name"], station["area_code"]) == ("Cụm loa thôn Nà Rị", COMMUNE)
