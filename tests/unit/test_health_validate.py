"""Health reports are judged field by field: absurd values are dropped and named, never fatal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.health.validate import Rejected, check_health

NOW = datetime(2025, 7, 1, 22, 0, tzinfo=UTC)
STATION = "cb-st-001"


def report(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "type": "health",
        "station_id": STATION,
        "at": NOW.isoformat(),
        "agent_version": "0.3.0",
        "uptime_s": 3600.0,
        "amp_on": False,
        "relay_ok": True,
        "disk_free_bytes": 2 * 10**9,
        "disk_total_bytes": 8 * 10**9,
        "cpu_temp_c": 48.5,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_a_sound_report_keeps_every_value_and_derives_free_percent() -> None:
    checked = check_health(STATION, report(), NOW)
    assert checked.problems == []
    assert checked.node_at == NOW
    assert checked.values["cpu_temp_c"] == 48.5
    assert checked.values["disk_free_pct"] == 25.0
    assert checked.values["amp_on"] is False


@pytest.mark.parametrize(
    ("fields", "dropped", "problem"),
    [
        ({"disk_free_bytes": -1}, "disk_free_bytes", "disk_free_bytes: implausible value -1"),
        ({"cpu_temp_c": 1e9}, "cpu_temp_c", "cpu_temp_c: implausible value 1000000000.0"),
        ({"mem_used_pct": 140}, "mem_used_pct", "mem_used_pct: implausible value 140"),
        ({"modem_rssi_dbm": 31}, "modem_rssi_dbm", "modem_rssi_dbm: implausible value 31"),
        ({"amp_on": 1}, "amp_on", "amp_on: implausible value 1"),
        ({"load_1m": "high"}, "load_1m", "load_1m: implausible value 'high'"),
        ({"agent_version": ...}, "agent_version", "agent_version: missing"),
        ({"disk_free_bytes": 9 * 10**9}, "disk_free_bytes", "larger than disk_total_bytes"),
    ],
    ids=["negative-disk", "hot", "pct", "rssi", "bool-as-int", "text", "missing", "free>total"],
)
def test_one_bad_field_is_dropped_and_flagged_the_rest_kept(
    fields: dict[str, Any], dropped: str, problem: str
) -> None:
    checked = check_health(STATION, report(**fields), NOW)
    assert dropped not in checked.values
    assert any(problem in p for p in checked.problems), checked.problems
    assert checked.values["uptime_s"] == 3600.0  # its neighbours survive
    assert checked.values["relay_ok"] is True


def test_non_finite_numbers_from_a_lenient_encoder_are_dropped() -> None:
    payload = report().replace(b"48.5", b"NaN")
    checked = check_health(STATION, payload, NOW)
    assert "cpu_temp_c" not in checked.values
    assert checked.problems == ["cpu_temp_c: implausible value nan"]


@pytest.mark.parametrize(
    ("at", "problem"),
    [
        ("1970-01-01T00:00:07+00:00", "too old"),
        ((NOW + timedelta(minutes=6)).isoformat(), "in the future"),
        ((NOW + timedelta(days=365)).isoformat(), "in the future"),
        ("2025-07-01T22:00:00", "no timezone"),
        ("yesterday", "not an ISO 8601 time"),
        (..., "missing"),
    ],
)
def test_an_implausible_station_clock_is_not_trusted(at: Any, problem: str) -> None:
    checked = check_health(STATION, report(at=at), NOW)
    assert checked.node_at is None
    assert any(p.startswith("at:") and problem in p for p in checked.problems), checked.problems
    assert checked.values["cpu_temp_c"] == 48.5


def test_a_clock_a_little_ahead_is_fine() -> None:
    ahead = NOW + timedelta(minutes=4)
    assert check_health(STATION, report(at=ahead.isoformat()), NOW).node_at == ahead


def test_explicit_nulls_mean_not_measured_and_unknown_fields_are_flagged() -> None:
    checked = check_health(STATION, report(cpu_temp_c=None, fan_rpm=1200), NOW)
    assert "cpu_temp_c" not in checked.values
    assert checked.problems == ["fan_rpm: unknown field"]


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"\xff\xfe", b"[1, 2]", b'"health"', report(station_id="cb-st-999")],
    ids=["bad-json", "binary", "array", "string", "other-station"],
)
def test_only_an_unreadable_or_misattributed_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(Rejected):
        check_health(STATION, payload, NOW)
