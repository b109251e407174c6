"""A rollout's next steps, decided from its rows alone (no database, no broker, no clock).

Theory of operation: a rollout starts with its *canaries* (``canary_pct`` of the area's
stations, at least one). Only once every canary has reported the new release healthy,
and the last of them has stayed so for ``canary_minutes``, is it *promoted*: the
command goes to every other station. A canary that rolls back or fails stops the
rollout before the rest ever hear of it. A station that was sent the command and has
said nothing for ``RESEND_AFTER`` (offline: the command expired unseen) is sent it
again; the station recognises a re-sent release and carries on where it was.

The service (``service.py``) applies these steps; this module decides them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from server.updates.models import FINAL, MemberState, RolloutState

RESEND_AFTER = timedelta(minutes=5)
"""As long as a command lives (``server/commands``): after it, an unseen one expired."""


@dataclass(frozen=True)
class MemberView:
    station_id: str
    canary: bool
    state: MemberState
    sent_at: datetime | None
    updated_at: datetime | None
    healthy_at: datetime | None


@dataclass
class Steps:
    send: list[str] = field(default_factory=list)
    state: RolloutState | None = None
    """the rollout's new state, if it changes"""
    detail: str | None = None


def pick_canaries(station_ids: Sequence[str], pct: int, rollout_id: int) -> set[str]:
    """``pct`` % of the stations (at least one), spread by a hash, not by name order."""
    if not station_ids:
        return set()
    count = max(1, math.ceil(len(station_ids) * pct / 100))
    ranked = sorted(
        station_ids, key=lambda s: hashlib.sha256(f"{rollout_id}:{s}".encode()).hexdigest()
    )
    return set(ranked[:count])


def next_steps(
    state: RolloutState,
    canary_minutes: float,
    members: Sequence[MemberView],
    now: datetime,
) -> Steps:
    """What the rollout does now: whom to send the command to, and whether it moves on."""
    steps = Steps()
    if state not in (RolloutState.CANARY, RolloutState.ROLLING):
        return steps
    canaries = [m for m in members if m.canary]
    if state is RolloutState.CANARY:
        bad = [m for m in canaries if m.state in (MemberState.ROLLED_BACK, MemberState.FAILED)]
        if bad:
            steps.state = RolloutState.FAILED
            steps.detail = f"canary {bad[0].station_id} {bad[0].state.value}: rollout stopped"
            return steps
        healthy = [m.healthy_at for m in canaries if m.state is MemberState.UPDATED]
        if len(healthy) == len(canaries) and all(h is not None for h in healthy):
            proven = max(h for h in healthy if h is not None)
            if now - proven >= timedelta(minutes=canary_minutes):
                steps.state = RolloutState.ROLLING
                state = RolloutState.ROLLING
    targets = members if state is RolloutState.ROLLING else canaries
    for member in targets:
        if member.state is MemberState.WAITING:
            steps.send.append(member.station_id)
        elif member.state is MemberState.SENT and member.sent_at is not None:
            last = max(member.sent_at, member.updated_at or member.sent_at)
            if now - last >= RESEND_AFTER:
                steps.send.append(member.station_id)
    if state is RolloutState.ROLLING and all(m.state in FINAL for m in members):
        steps.state = RolloutState.DONE
        steps.send = []
    return steps


EVENT_STATE = {
    "update_downloading": MemberState.DOWNLOADING,
    "update_installed": MemberState.INSTALLED,
    "update_switching": MemberState.SWITCHING,
    "update_committed": MemberState.UPDATED,
    "update_rolled_back": MemberState.ROLLED_BACK,
    "update_failed": MemberState.FAILED,
}
"""A station's update event → its row's state (events of a final state are final)."""
