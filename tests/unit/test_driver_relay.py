"""Relay drivers against a simulated board on a real pseudo-terminal (no mocked Serial)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import serial

from loaxa_protocol.errors import ConfigError, RelayError
from node_firmware.config import RelayConfig
from node_firmware.drivers.relay import Ch340Relay, LineRelay, NullRelay, open_relay
from node_firmware.drivers.relay_sim import SimulatedRelayBoard


def wait_for(condition: Callable[[], bool], timeout_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


@pytest.fixture
def ch340_board() -> Iterator[SimulatedRelayBoard]:
    board = SimulatedRelayBoard()
    yield board
    board.close()


@pytest.fixture
def line_board() -> Iterator[SimulatedRelayBoard]:
    board = SimulatedRelayBoard(protocol="line")
    yield board
    board.close()


def switches(board: SimulatedRelayBoard) -> list[tuple[int, bool]]:
    return [(channel, on) for _, channel, on in board.history]


def test_ch340_frames_reach_the_board(ch340_board: SimulatedRelayBoard) -> None:
    relay = Ch340Relay(ch340_board.port, channel=2)
    before = time.time()
    relay.set(True)
    relay.set(False)
    wait_for(lambda: len(ch340_board.history) == 2)
    relay.close()

    assert switches(ch340_board) == [(2, True), (2, False)]
    assert all(at >= before for at, _, _ in ch340_board.history)
    assert ch340_board.state == {2: False}
    assert ch340_board.bad_frames == 0


def test_board_counts_bad_checksums_and_resynchronises(ch340_board: SimulatedRelayBoard) -> None:
    with serial.Serial(ch340_board.port, 9600, timeout=1) as port:
        port.write(bytes([0xA0, 0x01, 0x01, 0x00]) + bytes([0xA0, 0x01, 0x01, 0xA2]))
        port.flush()
        wait_for(lambda: len(ch340_board.history) == 1)

    assert switches(ch340_board) == [(1, True)]
    assert ch340_board.bad_frames == 1


def test_unplugged_board_raises_and_replugging_recovers(ch340_board: SimulatedRelayBoard) -> None:
    relay = Ch340Relay(ch340_board.port)
    relay.set(True)

    ch340_board.unplug()
    with pytest.raises(RelayError, match="Input/output error"):
        relay.set(False)  # the open handle now fails
    with pytest.raises(RelayError, match="could not open port"):
        relay.set(False)  # and the port is gone

    ch340_board.replug()
    relay.set(False)
    wait_for(lambda: ch340_board.state.get(1) is False)
    relay.close()
    assert switches(ch340_board) == [(1, True), (1, False)]


def test_line_relay_switches_and_reads_status(line_board: SimulatedRelayBoard) -> None:
    relay = LineRelay(line_board.port, channel=1, reply_timeout_s=0.5)

    assert relay.status() == {"amp": False, "current_ma": 0, "temp_c": 41.5}
    relay.set(True)
    assert switches(line_board) == [(1, True)]
    assert relay.status() == {"amp": True, "current_ma": 850, "temp_c": 41.5}

    line_board.fail_current()
    assert relay.status()["current_ma"] == 0  # amp on but drawing nothing: an alarm

    relay.set(False)
    assert switches(line_board) == [(1, True), (1, False)]
    relay.close()


def test_line_relay_reports_what_the_board_said(line_board: SimulatedRelayBoard) -> None:
    relay = LineRelay(line_board.port, reply_timeout_s=0.2)

    line_board.inject_reply("ERR overheated\n")
    with pytest.raises(RelayError, match="'ERR overheated', expected OK"):
        relay.set(True)

    line_board.inject_reply("")
    with pytest.raises(RelayError, match="no answer"):
        relay.set(True)

    line_board.inject_reply("STATUS amp\n")
    with pytest.raises(RelayError, match="malformed status field 'amp'"):
        relay.status()

    relay.set(True)  # the board is fine again, and so is the driver
    relay.close()


def test_open_relay_builds_each_driver() -> None:
    relay, board = open_relay(RelayConfig(driver="sim", channel=3))
    assert isinstance(relay, Ch340Relay) and board is not None
    try:
        relay.set(True)
        wait_for(lambda: board.state == {3: True})
    finally:
        relay.close()
        board.close()

    assert isinstance(open_relay(RelayConfig())[0], NullRelay)
    assert isinstance(open_relay(RelayConfig(driver="line", port="/dev/null"))[0], LineRelay)
    with pytest.raises(ConfigError, match=r"relay\.port"):
        open_relay(RelayConfig(driver="ch340"))


def test_null_relay_accepts_everything() -> None:
    relay = NullRelay()
    relay.set(True)
    relay.set(False)
    relay.close()
