"""``loaxa bench rollout`` as a person runs it: real station processes, server and broker.

One station proves the machinery (three builds, a venv per station, a good rollout, a
broken one rolled back); it is not a performance claim. The figures in
docs/performance.md come from the runs recorded there.
"""

from __future__ import annotations

import pytest

from tests.bench_runs import run_bench

KEYS = {"stations", "updated_good", "rolled_back", "offline_after", "minutes"}


@pytest.mark.slow  # three station builds and two rollouts: minutes
@pytest.mark.timeout(1200)
def test_a_good_release_reaches_the_station_and_a_broken_one_rolls_back() -> None:
    figures = run_bench("rollout", "--stations", "1", keys=KEYS, timeout=1100)
    assert figures["stations"] == 1
    assert figures["updated_good"] == 1 and figures["rolled_back"] == 1, figures
    assert figures["offline_after"] == 0 and figures["broken_rollout_state"] == "failed"
    assert 0 < figures["minutes"] < 15
