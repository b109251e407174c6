"""The GPIO relay driver on real gpiozero objects behind gpiozero's mock pin factory.

The pin's electrical level is read back from the factory's pin, as a multimeter on the
header would; the driver's own readback is checked against it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from gpiozero import OutputDevice
from gpiozero.pins.mock import MockFactory, MockPin

from loaxa_protocol.errors import ConfigError, RelayError
from node_firmware.config import RelayConfig
from node_firmware.drivers.relay import open_relay
from node_firmware.drivers.relay_gpio import GpioRelay


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    pins = MockFactory()
    yield pins
    pins.close()


def level(factory: MockFactory, pin: int) -> bool:
    """The electrical level on the header pin (True = 3.3 V)."""
    return bool(factory.pin(pin).state)


def test_active_high_module_follows_the_amplifier(factory: MockFactory) -> None:
    relay = GpioRelay(17, active_low=False, pin_factory=factory)
    relay.set(True)
    assert level(factory, 17) is True
    assert relay.is_on() is True
    relay.set(False)
    assert level(factory, 17) is False
    assert relay.is_on() is False
    relay.close()


def test_active_low_module_is_driven_low_to_switch_on(factory: MockFactory) -> None:
    relay = GpioRelay(27, active_low=True, pin_factory=factory)
    relay.set(False)
    assert level(factory, 27) is True, "an active-low module idles HIGH: amplifier off"
    relay.set(True)
    assert level(factory, 27) is False
    assert relay.is_on() is True
    relay.close()


def test_opening_the_pin_leaves_the_amplifier_off(factory: MockFactory) -> None:
    relay = GpioRelay(22, active_low=True, pin_factory=factory)
    assert relay.is_on() is False
    assert level(factory, 22) is True


def test_a_pin_held_by_another_program_is_a_clear_relay_error(factory: MockFactory) -> None:
    other = OutputDevice(17, pin_factory=factory)
    relay = GpioRelay(17, pin_factory=factory)
    with pytest.raises(RelayError, match=r"BCM 17.*cannot open the pin.*in use"):
        relay.set(True)

    other.close()  # the other program lets go: the next switch reopens the pin
    relay.set(True)
    assert level(factory, 17) is True
    relay.close()


class StuckLowPin(MockPin):
    """A pin whose driver transistor is shorted to ground: writes do not take."""

    def _set_state(self, value: object) -> None:
        super()._set_state(False)


def test_a_pin_that_does_not_follow_is_refused_on_readback() -> None:
    stuck = MockFactory(pin_class=StuckLowPin)
    relay = GpioRelay(17, pin_factory=stuck)
    with pytest.raises(RelayError, match=r"switched on but the pin reads back off"):
        relay.set(True)
    relay.set(False)  # the level it is stuck at is accepted
    relay.close()
    stuck.close()


def test_a_machine_without_gpio_reports_why_the_pin_cannot_be_opened() -> None:
    """This build host has no /dev/gpiochip: as on a Pi whose header cannot be reached."""
    relay = GpioRelay(17, active_low=True)
    with pytest.raises(
        RelayError, match=r"GPIO relay on BCM 17 \(active-low\): cannot open the pin: no GPIO chip"
    ):
        relay.set(True)


def test_config_selects_the_gpio_driver() -> None:
    relay, board = open_relay(RelayConfig(driver="gpio", pin=5, active_low=True))
    assert isinstance(relay, GpioRelay)
    assert (relay.pin, relay.active_low, board) == (5, True, None)
    with pytest.raises(ConfigError, match=r"relay\.pin"):
        open_relay(RelayConfig(driver="gpio"))
    with pytest.raises(ValueError, match="pin"):
        RelayConfig(driver="gpio", pin=40)


def test_stations_without_a_gpio_relay_never_import_gpiozero() -> None:
    code = (
        "import sys\n"
        "import node_firmware.agent\n"
        "from node_firmware.config import RelayConfig\n"
        "from node_firmware.drivers.relay import open_relay\n"
        "relay, board = open_relay(RelayConfig(driver='sim'))\n"
        "relay.set(True); relay.close(); board.close()\n"
        "open_relay(RelayConfig(driver='gpio', pin=17))\n"
        "print('gpiozero' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
