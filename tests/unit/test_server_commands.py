"""The clock offset estimate from a time_sync exchange (NTP's four timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.commands.service import clock_offset_ms

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_a_station_ahead_by_300_ms_over_a_symmetric_80_ms_path() -> None:
    ahead, one_way = timedelta(milliseconds=300), timedelta(milliseconds=40)
    t1 = T0 + one_way + ahead  # station receives (its clock)
    t2 = t1 + timedelta(milliseconds=5)  # station replies (its clock)
    t3 = t2 - ahead + one_way  # server receives (server clock)
    assert clock_offset_ms(T0, t1, t2, t3) == 300.0


def test_an_asymmetric_path_errs_by_half_the_asymmetry() -> None:
    t1 = T0 + timedelta(milliseconds=100)  # slow way there, clocks equal
    t3 = t1 + timedelta(milliseconds=20)  # fast way back
    assert clock_offset_ms(T0, t1, t1, t3) == 40.0
