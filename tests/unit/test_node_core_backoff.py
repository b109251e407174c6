"""The reconnect schedule: exponential back-off with full jitter (pure logic)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from node_firmware.core.backoff import ReconnectBackoff


def waits(policy: ReconnectBackoff, draws: list[float]) -> list[float]:
    out = []
    for draw in draws:
        wait, policy = policy.next_wait(draw)
        out.append(wait)
    return out


def test_the_first_retry_comes_within_the_base_and_the_window_doubles_up_to_the_cap() -> None:
    # the largest possible draw shows the window: 1, 2, 4, … capped at 60 s
    top = waits(ReconnectBackoff(), [0.999999] * 9)
    assert [round(w) for w in top] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert waits(ReconnectBackoff(), [0.0]) == [0.0]  # full jitter: it may retry at once


def test_a_stable_connection_resets_the_schedule_and_a_flapping_one_does_not() -> None:
    policy = ReconnectBackoff(stable_s=30)
    for _ in range(6):  # the broker was away a while
        _, policy = policy.next_wait(0.5)
    flapping = policy.connected(100.0).disconnected(105.0)  # dropped after 5 s
    assert flapping.window_s() == 60
    stable = policy.connected(100.0).disconnected(131.0)  # held 31 s
    assert stable.window_s() == 1


def test_a_draw_outside_the_unit_interval_is_a_local_bug() -> None:
    with pytest.raises(ValueError, match="draw"):
        ReconnectBackoff().next_wait(1.0)


def test_a_thousand_stations_do_not_come_back_in_the_same_second() -> None:
    """Every station lost the broker at t=0 after a stable connection; it is back at
    t=45 s. Their next attempts after its return are spread, none a minute late."""
    rng = random.Random(7)
    back_at_s = 45.0
    reconnected_at = []
    for _ in range(1000):
        policy, t = ReconnectBackoff().connected(-100.0).disconnected(0.0), 0.0
        while True:
            wait, policy = policy.next_wait(rng.random())
            t += wait
            if t >= back_at_s:
                reconnected_at.append(t)
                break
    per_second = Counter(int(t) for t in reconnected_at)
    assert max(reconnected_at) - back_at_s <= 60
    assert max(per_second.values()) <= 100, per_second.most_common(3)  # ≤ 10 % in any second


def test_the_network_coming_back_cuts_the_wait_to_seconds_and_restarts_from_the_base() -> None:
    policy = ReconnectBackoff(quick_s=3.0)
    for _ in range(8):  # cut off for minutes: the window is at the cap
        _, policy = policy.next_wait(0.5)
    assert policy.window_s() == 60
    wait, back = policy.network_returned(0.999999)
    assert wait < 3.0  # within the quick window whatever the draw…
    assert policy.network_returned(0.0)[0] == 0.0  # …and jittered over it
    assert back.window_s() == 1  # a failure after that backs off from the base again
    assert [round(w) for w in waits(back, [0.999999] * 3)] == [1, 2, 4]


def test_a_fleet_whose_link_returns_together_spreads_over_the_quick_window() -> None:
    rng = random.Random(11)
    firsts = [ReconnectBackoff(quick_s=3.0).network_returned(rng.random())[0] for _ in range(3000)]
    per_second = Counter(int(w) for w in firsts)
    assert sorted(per_second) == [0, 1, 2]
    assert max(per_second.values()) < 1.1 * 1000  # about a third in each second
