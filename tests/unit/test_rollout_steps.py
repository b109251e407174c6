"""A rollout's next steps (``server/updates/rollout.py``): canaries first, then the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.updates.models import MemberState, RolloutState
from server.updates.rollout import RESEND_AFTER, MemberView, next_steps, pick_canaries

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
S = MemberState


def member(
    station: str,
    state: MemberState = S.WAITING,
    canary: bool = False,
    sent: datetime | None = None,
    healthy: datetime | None = None,
) -> MemberView:
    return MemberView(station, canary, state, sent, sent, healthy)


def test_only_the_canaries_are_sent_the_release_first() -> None:
    members = [member("a", canary=True), member("b"), member("c")]
    steps = next_steps(RolloutState.CANARY, 30, members, T0)
    assert steps.send == ["a"] and steps.state is None


def test_canaries_healthy_for_the_set_minutes_promote_the_rollout() -> None:
    healthy = T0 - timedelta(minutes=29)
    members = [member("a", S.UPDATED, True, T0, healthy), member("b"), member("c")]
    assert next_steps(RolloutState.CANARY, 30, members, T0).send == []
    later = next_steps(RolloutState.CANARY, 30, members, T0 + timedelta(minutes=1))
    assert later.state is RolloutState.ROLLING and later.send == ["b", "c"]


def test_a_canary_that_rolled_back_stops_the_rollout_before_the_rest_hear_of_it() -> None:
    members = [
        member("a", S.UPDATED, True, T0, T0),
        member("b", S.ROLLED_BACK, True, T0),
        member("c"),
    ]
    steps = next_steps(RolloutState.CANARY, 0, members, T0 + timedelta(hours=1))
    assert steps.state is RolloutState.FAILED and steps.send == []
    assert steps.detail is not None and "canary b rolled_back" in steps.detail


def test_a_station_silent_since_the_command_expired_is_sent_it_again() -> None:
    members = [member("a", S.SENT, True, T0)]
    assert next_steps(RolloutState.CANARY, 0, members, T0 + RESEND_AFTER / 2).send == []
    assert next_steps(RolloutState.CANARY, 0, members, T0 + RESEND_AFTER).send == ["a"]


def test_the_rollout_is_done_when_every_station_has_a_final_state() -> None:
    members = [member("a", S.UPDATED, True), member("b", S.FAILED), member("c", S.SWITCHING)]
    assert next_steps(RolloutState.ROLLING, 0, members, T0).state is None
    members[2] = member("c", S.UPDATED)
    assert next_steps(RolloutState.ROLLING, 0, members, T0).state is RolloutState.DONE
    assert next_steps(RolloutState.STOPPED, 0, [member("d")], T0).send == []


def test_canaries_are_a_share_of_at_least_one_spread_by_a_hash() -> None:
    ids = [f"st-{i:03d}" for i in range(40)]
    assert len(pick_canaries(ids, 10, 1)) == 4
    assert len(pick_canaries(ids[:3], 10, 1)) == 1
    assert pick_canaries(ids, 10, 1) != pick_canaries(ids, 10, 2)
    assert pick_canaries(ids, 100, 1) == set(ids) and pick_canaries([], 50, 1) == set()
