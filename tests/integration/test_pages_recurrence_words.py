"""The recurrence picker's words and rules, both ways, in both languages."""

from __future__ import annotations

import pytest

from server.i18n import gettext, language
from server.web.recurrence_words import days_of_rrule, describe, weekly_rrule


def test_days_become_the_rule_the_programmes_api_reads() -> None:
    assert weekly_rrule([5, 0, 1, 2, 3, 4]) == "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA"
    assert weekly_rrule(range(7)) == "FREQ=DAILY"
    assert weekly_rrule([6]) == "FREQ=WEEKLY;BYDAY=SU"
    with pytest.raises(ValueError, match="0 \\(Monday\\)"):
        weekly_rrule([])
    with pytest.raises(ValueError):
        weekly_rrule([7])


def test_rules_the_form_makes_read_back_as_days_others_do_not() -> None:
    assert days_of_rrule("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA") == (0, 1, 2, 3, 4, 5)
    assert days_of_rrule("RRULE:FREQ=DAILY") == tuple(range(7))
    assert days_of_rrule("FREQ=WEEKLY;BYDAY=SU,MO") == (0, 6)
    assert days_of_rrule("FREQ=MONTHLY;BYMONTHDAY=1") is None
    assert days_of_rrule("FREQ=WEEKLY;BYDAY=MO;COUNT=3") is None
    assert days_of_rrule(None) is None


@pytest.mark.parametrize(
    ("rrule", "vi", "en"),
    [
        (
            "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA",
            "Thứ 2 đến Thứ 7, 05:00",
            "Monday to Saturday, 05:00",
        ),
        ("FREQ=DAILY", "Hằng ngày, 05:00", "Every day, 05:00"),
        (
            "FREQ=WEEKLY;BYDAY=MO,WE,FR",
            "Thứ 2, Thứ 4, Thứ 6, 05:00",
            "Monday, Wednesday, Friday, 05:00",
        ),
        ("FREQ=WEEKLY;BYDAY=SA,SU", "Thứ 7, Chủ nhật, 05:00", "Saturday, Sunday, 05:00"),
        (None, "Một lần, 05:00", "Once, 05:00"),
        (
            "FREQ=MONTHLY;BYMONTHDAY=1",
            "FREQ=MONTHLY;BYMONTHDAY=1, 05:00",
            "FREQ=MONTHLY;BYMONTHDAY=1, 05:00",
        ),
    ],
)
def test_plain_words_in_vietnamese_and_english(rrule: str | None, vi: str, en: str) -> None:
    with language("vi"):
        assert describe(rrule, "05:00", gettext) == vi
    with language("en"):
        assert describe(rrule, "05:00", gettext) == en
