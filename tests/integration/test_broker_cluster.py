"""An alert reaches every station while a node of a three-node broker cluster dies.

Issue 17: a clustered broker from an existing engine. Three real ``nats-server``
processes form a JetStream cluster with an MQTT listener each (configuration from
:mod:`loaxa.nats_config`: the server's account, and per station the permissions the
Mosquitto ACL grants). The real server (LocalStack) is linked to node 1; it hands every
station all three addresses (``node_mqtt_fallbacks``), rotated per station so the fleet
sits on different nodes. Real station agents run. A node that stations are on is
SIGKILLed right before the alert is confirmed: those stations fail over to the next
node, and every station's ``alert_playing`` must still reach the server.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loaxa.nats_config import NatsUser
from loaxa.stack import LocalStack, RunningNode
from node_firmware.config import NodeConfig
from server.auth.permissions import Role
from tests.brokers import NatsCluster, running_nats_cluster
from tests.integration.auth_helpers import bearer, make_token
from tests.integration.test_alerts_end_to_end import alert_view, states, wait_until

STATIONS = [
    ("01273", 22.666, 106.257),
    ("01279", 22.680, 106.230),
    ("01288", 22.650, 106.270),
    ("01273", 22.667, 106.258),
]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with running_nats_cluster(tmp_path / "nats") as started:
        yield started


@pytest.fixture
def stack(tmp_path: Path, cluster: NatsCluster) -> Iterator[LocalStack]:
    host, port = cluster.address(0)
    username, password = cluster.server_credentials
    fallbacks = [{"host": h, "port": p} for h, p in map(cluster.address, range(1, cluster.size))]
    overrides = {
        "mqtt_username": username,
        "mqtt_password": password,
        "node_mqtt_fallbacks": fallbacks,
    }
    with LocalStack(tmp_path, host, port, settings_overrides=overrides) as running:
        yield running


def register(stack: LocalStack, index: int, area: str, lat: float, lon: float) -> NodeConfig:
    """Register through the API and keep the broker part of the node config as issued."""
    body = {"name": f"Cụm loa {index}", "area_code": area, "latitude": lat, "longitude": lon}
    raw: dict[str, Any] = stack.api("POST", "/api/v1/stations", json=body)["node_config"]
    raw |= {
        "data_dir": str(stack.data_dir / "nodes" / raw["station_id"]),
        "relay": {"driver": "sim"},
        "player": {"driver": "sim"},
    }
    return NodeConfig.model_validate(raw)


def test_every_station_plays_an_alert_sent_while_a_broker_node_dies(
    stack: LocalStack, cluster: NatsCluster
) -> None:
    configs = [register(stack, i + 1, *station) for i, station in enumerate(STATIONS)]
    cluster.load(
        [
            NatsUser(c.mqtt.username or "", c.mqtt.password or "", c.station_id, tuple(c.areas))
            for c in configs
        ]
    )
    nodes: list[RunningNode] = [stack.start_node(c) for c in configs]
    stack.context.publisher.republish_all()

    def ready(node: RunningNode) -> bool:
        plan = node.agent.core.plan
        return plan is not None and {k.sha256 for k in plan.keep} <= node.agent.core.cached

    for node in nodes:
        wait_until(
            functools.partial(ready, node),
            30,
            f"{node.station_id} to get its plan and cache the canned library",
        )

    # Every station lists the three nodes; the first is where it sits now.
    addresses = [cluster.address(i) for i in range(cluster.size)]
    first = {c.station_id: addresses.index((c.mqtt.host, c.mqtt.port)) for c in configs}
    for config in configs:
        assert {(config.mqtt.host, config.mqtt.port)} | {
            (b.host, b.port) for b in config.mqtt.fallbacks
        } == set(addresses)
    print("first node of each station:", first)
    assert len(set(first.values())) >= 2, f"the stations should spread over the nodes: {first}"
    # Kill a node other than the server's (node 1) that has stations on it.
    victim = max((1, 2), key=lambda i: sum(n == i for n in first.values()))
    on_victim = [s for s, n in first.items() if n == victim]
    assert on_victim and len(on_victim) < len(nodes), first

    body = {
        "title": "Lũ quét",
        "canned": "flood",
        "tone": True,
        "repeat": 1,
        "area_codes": sorted({area for area, _lat, _lon in STATIONS}),
    }
    created = stack.api("POST", "/api/v1/alerts", json=body)
    assert created["state"] == "awaiting_confirmation"
    second = make_token(stack.context.engine, "duty-officer", (Role.ALERT_OFFICER, "04"))

    cluster.kill(victim)  # SIGKILL: its stations' sockets die with it
    killed_at = time.monotonic()
    with stack.client() as http:
        confirmed = http.post(
            f"/api/v1/alerts/{created['id']}/confirm", headers=bearer(second)
        ).json()
    assert confirmed["state"] == "active"

    def all_played() -> bool:
        # The first stations may have finished the alert before the last one starts it.
        rows = alert_view(stack, created["id"])["stations"]
        return len(rows) == len(nodes) and all(row["playing_at"] for row in rows)

    try:
        wait_until(all_played, 150, f"every station playing with node {victim + 1} dead")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {states(alert_view(stack, created['id']))}") from None
    took_s = time.monotonic() - killed_at
    print(f"node {victim + 1} killed → all {len(nodes)} stations played: {took_s:.1f} s")
    view = alert_view(stack, created["id"])
    assert set(states(view)) == {n.station_id for n in nodes}
    for row in view["stations"]:
        assert row["received_at"] and row["playing_at"], row
        on = "dead node" if row["station_id"] in on_victim else "live node"
        print(f"  {row['station_id']} ({on}): playing at {row['playing_at']}")
