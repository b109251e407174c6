"""``loaxa bench reconnect`` as a person runs it: a real subprocess, Mosquitto and stations.

The small run proves the machinery (accounts, the agent's own MQTT links in worker
processes, the broker restart, the figures and the JSON line); it is not a performance
claim. The figures in docs/reliability.md come from the 1,000-station runs recorded there.
"""

from __future__ import annotations

import pytest

from tests.bench_runs import run_bench

KEYS = {"nodes", "back", "not_back", "p50_s", "p99_s", "peak_connects_per_s", "before_ready"}


@pytest.mark.timeout(300)
def test_small_run_times_every_station_back_after_the_broker_restart() -> None:
    figures = run_bench(
        "reconnect", "--nodes", "12", "--outage-s", "1", "--workers", "2", keys=KEYS,
        timeout=240,
    )  # fmt: skip
    assert figures["nodes"] == 12
    # Every station: one that got in while the broker's start-up check was still
    # running is back too (it was once counted as never back).
    assert figures["back"] == 12 and figures["not_back_ids"] == [], figures
    assert 0 <= figures["before_ready"] <= figures["back"]
    assert 0 < figures["p50_s"] <= figures["p99_s"] <= figures["max_s"] <= 150
    assert 1 <= figures["peak_connects_per_s"] <= figures["back"]
    assert figures["within_30_s"] <= figures["back"]
