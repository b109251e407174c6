"""The pure cores must import without any I/O library: that is what keeps them pure."""

from __future__ import annotations

import subprocess
import sys

import pytest

IO_LIBRARIES = ("paho", "serial", "pydub", "fastapi", "sqlmodel", "httpx", "uvicorn")


@pytest.mark.parametrize(
    "module",
    [
        "loaxa_protocol",
        "node_firmware.core.machine",
        "node_firmware.core.outbox",
        "node_firmware.core.backoff",
        "server.planning.compiler",
    ],
)
def test_core_module_imports_no_io_library(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        f"loaded = sorted(m for m in {IO_LIBRARIES!r} if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "", f"{module} pulls in {result.stdout.strip()}"
