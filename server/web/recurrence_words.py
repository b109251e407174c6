"""The recurrence picker's two directions, free of FastAPI and the database.

Days ticked on the form become an RFC 5545 RRULE the programmes API understands, and a
rule read back becomes plain words a clerk can check: "Thứ 2 đến Thứ 7, 05:00". Only
the shapes the form makes are put into words (daily, weekly on some days); anything
else a schedule file may hold is shown as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from server.i18n import N_

WEEKDAY_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
WEEKDAY_NAMES = (
    N_("Monday"),
    N_("Tuesday"),
    N_("Wednesday"),
    N_("Thursday"),
    N_("Friday"),
    N_("Saturday"),
    N_("Sunday"),
)
"""Monday = 0, as ``date.weekday()``; in Vietnamese Thứ 2 … Thứ 7, Chủ nhật."""


def weekly_rrule(days: Iterable[int]) -> str:
    """``FREQ=DAILY`` for all seven days, else ``FREQ=WEEKLY;BYDAY=MO,WE`` (Monday first)."""
    chosen = sorted(set(days))
    if not chosen or any(not 0 <= d <= 6 for d in chosen):
        raise ValueError(f"days must be 0 (Monday) … 6 (Sunday), got {chosen}")
    if len(chosen) == 7:
        return "FREQ=DAILY"
    return "FREQ=WEEKLY;BYDAY=" + ",".join(WEEKDAY_CODES[d] for d in chosen)


def days_of_rrule(rrule: str | None) -> tuple[int, ...] | None:
    """The weekdays of a rule the form could have made; None for any other rule."""
    if rrule is None:
        return None
    fields = rrule.upper().removeprefix("RRULE:").split(";")
    parts = dict(part.split("=", 1) for part in fields if "=" in part)
    freq = parts.pop("FREQ", None)
    if freq == "DAILY" and not parts:
        return tuple(range(7))
    if freq == "WEEKLY" and set(parts) == {"BYDAY"}:
        codes = parts["BYDAY"].split(",")
        if all(code in WEEKDAY_CODES for code in codes):
            return tuple(sorted({WEEKDAY_CODES.index(code) for code in codes}))
    return None


def describe_days(days: Iterable[int], gettext: Callable[[str], str]) -> str:
    """Every day; Monday to Saturday (a run of three or more); or Monday, Wednesday."""
    chosen = sorted(set(days))
    if len(chosen) == 7:
        return gettext("Every day")
    names = [gettext(WEEKDAY_NAMES[d]) for d in chosen]
    if len(chosen) >= 3 and chosen == list(range(chosen[0], chosen[-1] + 1)):
        return gettext("%(first)s to %(last)s") % {"first": names[0], "last": names[-1]}
    return ", ".join(names)


def describe(rrule: str | None, hm: str, gettext: Callable[[str], str]) -> str:
    """The whole rule in words with its time: "Thứ 2 đến Thứ 7, 05:00"."""
    days = days_of_rrule(rrule)
    if rrule is None:
        return gettext("Once, %(time)s") % {"time": hm}
    if days is None:
        return f"{rrule}, {hm}"
    return f"{describe_days(days, gettext)}, {hm}"
