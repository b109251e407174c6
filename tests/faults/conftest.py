"""Fixtures of the fault suite: a whole installation of real processes per test.

Every test under ``tests/faults/`` carries the ``faults`` marker (``-m faults`` runs
only them, ``-m 'not faults'`` leaves them out).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import (
    NetnsUnavailable,
    SecureBroker,
    ServerProcess,
    StationNetwork,
    StationProcess,
    cannot_run,
    station_config,
)

HERE = Path(__file__).parent
FAULT_TIMEOUT_S = 400


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: the fault suite on real processes (tests/faults, docs/reliability.md)"
    )
    config.addinivalue_line("markers", "network(index, rate): the station's network namespace")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            # A scenario of real outages takes minutes, not the suite's default 120 s.
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(FAULT_TIMEOUT_S))


@dataclass
class Installation:
    """A broker, a server and stations, each a real process of its own."""

    root: Path
    broker: SecureBroker
    server: ServerProcess
    stations: list[StationProcess] = field(default_factory=list)

    def add_station(
        self, name: str, netns: str | None = None, data_dir: Path | None = None, **mqtt: Any
    ) -> StationProcess:
        """Register a station, give it its broker account and boot its agent."""
        issued = self.server.register(name)
        data_dir = data_dir or self.root / "stations" / issued.station_id
        station = StationProcess(
            station_config(issued, data_dir, **mqtt), self.root / "stations", netns=netns
        )
        self.stations.append(station)
        station.start()
        return station

    def add_namespaced_station(
        self, name: str, network: StationNetwork, **mqtt: Any
    ) -> StationProcess:
        """A station inside ``network``: it dials the broker's TLS port at the host's
        veth address with its own account, as a Pi dials over 4G."""
        return self.add_station(
            name,
            netns=network.name,
            host=network.host_ip,
            port=self.broker.tls_port,
            tls=True,
            ca_file=self.broker.ca_file,
            **mqtt,
        )

    def close(self) -> None:
        for station in self.stations:
            station.kill()
        self.server.kill()
        self.broker.kill()

    def diagnostics(self) -> str:
        parts = [f"--- server log ---\n{self.server.log_tail()}"]
        parts += [f"--- broker log ---\n{self.broker.log_text()[-3000:]}"]
        parts += [f"--- {s.station_id} ---\n{s.log_text()[-3000:]}" for s in self.stations]
        return "\n".join(parts)


def make_installation(
    root: Path, hosts: tuple[str, ...] = (), **server_options: Any
) -> Installation:
    broker = SecureBroker(root / "broker", hosts=hosts)
    broker.configure()
    broker.start()
    server = ServerProcess(root, broker, **server_options)
    server.start()
    return Installation(root, broker, server)


@contextmanager
def running_installation(root: Path, **options: Any) -> Iterator[Installation]:
    """Broker (generated production config) and server running; add stations."""
    running = make_installation(root, **options)
    try:
        yield running
        print(running.diagnostics())  # shown by pytest only when a test failed
    finally:
        running.close()


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Installation]:
    with running_installation(tmp_path) as running:
        yield running


@pytest.fixture
def network(request: pytest.FixtureRequest) -> Iterator[StationNetwork]:
    """A station network namespace; ``@pytest.mark.network(index=…, rate=…)`` shapes it
    (the index picks its 10.213.<index>.0/30, so tests running at once do not collide)."""
    marker = request.node.get_closest_marker("network")
    options = dict(marker.kwargs) if marker else {}
    try:
        net = StationNetwork(**options).create()
    except NetnsUnavailable as exc:
        cannot_run(f"needs network namespaces: {exc}")
    try:
        yield net
    finally:
        net.delete()


@pytest.fixture
def namespaced_installation(tmp_path: Path, network: StationNetwork) -> Iterator[Installation]:
    """Broker and server reachable from ``network`` (TLS for stations, audio over HTTP)."""
    with running_installation(
        tmp_path,
        hosts=(network.host_ip,),
        listen_host="0.0.0.0",
        public_host=network.host_ip,
        node_mqtt_host=network.host_ip,
    ) as running:
        yield running
