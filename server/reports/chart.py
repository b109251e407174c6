"""The report page's chart: one stacked bar per station, laid out here, drawn as SVG by
the template (no script: it must print, and show on a phone without JavaScript). Each
bar is its own small SVG under the station's name in HTML, so long names wrap and stay
readable on a phone instead of shrinking with the drawing.

Pure geometry from the report's rows; the colours are CSS classes named after the
outcome, so the page's stylesheet (and its print version) decides how they look.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.reports.asrun import StationAsRun

WIDTH = 600
BAR_H = 14
SHOWN = ("played", "interrupted", "failed", "missed", "pending")
"""Outcomes in the order they stack; together they make up ``planned + unplanned``."""


@dataclass(frozen=True)
class Segment:
    outcome: str
    count: int
    x: float
    width: float


@dataclass(frozen=True)
class Bar:
    label: str
    total: int
    segments: list[Segment]


def outcome_bars(rows: Sequence[StationAsRun]) -> list[Bar]:
    """Bars scaled to the busiest station, so stations compare at a glance."""
    busiest = max((sum(getattr(r, o) for o in SHOWN) for r in rows), default=0)
    scale = WIDTH / busiest if busiest else 0.0
    bars: list[Bar] = []
    for row in rows:
        segments: list[Segment] = []
        x = 0.0
        for outcome in SHOWN:
            count = getattr(row, outcome)
            if count:
                segments.append(Segment(outcome, count, round(x, 1), round(count * scale, 1)))
                x += count * scale
        total = sum(s.count for s in segments)
        bars.append(Bar(row.name or row.station_id, total, segments))
    return bars
