"""systemd's service notification protocol (``sd_notify``), in a few lines and no library.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a Unix datagram socket; a leading
``@`` names an abstract one) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` and
``WATCHDOG_PID``. The agent says ``READY=1`` once its loop runs and ``WATCHDOG=1`` only
while it is healthy (:class:`ServiceWatchdog`); systemd kills and restarts it when the
pings stop. Outside systemd every call here does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def notify(state: str, env: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd; False when not run by systemd."""
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
        return False
    return True


def watchdog_period(env: Mapping[str, str] = os.environ) -> float | None:
    """Seconds systemd waits for a ping (``WatchdogSec=``), or None when it does not watch."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        period = int(usec) / 1e6
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        return None
    return period if period > 0 else None


class ServiceWatchdog:
    """Pings systemd's watchdog while ``check()`` finds the agent healthy.

    Every third of the period it calls ``check()``, which returns None when healthy or
    what is wrong; a wrong answer withholds the ping (and is logged once), so a wedged
    agent is restarted by systemd when the period runs out.
    """

    def __init__(self, period_s: float, check: Callable[[], str | None]) -> None:
        self._interval = period_s / 3
        self._check = check
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():  # the agent may stop before it ever started us
            self._thread.join(timeout=self._interval + 1)

    def _run(self) -> None:
        complaint: str | None = None
        while not self._stopping.wait(self._interval):
            problem = self._check()
            if problem is None:
                notify("WATCHDOG=1")
            elif problem != complaint:
                log.error("withholding the watchdog ping: %s", problem)
            complaint = problem
