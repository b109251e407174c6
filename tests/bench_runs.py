"""Running ``loaxa bench …`` as a person does, for the benchmark tests."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.brokers import mosquitto_binary


def run_bench(command: str, *args: str, keys: set[str], timeout: float) -> dict[str, Any]:
    """``python -m loaxa bench <command> <args> --json`` in a subprocess: its last line.

    The run must succeed and its JSON line must carry at least ``keys``.
    """
    mosquitto_binary()  # a clear failure, not a traceback, when mosquitto is missing
    result = subprocess.run(
        [sys.executable, "-m", "loaxa", "bench", command, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    figures: dict[str, Any] = json.loads(last)
    assert figures.keys() >= keys, last
    return figures
