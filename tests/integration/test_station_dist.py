"""The station's own distribution (issue 14 §1), installed as a Pi installs it.

``./scripts/build-station`` writes the wheels; a fresh virtualenv installs ``loaxa-node``
from them with no index. The install must hold none of the server's dependencies, fit
in 60 MB, and its ``loaxa-node`` command must run a real agent against a real Mosquitto
(a signed plan played) from site-packages, not from this checkout. The server, for its
part, must import without ``node_firmware``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loaxa_protocol import PlanItem, topics
from tests.audio_samples import make_audio
from tests.node_process import StationProcess

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = [
    "fastapi", "sqlmodel", "sqlalchemy", "numpy", "scipy", "lxml", "amqtt", "uvicorn",
    "apscheduler", "pyloudnorm", "imageio-ffmpeg", "alembic", "psycopg", "typer", "rich",
]  # fmt: skip
VENV_TOOLS = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth"}
"""What ``python3 -m venv`` puts in every venv: not the station's to pay for."""
SITE_PACKAGES_BUDGET_MB = 60

pytestmark = pytest.mark.timeout(900)


def _clean_env() -> dict[str, str]:
    """The environment without this checkout on the path, as on a Pi."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}


@pytest.fixture(scope="module")
def station_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("station-dist")
    wheels, venv = root / "wheels", root / "venv"
    env = _clean_env()
    subprocess.run([REPO / "scripts" / "build-station", wheels], check=True, env=env, cwd=root)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, env=env)
    subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "--no-index", "--find-links", wheels,
         "loaxa-node"],
        check=True, env=env, cwd=root,
    )  # fmt: skip
    yield venv


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _installed(venv: Path) -> set[str]:
    names = subprocess.run(
        [venv / "bin" / "python", "-c",
         "import importlib.metadata as m\n"
         "for d in m.distributions(): print(d.metadata['Name'])"],
        # cwd: the venv, not the checkout, whose loaxa.egg-info would count as installed.
        check=True, capture_output=True, text=True, env=_clean_env(), cwd=venv,
    ).stdout  # fmt: skip
    return {name.strip().lower().replace("_", "-") for name in names.split()}


def test_the_station_install_holds_nothing_of_the_server_and_fits_its_budget(
    station_venv: Path,
) -> None:
    installed = _installed(station_venv)
    assert "loaxa-node" in installed
    assert not installed & set(SERVER_ONLY), f"server packages on a station: {installed}"
    assert "loaxa" not in installed
    site = _site_packages(station_venv)
    size = sum(
        f.stat().st_size
        for entry in site.iterdir()
        if entry.name.split("-")[0] not in VENV_TOOLS
        for f in ([entry] if entry.is_file() else entry.rglob("*"))
        if f.is_file()
    )
    assert size / 1e6 <= SITE_PACKAGES_BUDGET_MB, f"{size / 1e6:.1f} MB of site-packages"


def test_loaxa_node_runs_a_real_agent_from_the_install(
    station_venv: Path, tmp_path: Path, mosquitto, mqtt_probe
) -> None:
    command = station_venv / "bin" / "loaxa-node"
    help_text = subprocess.run(
        [command, "--help"], check=True, capture_output=True, text=True, env=_clean_env(),
        cwd=tmp_path,
    ).stdout  # fmt: skip
    assert "--config" in help_text and "install-service" in help_text
    where = subprocess.run(
        [station_venv / "bin" / "python", "-c",
         "import node_firmware.agent, loaxa_protocol; print(node_firmware.__file__)"],
        check=True, capture_output=True, text=True, env=_clean_env(), cwd=tmp_path,
    ).stdout  # fmt: skip
    assert Path(where.strip()).is_relative_to(station_venv), where

    station = StationProcess(tmp_path / "st", "st-dist-1", mosquitto.host, mosquitto.port)
    ref = station.cache_audio(make_audio("ogg", 1.0))
    probe = mqtt_probe(mosquitto, topics=[topics.event(station.station_id)])
    with station.log_path.open("ab") as log:
        process = subprocess.Popen(
            [command, "--config", station.write_config()],
            env=_clean_env(), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        start = datetime.now(UTC) + timedelta(seconds=3)
        item = PlanItem(item_id="dist-1", start_at=start, audio=ref)
        probe.publish(topics.plan(station.station_id), station.plan([item]), retain=True)
        played = probe.wait_for(lambda m: m.json().get("kind") == "played", 30).json()
        assert played["item_id"] == "dist-1"
    finally:
        process.terminate()
        process.wait(20)
    assert process.returncode == 0, station.log_text()[-2000:]


def test_the_server_imports_without_node_firmware() -> None:
    blocker = """
import importlib.abc, pkgutil, sys

class NoStation(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "node_firmware" or name.startswith("node_firmware."):
            raise ImportError(f"the server imported {name}")

sys.meta_path.insert(0, NoStation())
import server
for module in pkgutil.walk_packages(server.__path__, "server."):
    if not module.name.startswith("server.migrations"):  # alembic's scripts, run by alembic
        __import__(module.name)
from server.app import create_app
print("ok", len(sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", blocker], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok"), result.stdout


def test_the_agent_loads_neither_the_server_libraries_nor_cryptography() -> None:
    """With everything installed (this venv), the agent still imports only its own."""
    heavy = {name.replace("-", "_") for name in SERVER_ONLY} | {"cryptography", "server", "loaxa"}
    probe = (
        "import sys, node_firmware.agent, node_firmware.main, node_firmware.config\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
