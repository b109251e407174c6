"""What changed in a programme since it was last approved: pure, spec against spec.

Approving stores a copy of the spec and the stations it reached
(``Programme.approved_spec``/``approved_stations``); the approval page compares that
copy with the programme as it is now, so an approver re-approving a changed bulletin
sees the new item, the moved time or the extra loudspeakers rather than approving
blind. Items are compared whole: an item whose text or file changed shows as one
removed and one added.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from server.programmes.spec import ItemSpec, ProgrammeSpec


@dataclass(frozen=True)
class Changes:
    """The differences; all empty/None means the same programme as approved."""

    title: tuple[str, str] | None = None
    """(approved, now)"""
    priority: tuple[str, str] | None = None
    schedule: tuple[ProgrammeSpec, ProgrammeSpec] | None = None
    """(approved, now) when the start, the rule or the exceptions differ"""
    items_added: list[tuple[int, ItemSpec]] = field(default_factory=list)
    """(number now, item)"""
    items_removed: list[tuple[int, ItemSpec]] = field(default_factory=list)
    """(number when approved, item)"""
    stations_added: list[str] = field(default_factory=list)
    stations_removed: list[str] = field(default_factory=list)
    targets_changed: bool = False
    """the written targets (areas, groups, stations) differ, even if they reach the same"""

    @property
    def none(self) -> bool:
        return not (
            self.title
            or self.priority
            or self.schedule
            or self.items_added
            or self.items_removed
            or self.stations_added
            or self.stations_removed
            or self.targets_changed
        )


def _dump(item: ItemSpec) -> dict[str, Any]:
    return item.model_dump(mode="json")


def _unmatched(mine: list[ItemSpec], others: list[ItemSpec]) -> list[tuple[int, ItemSpec]]:
    """Items of ``mine`` (numbered from 1) with no equal partner left in ``others``."""
    pool = [_dump(o) for o in others]
    left: list[tuple[int, ItemSpec]] = []
    for number, item in enumerate(mine, start=1):
        dumped = _dump(item)
        if dumped in pool:
            pool.remove(dumped)
        else:
            left.append((number, item))
    return left


def compare(
    approved: ProgrammeSpec,
    approved_stations: Iterable[str],
    now: ProgrammeSpec,
    stations: Iterable[str],
) -> Changes:
    """The programme ``now`` against what was approved."""
    before, after = set(approved_stations), set(stations)
    timing = (approved.start, approved.rrule, approved.exceptions)
    return Changes(
        title=(approved.title, now.title) if approved.title != now.title else None,
        priority=(approved.priority.value, now.priority.value)
        if approved.priority != now.priority
        else None,
        schedule=(approved, now) if timing != (now.start, now.rrule, now.exceptions) else None,
        items_added=_unmatched(now.items, approved.items),
        items_removed=_unmatched(approved.items, now.items),
        stations_added=sorted(after - before),
        stations_removed=sorted(before - after),
        targets_changed=approved.targets.model_dump() != now.targets.model_dump(),
    )
