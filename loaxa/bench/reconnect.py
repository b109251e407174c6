"""``loaxa bench reconnect``: how a fleet comes back after its broker restarts.

After a broker restart thousands of stations must neither reconnect in the same second
(the broker would spend that second hashing passwords and refusing sockets) nor wait
minutes (an alert sent meanwhile waits with them). This measures both, with the
stations' own code:

1. A private Mosquitto with the production security model (per-station ``$7$``
   password hashes and the generated ACL, :class:`loaxa.bench.common.SecuredBroker`),
   so every reconnect pays the broker's password check as in the field.
2. N station links — the agent's own :class:`~node_firmware.drivers.mqtt_link.MqttLink`,
   hence its own back-off policy — spread over a few processes, each link with its paho
   network thread (the agent's shape; the agent's other threads play no part here).
3. Once all are connected the broker is stopped for ``outage_s`` and started again on
   the same port. Each station's first connection after the broker was launched again
   is its reconnect time (measured from the launch: stations that got in while the
   broker helper was still checking it answers are back too, and were once counted as
   never back); the busiest second gives the peak connects per second.

Stations and broker share this machine, so the figures include the stations' own CPU.
"""

from __future__ import annotations

import logging
import multiprocessing
import secrets
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from loaxa.bench.swarm import percentile
from loaxa.broker_config import StationAccount
from node_firmware.config import MqttConfig
from node_firmware.core.events import BrokerConnected, Input
from node_firmware.drivers.mqtt_link import MqttLink
from server.passwords import hash_password

# The worker processes re-import this module: the server (loaxa.bench.common imports it
# through loaxa.stack) is imported only by the parent, inside run_reconnect_bench.

log = logging.getLogger(__name__)

AREA_CODES = ("04", "01273")
"""Cao Bằng and one of its communes: every bench station sits there."""
CONNECT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ReconnectResult:
    nodes: int
    workers: int
    outage_s: float
    connect_s: float
    """How long the first connection of the whole fleet took (a cold start, all at once)."""
    back: int
    not_back: int
    p50_s: float
    p90_s: float
    p99_s: float
    max_s: float
    peak_connects_per_s: int
    within_5_s: int
    within_10_s: int
    within_30_s: int
    before_ready: int
    """back before the broker helper had seen the broker answer (its start-up check)"""
    not_back_ids: list[str]
    """The first few stations still away when the wait ended, to look up in their logs."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ worker processes


def _worker_main(
    conn: Connection, host: str, port: int, members: list[tuple[str, str, str]]
) -> None:
    """Run the share ``members`` (station id, username, password) of the fleet's links."""
    logging.basicConfig(level=logging.ERROR)
    connects: dict[str, list[float]] = {station_id: [] for station_id, _u, _p in members}
    changed = threading.Condition()

    def deliver_for(station_id: str) -> Any:
        def deliver(event: Input) -> None:
            if isinstance(event, BrokerConnected):
                with changed:
                    connects[station_id].append(time.monotonic())
                    changed.notify_all()

        return deliver

    links = []
    started = time.monotonic()
    for station_id, username, password in members:
        config = MqttConfig(host=host, port=port, username=username, password=password)
        link = MqttLink(config, station_id, deliver_for(station_id))
        link.start()
        links.append(link)
    with changed:
        changed.wait_for(lambda: all(connects.values()), CONNECT_TIMEOUT_S)
        firsts = [times[0] for times in connects.values() if times]
        conn.send(("ready", len(firsts), max(firsts, default=started) - started))
    try:
        while conn.recv() == ("report",):
            with changed:
                conn.send(("report", {k: list(v) for k, v in connects.items()}))
    except EOFError:
        pass
    for link in links:
        link.stop()


class _Fleet:
    """The worker processes and their pipes; ``close()`` ends them."""

    def __init__(self, host: str, port: int, stations: list[tuple[str, str, str]], workers: int):
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for number in range(workers):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker_main,
                args=(child, host, port, stations[number::workers]),
                name=f"loaxa-reconnect-{number}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def ready(self) -> tuple[int, float]:
        """(stations connected, seconds the slowest worker took to connect its share)."""
        connected, slowest = 0, 0.0
        for conn in self._conns:
            if not conn.poll(CONNECT_TIMEOUT_S + 60):
                raise RuntimeError("a reconnect bench worker did not report ready")
            _tag, count, seconds = conn.recv()
            connected, slowest = connected + count, max(slowest, seconds)
        return connected, slowest

    def connects(self) -> dict[str, list[float]]:
        merged: dict[str, list[float]] = {}
        for conn in self._conns:
            conn.send(("report",))
            _tag, report = conn.recv()
            merged.update(report)
        return merged

    def close(self) -> None:
        for conn in self._conns:
            conn.send(("stop",))
            conn.close()
        for proc in self._procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()


# ------------------------------------------------------------------ the run


def _accounts(nodes: int) -> tuple[list[StationAccount], list[tuple[str, str, str]]]:
    accounts, credentials = [], []
    for number in range(nodes):
        station_id = f"rc-{number:05d}"
        password = secrets.token_urlsafe(16)
        accounts.append(StationAccount(station_id, station_id, hash_password(password), AREA_CODES))
        credentials.append((station_id, station_id, password))
    return accounts, credentials


def run_reconnect_bench(
    nodes: int, outage_s: float = 10.0, workers: int = 4, max_wait_s: float = 150.0
) -> ReconnectResult:
    """Connect ``nodes`` stations, restart the broker after them, time their return."""
    from loaxa.bench.common import SecuredBroker

    accounts, credentials = _accounts(nodes)
    with tempfile.TemporaryDirectory(prefix="loaxa-bench-reconnect-") as tmp:
        secured = SecuredBroker(Path(tmp) / "mosquitto")
        with secured.broker as broker:
            secured.grant(accounts)
            fleet = _Fleet(broker.host, broker.port, credentials, min(workers, nodes))
            try:
                connected, connect_s = fleet.ready()
                if connected != nodes:
                    raise RuntimeError(f"only {connected} of {nodes} stations connected")
                log.info("%s stations connected in %.1f s", nodes, connect_s)
                broker.stop()
                time.sleep(outage_s)
                # The restart rewrites the broker's base config: password file and ACL
                # still apply to every station (anonymous clients get no topic).
                back_at = time.monotonic()  # stations may get in before start() returns
                broker.start()
                ready_s = time.monotonic() - back_at
                log.info("broker back after %.0f s; waiting for the fleet", outage_s)
                deadline = back_at + max_wait_s
                connects = fleet.connects()
                while len(_reconnect_times(connects, back_at)) < nodes:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(1.0)
                    connects = fleet.connects()
            finally:
                fleet.close()
    times = _reconnect_times(connects, back_at)
    missing = sorted(set(connects) - set(times))
    before_ready = sum(t < ready_s for t in times.values())
    return _result(
        nodes, min(workers, nodes), outage_s, connect_s, sorted(times.values()), missing,
        before_ready,
    )  # fmt: skip


def _reconnect_times(connects: dict[str, list[float]], back_at: float) -> dict[str, float]:
    """Station → its first connection after ``back_at``, in seconds after it."""
    firsts = {k: min((t for t in v if t >= back_at), default=None) for k, v in connects.items()}
    return {k: t - back_at for k, t in firsts.items() if t is not None}


def _result(
    nodes: int,
    workers: int,
    outage_s: float,
    connect_s: float,
    times: list[float],
    missing: list[str],
    before_ready: int = 0,
) -> ReconnectResult:
    per_second = Counter(int(t) for t in times)
    return ReconnectResult(
        nodes=nodes,
        workers=workers,
        outage_s=outage_s,
        connect_s=round(connect_s, 2),
        back=len(times),
        not_back=nodes - len(times),
        p50_s=round(percentile(times, 50), 2),
        p90_s=round(percentile(times, 90), 2),
        p99_s=round(percentile(times, 99), 2),
        max_s=round(max(times, default=0.0), 2),
        peak_connects_per_s=max(per_second.values(), default=0),
        within_5_s=sum(t <= 5 for t in times),
        within_10_s=sum(t <= 10 for t in times),
        within_30_s=sum(t <= 30 for t in times),
        before_ready=before_ready,
        not_back_ids=missing[:10],
    )


def result_rows(result: ReconnectResult) -> list[tuple[str, str]]:
    """The table ``loaxa bench reconnect`` prints, as (what, figure) rows."""
    r = result
    return [
        ("stations (the agent's MqttLink)", f"{r.nodes:,} over {r.workers} processes"),
        ("broker", "Mosquitto, per-station password + ACL"),
        ("first connect of the fleet", f"{r.connect_s:.1f} s"),
        ("broker outage", f"{r.outage_s:g} s"),
        ("back after the broker returned", f"{r.back:,} (not back: {r.not_back:,})"),
        ("not back (first few)", ", ".join(r.not_back_ids) or "-"),
        ("reconnect p50 · p90 · p99", f"{r.p50_s:.1f} · {r.p90_s:.1f} · {r.p99_s:.1f} s"),
        ("reconnect max", f"{r.max_s:.1f} s"),
        ("peak connects per second", f"{r.peak_connects_per_s:,}"),
        ("back within 5 · 10 · 30 s", f"{r.within_5_s:,} · {r.within_10_s:,} · {r.within_30_s:,}"),
        ("back before the broker's start-up check ended", f"{r.before_ready:,}"),
    ]
