"""The command line as a person runs it: real subprocesses, real output."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

LOAXA = [sys.executable, "-m", "loaxa"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LOAXA, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_demo_on_the_embedded_broker_plays_on_every_station() -> None:
    result = run("demo", "--broker", "amqtt", "--lead", "5", "--exit-when-done")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(amqtt)" in result.stdout
    assert "3/3 trạm đã phát xong" in result.stdout


def test_node_with_a_broken_config_says_what_and_where(tmp_path: Path) -> None:
    config = tmp_path / "station.yaml"
    config.write_text("station_id: cb-1\ndata_dir: /tmp/x\ntrusted_keys: []\nrelay: {drver: sim}\n")
    result = run("node", "--config", str(config), timeout=30)
    assert result.returncode == 2
    assert "station.yaml" in result.stderr and "relay.drver" in result.stderr


def test_ctrl_c_stops_the_demo_cleanly() -> None:
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
            if "Ctrl-C" in line:
                break
        assert any("3/3" in line for line in seen), "".join(seen)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(15) == 0
        rest = demo.stdout.read()
        assert "Traceback" not in rest, rest
    finally:
        if demo.poll() is None:
            demo.kill()


def test_audit_verify_says_when_there_is_no_log(tmp_path: Path) -> None:
    result = run("audit", "verify", "--database-url", f"sqlite:///{tmp_path}/none.db", timeout=60)
    assert result.returncode == 2
    assert "no database" in result.stdout
