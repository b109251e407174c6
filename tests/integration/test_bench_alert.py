"""``loaxa bench alert`` as a person runs it: a real subprocess, Mosquitto, server and swarm.

The small run proves the machinery end to end (bulk registration, authenticated swarm
running the node core, alerts through the API, the floor probe, the JSON line); it is
not a performance claim. The figures in docs/performance.md come from the commands
recorded there (and the ``slow`` run below).
"""

from __future__ import annotations

from typing import Any

import pytest

from loaxa.bench.alert_swarm import (
    FLOOR_MARK,
    PLAYER_READY_START_MS,
    PLAYER_START_MS,
    RELAY_MS,
    floor_payload,
)
from tests.bench_runs import run_bench

KEYS = {
    "nodes",
    "delivered",
    "payload_bytes",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "deliver_p99_ms",
    "node_p99_ms",
    "raw_p99_ms",
    "ratio",
}


def bench(*args: str, timeout: float) -> dict[str, Any]:
    return run_bench("alert", *args, keys=KEYS, timeout=timeout)


def test_the_floor_probe_has_the_alerts_exact_size_and_is_never_mistaken_for_one() -> None:
    probe = floor_payload("a-123", 700)
    assert len(probe) == 700
    assert probe.startswith(FLOOR_MARK + b"a-123:")
    assert not probe.startswith(b"{")  # not an envelope: a core would refuse it


def test_small_run_delivers_every_alert_and_prints_one_json_line() -> None:
    figures = bench("--nodes", "20", "--rounds", "2", timeout=120)
    assert figures["nodes"] == 20
    assert figures["delivered"] == 20 and figures["acked_playing"] == 20
    assert figures["cancelled"] == 20 and figures["refused"] == 0
    assert figures["payload_bytes"] > 0
    assert 0 < figures["deliver_p99_ms"] <= figures["p99_ms"]
    assert figures["raw_p99_ms"] > 0 and figures["ratio"] > 0
    # Delivery is stamped when the client reads the alert, before the core: the node part
    # (verify, accept, relay, player) comes after it, and the cancel is timed the same way.
    assert figures["node_p99_ms"] > 0 and figures["accept"]["n"] == 40
    assert 0 < figures["cancel_deliver_p99_ms"] <= figures["cancel_p99_ms"]
    assert figures["cancel_ratio"] > 0
    assert figures["errors"] == []


def test_the_swarm_takes_the_real_drivers_time_by_default() -> None:
    """Relay and player cost what ``loaxa bench drivers`` measured: a canned alert starts
    from the library the station keeps decoded, which is quicker than a new file."""
    defaults = bench("--nodes", "10", "--rounds", "1", timeout=120)
    assert defaults["relay_ms"] == RELAY_MS
    assert defaults["player_start_ms"] == PLAYER_READY_START_MS < PLAYER_START_MS


def test_the_players_start_up_is_in_p99() -> None:
    """An alert is due now, so no station can report playing sooner than its player's
    start-up. (One bench a test: under PostgreSQL a test's benches share its database.)"""
    slow = bench("--nodes", "10", "--rounds", "1", "--player-start-ms", "400", timeout=120)
    assert slow["player_start_ms"] == 400
    assert slow["node"]["p50"] >= 400 and slow["p50_ms"] >= 400


@pytest.mark.slow
def test_a_thousand_stations_hear_a_canned_alert() -> None:
    """The design's row: 1,000 stations, every one delivered and playing."""
    figures = bench("--nodes", "1000", "--rounds", "5", timeout=900)
    assert figures["delivered"] == 1000 and figures["acked_playing"] == 1000


@pytest.mark.slow
def test_a_thousand_stations_hear_an_inline_alert() -> None:
    figures = bench("--nodes", "1000", "--payload", "inline", "--rounds", "3", timeout=900)
    assert figures["delivered"] == 1000 and figures["acked_playing"] == 1000
