"""The web pages live in :mod:`server.web`; this name stays for the app factory."""

from __future__ import annotations

from server.web import STATIC_FILES, router
from server.web.common import local_time, safe_next
from server.web.fleet import FLEET_LABELS, FLEET_STATES, fleet_state, place_labels, project

__all__ = [
    "FLEET_LABELS",
    "FLEET_STATES",
    "STATIC_FILES",
    "fleet_state",
    "local_time",
    "place_labels",
    "project",
    "router",
    "safe_next",
]
