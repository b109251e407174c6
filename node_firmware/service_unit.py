"""The station's systemd unit: written by ``loaxa-node install-service``, never by hand.

``Type=notify`` with ``WatchdogSec=``: systemd waits for the agent's ``READY=1`` and kills
and restarts it when its ``WATCHDOG=1`` pings stop (``drivers/systemd.py`` says when
they do). Logs go to journald under ``loaxa-node``.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from loaxa_protocol.durable import write_atomically

UNIT_NAME = "loaxa-node.service"
WATCHDOG_S = 30
"""Three missed checks (one every 10 s) before systemd restarts a hung agent."""
SERVICE_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2"}
"""The agent's environment under systemd (``loaxa bench node`` measures it the same way):
unbuffered logs for journald, and two malloc arenas, not eight per core, for its threads."""


def render_unit(python: Path, config: Path, user: str = "root") -> str:
    """The unit text that runs ``python -m node_firmware --config config`` as ``user``."""
    command = shlex.join([str(python), "-m", "node_firmware", "--config", str(config)])
    return f"""\
# Written by `loaxa-node install-service`; docs/station.md explains each line.
[Unit]
Description=Loaxa station agent (commune loudspeaker)
Documentation=https://github.com/loaxa/loaxa/blob/main/docs/station.md
Wants=network-online.target
After=network-online.target sound.target time-sync.target
# Never give up restarting: a station hours from a technician must keep trying.
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
ExecStart={command}
User={user}
WatchdogSec={WATCHDOG_S}
TimeoutStartSec=120
TimeoutStopSec=20
Restart=on-failure
RestartSec=5
# systemd >= 254 lengthens the pause after repeated failures up to a minute; older
# versions (bookworm's 252) ignore these two lines and wait RestartSec each time.
RestartSteps=5
RestartMaxDelaySec=60
StandardOutput=journal
StandardError=journal
SyslogIdentifier=loaxa-node
Environment={" ".join(f"{k}={v}" for k, v in SERVICE_ENVIRONMENT.items())}
Nice=-5

[Install]
WantedBy=multi-user.target
"""


def install_unit(unit_text: str, unit_dir: Path, start: bool) -> Path:
    """Write the unit, then (when ``start``) reload systemd and enable and start it."""
    path = unit_dir / UNIT_NAME
    write_atomically(path, unit_text.encode())
    if start:
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "enable", "--now", UNIT_NAME], check=True)
    return path
