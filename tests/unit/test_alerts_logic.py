"""The pure alert decisions: the minimal cover, the two-officer rule, a station's row."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from server.alerts.logic import (
    AlertEventIn,
    AlertState,
    ConfirmPolicy,
    Counts,
    DeliveryRow,
    DeliveryState,
    apply_alert_event,
    minimal_cover,
    needs_confirmation,
    settled_state,
    should_resend,
)

# province P → district D → communes C1, C2; commune C3 directly under P
PARENT = {"P": None, "D": "P", "C1": "D", "C2": "D", "C3": "P"}
T0 = datetime(2026, 9, 1, 5, 0, tzinfo=UTC)


def ancestors(code: str) -> list[str]:
    chain = []
    current: str | None = code
    while current is not None:
        chain.append(current)
        current = PARENT[current]
    return chain


# ------------------------------------------------------------------ cover


def test_areas_inside_another_named_area_are_dropped() -> None:
    cover = minimal_cover(["C1", "D", "C3"], {}, ancestors)
    assert cover.areas == ("C3", "D") and cover.stations == ()
    assert minimal_cover(["C1", "P", "C2"], {}, ancestors).areas == ("P",)


def test_stations_already_reached_by_an_area_get_no_message_of_their_own() -> None:
    stations = {"s-1": "C1", "s-2": "C3", "s-3": "C2"}
    cover = minimal_cover(["D"], stations, ancestors)
    assert cover.areas == ("D",) and cover.stations == ("s-2",)
    assert cover.addressees == ["area:D", "s-2"]


def test_only_stations_means_station_topics() -> None:
    cover = minimal_cover([], {"s-2": "C3", "s-1": "C1"}, ancestors)
    assert cover.areas == () and cover.addressees == ["s-1", "s-2"]


# ----------------------------------------------------------- confirmation


@pytest.mark.parametrize(
    ("drill", "communes", "policies", "expected"),
    [
        (False, ["C1"], {}, False),
        (False, ["C1", "C1"], {}, False),
        (False, ["C1", "C2"], {}, True),
        (True, ["C1", "C2", "C3"], {}, False),  # a drill never waits
        (False, ["C1", "C2"], {"P": ConfirmPolicy.NEVER}, False),
        (False, ["C1"], {"D": ConfirmPolicy.ALWAYS}, True),
        (False, ["C3"], {"D": ConfirmPolicy.ALWAYS}, False),
        # the nearest configured ancestor decides, the strictest commune wins
        (False, ["C1", "C3"], {"P": ConfirmPolicy.NEVER, "D": ConfirmPolicy.BEYOND_COMMUNE}, True),
        (False, ["C1", "C2"], {"P": ConfirmPolicy.ALWAYS, "D": ConfirmPolicy.NEVER}, False),
    ],
)
def test_the_two_officer_rule(
    drill: bool, communes: list[str], policies: dict[str, ConfirmPolicy], expected: bool
) -> None:
    got = needs_confirmation(drill, communes, policies, ConfirmPolicy.BEYOND_COMMUNE, ancestors)
    assert got is expected


# -------------------------------------------------------------- delivery


def event(kind: str, seconds: float = 0, **fields: object) -> AlertEventIn:
    return AlertEventIn(kind, T0 + timedelta(seconds=seconds), **fields)  # type: ignore[arg-type]


def test_a_station_advances_received_playing_finished_with_its_own_times() -> None:
    row = DeliveryRow()
    assert apply_alert_event(row, event("alert_received", 0.1))
    assert apply_alert_event(row, event("alert_playing", 0.3, started_at=T0))
    assert apply_alert_event(row, event("alert_finished", 40))
    assert row.state is DeliveryState.FINISHED
    assert (row.received_at, row.playing_at, row.finished_at) == (
        T0 + timedelta(seconds=0.1),
        T0,
        T0 + timedelta(seconds=40),
    )


def test_a_late_event_never_moves_a_station_back() -> None:
    row = DeliveryRow()
    apply_alert_event(row, event("alert_playing", 1))
    assert apply_alert_event(row, event("alert_received", 0.5))  # fills the time only
    assert row.state is DeliveryState.PLAYING and row.received_at == T0 + timedelta(seconds=0.5)
    apply_alert_event(row, event("alert_finished", 30))
    # a copy refused later as expired must not turn "finished" into "refused"
    assert not apply_alert_event(row, event("rejected", 60, reason="expired"))
    assert row.state is DeliveryState.FINISHED and row.reason is None
    assert not apply_alert_event(row, event("alert_received", 61))


def test_failures_and_refusals_keep_their_reason() -> None:
    failed = DeliveryRow()
    apply_alert_event(failed, event("alert_failed", 2, reason="player_error", detail="no card"))
    assert (failed.state, failed.reason, failed.detail) == (
        DeliveryState.FAILED,
        "player_error",
        "no card",
    )
    refused = DeliveryRow()
    apply_alert_event(refused, event("rejected", 1, reason="bad_signature"))
    assert refused.state is DeliveryState.REFUSED and refused.reason == "bad_signature"


def test_cancel_while_playing_ends_the_station_as_cancelled() -> None:
    row = DeliveryRow()
    apply_alert_event(row, event("alert_playing", 1))
    apply_alert_event(row, event("alert_cancelled", 5))
    assert row.state is DeliveryState.CANCELLED and row.finished_at == T0 + timedelta(seconds=5)


def test_other_event_kinds_change_nothing() -> None:
    row = DeliveryRow()
    assert not apply_alert_event(row, event("playing", 1))
    assert row == DeliveryRow()


def test_resend_only_to_a_silent_station_of_a_live_alert() -> None:
    later = T0 + timedelta(hours=1)
    assert should_resend(DeliveryState.PENDING, AlertState.ACTIVE, later, T0)
    assert not should_resend(DeliveryState.RECEIVED, AlertState.ACTIVE, later, T0)
    assert not should_resend(DeliveryState.PENDING, AlertState.CANCELLED, later, T0)
    assert not should_resend(DeliveryState.PENDING, AlertState.ACTIVE, T0, T0)


def test_an_alert_is_over_when_every_station_is_final_or_it_expires() -> None:
    states = [DeliveryState.FINISHED, DeliveryState.REFUSED]
    assert settled_state(states, T0 + timedelta(hours=1), T0) is AlertState.FINISHED
    going = [DeliveryState.FINISHED, DeliveryState.PLAYING]
    assert settled_state(going, T0 + timedelta(hours=1), T0) is None
    assert settled_state(going, T0, T0) is AlertState.EXPIRED


def test_counts_list_every_state() -> None:
    counts = Counts.of([DeliveryState.PENDING, DeliveryState.PENDING, DeliveryState.PLAYING])
    assert counts.by_state == {
        "pending": 2,
        "received": 0,
        "playing": 1,
        "finished": 0,
        "failed": 0,
        "refused": 0,
        "cancelled": 0,
    }


def test_the_logic_imports_without_fastapi_paho_or_the_database() -> None:
    code = (
        "import sys, server.alerts.logic, server.alerts.cap\n"
        "heavy = ('fastapi', 'paho', 'starlette', 'sqlmodel', 'sqlalchemy')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
