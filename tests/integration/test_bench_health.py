"""``loaxa bench health`` as a person runs it: a real subprocess, Mosquitto, server and swarm.

The small run proves the machinery end to end (registration, authenticated swarm, the
counters, the raw floor, the JSON line); it is not a performance claim. The figures
in docs/performance.md come from the ``slow`` run and the commands recorded there.
"""

from __future__ import annotations

from typing import Any

import pytest

from loaxa.bench.swarm import HealthTemplate
from loaxa_protocol import Health
from tests.bench_runs import run_bench

KEYS = {"nodes", "reports_per_s", "lost", "api_p99_ms", "raw_msgs_per_s"}


def bench(*args: str, timeout: float) -> dict[str, Any]:
    return run_bench("health", *args, keys=KEYS, timeout=timeout)


def test_swarm_reports_are_schema_valid_and_strictly_newer() -> None:
    template = HealthTemplate("hb-00007", 7)
    first = Health.model_validate_json(template.render(1_800_000_000.0))
    second = Health.model_validate_json(template.render(1_800_000_000.001))
    assert first.station_id == "hb-00007"
    assert second.at > first.at  # the server keeps only a station's newest report
    assert second.uptime_s > first.uptime_s


def test_small_run_stores_every_report_and_prints_one_json_line() -> None:
    figures = bench("--nodes", "20", "--seconds", "3", "--interval-ms", "200", timeout=60)
    assert figures["nodes"] == 20
    assert figures["sent"] > 0
    assert figures["lost"] == 0
    assert figures["reports_per_s"] > 0
    assert figures["raw_msgs_per_s"] > 0 and figures["raw_lost"] == 0
    assert figures["api_samples"] > 0 and figures["api_p99_ms"] > 0
    # The server reads the broker's own drop counter (the generated ACL grants it): a
    # loss at the broker would be counted there, and nothing is left unaccounted.
    assert figures["broker_dropped"] == 0 and figures["shed"] == 0
    assert figures["unaccounted"] == 0
    assert all(0 < probe < 10_000 for probe in figures["cpu_probe_ms"])


def test_small_run_with_ingest_workers_stores_every_report() -> None:
    """The same run with two ``loaxa worker ingest`` processes instead of the server."""
    figures = bench(
        "--nodes", "20", "--seconds", "3", "--interval-ms", "200", "--ingest-workers", "2",
        timeout=120,
    )  # fmt: skip
    assert figures["ingest_workers"] == 2
    assert figures["counters"].endswith("ingest_workers.totals.health.stored")
    assert figures["sent"] > 0 and figures["lost"] == 0
    assert figures["received"] == figures["sent"]


@pytest.mark.slow
def test_a_thousand_stations_at_the_design_rate_lose_nothing() -> None:
    """The design's row: ≥ 3,000 reports/s offered by 1,000 stations, none lost."""
    figures = bench("--nodes", "1000", "--seconds", "10", "--interval-ms", "300", timeout=600)
    assert figures["offered_per_s"] >= 3000
    assert figures["lost"] == 0
    assert figures["raw_lost"] == 0
