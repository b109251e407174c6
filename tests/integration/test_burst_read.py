"""The server's MQTT client reads a burst of messages in a few turns, all of them, in order.

A real Mosquitto: the reader is paused while 1,000 small messages (QoS 1, as station
events) pile up in its socket and at the broker, then resumes. A stock paho client takes
one turn of its network loop per message (``server.fleet.burst``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from server.fleet.burst import BurstReadClient
from tests.brokers import MosquittoBroker, MqttProbe

MESSAGES = 1000


def test_a_burst_is_read_whole_in_few_turns_and_in_order(
    mosquitto: MosquittoBroker, mqtt_probe: Callable[..., MqttProbe]
) -> None:
    received: list[int] = []
    subscribed, all_read = threading.Event(), threading.Event()
    reader = BurstReadClient(CallbackAPIVersion.VERSION2, client_id="burst-reader")

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        received.append(int(message.payload))
        if len(received) == MESSAGES:
            all_read.set()

    reader.on_message = on_message
    reader.on_subscribe = lambda *_args: subscribed.set()
    reader.on_connect = lambda client, *_args: client.subscribe("loaxa/v1/station/+/health", 1)
    reader.connect(mosquitto.host, mosquitto.port)
    reader.loop_start()
    try:
        assert subscribed.wait(5), "the reader's subscription was not acknowledged"
        reader.loop_stop()  # paused: what follows piles up for it

        sender = mqtt_probe(mosquitto, topics="loaxa/v1/ping").client
        infos = [
            sender.publish(f"loaxa/v1/station/st-{n % 7}/health", str(n).encode(), qos=1)
            for n in range(MESSAGES)
        ]
        for info in infos:
            info.wait_for_publish(5)

        reader.loop_start()
        assert all_read.wait(10), f"{len(received)} of {MESSAGES} messages read"
    finally:
        reader.disconnect()
        reader.loop_stop()

    assert received == list(range(MESSAGES))  # none lost, none twice, in order
    assert reader.packets_read >= MESSAGES
    assert reader.turns <= MESSAGES // 10, f"{reader.turns} turns for {MESSAGES} messages"
