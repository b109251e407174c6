"""A province administrator starts and stops a rollout on a 360 px phone, in a real browser."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from loaxa.stack import LocalStack
from loaxa_protocol import SigningKey
from loaxa_protocol.release import ReleaseFile, ReleaseManifest, sign_manifest
from tests.brokers import running_production_mosquitto
from tests.browser.conftest import COMMUNE, PHONE, PROVINCE, make_user

RELEASE_KEY = SigningKey.generate("release", frozenset({"release"}))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """This module's own server: it trusts a release key (the shared one trusts none)."""
    data = tmp_path_factory.mktemp("updates-stack")
    overrides = {"release_public_key": RELEASE_KEY.public_b64}
    with (
        running_production_mosquitto(data / "broker") as broker,
        LocalStack.on_broker(data, broker, settings_overrides=overrides) as running,
    ):
        yield running


def test_an_administrator_rolls_out_a_release_from_a_phone(
    stack: LocalStack, page_for: Any
) -> None:
    with stack.registering():
        for n in (1, 2, 3):
            stack.register_station(f"Cụm loa thôn {n}", COMMUNE, 22.6, 106.2)
    data = b"a station wheel"
    name = "loaxa_node-0.2.0-py3-none-any.whl"
    manifest = ReleaseManifest(
        version="0.2.0", created_at=datetime.now(UTC),
        files=[ReleaseFile(name=name, sha256=hashlib.sha256(data).hexdigest(),
                           size_bytes=len(data))],
    )  # fmt: skip
    signed = sign_manifest(manifest, RELEASE_KEY)
    with stack.client() as http:
        made = http.post(
            "/api/v1/releases", data={"manifest": signed}, files=[("files", (name, data))]
        )
    assert made.status_code == 201, made.text

    password = make_user(stack, "tinh-admin", "province_admin", PROVINCE)
    page = page_for("tinh-admin", password, viewport=PHONE)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/")
    page.get_by_role("button", name="Danh mục").click()  # the phone's folded menu
    page.get_by_role("link", name="Cập nhật", exact=True).click()
    page.wait_for_url("**/updates")
    page.get_by_label("Địa bàn").select_option(COMMUNE)
    page.get_by_label("Trạm thử: tỉ lệ phần trăm số trạm (ít nhất một)").fill("34")
    page.get_by_role("button", name="Bắt đầu triển khai").click()
    page.wait_for_url("**/updates")
    rollout = page.locator("article[data-rollout]")
    assert rollout.get_by_text("Bản phát hành 0.2.0 · Đang thử trên vài trạm").is_visible()
    assert rollout.locator("progress").first.get_attribute("max") == "3"
    assert page.locator("#station-versions tbody tr").count() == 3
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    rollout.get_by_role("button", name="Dừng lần triển khai này").click()
    page.wait_for_url("**/updates")
    assert page.locator("article[data-rollout]").get_attribute("data-state") == "stopped"
    assert errors == []  # nothing refused by the page's content security policy
