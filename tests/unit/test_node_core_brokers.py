"""Broker fail-over along the configured addresses (pure logic)."""

from __future__ import annotations

import pytest

from loaxa_protocol.station_config import MqttConfig
from node_firmware.core.brokers import BrokerRotation

A, B, C = ("10.0.0.1", 8883), ("10.0.0.2", 8883), ("broker-3.example", 8884)


def test_each_ended_attempt_moves_on_round_the_list() -> None:
    rotation = BrokerRotation((A, B, C))
    seen = []
    for _ in range(4):
        seen.append(rotation.current)
        rotation = rotation.attempt_ended()
    assert seen == [A, B, C, A]


def test_a_single_address_is_always_dialled_and_none_is_a_config_bug() -> None:
    assert BrokerRotation((A,)).attempt_ended().current == A
    with pytest.raises(ValueError, match="at least one"):
        BrokerRotation(())


def test_the_station_config_lists_fallbacks_after_its_main_address() -> None:
    cfg = MqttConfig.model_validate(
        {"host": A[0], "port": A[1], "fallbacks": [{"host": B[0], "port": B[1]}]}
    )
    assert [(cfg.host, cfg.port), *((f.host, f.port) for f in cfg.fallbacks)] == [A, B]
    assert MqttConfig().fallbacks == []  # one broker, as before
    with pytest.raises(ValueError, match="port"):
        MqttConfig.model_validate({"fallbacks": [{"host": "x"}]})
