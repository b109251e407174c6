"""A fixed piece of pure-Python work, timed: how fast this machine is right now.

The project's 2-core machine is shared: its speed drifts by half within an hour, with
nothing of ours running (2026-12-07: the same code delivered a broadcast in 8.2 ms in
the morning and 17 ms in the evening). A benchmark that prints this probe next to its
figures lets a reader compare runs taken at different moments; it is not a correction
factor, only a witness.
"""

from __future__ import annotations

import json
import time

PROBE_DOC = {"station_id": "probe", "levels": [1, 2, 3], "note": "xyz" * 10, "v": {"d": 1.5}}
"""Small JSON documents and integer arithmetic: what the server and the swarm mostly do."""


def cpu_probe_ms(rounds: int = 3) -> float:
    """The quickest of ``rounds`` timings of the fixed work, in milliseconds.

    The quickest, because a pause of the machine only ever adds time. On the project's
    machine (2026-12-07, evening): 89–98 ms at quiet moments, up to 185 ms at others.
    """
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(10_000):
            json.loads(json.dumps(PROBE_DOC))
        sum(i * i for i in range(500_000))
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)
