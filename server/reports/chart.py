"""The report page's chart: one stacked bar per station, laid out here, drawn as SVG by
the template (no script: it must print, and show on a phone without JavaScript).

Pure geometry from the report's rows; the colours are CSS classes named after the
outcome, so the page's stylesheet (and its print version) decides how they look.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.reports.asrun import StationAsRun

WIDTH = 600
LABEL_H = 16  # the station's name, above its bar
BAR_H = 14
GAP = 10
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
    label_y: float
    bar_y: float
    total: int
    segments: list[Segment]


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bar_h: int
    bars: list[Bar]


def outcome_bars(rows: Sequence[StationAsRun]) -> BarChart:
    """Bars scaled to the busiest station, so stations compare at a glance."""
    busiest = max((sum(getattr(r, o) for o in SHOWN) for r in rows), default=0)
    scale = WIDTH / busiest if busiest else 0.0
    bars: list[Bar] = []
    y = 0.0
    for row in rows:
        segments: list[Segment] = []
        x = 0.0
        for outcome in SHOWN:
            count = getattr(row, outcome)
            if count:
                segments.append(Segment(outcome, count, round(x, 1), round(count * scale, 1)))
                x += count * scale
        total = sum(s.count for s in segments)
        bars.append(Bar(row.name or row.station_id, y + LABEL_H - 4, y + LABEL_H, total, segments))
        y += LABEL_H + BAR_H + GAP
    return BarChart(WIDTH, max(round(y), 1), BAR_H, bars)
