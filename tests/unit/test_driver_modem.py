"""The modem driver against a simulated modem on a real pseudo-terminal (no mocked Serial)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import serial

from loaxa_protocol.errors import LoaxaError
from node_firmware.drivers.modem import Modem, ModemError, ModemReading, health_fields
from node_firmware.drivers.modem_sim import SimulatedModem


@pytest.fixture
def sim() -> Iterator[SimulatedModem]:
    modem = SimulatedModem()
    yield modem
    modem.close()


@pytest.fixture
def modem(sim: SimulatedModem) -> Iterator[Modem]:
    driver = Modem(sim.port, timeout_s=0.3)
    yield driver
    driver.close()


@pytest.mark.parametrize("echo", [True, False])
def test_reads_signal_and_operator_with_echo_on_and_off(echo: bool) -> None:
    sim = SimulatedModem(rssi=18, operator="Viettel", echo=echo)
    modem = Modem(sim.port, timeout_s=0.3)
    try:
        assert modem.read() == ModemReading(rssi_dbm=-77, csq=18, operator="Viettel")
        assert sim.commands == ["AT+CSQ", "AT+COPS?"]
    finally:
        modem.close()
        sim.close()


@pytest.mark.parametrize(
    ("csq", "rssi_dbm"), [(0, -113), (31, -51), (99, None)], ids=["weakest", "best", "unknown"]
)
def test_csq_maps_to_dbm_and_99_is_unknown(
    sim: SimulatedModem, modem: Modem, csq: int, rssi_dbm: int | None
) -> None:
    sim.set_signal(csq)
    reading = modem.read()
    assert reading.rssi_dbm == rssi_dbm
    assert reading.csq == (None if csq == 99 else csq)


def test_unregistered_modem_has_no_operator(sim: SimulatedModem, modem: Modem) -> None:
    sim.set_operator(None)
    assert modem.read().operator is None
    sim.set_operator("Vinaphone")
    assert modem.read().operator == "Vinaphone"


def test_echo_can_be_switched_by_command(sim: SimulatedModem) -> None:
    with serial.Serial(sim.port, 115200, timeout=0.3) as port:
        port.write(b"ATE0\r")
        assert port.read_until(b"OK\r\n") == b"ATE0\r\r\nOK\r\n"  # echoed before it applies
        port.write(b"AT\r")
        assert port.read_until(b"OK\r\n") == b"\r\nOK\r\n"
    assert sim.echo is False


def test_unknown_command_is_answered_error(sim: SimulatedModem) -> None:
    with serial.Serial(sim.port, 115200, timeout=0.3) as port:
        port.write(b"AT+FOO\r")
        assert port.read_until(b"ERROR\r\n") == b"AT+FOO\r\r\nERROR\r\n"


@pytest.mark.parametrize("answer", [b"\r\nERROR\r\n", b"\r\n+CME ERROR: 10\r\n"])
def test_error_answer_raises_with_port_and_command(
    sim: SimulatedModem, modem: Modem, answer: bytes
) -> None:
    sim.inject_reply(answer)
    with pytest.raises(ModemError, match="ERROR") as caught:
        modem.read()
    assert sim.port in str(caught.value) and "AT+CSQ" in str(caught.value)
    assert isinstance(caught.value, LoaxaError)
    assert modem.read().operator == "Viettel"  # the modem is fine again


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (b"\r\n+CSQ: banana\r\n\r\nOK\r\n", "malformed signal report"),
        (b"\r\n+CSQ: 45,99\r\n\r\nOK\r\n", "outside 0..31"),
        (b"\r\nRING\r\n\r\nOK\r\n", r"without \+CSQ: line"),
        (b"\xff\xfe\x00garbage", r"no OK to 'AT\+CSQ'"),
    ],
)
def test_garbage_raises(sim: SimulatedModem, modem: Modem, answer: bytes, complaint: str) -> None:
    sim.inject_reply(answer)
    with pytest.raises(ModemError, match=complaint):
        modem.read()


def test_unsolicited_lines_are_skipped(sim: SimulatedModem, modem: Modem) -> None:
    sim.inject_reply(b"AT+CSQ\r\r\n+CREG: 1\r\n\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
    assert modem.read().rssi_dbm == -73


def test_silent_modem_times_out_naming_the_port(sim: SimulatedModem, modem: Modem) -> None:
    sim.go_silent()
    with pytest.raises(ModemError, match=r"no OK to 'AT\+CSQ' within 0\.3 s") as caught:
        modem.read()
    assert sim.port in str(caught.value)

    sim.go_silent(False)
    assert modem.read().csq == 18


def test_unplugged_modem_raises_and_replugging_recovers(sim: SimulatedModem, modem: Modem) -> None:
    assert modem.read().csq == 18

    sim.unplug()
    with pytest.raises(ModemError, match=re.escape(sim.port)):
        modem.read()  # the open handle fails
    with pytest.raises(ModemError, match="could not open port"):
        modem.read()  # and the port is gone

    sim.replug()
    sim.set_signal(25)
    assert modem.read() == ModemReading(rssi_dbm=-63, csq=25, operator="Viettel")


def test_health_fields_match_the_health_message() -> None:
    reading = ModemReading(rssi_dbm=-77, csq=18, operator="Viettel")
    assert health_fields(reading) == {"modem_rssi_dbm": -77, "modem_operator": "Viettel"}
    assert health_fields(None) == {"modem_rssi_dbm": None, "modem_operator": None}
