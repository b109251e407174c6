"""The area tree (province → optional district → commune/ward), seeded from official data.

Codes are the General Statistics Office codes as the ``vietnam_provinces`` package
ships them for the 2025 reform (provinces two digits, communes and wards five), so they
match what the province and CAP geocodes use. The 2025 list has no districts; the
``district`` level stays in the model for places and data sets that still use it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

import sqlalchemy as sa
from sqlmodel import Session, select
from vietnam_provinces import Province, ProvinceCode, Ward

from server.models import Area, AreaLevel

log = logging.getLogger(__name__)

CAO_BANG = "04"


def province_code(code: int) -> str:
    return f"{code:02d}"


def ward_code(code: int) -> str:
    return f"{code:05d}"


def official_areas(province_codes: Iterable[str]) -> list[Area]:
    """The province and its communes/wards, parents first; unknown codes raise ValueError."""
    areas: list[Area] = []
    for text in province_codes:
        try:
            province = Province.from_code(ProvinceCode(int(text)))
        except ValueError as exc:
            raise ValueError(f"unknown province code {text!r}") from exc
        parent = province_code(int(province.code))
        areas.append(Area(code=parent, name=province.name, level=AreaLevel.PROVINCE))
        areas.extend(
            Area(
                code=ward_code(int(ward.code)),
                name=ward.name,
                level=AreaLevel.COMMUNE,
                parent_code=parent,
            )
            for ward in Ward.iter_by_province(province.code)
        )
    return areas


def seed_areas(session: Session, province_codes: Iterable[str] = (CAO_BANG,)) -> int:
    """Insert the official areas that are missing; returns how many were added.

    Idempotent, and it never overwrites a row, so a locally corrected name survives a
    restart.
    """
    wanted = official_areas(province_codes)
    existing = set(session.exec(select(Area.code)).all())
    added = [area for area in wanted if area.code not in existing]
    for area in added:
        session.add(area)
    session.commit()
    if added:
        log.info("seeded %s areas", len(added))
    return len(added)


def subtree_codes(session: Session, roots: Iterable[str]) -> set[str]:
    """The given area codes and every area below them, whatever the tree's depth."""
    children: dict[str | None, list[str]] = defaultdict(list)
    for code, parent in session.exec(select(Area.code, Area.parent_code)).all():
        children[parent].append(code)
    found: set[str] = set()
    pending = list(roots)
    while pending:
        code = pending.pop()
        if code not in found:
            found.add(code)
            pending.extend(children.get(code, ()))
    return found


MAX_DEPTH = 16
"""Far deeper than any real tree (province, district, commune): a cycle stops here."""
_AREA = Area.__table__  # type: ignore[attr-defined]
_UP = (
    sa.select(_AREA.c.code, _AREA.c.parent_code, sa.literal(0).label("depth"))
    .where(_AREA.c.code == sa.bindparam("code"))
    .cte("up", recursive=True)
)
_UP = _UP.union_all(
    sa.select(_AREA.c.code, _AREA.c.parent_code, (_UP.c.depth + 1).label("depth"))
    .join(_UP, _AREA.c.code == _UP.c.parent_code)
    .where(_UP.c.depth < MAX_DEPTH)
)
ANCESTRY = sa.select(_UP.c.code).order_by(_UP.c.depth)
"""One statement for the whole chain: every authorisation walks it, broadcasts included."""


def ancestry(session: Session, code: str) -> list[str]:
    """The area and its ancestors, nearest first (a station listens for alerts to all).

    An unknown code is its own chain, as a station's area must be listed even if gone.
    """
    found = session.execute(ANCESTRY, {"code": code}).scalars().all()
    chain = [code]
    for area in found[1:]:  # found[0] is the area itself, when it exists
        if area in chain:
            break  # a cycle: each area once
        chain.append(area)
    return chain
