"""``loaxa bench plan``: a broadcast reaching a few stations, from the POST to each station.

One run, everything on this machine: a private Mosquitto with the production security
model and the real server (:func:`loaxa.bench.common.secured_stack`), and ``stations``
real station agents registered through the API, each its own ``loaxa node`` process
(simulated relay and player) as each is its own device in the field: in the server's
process they would share its interpreter lock and slow it down as no station does.
Each round POSTs ``/api/v1/broadcasts`` to every station and waits until every
target has its ``delivered_at``: the instant the station accepted the
plan carrying it, by the station's own clock. Station and bench share the host's wall
clock, so ``delivered_at - (instant before the POST)`` is the latency an operator sees
from pressing "save" to the station holding the plan; ``api_ms`` is the POST's own
answer time. The first rounds (``warmup``) are not counted: a cold server's first
broadcast pays for statement caches and lazy imports.

The peer (thombles/broadcaster) delivers a schedule to its 3 radios in 2-6 ms here;
the design's target is a median of at most 10 ms (issue 17).
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from loaxa.bench.common import secured_stack
from loaxa.bench.swarm import percentile
from loaxa.stack import LocalStack
from server.audio.synth import speech_like_wav

log = logging.getLogger(__name__)

COMMUNE = "01273"
ROUND_TIMEOUT_S = 10.0
BOOT_TIMEOUT_S = 60.0
"""The first round also waits for the station processes to start and connect."""
POLL_S = 0.02


@dataclass(frozen=True)
class PlanBenchResult:
    stations: int
    rounds: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    api_p50_ms: float
    api_p95_ms: float
    first_station_p50_ms: float
    """per round, the quickest station: how soon anything is on the air side"""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _wait_delivered(
    stack: LocalStack, broadcast_id: int, timeout_s: float = ROUND_TIMEOUT_S
) -> list[datetime]:
    deadline = time.monotonic() + timeout_s
    with stack.client() as http:
        while True:
            detail = http.get(f"/api/v1/broadcasts/{broadcast_id}").json()
            stamps = [t["delivered_at"] for t in detail["targets"]]
            if all(stamps):
                return [datetime.fromisoformat(s) for s in stamps]
            if time.monotonic() > deadline:
                raise RuntimeError(f"broadcast {broadcast_id}: not delivered in {timeout_s} s")
            time.sleep(POLL_S)


def run_plan_bench(stations: int = 3, rounds: int = 20, warmup: int = 2) -> PlanBenchResult:
    """Measure POST /api/v1/broadcasts → every station's ``delivered_at``; see the module doc."""
    overrides = {"plan_refresh_min": 0, "clock_sync_min": 0, "programme_prerender_min": 0}
    with secured_stack("loaxa-bench-plan-", overrides) as (secured, stack):
        configs = []
        with stack.registering():
            for number in range(stations):
                configs.append(stack.register_station(f"Loa {number + 1}", COMMUNE, 22.66, 106.26))
        secured.grant_registered(stack)
        nodes = []
        for config in configs:
            path = Path(config.data_dir).with_suffix(".yaml")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
            command = [sys.executable, "-m", "loaxa", "node", "--config", str(path)]
            nodes.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))
        try:
            return _measure(stack, [c.station_id for c in configs], rounds, warmup)
        finally:
            for node in nodes:
                node.terminate()
            for node in nodes:
                node.wait(timeout=20)


def _measure(
    stack: LocalStack, station_ids: list[str], rounds: int, warmup: int
) -> PlanBenchResult:
    """The rounds, once the stations run; the first waits for them to boot."""
    audio_id = stack.upload(speech_like_wav(2.0), "ban-tin.wav")["id"]
    start = datetime.now(UTC) + timedelta(days=1)
    latencies: list[float] = []
    firsts: list[float] = []
    api: list[float] = []
    with stack.client() as http:
        for number in range(warmup + rounds):
            body = {
                "audio_id": audio_id,
                "start_at": (start + timedelta(minutes=number)).isoformat(),
                "station_ids": station_ids,
                "title": f"Bản tin {number}",
            }
            posted_at = datetime.now(UTC)
            began = time.perf_counter()
            response = http.post("/api/v1/broadcasts", json=body)
            answered_ms = (time.perf_counter() - began) * 1000
            response.raise_for_status()
            boot_s = BOOT_TIMEOUT_S if number == 0 else ROUND_TIMEOUT_S
            delivered = _wait_delivered(stack, response.json()["id"], boot_s)
            if number < warmup:
                continue
            ms = [(d - posted_at).total_seconds() * 1000 for d in delivered]
            latencies.extend(ms)
            firsts.append(min(ms))
            api.append(answered_ms)
            log.info("round %s: api %.1f ms, stations %s", number, answered_ms, ms)
    return PlanBenchResult(
        stations=len(station_ids),
        rounds=rounds,
        p50_ms=round(statistics.median(latencies), 2),
        p95_ms=round(percentile(latencies, 95), 2),
        max_ms=round(max(latencies), 2),
        api_p50_ms=round(statistics.median(api), 2),
        api_p95_ms=round(percentile(api, 95), 2),
        first_station_p50_ms=round(statistics.median(firsts), 2),
    )
