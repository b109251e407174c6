"""``python -m tests.faults.skewed_clock node --config X``: the station agent with its
clock off by ``LOAXA_FAULT_CLOCK_OFFSET_S`` seconds.

A Pi without its real-time clock boots with a wrong time until NTP answers. No
fake-time library is installed here and a time namespace cannot move the wall clock,
so this shifts the agent's one clock, ``node_firmware.agent._now`` (the ``now`` the
core receives: what it plays by and what it answers a ``time_sync`` with).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import node_firmware.agent as agent
from loaxa.cli import app

OFFSET = timedelta(seconds=float(os.environ["LOAXA_FAULT_CLOCK_OFFSET_S"]))
_true_now = agent._now


def _skewed_now() -> datetime:
    return _true_now() + OFFSET


agent._now = _skewed_now
app(prog_name="loaxa")
