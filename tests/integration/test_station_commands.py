"""A technician's remote actions, end to end: API → signed command → station → answer."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loaxa.stack import LocalStack, RunningNode
from node_firmware import agent
from server.auth.actor import SYSTEM


@pytest.fixture
def station(tmp_path: Path, mosquitto) -> Iterator[tuple[LocalStack, RunningNode]]:
    with LocalStack(tmp_path, mosquitto.host, mosquitto.port) as stack:
        node = stack.start_node(stack.register_station("Cụm loa", "01273", 22.66, 106.25))
        deadline = time.monotonic() + 10
        while not node.agent.core.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        yield stack, node


def command(stack: LocalStack, station_id: str, name: str, **args: Any) -> dict[str, Any]:
    """Send a command and wait for the station's answer, as the station page does."""
    with stack.client() as http:
        sent = http.post(
            f"/api/v1/stations/{station_id}/commands", json={"name": name, "args": args}
        )
        assert sent.status_code == 202, sent.text
        url = f"/api/v1/stations/{station_id}/commands/{sent.json()['id']}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            view = http.get(url).json()
            if view["state"] != "sent":
                return dict(view)
            time.sleep(0.1)
    raise AssertionError(f"{name}: no answer from {station_id}")


def test_test_tone_is_played_with_the_amplifier_and_answered(station) -> None:
    stack, node = station
    answer = command(stack, node.station_id, "test_tone")
    assert answer["ok"] is True and answer["result"]["started_at"]
    (record,) = node.agent.player.records
    assert record.duration_ms == 5000 and not record.interrupted
    deadline = time.monotonic() + 5
    while len(node.agent.board.history) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [on for _t, _ch, on in node.agent.board.history] == [False, True, False]


def test_volume_log_and_restart(station) -> None:
    stack, node = station
    assert command(stack, node.station_id, "set_volume", percent=40)["ok"] is True
    assert node.agent.player.volume_pct == 40
    log = command(stack, node.station_id, "fetch_log", lines=50)
    assert log["ok"] is True and isinstance(log["result"]["lines"], list)

    before = node.agent
    assert command(stack, node.station_id, "restart")["ok"] is True
    deadline = time.monotonic() + 10
    while (node.agent is before or not node.agent.core.connected) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.agent is not before  # a fresh agent, same station, same disk
    assert command(stack, node.station_id, "set_volume", percent=70)["ok"] is True


def test_clock_offset_is_measured_over_mqtt(station) -> None:
    stack, node = station
    context = stack.context
    deadline = time.monotonic() + 10
    while context.commands.sync_clocks(SYSTEM) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # until the server has seen the station come online
    with stack.client() as http:
        url = f"/api/v1/stations/{node.station_id}/commands"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            syncs = [c for c in http.get(url).json() if c["name"] == "time_sync"]
            if syncs and syncs[0]["state"] == "done":
                break
            time.sleep(0.1)
    offset = syncs[0]["result"]["clock_offset_ms"]
    print(f"measured clock offset on one host: {offset:.2f} ms")
    assert abs(offset) < 100  # same clock: only the ingest delay shows


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_station_clock_30_s_off_raises_the_alarm_which_clears_when_fixed(
    tmp_path: Path, mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11's fault: measured over MQTT, alarmed, then cleared once the clock is right
    (a clock alarm degrades the station, and degraded stations used never to be measured)."""
    skew = {"now": timedelta(seconds=30)}
    monkeypatch.setattr(agent, "_now", lambda: datetime.now(UTC) + skew["now"])
    overrides = {"health_check_interval_s": 0.5, "clock_sync_min": 0}
    stack = LocalStack(tmp_path, mosquitto.host, mosquitto.port, settings_overrides=overrides)
    with stack:
        node = stack.start_node(stack.register_station("Cụm loa", "01273", 22.66, 106.25))
        sid = node.station_id
        commands = stack.context.commands

        def station() -> dict[str, Any]:
            return dict(stack.api("GET", f"/api/v1/stations/{sid}"))

        def clock_alarms() -> list[dict[str, Any]]:
            alarms = stack.api("GET", "/api/v1/alarms", params={"station_id": sid})
            return [a for a in alarms if a["kind"] == "clock_offset"]

        def measured() -> list[float]:
            """Offsets measured so far, oldest first."""
            commands_sent = stack.api("GET", f"/api/v1/stations/{sid}/commands")
            done = [c for c in commands_sent if c["name"] == "time_sync" and c["state"] == "done"]
            return [c["result"]["clock_offset_ms"] for c in sorted(done, key=lambda c: c["id"])]

        wait_for("the station online", lambda: station()["status"] == "online")
        assert commands.sync_clocks(SYSTEM) == 1
        (offset,) = wait_for("a measurement", measured)
        assert offset == pytest.approx(30_000, abs=500)
        (alarm,) = wait_for("the clock alarm", clock_alarms)
        assert alarm["state"] == "open"
        assert alarm["detail"].startswith(f"clock off by {offset:+.0f} ms")
        wait_for("the station degraded", lambda: station()["status"] == "degraded")

        skew["now"] = timedelta(0)  # the technician fixes the clock (NTP answers again)
        assert commands.sync_clocks(SYSTEM) == 1  # a degraded station is measured too
        _, fixed = wait_for("a second one", lambda: len(offsets := measured()) == 2 and offsets)
        assert abs(fixed) < 500
        wait_for("the alarm resolved", lambda: clock_alarms()[0]["state"] == "resolved")
        wait_for("the station online again", lambda: station()["status"] == "online")


def test_bad_commands_are_refused_before_anything_is_sent(station) -> None:
    stack, node = station
    url = f"/api/v1/stations/{node.station_id}/commands"
    with stack.client() as http:
        unknown = http.post(url, json={"name": "self_destruct"})
        bad_arg = http.post(url, json={"name": "set_volume", "args": {"percent": 150}})
        reserved = http.post(url, json={"name": "time_sync", "args": {}})
        listed = http.get(url).json()
    assert unknown.status_code == 422 and "self_destruct" in unknown.json()["detail"]
    assert bad_arg.status_code == 422 and "percent" in bad_arg.json()["detail"]
    assert reserved.status_code == 422
    assert listed == []
