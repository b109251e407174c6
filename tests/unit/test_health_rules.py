"""Alarm rules and the status table: pure functions of facts and an injected clock."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.health.rules import (
    ALL_KINDS,
    HARDWARE_KINDS,
    AlarmKind,
    AlarmSeverity,
    FaultReport,
    ItemOutcome,
    StationFacts,
    Thresholds,
    evaluate,
)
from server.health.status import Observation, degrading, is_silent, next_status
from server.models import StationStatus

NOW = datetime(2025, 7, 1, 22, 0, tzinfo=UTC)
LIMITS = Thresholds(
    offline=timedelta(minutes=10),
    disk_free_pct=10,
    cpu_temp_c=75,
    clock_offset_ms=500,
    amp_min_current_ma=50,
)


def facts(status: str = "online", **kwargs: Any) -> StationFacts:
    return StationFacts(station_id="cb-st-001", status=status, **kwargs)


def kinds(found: dict[AlarmKind, Any]) -> set[AlarmKind]:
    return set(found)


def test_a_healthy_station_raises_nothing() -> None:
    health = {
        "disk_free_pct": 40.0,
        "cpu_temp_c": 50.0,
        "clock_offset_ms": 12.0,
        "amp_on": True,
        "playing_item": "b-1",
        "amp_current_ma": 800.0,
        "relay_ok": True,
    }
    assert evaluate(facts(health=health, health_at=NOW), NOW, LIMITS) == {}


@pytest.mark.parametrize(
    ("health", "kind"),
    [
        ({"disk_free_pct": 9.99}, AlarmKind.DISK_LOW),
        ({"cpu_temp_c": 75.1}, AlarmKind.CPU_TEMP),
        ({"clock_offset_ms": -501.0}, AlarmKind.CLOCK_OFFSET),
        ({"clock_offset_ms": 501.0}, AlarmKind.CLOCK_OFFSET),
        ({"amp_fault": "no_current_while_playing"}, AlarmKind.AMP_FAULT),
        ({"relay_ok": False}, AlarmKind.AMP_FAULT),
        ({"amp_on": True, "playing_item": "b-1", "amp_current_ma": 3.0}, AlarmKind.AMP_FAULT),
    ],
)
def test_each_threshold_fires_just_past_its_limit(health: dict[str, Any], kind: AlarmKind) -> None:
    assert kinds(evaluate(facts(health=health), NOW, LIMITS)) == {kind}


@pytest.mark.parametrize(
    "health",
    [
        {"disk_free_pct": 10.0},
        {"cpu_temp_c": 75.0},
        {"clock_offset_ms": 500.0},
        {"amp_on": True, "playing_item": None, "amp_current_ma": 0.0},  # idle amp draws nothing
    ],
)
def test_values_at_the_limit_do_not_fire(health: dict[str, Any]) -> None:
    assert evaluate(facts(health=health), NOW, LIMITS) == {}


def test_a_fault_event_stands_until_a_later_heartbeat() -> None:
    fault = FaultReport("relay_fault", NOW - timedelta(minutes=1), "readback mismatch")
    before = facts(health={}, health_at=NOW - timedelta(minutes=2), fault=fault)
    found = evaluate(before, NOW, LIMITS)
    assert found[AlarmKind.AMP_FAULT].detail == "relay_fault: readback mismatch"
    assert found[AlarmKind.AMP_FAULT].severity is AlarmSeverity.CRITICAL
    after = facts(health={"relay_ok": True}, health_at=NOW, fault=fault)
    assert evaluate(after, NOW, LIMITS) == {}


def test_offline_fires_only_after_the_limit() -> None:
    since = NOW - timedelta(minutes=10)
    assert evaluate(facts("offline", unreachable_since=since), NOW, LIMITS) == {}
    late = NOW + timedelta(seconds=1)
    found = evaluate(facts("offline", unreachable_since=since), late, LIMITS)
    assert kinds(found) == {AlarmKind.OFFLINE}
    stopped = facts("stopped", unreachable_since=since - timedelta(days=1))
    assert evaluate(stopped, late, LIMITS) == {}  # stopped on purpose


def test_items_not_played_by_their_deadline_or_failed() -> None:
    items = (
        ItemOutcome("b-1", "played", NOW - timedelta(hours=1)),
        ItemOutcome("b-2", "interrupted", NOW - timedelta(hours=1)),
        ItemOutcome("b-3", "fetched", NOW + timedelta(minutes=1)),  # still in time
    )
    assert evaluate(facts(items=items), NOW, LIMITS) == {}
    late = (*items, ItemOutcome("b-4", "delivered", NOW - timedelta(seconds=1)))
    found = evaluate(facts(items=late), NOW, LIMITS)
    assert found[AlarmKind.ITEM_NOT_PLAYED].detail == "not played: b-4 (delivered)"
    failed = (*items, ItemOutcome("b-5", "failed", NOW + timedelta(hours=1)))
    assert kinds(evaluate(facts(items=failed), NOW, LIMITS)) == {AlarmKind.ITEM_NOT_PLAYED}


def test_only_the_requested_kinds_are_evaluated() -> None:
    hot_and_gone = facts(
        "offline", unreachable_since=NOW - timedelta(hours=1), health={"cpu_temp_c": 90.0}
    )
    assert kinds(evaluate(hot_and_gone, NOW, LIMITS, HARDWARE_KINDS)) == {AlarmKind.CPU_TEMP}
    assert kinds(evaluate(hot_and_gone, NOW, LIMITS, ALL_KINDS)) == {
        AlarmKind.CPU_TEMP,
        AlarmKind.OFFLINE,
    }


# ------------------------------------------------------------------ status


S = StationStatus
Obs = Observation


@pytest.mark.parametrize(
    ("current", "observed", "degraded", "expected"),
    [
        (S.UNKNOWN, Obs.HEARTBEAT, False, S.ONLINE),
        (S.OFFLINE, Obs.HEARTBEAT, True, S.DEGRADED),
        (S.ONLINE, Obs.LINK_OFFLINE, False, S.OFFLINE),
        (S.DEGRADED, Obs.LINK_STOPPED, True, S.STOPPED),
        (S.STOPPED, Obs.LINK_ONLINE, False, S.ONLINE),
        (S.ONLINE, Obs.SILENT, False, S.OFFLINE),
        (S.DEGRADED, Obs.SILENT, True, S.OFFLINE),
        (S.STOPPED, Obs.SILENT, False, S.STOPPED),
        (S.UNKNOWN, Obs.SILENT, False, S.UNKNOWN),
        (S.ONLINE, Obs.ALARMS_CHANGED, True, S.DEGRADED),
        (S.DEGRADED, Obs.ALARMS_CHANGED, False, S.ONLINE),
        (S.OFFLINE, Obs.ALARMS_CHANGED, True, S.OFFLINE),
    ],
)
def test_status_transitions(
    current: StationStatus, observed: Observation, degraded: bool, expected: StationStatus
) -> None:
    assert next_status(current, observed, degraded) is expected


def test_silence_and_degradation() -> None:
    limit = timedelta(minutes=10)
    assert not is_silent(None, NOW, limit)  # never heard: unknown, not offline
    assert not is_silent(NOW - limit, NOW, limit)
    assert is_silent(NOW - limit - timedelta(seconds=1), NOW, limit)
    assert degrading([("disk_low", "warning")])
    assert not degrading([("offline", "critical")])
    assert not degrading([("disk_low", "info")])


@pytest.mark.parametrize(
    "module", ["server.health.rules", "server.health.validate", "server.health.retention"]
)
def test_pure_health_modules_import_no_io_library(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "io = ('sqlmodel', 'sqlalchemy', 'fastapi', 'paho', 'httpx', 'apscheduler')\n"
        "print(','.join(sorted(m for m in io if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "", f"{module} pulls in {result.stdout.strip()}"
