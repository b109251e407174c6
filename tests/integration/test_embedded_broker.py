"""The embedded amqtt broker does what Loaxa's protocol needs from a broker.

`loaxa demo` runs on amqtt when mosquitto is absent, so amqtt must deliver QoS 1,
keep retained plans for stations that subscribe later, and publish a station's last
will when it dies. Each behaviour runs against amqtt *and* mosquitto, so a
difference between the demo engine and the production engine shows up here.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from loaxa import broker as broker_mod
from loaxa.broker import EmbeddedBroker, MosquittoBroker, mqtt_ping, start_broker
from loaxa_protocol import Status, StatusState, topics
from tests.brokers import MqttProbe, mosquitto_binary, running_mosquitto


@pytest.fixture
def amqtt_broker() -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(params=["amqtt", "mosquitto"])
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedBroker | MosquittoBroker]:
    if request.param == "amqtt":
        embedded = EmbeddedBroker()
        embedded.start()
        yield embedded
        embedded.stop()
    else:
        with running_mosquitto(tmp_path_factory.mktemp("mosquitto")) as mosq:
            yield mosq


def _client(client_id: str) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)


def _connect(client: mqtt.Client, b: EmbeddedBroker | MosquittoBroker) -> None:
    client.connect(b.host, b.port, keepalive=30)
    client.loop_start()
    deadline = time.monotonic() + 5
    while not client.is_connected():
        assert time.monotonic() < deadline, "client did not connect"
        time.sleep(0.01)


def test_amqtt_starts_on_a_free_port_and_restarts_on_the_same_one(
    amqtt_broker: EmbeddedBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    port = amqtt_broker.port
    assert port not in (0, 1883) and amqtt_broker.engine == "amqtt"
    probe = mqtt_probe(amqtt_broker, "loaxa/test/#")
    before = probe.connect_count

    amqtt_broker.stop()
    assert not amqtt_broker.running
    assert not mqtt_ping(amqtt_broker.host, port, timeout=0.3)
    amqtt_broker.start()
    assert amqtt_broker.port == port

    probe.wait_connected(after=before)
    probe.publish("loaxa/test/back", b"ok")
    assert probe.wait_for().payload == b"ok"


def test_qos1_messages_are_all_delivered_in_order(
    broker: EmbeddedBroker | MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    station = "cb-001"
    sub = mqtt_probe(broker, topics.ALL_EVENTS, qos=1)
    pub = mqtt_probe(broker, "unused/topic")

    for n in range(50):
        pub.publish(topics.event(station), f"{n}".encode(), qos=1)  # waits for PUBACK

    got = sub.wait_for_count(50)
    assert [int(m.payload) for m in got] == list(range(50))
    assert {m.qos for m in got} == {1}


def test_retained_message_reaches_late_subscribers_and_can_be_cleared(
    broker: EmbeddedBroker | MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    plan_topic = topics.plan("cb-002")
    pub = mqtt_probe(broker, "unused/topic")
    pub.publish(plan_topic, b"plan seq 1", qos=1, retain=True)
    pub.publish(plan_topic, b"plan seq 2", qos=1, retain=True)
    pub.close()  # the publisher is gone; the broker alone holds the plan

    late = mqtt_probe(broker, f"{topics.ROOT}/station/+/plan", qos=1)
    got = late.wait_for()
    assert (got.topic, got.payload, got.retain, got.qos) == (plan_topic, b"plan seq 2", True, 1)

    late.publish(plan_topic, b"", qos=1, retain=True)  # an empty retained payload clears it
    later = mqtt_probe(broker, "#")
    later.publish("loaxa/test/marker", b"m")
    later.wait_for(lambda m: m.topic == "loaxa/test/marker")
    assert later.on(plan_topic) == []


def test_last_will_is_published_when_a_station_dies_without_disconnecting(
    broker: EmbeddedBroker | MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    station = "cb-003"
    watcher = mqtt_probe(broker, topics.ALL_STATUS, qos=1)
    will = Status(station_id=station, state=StatusState.OFFLINE).model_dump_json()

    dying = _client(f"station-{station}")
    dying.will_set(topics.status(station), will, qos=1, retain=True)
    _connect(dying, broker)
    online = Status(station_id=station, state=StatusState.ONLINE, at=datetime.now(UTC))
    dying.publish(topics.status(station), online.model_dump_json(), qos=1, retain=True)
    watcher.wait_for(lambda m: m.json()["state"] == "online")

    # The station crashes: its TCP connection closes without an MQTT DISCONNECT.
    dying.loop_stop()
    sock = dying.socket()
    assert isinstance(sock, socket.socket)
    sock.close()

    got = watcher.wait_for(lambda m: m.json()["state"] == "offline")
    assert got.topic == topics.status(station)
    assert Status.model_validate_json(got.payload).at is None

    # Retained: the server, restarted later, still learns that the station is offline.
    late = mqtt_probe(broker, topics.status(station))
    assert late.wait_for().json()["state"] == "offline"


def test_clean_disconnect_does_not_publish_the_will(
    broker: EmbeddedBroker | MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    station = "cb-004"
    watcher = mqtt_probe(broker, topics.status(station), qos=1)
    polite = _client(f"station-{station}")
    polite.will_set(topics.status(station), b'{"state":"offline"}', qos=1, retain=True)
    _connect(polite, broker)
    polite.disconnect()
    polite.loop_stop()

    watcher.publish("loaxa/test/marker", b"m")  # not on the watcher's filter
    time.sleep(0.5)
    assert watcher.messages == []


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(
            "amqtt",
            marks=pytest.mark.xfail(
                strict=True,
                reason="amqtt 0.12 marks every session anonymous when allow_anonymous is on "
                "and keeps no offline queue for anonymous sessions",
            ),
        ),
        "mosquitto",
    ],
)
def test_persistent_session_receives_qos1_sent_while_offline(
    engine: str,
    tmp_path_factory: pytest.TempPathFactory,
    mqtt_probe: Callable[..., MqttProbe],
) -> None:
    """Documents the one broker feature amqtt lacks (docs/protocol.md, Brokers)."""
    b: EmbeddedBroker | MosquittoBroker
    if engine == "amqtt":
        b = EmbeddedBroker()
        b.start()
    else:
        b = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosq"), binary=mosquitto_binary())
        b.start()
    try:
        first = mqtt_probe(b, "loaxa/test/queued", client_id="server-1", clean_session=False)
        first.close()
        pub = mqtt_probe(b, "unused/topic")
        pub.publish("loaxa/test/queued", b"sent while offline", qos=1)

        again = mqtt_probe(b, "loaxa/test/queued", client_id="server-1", clean_session=False)
        assert again.wait_for(timeout=2).payload == b"sent while offline"
    finally:
        b.stop()


def test_start_broker_prefers_mosquitto_and_falls_back_to_amqtt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mosquitto_binary()  # fail clearly if it is missing, like every broker test
    auto = start_broker("auto")
    try:
        assert auto.engine == "mosquitto" and mqtt_ping(auto.host, auto.port)
    finally:
        auto.stop()

    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    fallback = start_broker("auto")
    try:
        assert isinstance(fallback, EmbeddedBroker) and mqtt_ping(fallback.host, fallback.port)
    finally:
        fallback.stop()

    with pytest.raises(broker_mod.BrokerError, match="apt-get install mosquitto"):
        start_broker("mosquitto")
