"""Which stations a roll-forward republishes (pure; instants chosen to the second)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.planning.rolling import Published, Starts, due_stations, earliest_horizon

T0 = datetime(2026, 12, 31, 15, 0, tzinfo=UTC)  # 22:00 on New Year's Eve, local
H = timedelta(hours=48)
RENEW = timedelta(hours=36)


def last_at(issued: datetime) -> Published:
    return Published(issued, issued + H)


def test_only_stations_whose_window_gains_an_item_are_due() -> None:
    last = {"a": last_at(T0), "b": last_at(T0), "c": last_at(T0)}
    now = T0 + timedelta(hours=1)
    # a: an item starts exactly at its old horizon end (it was not in the last plan).
    # b: an item already inside its last plan; c: one starting after the new horizon.
    sources = [
        Starts(["a"], [T0 + H]),
        Starts(["b"], [T0 + timedelta(hours=5)]),
        Starts(["c"], [now + H]),
    ]
    assert due_stations(["a", "b", "c"], last, sources, now + H, now, RENEW) == {"a"}
    # Nothing new anywhere: nothing is due.
    assert due_stations(["a", "b", "c"], last, [], now + H, now, RENEW) == set()


def test_unknown_and_ageing_plans_are_due_and_the_floor_is_the_oldest_horizon() -> None:
    old = T0 - RENEW
    last = {"a": last_at(old), "b": last_at(T0 - timedelta(hours=1))}
    due = due_stations(["a", "b", "new"], last, [], T0 + H, T0, RENEW)
    assert due == {"a", "new"}  # a's plan reached half its lifetime; new was never sent
    assert earliest_horizon(last, T0) == old + H
    assert earliest_horizon({}, T0) == T0


def test_a_shared_programme_marks_each_station_by_its_own_horizon() -> None:
    # The same programme on two stations last published an hour apart.
    last = {"early": last_at(T0), "late": last_at(T0 + timedelta(hours=1))}
    now = T0 + timedelta(hours=2)
    item = T0 + H + timedelta(minutes=30)  # after early's horizon, before late's
    sources = [Starts(["early", "late"], [item])]
    assert due_stations(["early", "late"], last, sources, now + H, now, RENEW) == {"early"}
