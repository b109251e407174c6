"""``loaxa bench node``: the station agent's idle footprint, as a Pi would run it.

A real ``loaxa-node`` process (``python -m node_firmware`` with the service unit's
environment, as a Pi runs it; simulated relay and player, connected to a private
Mosquitto) is left idle and measured with psutil; a bare interpreter measured the same
way in the same run is the baseline. Measure a station's own venv (``--python``): its
packages are compiled to ``.pyc`` at install, where a checkout run with
``PYTHONDONTWRITEBYTECODE`` compiles every module at each start (about 1.5 MiB more).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from loaxa.broker import start_broker
from loaxa_protocol import SigningKey
from node_firmware.service_unit import SERVICE_ENVIRONMENT


def _measure(
    argv: list[str], settle_s: float, seconds: float, env: dict[str, str]
) -> tuple[float, float]:
    """(RSS in MiB, % of one core) of a process left alone for ``seconds``."""
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    try:
        time.sleep(settle_s)
        probe = psutil.Process(process.pid)
        before, started = probe.cpu_times(), time.monotonic()
        time.sleep(seconds)
        after, elapsed = probe.cpu_times(), time.monotonic() - started
        busy = (after.user + after.system) - (before.user + before.system)
        return probe.memory_info().rss / 2**20, busy / elapsed * 100
    finally:
        process.terminate()
        process.wait(10)


def bench_node(seconds: float = 60.0, python: str = sys.executable) -> dict[str, float]:
    """``python`` is the interpreter whose ``node_firmware`` runs, e.g. a station's venv."""
    workdir = Path(tempfile.mkdtemp(prefix="loaxa-bench-node-"))
    broker = start_broker(workdir=workdir / "broker")
    try:
        key = SigningKey.generate("plan", frozenset({"plan", "command", "trust"}))
        config = {
            "station_id": "bench-node",
            "data_dir": str(workdir / "node"),
            "mqtt": {"host": broker.host, "port": broker.port},
            "trusted_keys": [
                {"kid": key.kid, "public_key": key.public_b64, "purposes": sorted(key.purposes)}
            ],
            "relay": {"driver": "sim"},
            "player": {"driver": "sim"},
        }
        config_file = workdir / "station.yaml"
        config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
        node = [python, "-m", "node_firmware", "--config", str(config_file)]
        bare = [python, "-c", "import time; time.sleep(3600)"]
        env = {**os.environ, **SERVICE_ENVIRONMENT}
        if python != sys.executable:  # the install itself, not a checkout on PYTHONPATH
            env.pop("PYTHONPATH", None)
        rss, cpu = _measure(node, settle_s=10, seconds=seconds, env=env)
        base_rss, _ = _measure(bare, settle_s=1, seconds=1, env=env)
    finally:
        broker.stop()
    return {
        "seconds": seconds,
        "rss_mib": round(rss, 1),
        "idle_cpu_pct": round(cpu, 3),
        "bare_python_rss_mib": round(base_rss, 1),
        "rss_ratio": round(rss / base_rss, 2),
    }
