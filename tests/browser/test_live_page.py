"""The live page in a real Chromium with a fake microphone playing a WAV file: the operator
presses "go on air" on a phone-sized page and three real station agents play what the
browser encoded (WebCodecs Opus) and streamed over the WebSocket."""

from __future__ import annotations

import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loaxa.bench.live import speech_loop
from loaxa.stack import LocalStack, RunningNode
from node_firmware.drivers.live_output import SimulatedLiveSink
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, COMMUNE, PHONE, make_user, screenshot


@pytest.fixture(scope="module")
def fake_microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48_000)
        out.writeframes(b"".join(speech_loop()))
    return path


@pytest.fixture(scope="module")
def mic_browser(playwright: Any, fake_microphone: Path) -> Iterator[Any]:
    """A second Chromium whose microphone plays the WAV file, from the session's Playwright."""
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={fake_microphone}"],
    )
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def stations(stack: LocalStack) -> list[RunningNode]:
    with stack.registering():
        configs = [
            stack.register_station(f"Loa trực tiếp {n}", COMMUNE, 22.66, 106.25 + n / 100)
            for n in range(3)
        ]
    nodes = [stack.start_node(config) for config in configs]
    deadline = time.monotonic() + 20
    while not all(n.agent.core.connected for n in nodes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return nodes


def test_an_operator_goes_live_from_a_phone_and_three_stations_play_it(
    mic_browser: Any, stack: LocalStack, stations: list[RunningNode]
) -> None:
    password = make_user(stack, "noi-truc-tiep", "commune_operator", COMMUNE)
    context = mic_browser.new_context(
        viewport=PHONE, base_url=stack.base_url, locale="vi-VN", timezone_id="UTC"
    )
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        page.goto("/login")
        page.get_by_label("Tên đăng nhập").fill("noi-truc-tiep")
        page.get_by_label("Mật khẩu").fill(password)
        page.get_by_role("button", name="Đăng nhập").click()
        page.wait_for_url(f"{stack.base_url}/")
        page.goto("/live")
        page.get_by_role("button", name="Phát trực tiếp").click()
        deadline = time.monotonic() + 20
        frames = 0
        while frames <= 60 and time.monotonic() < deadline:  # wait_for_function needs eval
            frames = page.evaluate("() => window.loaxaLive ? window.loaxaLive.frames : -1")
            error = page.locator("#live-error")
            assert not error.is_visible(), error.inner_text()
            time.sleep(0.2)
        assert frames > 60, f"the page sent {frames} frames"
        assert "ĐANG PHÁT" in page.locator("#live-status").inner_text()
        screenshot(page, "web-live-phone.png")
        page.get_by_role("button", name="Dừng").click()
        assert page.locator("#live-status").inner_text() == "Đã dừng phát."
    finally:
        context.close()
    time.sleep(1.0)
    for node in stations:
        sink = node.agent.live.sink
        assert isinstance(sink, SimulatedLiveSink)
        played = [s for s in sink.sounds if s.seq is not None]
        assert len(played) >= 30, f"{node.station_id} played {len(played)} frames"
        assert sink.gaps == 0
