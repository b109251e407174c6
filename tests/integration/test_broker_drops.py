"""A client too slow to read makes Mosquitto drop messages where no queue of ours can count
them; the server reads the broker's own drop counter and says so, on real parts.

The broker runs with the generated password file and ACL (``loaxa broker config``), so
the test also proves the server account may read that one ``$SYS`` topic, and a station
account may not.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loaxa.broker import MosquittoBroker
from loaxa.broker_config import ServerCredentials, StationAccount, acl_text, passwd_text
from loaxa_protocol import topics
from server.fleet.link import FleetLink
from server.passwords import hash_password
from server.settings import Settings
from tests.brokers import MqttProbe

QUEUE_LIMIT = 10
PAYLOAD = b"x" * 20_000
FLOOD = 2_000
"""40 MB: more than the stalled client's socket buffers hold, so the broker must queue"""


@pytest.fixture
def accounts(tmp_path: Path) -> tuple[ServerCredentials, StationAccount, str]:
    server_password, station_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    server = ServerCredentials("loaxa-server", server_password, hash_password(server_password))
    station = StationAccount("st-drop", "st-drop", hash_password(station_password), ("01273",))
    (tmp_path / "passwd").write_text(passwd_text([station], server))
    (tmp_path / "acl").write_text(acl_text([station], server.username))
    return server, station, station_password


@pytest.fixture
def broker(tmp_path: Path, accounts: object) -> Iterator[MosquittoBroker]:
    config = "\n".join(
        [
            f"password_file {tmp_path / 'passwd'}",
            f"acl_file {tmp_path / 'acl'}",
            f"max_queued_messages {QUEUE_LIMIT}",
            "sys_interval 1",
        ]
    )
    with MosquittoBroker(workdir=tmp_path / "mosquitto", extra_config=config) as running:
        yield running


def test_messages_the_broker_drops_for_a_stalled_client_are_counted_by_the_server(
    tmp_path: Path,
    broker: MosquittoBroker,
    accounts: tuple[ServerCredentials, StationAccount, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _station, _password = accounts
    settings = Settings(
        data_dir=tmp_path / "server",
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        mqtt_username=server.username,
        mqtt_password=server.password,
    )
    link = FleetLink(settings, on_messages=lambda _batch: None)
    link.start()
    try:
        assert link.wait_connected(10)
        deadline = time.monotonic() + 5
        while link.broker_dropped is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert link.broker_dropped == 0, "the server account reads the broker's drop counter"

        server_account = {"username": server.username, "password": server.password}
        caplog.set_level(logging.WARNING, logger="server.fleet.link")
        with (
            MqttProbe(broker, topics.ALL_HEALTH, qos=0, **server_account) as stalled,
            MqttProbe(broker, topics.status("st-drop"), **server_account) as sender,
        ):
            # A subscriber that stops reading: the broker fills its socket, then its queue.
            stalled.client.loop_stop()
            for _ in range(FLOOD):
                sender.client.publish(topics.health("st-drop"), PAYLOAD, qos=0)
            deadline = time.monotonic() + 15
            while not link.broker_dropped and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        link.stop()
    assert link.broker_dropped and link.broker_dropped > 0
    assert any("the broker dropped" in r.getMessage() for r in caplog.records)


def test_a_station_account_cannot_read_the_broker_counters(
    broker: MosquittoBroker, accounts: tuple[ServerCredentials, StationAccount, str]
) -> None:
    _server, station, password = accounts
    wanted = [topics.BROKER_DROPPED, "$SYS/#"]
    with MqttProbe(broker, wanted, username=station.username, password=password) as probe:
        time.sleep(2.5)  # two sys intervals: a granted subscription would have had them
        assert probe.messages == []
