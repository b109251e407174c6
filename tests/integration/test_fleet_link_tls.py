"""The server's link under load over TLS: publishes from many threads while stations report.

Request threads publish plans and alerts while the link's own thread reads station
reports from the same TLS socket. OpenSSL does not allow two threads on one connection:
when paho wrote a publish from the caller's thread, the whole server process aborted
("Fatal Python error: Aborted" in ``ssl.close``), seen once in a full suite run.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from loaxa_protocol import topics
from server.fleet.link import FleetLink, Message
from server.settings import Settings
from tests.brokers import MqttProbe, ProductionMosquitto, admit_station

STATION = "cb-st-001"
PUBLISHERS = 4
PER_PUBLISHER = 300
REPORTS = 1200


def test_publishes_from_many_threads_and_reports_in_share_one_tls_link(
    tmp_path: Path, production_mosquitto: ProductionMosquitto
) -> None:
    broker = production_mosquitto
    node = admit_station(broker, STATION)
    username, password = broker.server_credentials
    received: list[Message] = []
    lock = threading.Lock()

    def on_messages(batch: Sequence[Message]) -> None:
        with lock:
            received.extend(batch)

    settings = Settings(
        data_dir=tmp_path / "server",
        mqtt_host=broker.host,
        mqtt_port=broker.tls_port,
        mqtt_tls=True,
        mqtt_ca_file=broker.ca_file,
        mqtt_username=username,
        mqtt_password=password,
        mqtt_client_id=f"loaxa-server-{uuid.uuid4().hex[:6]}",
    )
    link = FleetLink(settings, on_messages)
    link.start()
    try:
        assert link.wait_connected(10), "the server did not connect over TLS"
        with MqttProbe(broker, topics.command(STATION)) as probe:
            station = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=STATION)
            station.username_pw_set(node.username, node.password)
            station.tls_set(ca_certs=str(node.ca_file))
            station.connect(node.host, node.port)
            station.loop_start()
            try:

                def publish_many(number: int) -> None:
                    for i in range(PER_PUBLISHER):
                        link.publish(topics.command(STATION), f"{number}-{i}".encode(), qos=1)

                threads = [
                    threading.Thread(target=publish_many, args=(n,)) for n in range(PUBLISHERS)
                ]
                for thread in threads:
                    thread.start()
                for i in range(REPORTS):  # QoS 1: the link acks each from its own thread
                    station.publish(topics.event(STATION), f'{{"n": {i}}}'.encode(), qos=1)
                for thread in threads:
                    thread.join(60)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    with lock:
                        done = len(received) >= REPORTS
                    if done and len(probe.messages) >= PUBLISHERS * PER_PUBLISHER:
                        break
                    time.sleep(0.1)
            finally:
                station.loop_stop()
                station.disconnect()
            sent = {m.payload for m in probe.messages}
    finally:
        link.stop()
    assert len(sent) == PUBLISHERS * PER_PUBLISHER, "a publish from a request thread was lost"
    with lock:
        # More than REPORTS: a PUBACK mangled by a write from another thread, so the broker
        # sent the report again on the same connection.
        assert len(received) == REPORTS, "a station report was lost or delivered twice"
