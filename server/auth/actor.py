"""The authenticated party behind a request, as every endpoint and the audit log see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Grant:
    """One role held in one area; it applies to that area's whole subtree."""

    role: str
    area_code: str


@dataclass(frozen=True)
class Actor:
    kind: Literal["user", "token", "system"]
    name: str
    """username, token name, or "system" for the server's own jobs"""
    user_id: int | None = None
    grants: tuple[Grant, ...] = field(default_factory=tuple)
    source_ip: str | None = None

    @property
    def role_summary(self) -> str:
        """Short human text for the audit log, e.g. 'commune_operator@01273'."""
        return ", ".join(f"{g.role}@{g.area_code}" for g in self.grants) or "-"


SYSTEM = Actor(kind="system", name="system")
