"""Failed sign-ins per username and per address, in a sliding window."""

from __future__ import annotations

import pytest

from server.auth.ratelimit import LoginRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(clock: Clock) -> LoginRateLimiter:
    return LoginRateLimiter(max_failures=5, window_s=900, clock=clock)


def test_five_failures_for_a_username_block_it_until_the_window_passes(
    limiter: LoginRateLimiter, clock: Clock
) -> None:
    for i in range(5):
        assert limiter.retry_after("lan", f"10.0.0.{i}") is None
        limiter.record_failure("lan", f"10.0.0.{i}")
        clock.now += 10
    wait = limiter.retry_after("LAN", "10.9.9.9")  # any address, any case
    assert wait == pytest.approx(900 - 50)
    assert limiter.retry_after("minh", "10.9.9.9") is None
    clock.now += wait - 1
    assert limiter.retry_after("lan", None) is not None
    clock.now += 1  # the first failure left the window
    assert limiter.retry_after("lan", None) is None


def test_five_failures_from_one_address_block_every_username_from_it(
    limiter: LoginRateLimiter,
) -> None:
    for name in ("a1", "a2", "a3", "a4", "a5"):
        limiter.record_failure(name, "203.0.113.7")
    assert limiter.retry_after("someone-else", "203.0.113.7") is not None
    assert limiter.retry_after("someone-else", "203.0.113.8") is None


def test_success_clears_the_username_but_not_the_address(limiter: LoginRateLimiter) -> None:
    for _ in range(4):
        limiter.record_failure("lan", "203.0.113.7")
    limiter.record_success("lan")
    limiter.record_failure("lan", "203.0.113.9")
    assert limiter.retry_after("lan", "203.0.113.9") is None
    limiter.record_failure("other", "203.0.113.7")
    assert limiter.retry_after("x", "203.0.113.7") is not None  # 5 from that address


def test_memory_is_swept_of_expired_keys(limiter: LoginRateLimiter, clock: Clock) -> None:
    from server.auth import ratelimit

    for i in range(ratelimit.SWEEP_ABOVE_KEYS + 1):
        limiter.record_failure(f"spray-{i}", None)
    clock.now += 901
    limiter.record_failure("late", None)
    assert limiter.retry_after("spray-1", None) is None
    assert len(limiter._failures) == 1
