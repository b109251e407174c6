"""A station given two broker addresses fails over to the second when the first dies.

Issue 17: "stations take a list of broker addresses and fail over". Two real Mosquitto
processes, each on the configuration ``loaxa broker config`` generates (TLS listener,
the station's own account, the ACL), stand in for two nodes of a broker cluster; the
station's link is the agent's own :class:`~node_firmware.drivers.mqtt_link.MqttLink`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from loaxa.broker_config import StationAccount
from loaxa_protocol import topics
from loaxa_protocol.station_config import BrokerAddress
from node_firmware.core.events import AlertReceived, BrokerConnected, Input
from node_firmware.drivers.mqtt_link import MqttLink
from server.passwords import hash_password
from tests.brokers import (
    MqttProbe,
    ProductionMosquitto,
    admit_station,
    running_production_mosquitto,
)
from tests.node_process import wait_until

STATION = "st-01273-009"
AREAS = ("01273", "04")


def test_a_station_fails_over_to_its_second_broker_and_hears_alerts_there(
    production_mosquitto: ProductionMosquitto,
    tmp_path: Path,
    mqtt_probe: Callable[..., MqttProbe],
) -> None:
    first = production_mosquitto
    with running_production_mosquitto(tmp_path / "second") as second:
        cfg = admit_station(first, STATION, AREAS)
        assert cfg.password is not None
        account = StationAccount(STATION, STATION, hash_password(cfg.password), AREAS)
        second.load([account])  # the cluster knows the same account on every node
        bundle = tmp_path / "cluster-ca.pem"  # each test broker has its own CA
        bundle.write_text(first.ca_file.read_text() + second.ca_file.read_text())
        cfg = cfg.model_copy(
            update={
                "ca_file": bundle,
                "fallbacks": [BrokerAddress(host=second.host, port=second.tls_port)],
            }
        )
        heard: list[Input] = []
        changed = threading.Condition()

        def deliver(event: Input) -> None:
            with changed:
                heard.append(event)
                changed.notify_all()

        def connects() -> int:
            return sum(isinstance(e, BrokerConnected) for e in heard)

        link = MqttLink(cfg, STATION, deliver, AREAS)
        link.start()
        try:
            wait_until(lambda: connects() == 1, 15, "the first connection")
            client = f"loaxa-node-{STATION}"
            assert f"as {client}" in first.log_text()
            assert f"as {client}" not in second.log_text()

            first.stop(hard=True)  # the node dies with its clients' sockets
            stopped_at = time.monotonic()
            wait_until(lambda: connects() == 2, 20, "the station on the second broker")
            failover_s = time.monotonic() - stopped_at
            assert f"as {client}" in second.log_text()
            print(f"failed over in {failover_s:.1f} s")
            # The first retry comes within the back-off's base (1 s) and dials the next
            # address; TLS and the password check on the second node take the rest.
            assert failover_s < 6, failover_s

            # Subscribed there: an alert published on the second node reaches it.
            probe = mqtt_probe(second, topics=[topics.alert(STATION)])
            probe.publish(topics.alert(STATION), b"signed-alert-bytes")
            wait_until(
                lambda: any(isinstance(e, AlertReceived) for e in heard),
                10,
                "the alert via the second broker",
            )
        finally:
            link.stop()
