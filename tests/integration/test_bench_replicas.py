"""``loaxa bench alert --replicas 2 --kill-replica`` and ``loaxa bench plan``, run as a person does.

Small runs that prove the machinery (not performance claims): two real ``loaxa serve``
processes on a fresh PostgreSQL database, the leader killed with SIGKILL right after it
took the middle round's alert; every station still plays every alert exactly once, the
survivor leads and rolls, and no station refuses a plan. The plan bench: three real
station processes, every broadcast delivered, the JSON line the issue names.
"""

from __future__ import annotations

import pytest

from tests.bench_runs import run_bench
from tests.database import ADMIN_PG, postgres_available


@pytest.mark.skipif(not postgres_available(), reason="needs a PostgreSQL server")
def test_killing_the_leader_mid_alert_loses_no_station_and_no_plan() -> None:
    figures = run_bench(
        "alert",
        *("--nodes", "20", "--rounds", "3", "--replicas", "2", "--kill-replica"),
        *("--database-url", ADMIN_PG),
        keys={"replicas", "killed", "missing"},
        timeout=300,
    )
    assert figures["replicas"] == 2 and figures["killed"] in ("a", "b")
    assert figures["missing"] == [] and figures["acked_playing"] == 20
    assert figures["duplicates"] == 0  # exactly once
    assert figures["plan_refusals"] == []  # no sequence reused
    assert figures["takeover_s"] is not None and figures["takeover_s"] < 10
    assert figures["rolled_after_kill"] is True


def test_plan_bench_prints_the_figures_the_issue_names() -> None:
    figures = run_bench(
        "plan",
        *("--stations", "3", "--rounds", "3"),
        keys={"stations", "p50_ms", "p95_ms", "api_p50_ms", "cpu_probe_ms"},
        timeout=180,
    )
    assert figures["stations"] == 3 and figures["rounds"] == 3
    assert 0 < figures["p50_ms"] <= figures["p95_ms"]
    assert figures["api_p50_ms"] > 0
    # The machine's speed around the run, so runs at different moments can be compared.
    assert all(0 < probe < 10_000 for probe in figures["cpu_probe_ms"])
