"""``loaxa broker sync``: the broker's accounts follow the server's database by themselves.

``loaxa broker config`` writes the whole broker directory once (config, TLS, accounts).
After that, each registration (an approved enrolment too) only adds a station account:
``sync`` rewrites ``passwd`` and ``acl`` from the database when they differ and sends
Mosquitto SIGHUP (it re-reads both without dropping anyone). With ``--watch`` it runs as
a service beside Mosquitto: it syncs at start, whenever the server's stamp file
(:mod:`server.broker_accounts`) changes, checked every second, and every five minutes
in any case, so a stamp the server could not write is caught up too.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from loaxa.broker_config import load_station_accounts, sync_accounts
from loaxa_protocol.errors import ConfigError

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0
FULL_SYNC_EVERY_S = 300.0


def reload_broker(pid_file: Path) -> int:
    """SIGHUP the Mosquitto whose pid ``pid_file`` holds; returns the pid."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError(f"cannot read mosquitto's pid from {pid_file}: {exc}") from exc
    os.kill(pid, signal.SIGHUP)
    return pid


def sync_once(out_dir: Path, database_url: str, pid_file: Path | None) -> bool:
    """Accounts from the database into ``out_dir``; reload the broker if they changed."""
    accounts = load_station_accounts(database_url)
    changed = sync_accounts(out_dir, accounts)
    if changed:
        log.info("broker accounts rewritten: %d station(s)", len(accounts))
        if pid_file is not None:
            log.info("mosquitto (pid %d) told to reload", reload_broker(pid_file))
    return changed


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def watch(
    out_dir: Path,
    database_url: str,
    pid_file: Path | None,
    stamp: Path,
    stop: threading.Event | None = None,
    interval_s: float = WATCH_INTERVAL_S,
    full_every_s: float = FULL_SYNC_EVERY_S,
) -> None:
    """Sync at start, on every change of ``stamp``, and every ``full_every_s``; until ``stop``.

    A failure (database or broker briefly away) is logged and retried at the next check.
    """
    stop = stop or threading.Event()
    synced_stamp: int | None = -1
    synced_at = float("-inf")
    while not stop.is_set():
        current = _mtime_ns(stamp)
        if current != synced_stamp or time.monotonic() - synced_at >= full_every_s:
            try:
                sync_once(out_dir, database_url, pid_file)
            except Exception:  # a service that must outlive a database restart
                log.exception("broker account sync failed; retrying")
            else:
                synced_stamp, synced_at = current, time.monotonic()
        stop.wait(interval_s)
