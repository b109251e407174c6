"""Shared fixtures: real Mosquitto brokers and MQTT probes (see tests/brokers.py).

paho and the broker helpers are imported inside the fixtures, not here, so that a
unit test can still prove that the cores import without paho.

Fixtures
--------
``production_mosquitto``  a fresh broker running the config ``loaxa broker config``
                       generates: per-station accounts, the ACL, TLS, persistence. Use it
                       for every test with stations: ``LocalStack.on_broker(dir, broker)``
                       admits each registered station (re-generate + SIGHUP), and
                       ``tests.brokers.admit_station`` gives a server-less station an
                       account. ``mqtt_probe`` signs in there as the server.
``mosquitto``          a fresh open broker (anyone may do anything) for tests of MQTT
                       behaviour without stations (stop/start/kill it freely)
``mosquitto_session``  one broker for the whole run; use unique topics, never stop it
``mosquitto_factory``  ``make(persistence=False)`` → more brokers for this test
``mqtt_probe``         ``probe(broker, topics="#", **kw)`` → a started MqttProbe
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.brokers import BrokerAddress, MosquittoBroker, MqttProbe, ProductionMosquitto


def _print_log_tail(broker: MosquittoBroker) -> None:
    # Shown by pytest only when the test failed (teardown output is captured).
    print(f"--- mosquitto {broker.host}:{broker.port} log (tail) ---")
    print(broker.log_text()[-4000:])


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A real mosquitto on a free port, private to this test.

    ``.host``, ``.port``, ``.stop(hard=False)``, ``.start()`` (same port),
    ``.log_text()``; it is killed at teardown whatever state the test left it in.
    """
    from tests.brokers import running_mosquitto

    with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker
        _print_log_tail(broker)


@pytest.fixture
def production_mosquitto(tmp_path: Path) -> Iterator[ProductionMosquitto]:
    """A real mosquitto running exactly what ``loaxa broker config`` writes, for this test.

    ``.host``/``.port`` (plain, loopback: the server's), ``.tls_port`` and ``.ca_file``
    (stations'), ``.server_credentials``, ``.load(accounts)`` / ``.load_database(url)``
    (re-generate and reload), ``.stop(hard=False)``/``.start()`` (same ports; retained
    messages and sessions persist, as in production), ``.log_text()``.
    """
    from tests.brokers import running_production_mosquitto

    with running_production_mosquitto(tmp_path / "broker") as broker:
        yield broker
        _print_log_tail(broker)


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One mosquitto shared by the whole run, for tests that only publish and subscribe.

    Cheaper than ``mosquitto`` but shared: use topics and client ids unique to the test
    and never stop it.
    """
    from tests.brokers import running_mosquitto

    with running_mosquitto(tmp_path_factory.mktemp("mosquitto-session")) as broker:
        yield broker


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """``make(persistence=False)`` starts another private mosquitto, killed at teardown."""
    from tests.brokers import running_mosquitto

    with ExitStack() as stack:
        count = 0

        def make(persistence: bool = False) -> MosquittoBroker:
            nonlocal count
            count += 1
            workdir = tmp_path / f"mosquitto-{count}"
            return stack.enter_context(running_mosquitto(workdir, persistence=persistence))

        yield make


@pytest.fixture
def mqtt_probe() -> Iterator[Callable[..., MqttProbe]]:
    """``probe(broker, topics="#", qos=1, client_id=..., clean_session=True, username=...)``.

    On a production broker the probe signs in as the server unless given a username.

    Returns a started :class:`tests.brokers.MqttProbe` (subscribed, SUBACK received);
    every probe made is closed at teardown.
    """
    from tests.brokers import MqttProbe

    probes: list[MqttProbe] = []

    def make(broker: BrokerAddress, topics: str | list[str] = "#", **kwargs: Any) -> MqttProbe:
        probe = MqttProbe(broker, topics, **kwargs)
        probes.append(probe)
        return probe.start()

    yield make
    for probe in probes:
        probe.close()
