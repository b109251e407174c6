"""Failed sign-ins per username and per address, in a sliding window.

The same rule in memory and in the database (what replicas share): each behaviour test
runs against both.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from server.auth.ratelimit import DatabaseLoginLimiter, LoginRateLimiter, SignInLimiter
from server.db import create_tables, make_engine


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "database"])
def limiter(request: pytest.FixtureRequest, clock: Clock) -> Iterator[SignInLimiter]:
    if request.param == "memory":
        yield LoginRateLimiter(max_failures=5, window_s=900, clock=clock)
        return
    engine = make_engine("sqlite://")
    create_tables(engine)
    yield DatabaseLoginLimiter(
        engine, max_failures=5, window_s=900, clock=lambda: datetime.fromtimestamp(clock.now, UTC)
    )
    engine.dispose()


@pytest.fixture
def memory_limiter(clock: Clock) -> LoginRateLimiter:
    return LoginRateLimiter(max_failures=5, window_s=900, clock=clock)


def test_five_failures_for_a_username_block_it_until_the_window_passes(
    limiter: SignInLimiter, clock: Clock
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
    limiter: SignInLimiter,
) -> None:
    for name in ("a1", "a2", "a3", "a4", "a5"):
        limiter.record_failure(name, "203.0.113.7")
    assert limiter.retry_after("someone-else", "203.0.113.7") is not None
    assert limiter.retry_after("someone-else", "203.0.113.8") is None


def test_success_clears_the_username_but_not_the_address(limiter: SignInLimiter) -> None:
    for _ in range(4):
        limiter.record_failure("lan", "203.0.113.7")
    limiter.record_success("lan")
    limiter.record_failure("lan", "203.0.113.9")
    assert limiter.retry_after("lan", "203.0.113.9") is None
    limiter.record_failure("other", "203.0.113.7")
    assert limiter.retry_after("x", "203.0.113.7") is not None  # 5 from that address


def test_memory_is_swept_of_expired_keys(memory_limiter: LoginRateLimiter, clock: Clock) -> None:
    from server.auth import ratelimit

    limiter = memory_limiter
    for i in range(ratelimit.SWEEP_ABOVE_KEYS + 1):
        limiter.record_failure(f"spray-{i}", None)
    clock.now += 901
    limiter.record_failure("late", None)
    assert limiter.retry_after("spray-1", None) is None
    assert len(limiter._failures) == 1


def test_the_database_is_swept_of_expired_failures(clock: Clock) -> None:
    from sqlmodel import Session, select

    from server.auth import ratelimit
    from server.auth.models import LoginFailure

    engine = make_engine("sqlite://")
    create_tables(engine)
    limiter = DatabaseLoginLimiter(
        engine, window_s=900, clock=lambda: datetime.fromtimestamp(clock.now, UTC)
    )
    for i in range(ratelimit.SWEEP_EVERY_FAILURES - 1):
        limiter.record_failure(f"spray-{i}", None)
    clock.now += 901
    limiter.record_failure("late", None)  # the hundredth: sweeps what left the window
    with Session(engine) as session:
        assert [f.key for f in session.exec(select(LoginFailure)).all()] == ["user:late"]
