"""A station whose GPIO relay cannot be opened tells the server why, and keeps running.

Real agent, real Mosquitto, real server; the relay is the real gpiozero driver on this
build host, which has no GPIO chip: the same as a Pi whose header cannot be reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loaxa.stack import LocalStack
from tests.integration.test_broker_security import wait_until


@pytest.fixture
def stack(tmp_path: Path, production_mosquitto: Any) -> Iterator[LocalStack]:
    with LocalStack.on_broker(tmp_path, production_mosquitto) as running:
        yield running


def test_a_gpio_relay_that_cannot_be_opened_is_reported_with_its_reason(
    stack: LocalStack,
) -> None:
    if Path("/dev/gpiochip0").exists():
        pytest.skip("this machine has a real GPIO chip: the pin would open")
    config = stack.register_station("Cụm loa GPIO", "01273", 22.666, 106.257)
    config = config.model_copy(
        update={"relay": config.relay.model_copy(update={"driver": "gpio", "pin": 17})}
    )
    node = stack.start_node(config)

    def relay_faults() -> list[dict]:
        events = stack.api("GET", f"/api/v1/stations/{node.station_id}/events")
        return [e for e in events if e["kind"] == "relay_fault"]

    (fault,) = wait_until(relay_faults, 20, "the relay fault to reach the server")
    assert "GPIO relay on BCM 17 (active-high): cannot open the pin" in fault["detail"]
    assert node.thread.is_alive()
    station = stack.api("GET", f"/api/v1/stations/{node.station_id}")
    assert station["status"] in {"online", "degraded"}
