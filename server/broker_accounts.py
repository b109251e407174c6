"""Telling the broker that a station account was added: a stamp file the sync watches.

The server does not rewrite Mosquitto's files nor signal it: Mosquitto runs as its own
user (often root's service), and the server must not hold the right to reload it. After
a registration (``POST /api/v1/stations`` or an approved enrolment) the server rewrites
``<data_dir>/broker-accounts.changed``; ``loaxa broker sync --watch`` (a systemd
service beside Mosquitto, docs/security.md) sees it change within a second, rewrites
``passwd`` and ``acl`` from the database and sends Mosquitto SIGHUP. The new station
connects without anyone touching the broker.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from loaxa_protocol.durable import write_atomically

log = logging.getLogger(__name__)

STAMP_FILE = "broker-accounts.changed"


def stamp_path(data_dir: Path) -> Path:
    return data_dir / STAMP_FILE


def accounts_changed(data_dir: Path) -> None:
    """Mark the broker's accounts stale; a failure is logged (the sync's periodic pass
    catches up), never raised: the registration itself has succeeded."""
    try:
        write_atomically(stamp_path(data_dir), f"{time.time_ns()}\n".encode())
    except OSError as exc:
        log.warning("could not mark the broker accounts stale (%s): %s", STAMP_FILE, exc)
