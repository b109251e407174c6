"""Recurrence at local time across week, month and year boundaries, with an injected clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from server.programmes.recurrence import (
    RecurrenceError,
    Timing,
    fmt_local,
    to_local,
    to_utc,
    validate_timing,
)

MON_TO_SAT = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA"


def local(*parts: int) -> datetime:
    return datetime(*parts)  # naive: Vietnam wall time


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_local_time_is_utc_plus_seven_both_ways() -> None:
    assert to_utc(local(2026, 12, 7, 5, 0)) == utc(2026, 12, 6, 22, 0)
    assert to_local(utc(2026, 12, 6, 22, 0)) == local(2026, 12, 7, 5, 0)
    assert fmt_local(utc(2026, 12, 6, 22, 0)) == "Mon 2026-12-07 05:00"


def test_monday_to_saturday_skips_sunday_across_a_week_boundary() -> None:
    timing = Timing(local(2026, 12, 1, 5, 0), MON_TO_SAT)
    starts = timing.between(utc(2026, 12, 3, 12), utc(2026, 12, 8, 12))
    assert [fmt_local(s) for s in starts] == [
        "Fri 2026-12-04 05:00",
        "Sat 2026-12-05 05:00",
        "Mon 2026-12-07 05:00",
        "Tue 2026-12-08 05:00",
    ]
    # 05:00 local is the previous day 22:00 UTC: the window is in UTC, the rule in local time.
    assert starts[0] == utc(2026, 12, 3, 22, 0)


def test_a_month_end_rule_and_an_evening_slot_that_crosses_the_utc_date() -> None:
    timing = Timing(local(2027, 1, 31, 17, 0), "FREQ=MONTHLY;BYMONTHDAY=-1")
    starts = timing.between(utc(2027, 1, 1), utc(2027, 5, 1))
    assert [to_local(s).date() for s in starts] == [
        date(2027, 1, 31),
        date(2027, 2, 28),
        date(2027, 3, 31),
        date(2027, 4, 30),
    ]
    assert starts[1] == utc(2027, 2, 28, 10, 0)


def test_the_year_end_and_leap_day() -> None:
    daily = Timing(local(2027, 12, 30, 23, 30), "FREQ=DAILY")
    # 23:30 local on 31 December is 16:30 UTC the same day; 00:00 local 1 Jan is in UTC 2027.
    starts = daily.between(utc(2027, 12, 30), utc(2028, 1, 2))
    assert [fmt_local(s) for s in starts] == [
        "Thu 2027-12-30 23:30",
        "Fri 2027-12-31 23:30",
        "Sat 2028-01-01 23:30",
    ]
    leap = Timing(local(2028, 2, 29, 5, 0), "FREQ=YEARLY")
    assert [to_local(s).year for s in leap.between(utc(2028, 1, 1), utc(2037, 1, 1))] == [
        2028,
        2032,
        2036,
    ]


def test_exceptions_skip_one_occurrence_or_a_whole_day() -> None:
    timing = Timing(
        local(2026, 12, 28, 5, 0),
        "FREQ=DAILY;BYHOUR=5,17",
        exceptions=(local(2026, 12, 29, 17, 0), date(2027, 1, 1)),
    )
    starts = [fmt_local(s) for s in timing.between(utc(2026, 12, 28), utc(2027, 1, 2, 12))]
    assert "Tue 2026-12-29 17:00" not in starts and "Tue 2026-12-29 05:00" in starts
    assert not [s for s in starts if "2027-01-01" in s]
    assert starts[-2:] == ["Sat 2027-01-02 05:00", "Sat 2027-01-02 17:00"]


def test_until_and_count_end_a_rule() -> None:
    timing = Timing(local(2026, 12, 7, 5, 0), "FREQ=DAILY;UNTIL=20261209T050000")
    assert len(timing.between(utc(2026, 12, 1), utc(2027, 1, 1))) == 3
    utc_until = Timing(local(2026, 12, 7, 5, 0), "FREQ=DAILY;UNTIL=20261208T215959Z")
    assert len(utc_until.between(utc(2026, 12, 1), utc(2027, 1, 1))) == 2
    assert (
        Timing(local(2026, 12, 7, 5, 0), "FREQ=DAILY;COUNT=4").next_after(utc(2026, 12, 10, 23))
        is None
    )


def test_a_one_off_fires_once() -> None:
    once = Timing(local(2026, 12, 7, 5, 0))
    assert once.between(utc(2026, 12, 1), utc(2027, 1, 1)) == [utc(2026, 12, 6, 22)]
    assert once.next_after(utc(2026, 12, 6, 22, 0, 1)) is None


NOW = utc(2026, 12, 6, 15, 0)


def test_validation_returns_the_next_occurrence() -> None:
    assert validate_timing(Timing(local(2026, 12, 1, 5, 0), MON_TO_SAT), NOW) == utc(
        2026, 12, 6, 22
    )


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        (Timing(local(2026, 12, 7, 5), "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"), "never fires:"),
        (Timing(local(2026, 11, 1, 5), "FREQ=DAILY;COUNT=5"), "last occurrence was Thu 2026-11-05"),
        (Timing(local(2026, 12, 7, 5), "FREQ=SECONDLY"), "FREQ=SECONDLY fires"),
        (Timing(local(2026, 12, 7, 5), "FREQ=MINUTELY;BYSECOND=0,20,40"), "fires every 20 s"),
        (Timing(local(2026, 12, 7, 5), "FREQ=DAILY;BYHOUR=25"), "hour must be in 0..23"),
        (Timing(local(2026, 12, 7, 5), "FREQ=WEEKLY;BYDAY=MO\nRRULE:FREQ=DAILY"), "one RRULE"),
        (Timing(local(2026, 12, 7, 5), "DTSTART:20261207T050000\nFREQ=DAILY"), "one RRULE"),
        (Timing(local(2026, 12, 5, 5)), "is in the past"),
        (Timing(local(2026, 12, 8, 5), exceptions=(date(2026, 12, 8),)), "also listed"),
    ],
)
def test_timings_that_cannot_be_scheduled_say_why(timing: Timing, message: str) -> None:
    with pytest.raises(RecurrenceError, match=message.replace("(", r"\(")):
        validate_timing(timing, NOW)


def test_every_minute_is_allowed_but_not_faster() -> None:
    validate_timing(Timing(local(2026, 12, 7, 5), "FREQ=MINUTELY;COUNT=30"), NOW)
    with pytest.raises(RecurrenceError, match="at least 60 s apart"):
        validate_timing(Timing(local(2026, 12, 7, 5), "FREQ=MINUTELY;BYSECOND=0,59"), NOW)


def test_a_clock_near_the_end_of_a_rule_still_finds_the_last_occurrence() -> None:
    timing = Timing(local(2026, 12, 28, 5), "FREQ=DAILY;UNTIL=20261231T050000")
    assert validate_timing(timing, utc(2026, 12, 30, 22, 0) - timedelta(seconds=1)) == utc(
        2026, 12, 30, 22
    )


def test_a_close_rule_is_allowed_only_when_count_or_until_ends_it_soon() -> None:
    drill = Timing(local(2026, 12, 7, 5, 0, 10), "FREQ=MINUTELY;BYSECOND=10,30;COUNT=2")
    assert validate_timing(drill, NOW) == utc(2026, 12, 6, 22, 0, 10)
    assert [to_local(s).second for s in drill.between(NOW, NOW + timedelta(days=1))] == [10, 30]
    with pytest.raises(RecurrenceError, match="unless COUNT or UNTIL ends the rule within 60"):
        validate_timing(Timing(local(2026, 12, 7, 5), "FREQ=MINUTELY;BYSECOND=0,30;COUNT=500"), NOW)
