"""The command line as a person runs it: real subprocesses, real output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

LOAXA = [sys.executable, "-m", "loaxa"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LOAXA, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


TIME = r"(\d\d:\d\d:\d\d\.\d{3})"


def test_demo_plays_a_bulletin_a_programme_and_a_drill_on_every_station() -> None:
    """The whole story in one command, read the way a person reads the screen."""
    began = time.monotonic()
    result = subprocess.run(
        [*LOAXA, "demo", "--broker", "amqtt", "--lead", "4", "--exit-when-done"],
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120"},
    )
    took = time.monotonic() - began
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "(amqtt)" in out

    # 1. The bulletin played everywhere.
    assert "3/3 trạm đã phát xong" in out

    # 2. The programme: the typed notice is read with its numbers and abbreviations
    # expanded, a second user approved it, and both sounding items played on each station.
    assert "«UBND phường thông báo: ngày 5/12" in out
    assert "Ủy ban nhân dân phường thông báo: ngày năm tháng mười hai" in out
    assert "Đã duyệt: đang phát theo lịch (người duyệt: pheduyet)" in out
    assert "admin tự duyệt? bị từ chối (403)" in out  # who submits may not approve
    assert "phải do một người phê duyệt khác duyệt" in out  # said in Vietnamese…
    assert "permission denied" not in out and "approver" not in out  # …not in English
    assert "(admin) →" in out  # submitted by the administrator, approved by the second user
    for item in ("Nhạc hiệu", "Thông báo tiêm phòng"):
        assert f"{item}: 3/3 trạm đã phát" in out, out
        rows = re.findall(
            rf"│ (st-\S+)\s+│ {item}\s+│ {TIME} │ đã phát xong │ {TIME} │ {TIME}", out
        )
        assert len({row[0] for row in rows}) == 3, out
        for _station, due, started, finished in rows:
            assert due <= started < finished

    # 3. The drill: sent as a drill, it cut the long bulletin on every station, each of
    # which reported received, playing and finished on its own clock, in that order.
    assert "diễn tập, trạng thái «Đang phát»" in out and "DIỄN TẬP" in out
    assert "drill=" not in out and "trạng thái active" not in out
    rows = re.findall(
        rf"│ (st-\S+)\s+│ bị ngắt\s+│ đã phát xong\s+│ {TIME} │ {TIME}\s+│ {TIME}", out
    )
    assert len({row[0] for row in rows}) == 3, out
    for _station, received, playing, finished in rows:
        assert received <= playing < finished
    latencies = re.findall(r"│ (st-\S+)\s+│ (\d+) ms\s+│ (\d+) ms\s+│ (\d+) ms\s+│ (\d+) ms", out)
    assert len(latencies) == 3, out
    for _station, to_received, _to_playing, to_playing, to_finished in latencies:
        assert int(to_received) <= int(to_playing) < 2000  # API call → playing
        assert int(to_finished) > 7_000  # the tone and the flood message, played in full

    # 4. The as-run report agrees: per station 4 items planned, 3 played, 1 cut by the
    # drill, nothing failed or missed, no real emergency, and the drill itself played
    # (counted apart, as the province's report counts it).
    as_run = re.findall(
        r"│ (st-\S+)\s+│\s+(\d+) │\s+(\d+) │\s+(\d+) │\s+(\d+) │\s+(\d+) │\s+(\d+/\d+) │"
        r"\s+(\d+/\d+) │",
        out,
    )
    assert sorted(row[1:] for row in as_run) == [("4", "3", "1", "0", "0", "0/0", "1/1")] * 3, out
    assert out.count("✔") == 4 and "✘" not in out, out
    print(f"loaxa demo --lead 4: {took:.0f} s")  # 65 s measured on the shared 2-core machine


def test_node_with_a_broken_config_says_what_and_where(tmp_path: Path) -> None:
    config = tmp_path / "station.yaml"
    config.write_text("station_id: cb-1\ndata_dir: /tmp/x\ntrusted_keys: []\nrelay: {drver: sim}\n")
    result = run("node", "--config", str(config), timeout=30)
    assert result.returncode == 2
    assert "station.yaml" in result.stderr and "relay.drver" in result.stderr


def test_ctrl_c_stops_the_demo_cleanly() -> None:
    """Ctrl-C in the middle of a step (after the bulletin, as the programme is being made)
    stops the stations, the server and the broker without a traceback."""
    demo = subprocess.Popen(
        [*LOAXA, "demo", "--lead", "3"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert demo.stdout is not None
    seen = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if "2. Chương trình" in line:
                break
        assert any("3/3" in line for line in seen), "".join(seen)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(15) == 0
        rest = demo.stdout.read()
        assert "Đang dừng" in rest and "Traceback" not in rest, rest
    finally:
        if demo.poll() is None:
            demo.kill()


def test_audit_verify_says_when_there_is_no_log(tmp_path: Path) -> None:
    result = run("audit", "verify", "--database-url", f"sqlite:///{tmp_path}/none.db", timeout=60)
    assert result.returncode == 2
    assert "no database" in result.stdout
