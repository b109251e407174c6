"""Amplifier relay drivers: the only code that speaks to the relay board.

Every driver turns its failures into ``RelayError`` (the agent turns that into a
``RelayFailed`` input and the core decides about retries). Serial drivers open the
port lazily and drop it on any serial error, so the next call reopens it: a
technician re-plugging the USB board is all the recovery needed.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager
from typing import Protocol

import serial

from loaxa_protocol.errors import ConfigError, RelayError
from node_firmware.config import RelayConfig
from node_firmware.drivers.relay_gpio import open_gpio_relay
from node_firmware.drivers.relay_sim import SimulatedRelayBoard, ch340_frame
from node_firmware.drivers.serial_port import LazySerialPort

log = logging.getLogger(__name__)

StatusValue = bool | int | float | str


class Relay(Protocol):
    """Switches the amplifier of one station."""

    def set(self, on: bool) -> None:
        """Switch the amplifier; raises ``RelayError`` if the board is gone or refuses."""

    def close(self) -> None:
        """Release the port; the relay stays in its last state."""


class _SerialRelay:
    """Lazy open, one lock, and drop-and-reopen on serial errors."""

    def __init__(self, port: str, channel: int, baudrate: int, timeout_s: float) -> None:
        if not 1 <= channel <= 0xFF:
            raise ValueError(f"relay channel must be 1..255, got {channel}")
        self.port = port
        self.channel = channel
        self.baudrate = baudrate
        self._timeout_s = timeout_s
        self._link = LazySerialPort("relay board", port, baudrate, timeout_s, RelayError)

    def _talking(self, what: str) -> AbstractContextManager[serial.Serial]:
        return self._link.talking(what)

    def close(self) -> None:
        self._link.close()


class Ch340Relay(_SerialRelay):
    """CH340 "LCUS" USB relay boards: write-only binary frames ``A0 <ch> <state> <sum>``.

    These boards never answer, so success means only that the USB device took the
    bytes; an unplugged board is still detected because the write fails.
    """

    def __init__(
        self, port: str, channel: int = 1, baudrate: int = 9600, timeout_s: float = 1.0
    ) -> None:
        super().__init__(port, channel, baudrate, timeout_s)

    def set(self, on: bool) -> None:
        frame = ch340_frame(self.channel, on)
        with self._talking(f"switching {'on' if on else 'off'}") as port:
            port.write(frame)
            port.flush()
        log.debug("relay %s channel %s -> %s", self.port, self.channel, on)


class LineRelay(_SerialRelay):
    """Line-protocol microcontroller: ``RELAY <ch> ON|OFF`` answered by ``OK``.

    It can also report the amplifier's current and temperature (``STATUS?``), which
    is how a blown amplifier is told apart from a switched-off one.
    """

    def __init__(
        self,
        port: str,
        channel: int = 1,
        baudrate: int = 9600,
        reply_timeout_s: float = 1.0,
    ) -> None:
        super().__init__(port, channel, baudrate, reply_timeout_s)

    def set(self, on: bool) -> None:
        command = f"RELAY {self.channel} {'ON' if on else 'OFF'}"
        reply = self._ask(command)
        if reply != "OK":
            raise RelayError(
                f"relay board on {self.port}: {command!r} got {_describe(reply, 'OK')}"
            )

    def status(self) -> dict[str, StatusValue]:
        """Parse ``STATUS amp=on current_ma=850 temp_c=41.5`` into typed values.

        Unknown keys are kept, so newer board firmware does not break older agents.
        """
        reply = self._ask("STATUS?")
        head, _, rest = reply.partition(" ")
        if head != "STATUS":
            raise RelayError(
                f"relay board on {self.port}: 'STATUS?' got {_describe(reply, 'STATUS ...')}"
            )
        result: dict[str, StatusValue] = {}
        for token in rest.split():
            key, sep, value = token.partition("=")
            if not sep or not key:
                raise RelayError(
                    f"relay board on {self.port}: malformed status field {token!r} in {reply!r}"
                )
            result[key] = _parse_value(value)
        return result

    def _ask(self, command: str) -> str:
        with self._talking(repr(command)) as port:
            port.reset_input_buffer()  # a late answer to an earlier command is stale
            port.write(f"{command}\n".encode("ascii"))
            port.flush()
            raw = bytes(port.read_until(b"\n"))
        return raw.decode("ascii", "replace").strip()


class NullRelay:
    """For stations whose amplifier is always on (no board fitted)."""

    def set(self, on: bool) -> None:
        log.debug("no relay board; amplifier %s ignored", "on" if on else "off")

    def close(self) -> None:
        """Nothing to release."""


def open_relay(cfg: RelayConfig) -> tuple[Relay, SimulatedRelayBoard | None]:
    """Build the configured relay; with ``sim`` also the board (the caller closes both)."""
    if cfg.driver == "none":
        return NullRelay(), None
    if cfg.driver == "sim":
        board = SimulatedRelayBoard()
        return Ch340Relay(board.port, cfg.channel, cfg.baudrate), board
    if cfg.driver == "sim-line":
        board = SimulatedRelayBoard(protocol="line")
        return LineRelay(board.port, cfg.channel, cfg.baudrate), board
    if cfg.driver == "gpio":
        return open_gpio_relay(cfg), None
    if cfg.port is None:
        raise ConfigError(f"relay.port is required for relay driver {cfg.driver!r}")
    if cfg.driver == "ch340":
        return Ch340Relay(cfg.port, cfg.channel, cfg.baudrate), None
    return LineRelay(cfg.port, cfg.channel, cfg.baudrate), None


def _describe(reply: str, expected: str) -> str:
    return f"{reply!r}, expected {expected}" if reply else "no answer before the timeout"


def _parse_value(text: str) -> StatusValue:
    if text in ("on", "off"):
        return text == "on"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text
