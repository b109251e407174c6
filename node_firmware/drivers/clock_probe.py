"""Is the system clock NTP-synchronised? Asked of systemd, else of chrony.

A Pi has no real-time clock: until NTP has answered after boot its clock may be
days off, and every scheduled broadcast with it. The server measures the offset
itself; this probe adds the station's own view, which tells "clock wrong" apart from
"clock right but the network slow".

Only a definite answer counts: a tool that is missing, fails (``timedatectl`` in a
container without systemd), hangs or prints something unexpected passes the
question on to the next source, and with no source left the answer is ``None``.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Runner = Callable[..., "subprocess.CompletedProcess[str]"]
TIMEOUT_S = 2.0
# chronyc's "Leap status": anything but "Not synchronised" means it is tracking a source.
_CHRONY_LEAP_SYNCED = {
    "Normal": True,
    "Insert second": True,
    "Delete second": True,
    "Not synchronised": False,
}


def ntp_synchronised(runner: Runner = subprocess.run) -> bool | None:
    """``True``/``False`` from ``timedatectl``, else from ``chronyc``, else ``None``."""
    value = _ask(runner, ["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if value in ("yes", "no"):
        return value == "yes"
    tracking = _ask(runner, ["chronyc", "tracking"])
    for line in (tracking or "").splitlines():
        key, sep, status = line.partition(":")
        if sep and key.strip() == "Leap status":
            return _CHRONY_LEAP_SYNCED.get(status.strip())
    return None


def _ask(runner: Runner, argv: Sequence[str]) -> str | None:
    """The command's stripped stdout, or ``None`` if it is absent, failed or hung."""
    try:
        done = runner(list(argv), capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("%s unavailable: %s", argv[0], exc)
        return None
    if done.returncode != 0:
        log.debug("%s exited %s: %s", argv[0], done.returncode, (done.stderr or "").strip())
        return None
    return str(done.stdout).strip()
