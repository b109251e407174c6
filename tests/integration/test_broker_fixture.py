"""The broker fixtures and MqttProbe do what the other integration tests rely on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loaxa.broker import mqtt_ping
from loaxa.stack import LocalStack
from loaxa_protocol import topics
from tests.brokers import MosquittoBroker, MqttProbe, ProductionMosquitto, admit_station


def test_publish_is_received(
    mosquitto: MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    assert mosquitto.port != 1883  # a system mosquitto may own 1883; never assume it
    sub = mqtt_probe(mosquitto, "loaxa/test/+/event")
    pub = mqtt_probe(mosquitto, "unused/topic")

    pub.publish("loaxa/test/s1/event", b'{"kind": "played"}', qos=1)
    pub.publish("loaxa/test/s1/health", b"not for the filter", qos=1)

    got = sub.wait_for(lambda m: m.json()["kind"] == "played")
    assert got.topic == "loaxa/test/s1/event"
    assert got.qos == 1 and not got.retain
    assert [m.topic for m in sub.messages] == ["loaxa/test/s1/event"]


def test_retained_message_reaches_a_later_subscriber(
    mosquitto: MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    pub = mqtt_probe(mosquitto, "unused/topic")
    pub.publish("loaxa/test/s1/plan", b"plan-1", qos=1, retain=True)
    pub.publish("loaxa/test/s1/plan", b"plan-2", qos=1, retain=True)
    pub.close()

    late = mqtt_probe(mosquitto, "loaxa/test/+/plan")
    got = late.wait_for()
    assert (got.payload, got.retain) == (b"plan-2", True)


def test_wait_for_reports_what_it_saw(
    mosquitto: MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    probe = mqtt_probe(mosquitto, "loaxa/test/#")
    probe.publish("loaxa/test/x", b"something else")
    with pytest.raises(AssertionError, match="something else"):
        probe.wait_for(lambda m: m.payload == b"never", timeout=0.3)


def test_stop_and_start_keep_the_port_and_probes_come_back(
    mosquitto: MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    port = mosquitto.port
    probe = mqtt_probe(mosquitto, "loaxa/test/#")
    before = probe.connect_count

    mosquitto.stop()
    assert not mosquitto.running
    assert not mqtt_ping(mosquitto.host, port, timeout=0.3)

    mosquitto.start()
    assert mosquitto.port == port and mosquitto.running
    probe.wait_connected(after=before)
    probe.publish("loaxa/test/after-restart", b"hello again")
    assert probe.wait_for(lambda m: m.topic == "loaxa/test/after-restart").payload == b"hello again"
    assert mosquitto.log_text().count(" running") == 2


def test_hard_stop_is_a_crash_and_retained_state_is_lost_without_persistence(
    mosquitto: MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    pub = mqtt_probe(mosquitto, "unused/topic")
    pub.publish("loaxa/test/s1/plan", b"plan-1", retain=True)
    mosquitto.stop(hard=True)
    mosquitto.start()

    late = mqtt_probe(mosquitto, "loaxa/test/#")
    late.publish("loaxa/test/marker", b"m")
    late.wait_for(lambda m: m.topic == "loaxa/test/marker")
    assert late.on("loaxa/test/s1/plan") == []


def test_persistent_broker_keeps_retained_messages_across_a_restart(
    mosquitto_factory: Callable[..., MosquittoBroker], mqtt_probe: Callable[..., MqttProbe]
) -> None:
    broker = mosquitto_factory(persistence=True)
    pub = mqtt_probe(broker, "unused/topic")
    pub.publish("loaxa/test/s1/plan", b"plan-1", retain=True)
    pub.close()
    broker.stop()  # SIGTERM: mosquitto writes its persistence file
    broker.start()

    late = mqtt_probe(broker, "loaxa/test/s1/plan")
    assert late.wait_for().payload == b"plan-1"


def test_session_broker_is_shared_and_running(mosquitto_session: MosquittoBroker) -> None:
    assert mosquitto_session.running
    assert mqtt_ping(mosquitto_session.host, mosquitto_session.port)


# ------------------------------------------------- the production configuration


def test_the_production_broker_admits_only_known_accounts_and_keeps_them_across_a_restart(
    production_mosquitto: ProductionMosquitto, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    broker = production_mosquitto
    assert not mqtt_ping(broker.host, broker.port)  # anonymous
    assert mqtt_ping(broker.host, broker.port, 1.0, *broker.server_credentials)
    station = admit_station(broker, "st-01273-001", ["01273", "04"])
    assert station.tls and station.port == broker.tls_port and station.ca_file == broker.ca_file
    assert mqtt_ping(broker.host, broker.port, 1.0, station.username, station.password)
    assert not mqtt_ping(broker.host, broker.port, 1.0, station.username, "not-its-password")

    server = mqtt_probe(broker, topics.plan("st-01273-001"))  # signs in as the server
    server.publish(topics.plan("st-01273-001"), b"plan-1", retain=True)
    server.wait_for()
    ports = (broker.port, broker.tls_port)
    broker.stop()  # SIGTERM: persistence written, as a production restart
    broker.start()
    assert (broker.port, broker.tls_port) == ports
    assert mqtt_ping(broker.host, broker.port, 1.0, station.username, station.password)
    late = mqtt_probe(broker, topics.plan("st-01273-001"))
    assert late.wait_for().payload == b"plan-1"


def test_a_station_registered_through_the_api_connects_over_tls_once_the_broker_reloads(
    tmp_path: Path, production_mosquitto: ProductionMosquitto
) -> None:
    broker = production_mosquitto
    with LocalStack.on_broker(tmp_path, broker) as stack:
        with stack.registering():
            config = stack.register_station("Cụm loa chợ", "01273", 22.66, 106.25)
            # Registered in the database, not yet in the broker's files: refused.
            creds = (config.mqtt.username, config.mqtt.password)
            assert not mqtt_ping(broker.host, broker.port, 1.0, *creds)
        assert mqtt_ping(broker.host, broker.port, 1.0, *creds)  # re-generated and reloaded
        assert [a.station_id for a in broker.accounts] == [config.station_id]
        assert config.mqtt.tls and config.mqtt.port == broker.tls_port

        node = stack.start_node(config)
        deadline = time.monotonic() + 15
        while stack.api("GET", f"/api/v1/stations/{config.station_id}")["status"] != "online":
            assert time.monotonic() < deadline, "the station did not come online"
            time.sleep(0.1)
        assert node.agent.core.connected
        assert f"u'{config.mqtt.username}'" in broker.log_text()  # its own account
