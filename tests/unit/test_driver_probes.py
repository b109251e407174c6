"""Health probes read the real system, a thermal tree we lay out on disk, a simulated
relay board on a real pty, and stand-ins for ``timedatectl``/``chronyc``."""

from __future__ import annotations

import logging
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from loaxa_protocol import Health
from node_firmware.drivers import probes
from node_firmware.drivers.audio_cache import AudioCache
from node_firmware.drivers.clock_probe import Runner, ntp_synchronised
from node_firmware.drivers.probes import amp_readback, cpu_temp_c, mem_used_pct, system_health
from node_firmware.drivers.relay import Ch340Relay, LineRelay, NullRelay
from node_firmware.drivers.relay_sim import SimulatedRelayBoard


def zone(root: Path, index: int, kind: str, millidegrees: str) -> None:
    folder = root / f"thermal_zone{index}"
    folder.mkdir(parents=True)
    (folder / "type").write_text(f"{kind}\n")
    (folder / "temp").write_text(f"{millidegrees}\n")


def test_system_health_fills_health_fields(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=1000)
    thermal = tmp_path / "thermal"
    zone(thermal, 0, "cpu-thermal", "48312")

    probes = system_health(cache, thermal_root=thermal)

    assert isinstance(probes["uptime_s"], float) and probes["uptime_s"] > 0
    assert isinstance(probes["disk_free_bytes"], int) and probes["disk_free_bytes"] > 0
    assert probes["cpu_temp_c"] == 48.312
    health = Health.model_validate(
        {"station_id": "cb-001", "at": datetime.now(UTC), "agent_version": "t", "amp_on": False,
         "relay_ok": True, **probes}
    )  # fmt: skip
    assert health.cpu_temp_c == 48.312


def test_cpu_zone_is_preferred_and_missing_sensors_are_none(tmp_path: Path) -> None:
    zone(tmp_path, 0, "acpitz", "30000")
    zone(tmp_path, 1, "x86_pkg_temp", "55000")
    zone(tmp_path, 2, "broken", "n/a")
    assert cpu_temp_c(tmp_path) == 55.0
    assert cpu_temp_c(tmp_path / "no-such-dir") is None


# ------------------------------------------------------------- system_health
HEALTH_KEYS = {
    "uptime_s", "disk_free_bytes", "disk_total_bytes", "cpu_temp_c", "load_1m",
    "mem_used_pct", "ntp_synced",
}  # fmt: skip


def test_system_health_on_this_machine_is_sane(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=1000)
    thermal = tmp_path / "thermal"
    zone(thermal, 0, "cpu-thermal", "48500")

    probes = system_health(cache, thermal_root=thermal)

    assert set(probes) == HEALTH_KEYS and set(Health.model_fields) >= HEALTH_KEYS
    free, total = probes["disk_free_bytes"], probes["disk_total_bytes"]
    assert isinstance(free, int) and isinstance(total, int) and 0 <= free <= total
    assert probes["cpu_temp_c"] == 48.5
    assert isinstance(probes["load_1m"], float) and probes["load_1m"] >= 0
    mem = probes["mem_used_pct"]
    assert isinstance(mem, float) and 0 <= mem <= 100
    assert isinstance(probes["uptime_s"], float) and probes["uptime_s"] > 0
    assert probes["ntp_synced"] in (True, False, None)
    health = Health.model_validate(
        {"station_id": "cb-001", "at": datetime.now(UTC), "agent_version": "t", "amp_on": False,
         "relay_ok": True, **probes}
    )  # fmt: skip
    assert health.disk_total_bytes == total


def test_memory_in_use_is_read_from_proc_as_psutil_counts_it(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:        4000000 kB\nMemFree:          500000 kB\n"
        "MemAvailable:    3000000 kB\nHugePages_Total:       0\n"
    )
    assert mem_used_pct(meminfo) == 25.0
    assert abs(mem_used_pct() - psutil.virtual_memory().percent) < 2  # this machine, now


def test_a_failing_probe_gives_none_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=1000)

    def broken() -> float:
        raise RuntimeError("sensor on fire")

    monkeypatch.setattr(probes, "mem_used_pct", broken)
    with caplog.at_level(logging.WARNING, logger="node_firmware.drivers.probes"):
        first = system_health(cache, thermal_root=tmp_path / "none")
        second = system_health(cache, thermal_root=tmp_path / "none")

    assert first["mem_used_pct"] is None and second["mem_used_pct"] is None
    assert first["disk_free_bytes"] is not None and first["cpu_temp_c"] is None
    assert [r.getMessage() for r in caplog.records] == [
        "health probe mem_used_pct failed, reporting None until it works: sensor on fire"
    ]
    monkeypatch.undo()
    assert system_health(cache)["mem_used_pct"] is not None  # recovers, re-arms the warning


def runner(replies: dict[str, tuple[int, str] | BaseException]) -> Runner:
    """A ``subprocess.run`` stand-in answering by program name; unknown = not installed."""

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert kwargs["timeout"] == 2.0
        reply = replies.get(argv[0], FileNotFoundError(2, "No such file", argv[0]))
        if isinstance(reply, BaseException):
            raise reply
        code, out = reply
        return subprocess.CompletedProcess(argv, code, stdout=out, stderr="")

    return run


CHRONY_OK = "Reference ID    : C0A80001 (router)\nLeap status     : Normal\n"
HUNG = subprocess.TimeoutExpired("timedatectl", 2.0)
CHRONY_UNSYNCED = "Reference ID    : 00000000 ()\nLeap status     : Not synchronised\n"


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ({"timedatectl": (0, "yes\n"), "chronyc": (0, CHRONY_UNSYNCED)}, True),
        ({"timedatectl": (0, "no\n"), "chronyc": (0, CHRONY_OK)}, False),
        ({"chronyc": (0, CHRONY_OK)}, True),
        ({"chronyc": (0, CHRONY_UNSYNCED)}, False),
        ({"timedatectl": (1, ""), "chronyc": (0, CHRONY_OK)}, True),
        ({"timedatectl": HUNG, "chronyc": (0, CHRONY_OK)}, True),
        ({"chronyc": (1, "506 Cannot talk to daemon")}, None),
        ({"chronyc": (0, "nonsense")}, None),
        ({}, None),
    ],
    ids=[
        "timedatectl-yes", "timedatectl-no", "chrony-normal", "chrony-unsynced",
        "timedatectl-fails", "timedatectl-hangs", "chrony-no-daemon", "chrony-garbage", "neither",
    ],
)  # fmt: skip
def test_ntp_synchronised_asks_systemd_then_chrony(
    replies: dict[str, tuple[int, str] | BaseException], expected: bool | None
) -> None:
    assert ntp_synchronised(runner(replies)) is expected


# ------------------------------------------------------------- amplifier readback
def test_amp_readback_from_a_line_board() -> None:
    board = SimulatedRelayBoard(protocol="line")
    relay = LineRelay(board.port)
    try:
        relay.set(True)
        assert amp_readback(relay) == {"amp_on": True, "amp_current_ma": 850.0, "amp_temp_c": 41.5}
        board.fail_current()
        assert amp_readback(relay) == {"amp_on": True, "amp_current_ma": 0.0, "amp_temp_c": 41.5}
        relay.set(False)
        assert amp_readback(relay) == {"amp_on": False, "amp_current_ma": 0.0, "amp_temp_c": 41.5}
        board.inject_reply("ERR busy\n")
        assert amp_readback(relay) is None  # the relay fault path reports it
    finally:
        relay.close()
        board.close()


def test_amp_readback_is_none_for_boards_that_cannot_report() -> None:
    board = SimulatedRelayBoard()  # a CH340 board only listens
    try:
        assert amp_readback(Ch340Relay(board.port)) is None
    finally:
        board.close()
    assert amp_readback(NullRelay()) is None
