"""Hourly aggregation windows, min/avg/max arithmetic and retention cut-offs, clock injected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from server.health.retention import (
    HOUR,
    cutoffs,
    floor_hour,
    floor_to,
    hours_to_aggregate,
    summarise,
)

# 00:20 on 2 July: the previous hour (23:00-24:00) lies in yesterday.
NOW = datetime(2025, 7, 2, 0, 20, tzinfo=UTC)
DAY = timedelta(days=1)


def at(hh: int, mm: int, day: int = 1) -> datetime:
    return datetime(2025, 7, day, hh, mm, tzinfo=UTC)


def test_known_samples_give_exact_min_avg_max_per_station_metric_and_hour() -> None:
    points = [
        (("a", "cpu_temp_c"), at(23, 0), 40.0),
        (("a", "cpu_temp_c"), at(23, 30), 50.0),
        (("a", "cpu_temp_c"), at(23, 59), 60.0),
        (("a", "cpu_temp_c"), at(0, 0, day=2), 99.0),  # next hour, next day
        (("b", "cpu_temp_c"), at(23, 10), 10.0),
        (("a", "disk_free_pct"), at(23, 5), 25.0),
    ]
    groups = summarise(points, HOUR)
    a = groups[(("a", "cpu_temp_c"), at(23, 0))]
    assert (a.min, a.avg, a.max, a.count) == (40.0, 50.0, 60.0, 3)
    nxt = groups[(("a", "cpu_temp_c"), at(0, 0, day=2))]
    assert (nxt.min, nxt.avg, nxt.max, nxt.count) == (99.0, 99.0, 99.0, 1)
    assert groups[(("b", "cpu_temp_c"), at(23, 0))].count == 1
    assert len(groups) == 4


def test_buckets_align_on_the_epoch() -> None:
    assert floor_hour(at(23, 59)) == at(23, 0)
    assert floor_to(at(10, 7), timedelta(minutes=5)) == at(10, 5)


def test_only_complete_hours_are_aggregated_across_midnight() -> None:
    keep = 7 * DAY
    # Nothing aggregated yet, samples since 21:40 yesterday: 21h, 22h, 23h are complete.
    assert hours_to_aggregate(NOW, None, at(21, 40), keep) == [at(21, 0), at(22, 0), at(23, 0)]
    # Resume after the last aggregated hour.
    assert hours_to_aggregate(NOW, at(23, 0), at(21, 40), keep) == [at(23, 0)]
    assert hours_to_aggregate(NOW, at(0, 0, day=2), at(21, 40), keep) == []
    # Just after midnight, the hour that ended is not settled yet (batches in flight).
    assert hours_to_aggregate(at(0, 0, day=2) + timedelta(seconds=10), at(23, 0), None, keep) == []
    assert hours_to_aggregate(NOW, None, None, keep) == []


def test_no_work_is_started_on_hours_already_past_raw_retention() -> None:
    hours = hours_to_aggregate(NOW, None, NOW - 30 * DAY, 2 * DAY)
    assert hours[0] == floor_hour(NOW - 2 * DAY)
    assert hours[-1] == at(23, 0)
    assert len(hours) == 48


@pytest.mark.parametrize(
    ("aggregated_until", "raw_before"),
    [
        (at(0, 0, day=2), datetime(2025, 6, 25, 0, 20, tzinfo=UTC)),
        # Aggregation lags 8 days behind: never prune what is not aggregated yet.
        (datetime(2025, 6, 24, 5, 0, tzinfo=UTC), datetime(2025, 6, 24, 5, 0, tzinfo=UTC)),
        (None, datetime(2025, 6, 25, 0, 20, tzinfo=UTC)),
    ],
)
def test_retention_cutoffs_across_a_day_boundary(
    aggregated_until: datetime | None, raw_before: datetime
) -> None:
    limits = cutoffs(NOW, 7 * DAY, 365 * DAY, aggregated_until)
    assert limits.raw_before == raw_before
    # Hourly rows go by whole hours: the 00:00 hour of 2 July 2024 is kept.
    assert limits.hourly_before == datetime(2024, 7, 2, 0, 0, tzinfo=UTC)
