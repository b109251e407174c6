"""Alert decisions as pure functions: who hears it, who must confirm, how a station advances.

Theory of operation
-------------------
Targets. An officer names areas and/or single stations. The broker fans a message out
to every station subscribed to an area's alert topic, and every station subscribes to
the topics of all areas it lies in (commune, district, province). So an alert goes to a
*minimal cover*: the named areas minus those lying inside another named area, plus the
named stations that no chosen area already reaches. One publish per topic, never one per
station.

Confirmation (the Hawaii 2018 lesson). A real alert reaching stations in more than one
commune needs a second officer. Each area may set a policy (``always``,
``beyond_commune``, ``never``); a commune takes the policy of its nearest configured
ancestor, else the default, and the strictest policy among the targeted communes wins.
A drill never needs confirmation: it is shown and reported as a drill everywhere.

Delivery. A station's row only moves forward: pending → received → playing → one final
state (finished, failed, refused, cancelled). The first final state stays: a late copy
refused as expired must not turn "finished" into "refused". Timestamps are filled in
whenever an event carries one, even when the state cannot move (MQTT does not order
messages across reconnects).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime


class AlertState(enum.StrEnum):
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    ACTIVE = "active"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


OPEN_STATES = frozenset({AlertState.AWAITING_CONFIRMATION, AlertState.ACTIVE})


class DeliveryState(enum.StrEnum):
    """Where one alert stands at one station."""

    PENDING = "pending"
    RECEIVED = "received"
    PLAYING = "playing"
    FINISHED = "finished"
    FAILED = "failed"
    REFUSED = "refused"
    CANCELLED = "cancelled"


# -------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Cover:
    """Where to publish: area codes (area topics) and station ids (station topics)."""

    areas: tuple[str, ...]
    stations: tuple[str, ...]

    @property
    def addressees(self) -> list[str]:
        """The ``to`` of each message: ``area:<code>`` or the station id."""
        return [f"area:{code}" for code in self.areas] + list(self.stations)


def minimal_cover(
    area_codes: Iterable[str],
    station_areas: Mapping[str, str],
    ancestors_of: Callable[[str], Iterable[str]],
) -> Cover:
    """The fewest topics that reach every named area and every named station.

    ``station_areas`` maps each *named* station to its area; ``ancestors_of(code)``
    yields the area itself and every area above it.
    """
    named = set(area_codes)
    areas = sorted(
        code for code in named if not any(a in named for a in ancestors_of(code) if a != code)
    )
    chosen = set(areas)
    stations = sorted(
        station_id
        for station_id, area in station_areas.items()
        if not any(a in chosen for a in ancestors_of(area))
    )
    return Cover(tuple(areas), tuple(stations))


# --------------------------------------------------------------- confirmation


class ConfirmPolicy(enum.StrEnum):
    ALWAYS = "always"
    BEYOND_COMMUNE = "beyond_commune"
    NEVER = "never"


_STRICTNESS = {ConfirmPolicy.NEVER: 0, ConfirmPolicy.BEYOND_COMMUNE: 1, ConfirmPolicy.ALWAYS: 2}


def policy_for(
    area_code: str,
    policies: Mapping[str, ConfirmPolicy],
    default: ConfirmPolicy,
    ancestors_of: Callable[[str], Iterable[str]],
) -> ConfirmPolicy:
    """The policy of the nearest configured area at or above ``area_code``."""
    for code in ancestors_of(area_code):
        if code in policies:
            return policies[code]
    return default


def needs_confirmation(
    drill: bool,
    station_areas: Iterable[str],
    policies: Mapping[str, ConfirmPolicy],
    default: ConfirmPolicy,
    ancestors_of: Callable[[str], Iterable[str]],
) -> bool:
    """Whether a second, different officer must confirm before anything is sent."""
    if drill:
        return False
    communes = set(station_areas)
    if not communes:
        return False
    strictest = max(
        (policy_for(c, policies, default, ancestors_of) for c in communes),
        key=_STRICTNESS.__getitem__,
    )
    if strictest is ConfirmPolicy.ALWAYS:
        return True
    return strictest is ConfirmPolicy.BEYOND_COMMUNE and len(communes) > 1


# ------------------------------------------------------------------- delivery

ALERT_EVENT_STATE: dict[str, DeliveryState] = {
    "alert_received": DeliveryState.RECEIVED,
    "alert_playing": DeliveryState.PLAYING,
    "alert_finished": DeliveryState.FINISHED,
    "alert_failed": DeliveryState.FAILED,
    "alert_cancelled": DeliveryState.CANCELLED,
    "rejected": DeliveryState.REFUSED,
}

FINAL = frozenset(
    {
        DeliveryState.FINISHED,
        DeliveryState.FAILED,
        DeliveryState.REFUSED,
        DeliveryState.CANCELLED,
    }
)
_RANK = {DeliveryState.PENDING: 0, DeliveryState.RECEIVED: 1, DeliveryState.PLAYING: 2}
ACKED = frozenset(DeliveryState) - {DeliveryState.PENDING}


def rank(state: DeliveryState) -> int:
    return _RANK.get(state, 3)


@dataclass
class DeliveryRow:
    """The fields of one station's delivery that events change (a plain mirror of the row)."""

    state: DeliveryState = DeliveryState.PENDING
    received_at: datetime | None = None
    playing_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class AlertEventIn:
    """What the tracker needs from a station's event."""

    kind: str
    at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    detail: str | None = None


def apply_alert_event(row: DeliveryRow, event: AlertEventIn) -> bool:
    """Advance ``row`` by one event; returns whether anything in it changed."""
    new = ALERT_EVENT_STATE.get(event.kind)
    if new is None:
        return False
    before = (row.state, row.received_at, row.playing_at, row.finished_at, row.reason)
    if new is DeliveryState.RECEIVED and row.received_at is None:
        row.received_at = event.at
    if new is DeliveryState.PLAYING and row.playing_at is None:
        row.playing_at = event.started_at or event.at
    if new in {DeliveryState.FINISHED, DeliveryState.FAILED, DeliveryState.CANCELLED}:
        if event.started_at is not None and row.playing_at is None:
            row.playing_at = event.started_at
        if row.finished_at is None and row.state not in FINAL:
            row.finished_at = event.finished_at or event.at
    if row.state not in FINAL and rank(new) > rank(row.state):
        row.state = new
        if new in {DeliveryState.FAILED, DeliveryState.REFUSED}:
            row.reason = event.reason or event.kind
            row.detail = event.detail
    after = (row.state, row.received_at, row.playing_at, row.finished_at, row.reason)
    return before != after


def should_resend(
    state: DeliveryState, alert_state: AlertState, expires_at: datetime, now: datetime
) -> bool:
    """A station that comes back gets a fresh copy only if it never acked and it still counts."""
    return alert_state is AlertState.ACTIVE and now < expires_at and state is DeliveryState.PENDING


def settled_state(
    states: Iterable[DeliveryState], expires_at: datetime, now: datetime
) -> AlertState | None:
    """The state an active alert moves to now, or None while it is still going.

    Finished once every station is in a final state; at expiry, expired if some
    station never got there (the report then says which).
    """
    all_final = all(s in FINAL for s in states)
    if all_final:
        return AlertState.FINISHED
    if now >= expires_at:
        return AlertState.EXPIRED
    return None


@dataclass
class Counts:
    """Stations per delivery state, every state present (zeros included)."""

    by_state: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, states: Iterable[DeliveryState]) -> Counts:
        tally = {s.value: 0 for s in DeliveryState}
        for state in states:
            tally[state.value] += 1
        return cls(tally)
