"""``loaxa bench rollout``: a good release reaches N stations; a broken one rolls back.

Everything is real except the hardware (simulated relay and player):

1. Three station builds by ``./scripts/build-station``: the factory install (this
   checkout's version), a *good* release and a *broken* one (its MQTT link can never
   connect: the agent starts, but fails its start health check). Both releases are
   signed with a release key made for the run.
2. The real server (:class:`~loaxa.stack.LocalStack`) on a private Mosquitto with the
   production security model, trusting that release key; N stations registered in one
   commune.
3. Each station installed as a Pi installs it, in its own virtualenv from the factory
   wheels, with its own data directory, and run as ``python -m node_firmware`` (the
   launcher) under a stand-in for systemd's ``Restart=on-failure``.
4. The good release is uploaded and rolled out to the commune (20 % canaries, promoted
   as soon as they are healthy); then the broken one to every station at once (all
   canaries, so that every station takes it). The broken rollout's canaries fail, the
   rollout stops, and each station must be back on the good release by itself.

Figures: stations on the good release, stations that rolled the broken one back, those
offline at the end, and the minutes each rollout took. The machine's two cores are
shared by the server, the broker and every station (and pip, for each install).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from loaxa.release import REPO, build_station, sign_folder
from loaxa_protocol import SigningKey
from loaxa_protocol.release import RELEASE_PURPOSE

log = logging.getLogger(__name__)

COMMUNE = "01273"
GOOD, BROKEN = "0.1.0.post1", "0.1.0.post2"
"""Versions the bench stamps on its two releases (the factory install is this checkout's)."""
HEALTH_DEADLINE_S = 30
RESTART_SEC = 1.0
"""The stand-in for systemd's RestartSec."""


@dataclass(frozen=True)
class RolloutResult:
    stations: int
    updated_good: int
    rolled_back: int
    offline_after: int
    minutes: float
    good_minutes: float
    rollback_minutes: float
    install_s: float
    """building the three releases and installing every station (not in ``minutes``)"""
    broken_rollout_state: str
    station_restarts: int
    """processes that exited and were started again by the stand-in for systemd"""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def break_release(source: Path) -> None:
    """A release that installs and starts, but whose link never reaches the broker."""
    link = source / "node_firmware" / "drivers" / "mqtt_link.py"
    text = link.read_text()
    bad = text.replace(
        "self._client.connect(host, port, keepalive=self._cfg.keepalive_s)",
        "self._client.connect(host, 1, keepalive=self._cfg.keepalive_s)",
    )
    if bad == text:
        raise RuntimeError("cannot break the release: MqttLink.start changed")
    link.write_text(bad)


def hang_release(source: Path) -> None:
    """A release whose agent hangs as it starts (before READY and before its link)."""
    agent = source / "node_firmware" / "agent.py"
    text = agent.read_text()
    line = "        plan_raw, replay = self.store.load()\n"
    if line not in text:
        raise RuntimeError("cannot make a hanging release: NodeAgent.run changed")
    agent.write_text(text.replace(line, "        time.sleep(10**6)\n" + line, 1))


def source_copy(folder: Path) -> Path:
    for part in ("node_firmware", "loaxa_protocol"):
        shutil.copytree(REPO / part, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "stations").mkdir(parents=True)
    shutil.copy(REPO / "stations" / "pyproject.toml", folder / "stations")
    return folder


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}


class Supervised:
    """One station process, started again when it exits (systemd's Restart=on-failure)."""

    def __init__(self, argv: list[str], workdir: Path) -> None:
        self.argv, self.workdir = argv, workdir
        self.restarts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with (self.workdir / "agent.log").open("ab") as out:
            while not self._stopping.is_set():
                self.process = subprocess.Popen(
                    self.argv, stdout=out, stderr=subprocess.STDOUT, env=_clean_env(),
                    cwd=self.workdir,
                )  # fmt: skip
                code = self.process.wait()
                if self._stopping.is_set():
                    return
                self.restarts += 1
                log.info("%s exited (%s); restarting", self.workdir.name, code)
                time.sleep(RESTART_SEC)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        self._stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._thread.join(15)


def install_station(wheels: Path, venv: Path) -> None:
    """The factory install, as on a Pi: a venv (with pip, which updates use) and loaxa-node."""
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
         "--disable-pip-version-check", "--find-links", str(wheels), "loaxa-node"],
        check=True, env=env, cwd=venv,
    )  # fmt: skip


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def _versions(http: Any) -> dict[str, str | None]:
    stations = http.get("/api/v1/stations").json()
    return {
        s["id"]: (s.get("last_health") or {}).get("agent_version")
        for s in stations
        if s["area_code"] == COMMUNE
    }


def _upload(http: Any, folder: Path) -> int:
    files = [("files", (p.name, p.read_bytes())) for p in sorted(folder.glob("*.whl"))]
    response = http.post(
        "/api/v1/releases", data={"manifest": (folder / "manifest.json").read_text()}, files=files
    )
    response.raise_for_status()
    return int(response.json()["id"])


def _roll_out(http: Any, release_id: int, canary_pct: int) -> int:
    response = http.post(
        "/api/v1/rollouts",
        json={"release_id": release_id, "area_code": COMMUNE, "canary_pct": canary_pct,
              "canary_minutes": 0, "health_deadline_s": HEALTH_DEADLINE_S},
    )  # fmt: skip
    response.raise_for_status()
    return int(response.json()["id"])


def _rollout(http: Any, rollout_id: int) -> dict[str, Any]:
    response = http.get(f"/api/v1/rollouts/{rollout_id}")
    response.raise_for_status()
    return dict(response.json())


def run_rollout_bench(stations: int, timeout_s: float = 900) -> RolloutResult:
    from loaxa.bench.common import secured_stack  # the server: only in the parent

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="loaxa-bench-rollout-"))
    key = SigningKey.generate(RELEASE_PURPOSE)
    builds = {name: work / "builds" / name for name in ("factory", GOOD, BROKEN)}
    broken_source = source_copy(work / "broken-source")
    break_release(broken_source)
    log.info("building the factory install and two releases")
    build_station(builds["factory"], "0.1.0")
    same_deps = ("--no-index", "--find-links", str(builds["factory"]))
    build_station(builds[GOOD], GOOD, pip_args=same_deps)
    build_station(builds[BROKEN], BROKEN, source=broken_source, pip_args=same_deps)
    for version in (GOOD, BROKEN):
        sign_folder(builds[version], key)
    supervised: list[Supervised] = []
    overrides = {"release_public_key": key.public_b64, "update_tick_s": 1}
    try:
        with secured_stack("loaxa-bench-rollout-", overrides) as (secured, stack):
            configs = [
                stack.register_station(f"Cụm loa {i + 1}", COMMUNE, 22.6 + i / 1000, 106.2)
                for i in range(stations)
            ]
            secured.grant_registered(stack)

            def install(index: int) -> Supervised:
                config = configs[index]
                home = work / "stations" / config.station_id
                install_station(builds["factory"], home / "venv")
                raw = config.model_dump(mode="json")
                raw["data_dir"] = str(home / "data")
                (home / "station.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
                python = str(home / "venv" / "bin" / "python")
                return Supervised([python, "-P", "-m", "node_firmware", "--config",
                                   str(home / "station.yaml")], home)  # fmt: skip

            log.info("installing %s stations, each in its own virtualenv", stations)
            with ThreadPoolExecutor(max_workers=2) as pool:
                supervised = list(pool.map(install, range(stations)))
            for one in supervised:
                one.start()
            with stack.client() as http:
                _wait(lambda: all(v == "0.1.0" for v in _versions(http).values()),
                      120, "every station online on the factory install")  # fmt: skip
                install_s = time.monotonic() - began

                log.info("rolling out the good release %s", GOOD)
                good_started = time.monotonic()
                good = _roll_out(http, _upload(http, builds[GOOD]), canary_pct=20)
                _wait(lambda: _rollout(http, good)["state"] == "done", timeout_s,
                      "the good rollout to finish")  # fmt: skip
                _wait(lambda: all(v == GOOD for v in _versions(http).values()), 60,
                      "every station's heartbeat to name the good release")  # fmt: skip
                good_minutes = (time.monotonic() - good_started) / 60
                updated_good = sum(v == GOOD for v in _versions(http).values())

                log.info("rolling out the broken release %s to every station", BROKEN)
                bad_started = time.monotonic()
                bad = _roll_out(http, _upload(http, builds[BROKEN]), canary_pct=100)

                def all_back() -> bool:
                    members = _rollout(http, bad)["members"]
                    return all(m["state"] in ("rolled_back", "failed") for m in members)

                _wait(all_back, timeout_s, "every station to roll the broken release back")
                _wait(lambda: all(v == GOOD for v in _versions(http).values()), 120,
                      "every station's heartbeat to name the good release again")  # fmt: skip
                rollback_minutes = (time.monotonic() - bad_started) / 60
                final = _rollout(http, bad)
                rolled_back = sum(m["state"] == "rolled_back" for m in final["members"])
                time.sleep(3)  # a station that went down after its report would show now
                statuses = [s for s in http.get("/api/v1/stations").json()
                            if s["area_code"] == COMMUNE]  # fmt: skip
                down = {s["id"] for s in statuses if s["status"] not in ("online", "degraded")}
                down |= {one.workdir.name for one in supervised if not one.alive}  # its id
                offline = len(down)
            return RolloutResult(
                stations=stations,
                updated_good=updated_good,
                rolled_back=rolled_back,
                offline_after=offline,
                minutes=round(good_minutes + rollback_minutes, 2),
                good_minutes=round(good_minutes, 2),
                rollback_minutes=round(rollback_minutes, 2),
                install_s=round(install_s, 1),
                broken_rollout_state=str(final["state"]),
                station_restarts=sum(one.restarts for one in supervised),
            )
    finally:
        for one in supervised:
            one.stop()
        shutil.rmtree(work, ignore_errors=True)


def result_rows(result: RolloutResult) -> list[tuple[str, str]]:
    r = result
    return [
        ("stations (real agents, each its own venv)", f"{r.stations}"),
        ("on the good release", f"{r.updated_good} of {r.stations}"),
        ("good rollout (20 % canaries, then the rest)", f"{r.good_minutes:.2f} min"),
        ("broken release rolled back by the station", f"{r.rolled_back} of {r.stations}"),
        ("broken rollout: until every station was back", f"{r.rollback_minutes:.2f} min"),
        ("broken rollout's end state", r.broken_rollout_state),
        ("offline after", f"{r.offline_after}"),
        ("processes restarted (systemd stand-in)", f"{r.station_restarts}"),
        ("builds and installs before the rollouts", f"{r.install_s:.0f} s"),
    ]
