"""A real Chromium (Debian's, headless) driving the real server of a LocalStack.

One browser for the whole session and one Loaxa installation per module keep these
tests few and fast; each test opens its own browser context (its own cookies), signs in
through the sign-in page like a person would and works on the pages.

The machine has no internet, so Chromium runs with everything that would phone home
switched off; ``playwright install`` is never needed (and never run).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loaxa.stack import LocalStack
from tests.brokers import running_production_mosquitto

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The microphone of a test machine: Chromium's own fake device, allowed without a prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"
PROVINCE = "04"  # Cao Bằng
COMMUNE = "01273"
OTHER_COMMUNE = "01279"
PHONE = {"width": 360, "height": 740}
LAPTOP = {"width": 1280, "height": 860}


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    """The one Playwright of the session: a second ``sync_playwright()`` while one runs
    fails ("Sync API inside the asyncio loop"), so browsers are all launched from this."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright: Any) -> Iterator[Any]:
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The server and its stations on the broker config ``loaxa broker config`` generates."""
    data = tmp_path_factory.mktemp("browser-stack")
    with (
        running_production_mosquitto(data / "broker") as broker,
        LocalStack.on_broker(data, broker) as running,
    ):
        yield running


def make_user(stack: LocalStack, username: str, role: str, area_code: str) -> str:
    """A person with one role and a password, made by the administrator; returns it."""
    password = "mk-" + secrets.token_urlsafe(12)
    with stack.client() as http:
        response = http.post(
            "/api/v1/users",
            json={
                "username": username,
                "display_name": username,
                "password": password,
                "grants": [{"role": role, "area_code": area_code}],
            },
        )
    response.raise_for_status()
    return password


@pytest.fixture
def page_for(browser: Any, stack: LocalStack) -> Iterator[Callable[..., Any]]:
    """``page_for(username, password, viewport=LAPTOP)``: a fresh context, signed in."""
    contexts: list[Any] = []

    def open_page(username: str, password: str, viewport: dict[str, int] = LAPTOP) -> Any:
        context = browser.new_context(
            viewport=viewport, base_url=stack.base_url, locale="vi-VN", timezone_id="UTC"
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.goto("/login")
        page.get_by_label("Tên đăng nhập").fill(username)
        page.get_by_label("Mật khẩu").fill(password)
        page.get_by_role("button", name="Đăng nhập").click()
        page.wait_for_url(f"{stack.base_url}/")
        return page

    yield open_page
    for context in contexts:
        context.close()


def screenshot(page: Any, name: str) -> None:
    """Saved for the README: the main pages, in Vietnamese."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
