"""A relay module wired straight to a Raspberry Pi's GPIO header (gpiozero over lgpio).

gpiozero is imported only when a station's config asks for ``driver: gpio``: the core
and every other station never load it. The pin is opened lazily and dropped on any
GPIO error, like the serial boards: a station whose pin cannot be opened (no GPIO
chip, the pin held by another program, lgpio missing) still starts, reports the relay
fault, and tries again at the next switch.

What the readback can and cannot tell: after switching, the driver reads the pin's
level back through gpiozero and refuses a pin that did not follow (a pin claimed or
driven by something else). A relay module unplugged from the header is invisible to
the Pi: the pin still drives its level into nothing (``docs/station.md``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from loaxa_protocol.errors import ConfigError, RelayError
from node_firmware.config import RelayConfig

if TYPE_CHECKING:
    from gpiozero import Factory, OutputDevice

log = logging.getLogger(__name__)

GPIO_PIN_MAX = 27
"""BCM numbers 0..27 are the GPIOs on the 40-pin header of every Pi since the B+."""


class GpioRelay:
    """Switches the amplifier through one GPIO pin, active-high or active-low.

    Many cheap opto-isolated relay modules switch ON when their input is pulled LOW
    (``active_low=True``); the pin then idles high so the amplifier stays off.
    """

    def __init__(
        self, pin: int, active_low: bool = False, pin_factory: Factory | None = None
    ) -> None:
        if not 0 <= pin <= GPIO_PIN_MAX:
            raise ValueError(f"relay GPIO pin must be a BCM number 0..{GPIO_PIN_MAX}, got {pin}")
        self.pin = pin
        self.active_low = active_low
        self._pin_factory = pin_factory
        self._device: OutputDevice | None = None

    def set(self, on: bool) -> None:
        device = self._open()
        try:
            if on:
                device.on()
            else:
                device.off()
            level = bool(device.value)
        except Exception as exc:  # gpiozero and lgpio raise several unrelated types
            self.close()
            raise RelayError(f"{self._name()}: switching {_word(on)} failed: {exc}") from exc
        if level != on:
            self.close()
            raise RelayError(
                f"{self._name()}: switched {_word(on)} but the pin reads back {_word(level)} "
                "(is another program driving it?)"
            )
        log.debug("%s -> %s", self._name(), _word(on))

    def is_on(self) -> bool:
        """The amplifier state as the pin reads back (active-low already accounted for)."""
        device = self._open()
        try:
            return bool(device.value)
        except Exception as exc:
            self.close()
            raise RelayError(f"{self._name()}: reading the pin failed: {exc}") from exc

    def close(self) -> None:
        """Release the pin; a Pi leaves the line at its last level."""
        if self._device is not None:
            device, self._device = self._device, None
            try:
                device.close()
            except Exception as exc:
                log.warning("%s: closing the pin failed: %s", self._name(), exc)

    def _open(self) -> OutputDevice:
        if self._device is not None:
            return self._device
        try:
            from gpiozero import BadPinFactory, OutputDevice
        except ImportError as exc:
            raise RelayError(
                f"{self._name()}: gpiozero is not installed ({exc}); "
                "install the station with its GPIO extra"
            ) from exc
        try:
            # initial_value=False: the amplifier stays off while the pin is claimed.
            self._device = OutputDevice(
                self.pin,
                active_high=not self.active_low,
                initial_value=False,
                pin_factory=self._pin_factory,
            )
        except BadPinFactory as exc:
            raise RelayError(
                f"{self._name()}: cannot open the pin: no GPIO chip answers ({exc}); "
                "is this a Raspberry Pi with lgpio installed?"
            ) from exc
        except Exception as exc:
            raise RelayError(f"{self._name()}: cannot open the pin: {exc}") from exc
        log.info("%s opened", self._name())
        return self._device

    def _name(self) -> str:
        return (
            f"GPIO relay on BCM {self.pin} ({'active-low' if self.active_low else 'active-high'})"
        )


def _word(on: bool) -> str:
    return "on" if on else "off"


def open_gpio_relay(cfg: RelayConfig) -> GpioRelay:
    """The configured GPIO relay; the pin itself is opened at the first switch."""
    if cfg.pin is None:
        raise ConfigError("relay.pin (a BCM number) is required for relay driver 'gpio'")
    return GpioRelay(cfg.pin, cfg.active_low)
