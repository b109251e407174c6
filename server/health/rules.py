"""Alarm rules: what a station's facts say should be alarming *now*.

Theory of operation: every rule is a function of one station's facts, the thresholds and
the clock, returning a finding or None. Rules know nothing of alarms already open;
``server.health.alarms`` compares the findings with the open alarms, opening what is new
and resolving what no longer fires, which is why a condition that persists never opens a
second alarm and one that clears resolves itself. A caller that evaluates only some
rules (the heartbeat path evaluates the hardware rules) passes ``kinds``, so an alarm of
a kind it did not evaluate is left alone.

Pure: no I/O, the clock is an argument.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any


class AlarmKind(enum.StrEnum):
    OFFLINE = "offline"
    AMP_FAULT = "amp_fault"
    DISK_LOW = "disk_low"
    CPU_TEMP = "cpu_temp"
    CLOCK_OFFSET = "clock_offset"
    ITEM_NOT_PLAYED = "item_not_played"


class AlarmSeverity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(AlarmSeverity).index(self)


class AlarmState(enum.StrEnum):
    """open → acknowledged → resolved; open → resolved when the condition clears first."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


HARDWARE_KINDS = frozenset(
    {AlarmKind.AMP_FAULT, AlarmKind.DISK_LOW, AlarmKind.CPU_TEMP, AlarmKind.CLOCK_OFFSET}
)
"""The kinds a heartbeat (or a clock measurement) can raise or clear."""
ALL_KINDS = frozenset(AlarmKind)

PLAYED_STATES = frozenset({"played", "interrupted"})
"""Target states that mean the item went out (interrupted: by something more urgent)."""
MAX_ITEMS_NAMED = 5


@dataclass(frozen=True)
class Thresholds:
    offline: timedelta
    disk_free_pct: float
    cpu_temp_c: float
    clock_offset_ms: float
    amp_min_current_ma: float


@dataclass(frozen=True)
class FaultReport:
    """The last ``amp_fault`` / ``relay_fault`` event, on the station's clock."""

    kind: str
    at: datetime
    detail: str


@dataclass(frozen=True)
class ItemOutcome:
    """One planned item at the station: its state and when it must have finished."""

    item_id: str
    state: str
    deadline: datetime


@dataclass(frozen=True)
class StationFacts:
    station_id: str
    status: str
    unreachable_since: datetime | None = None
    health: Mapping[str, Any] = field(default_factory=dict)
    health_at: datetime | None = None
    fault: FaultReport | None = None
    items: tuple[ItemOutcome, ...] = ()


@dataclass(frozen=True)
class Finding:
    kind: AlarmKind
    severity: AlarmSeverity
    detail: str


Rule = Callable[[StationFacts, datetime, Thresholds], Finding | None]


def offline(facts: StationFacts, now: datetime, limits: Thresholds) -> Finding | None:
    since = facts.unreachable_since
    if facts.status != "offline" or since is None or now - since <= limits.offline:
        return None
    minutes = int((now - since).total_seconds() // 60)
    return Finding(
        AlarmKind.OFFLINE,
        AlarmSeverity.CRITICAL,
        f"unreachable since {since.isoformat(timespec='seconds')} ({minutes} min)",
    )


def amp_fault(facts: StationFacts, now: datetime, limits: Thresholds) -> Finding | None:
    health = facts.health
    reasons = []
    if health.get("amp_fault"):
        reasons.append(f"amplifier reports {health['amp_fault']}")
    if health.get("relay_ok") is False:
        reasons.append("relay board does not respond")
    current = health.get("amp_current_ma")
    playing = health.get("amp_on") and health.get("playing_item")
    if playing and current is not None and current < limits.amp_min_current_ma:
        reasons.append(f"amplifier draws {current:g} mA while playing")
    # A fault event stands until a later heartbeat says otherwise.
    fault = facts.fault
    if fault is not None and (facts.health_at is None or fault.at > facts.health_at):
        reasons.append(f"{fault.kind}: {fault.detail}" if fault.detail else fault.kind)
    if not reasons:
        return None
    return Finding(AlarmKind.AMP_FAULT, AlarmSeverity.CRITICAL, "; ".join(reasons))


def disk_low(facts: StationFacts, now: datetime, limits: Thresholds) -> Finding | None:
    free = facts.health.get("disk_free_pct")
    if free is None or free >= limits.disk_free_pct:
        return None
    return Finding(
        AlarmKind.DISK_LOW,
        AlarmSeverity.WARNING,
        f"{free:.1f} % disk free (alarm below {limits.disk_free_pct:g} %)",
    )


def cpu_temp(facts: StationFacts, now: datetime, limits: Thresholds) -> Finding | None:
    temp = facts.health.get("cpu_temp_c")
    if temp is None or temp <= limits.cpu_temp_c:
        return None
    return Finding(
        AlarmKind.CPU_TEMP,
        AlarmSeverity.WARNING,
        f"CPU at {temp:.1f} °C (alarm above {limits.cpu_temp_c:g} °C)",
    )


def clock_offset(facts: StationFacts, now: datetime, limits: Thresholds) -> Finding | None:
    offset = facts.health.get("clock_offset_ms")
    if offset is None or abs(offset) <= limits.clock_offset_ms:
        return None
    return Finding(
        AlarmKind.CLOCK_OFFSET,
        AlarmSeverity.WARNING,
        f"clock off by {offset:+.0f} ms (alarm beyond ±{limits.clock_offset_ms:g} ms)",
    )


def item_not_played(facts: StationFacts, now: datetime, limits: Thresholds) -> Finding | None:
    missed = [
        item
        for item in facts.items
        if item.state == "failed" or (item.state not in PLAYED_STATES and item.deadline < now)
    ]
    if not missed:
        return None
    named = ", ".join(f"{m.item_id} ({m.state})" for m in missed[:MAX_ITEMS_NAMED])
    more = f" and {len(missed) - MAX_ITEMS_NAMED} more" if len(missed) > MAX_ITEMS_NAMED else ""
    return Finding(AlarmKind.ITEM_NOT_PLAYED, AlarmSeverity.WARNING, f"not played: {named}{more}")


RULES: Mapping[AlarmKind, Rule] = {
    AlarmKind.OFFLINE: offline,
    AlarmKind.AMP_FAULT: amp_fault,
    AlarmKind.DISK_LOW: disk_low,
    AlarmKind.CPU_TEMP: cpu_temp,
    AlarmKind.CLOCK_OFFSET: clock_offset,
    AlarmKind.ITEM_NOT_PLAYED: item_not_played,
}


def evaluate(
    facts: StationFacts,
    now: datetime,
    limits: Thresholds,
    kinds: Collection[AlarmKind] = ALL_KINDS,
) -> dict[AlarmKind, Finding]:
    """Every alarm among ``kinds`` that should be active for this station now."""
    found = (RULES[kind](facts, now, limits) for kind in kinds)
    return {finding.kind: finding for finding in found if finding is not None}
