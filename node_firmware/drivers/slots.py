"""Release slots on the station's disk, and the launcher that picks one at every start.

Layout under ``<data_dir>/update``::

    slots/a, slots/b     two virtualenvs, each one release of loaxa-node
    current -> slots/b   the slot the launcher runs (absent: the factory install)
    trial.json           the slot on trial, its deadline and the boots it has had
    outcome.json         a rollback the launcher did, for the agent to report
    download/<version>/  the release's files while they are fetched (by sha256)

The *factory install* (``/opt/loaxa-node``, what the service unit starts) is the
launcher: it is never replaced by an update, so however broken a release is, the code
that decides which slot runs is not (RAUC and Mender keep that decision in the boot
loader for the same reason). An update installs into the slot not running (the running
one is never touched), then :meth:`Slots.switch` marks it on trial, moves ``current``
atomically (a symlink renamed over the old one) and the agent restarts through the
launcher. The launcher (:func:`launch`) applies ``core.update.boot_decision``: a trial
slot runs once, under an alarm (SIGALRM survives ``exec`` and kills a release that hangs
before it is healthy); the next start with the mark still there goes back.

Files are fetched with the audio fetcher (HTTP Range resume, size and sha256 checked), so
a cut connection costs only what was not yet received. Installing runs pip from the
launcher's interpreter into a venv made ``--without-pip`` (pip 22.3's ``--python``),
offline, from the fetched files only; the new slot must then import its agent and name
the release's version before it is ever switched to.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loaxa_protocol import AudioRef
from loaxa_protocol.durable import fsync_dir, write_atomically
from loaxa_protocol.errors import FetchError, LoaxaError
from loaxa_protocol.release import ReleaseFile
from node_firmware.core.events import SlotStatus, TrialBoot, UpdateOutcome
from node_firmware.core.update import boot_decision
from node_firmware.drivers.audio_cache import AudioCache
from node_firmware.drivers.fetcher import AudioFetcher

log = logging.getLogger(__name__)

SLOTS = ("a", "b")
ENV_SLOT = "LOAXA_SLOT"
"""Set for an agent started in a slot by the launcher: it must not launch again."""
ENV_LAUNCHER = "LOAXA_LAUNCHER"
"""The factory interpreter: restarts go back through it."""
ENV_LAUNCHER_PYTHONPATH = "LOAXA_LAUNCHER_PYTHONPATH"
INSTALL_TIMEOUT_S = 900
SMOKE_TIMEOUT_S = 120
RELEASE_MAX_BYTES = 512 * 1024 * 1024


class UpdateError(LoaxaError):
    """A release could not be fetched or installed; the message says why."""


def _now() -> datetime:
    return datetime.now(UTC)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("%s unreadable, ignored: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


class Slots:
    """The update directory of one station (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "update"
        self.link = self.root / "current"

    # ------------------------------------------------------------ state on disk

    def current(self) -> str | None:
        try:
            target = os.readlink(self.link)
        except OSError:
            return None
        name = Path(target).name
        return name if name in SLOTS else None

    def set_current(self, slot: str | None) -> None:
        """Point ``current`` at ``slot`` (None: the factory install) in one rename."""
        self.root.mkdir(parents=True, exist_ok=True)
        if slot is None:
            self.link.unlink(missing_ok=True)
        else:
            temp = self.root / ".current.tmp"
            temp.unlink(missing_ok=True)
            os.symlink(Path("slots") / slot, temp)
            os.replace(temp, self.link)
        fsync_dir(self.root)

    def python(self, slot: str) -> Path:
        return self.root / "slots" / slot / "bin" / "python"

    def read_trial(self) -> dict[str, Any] | None:
        return _read_json(self.root / "trial.json")

    def write_trial(self, trial: dict[str, Any] | None) -> None:
        self._write(self.root / "trial.json", trial)

    def read_outcome(self) -> dict[str, Any] | None:
        return _read_json(self.root / "outcome.json")

    def write_outcome(self, outcome: dict[str, Any] | None) -> None:
        self._write(self.root / "outcome.json", outcome)

    def _write(self, path: Path, data: dict[str, Any] | None) -> None:
        if data is None:
            path.unlink(missing_ok=True)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(data).encode())

    def status(self, running_version: str) -> SlotStatus:
        """What the core must know at boot: a trial of this slot, a rollback to report."""
        trial = self.read_trial()
        slot = os.environ.get(ENV_SLOT)
        on_trial = None
        if trial is not None and slot is not None and trial.get("slot") == slot:
            armed = datetime.fromisoformat(str(trial.get("armed_at") or _now().isoformat()))
            on_trial = TrialBoot(
                version=str(trial.get("version")),
                rollout_id=trial.get("rollout_id"),
                deadline_at=armed + timedelta(seconds=int(trial["deadline_s"])),
            )
        outcome = self.read_outcome()
        rolled = None
        if outcome is not None:
            rolled = UpdateOutcome(
                version=str(outcome.get("version")),
                rollout_id=outcome.get("rollout_id"),
                reason=str(outcome.get("reason")),
                detail=str(outcome.get("detail", ""))[:500],
            )
        return SlotStatus(running_version, on_trial, rolled)

    # ------------------------------------------------------------ fetch and install

    def download_dir(self, version: str) -> Path:
        return self.root / "download" / version

    def fetch(self, version: str, files: tuple[ReleaseFile, ...], base_url: str) -> None:
        """Every file of the release into its download folder, resumable; raises UpdateError."""
        folder = self.download_dir(version)
        cache = AudioCache(folder / "by-sha256", RELEASE_MAX_BYTES, reserve_bytes=0)
        fetcher = AudioFetcher(cache, timeout_s=60, max_attempts=5)
        wheels = folder / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        base = base_url.rstrip("/")
        for file in files:
            ref = AudioRef(
                sha256=file.sha256,
                size_bytes=file.size_bytes,
                duration_ms=1,
                url=f"{base}/{file.name}",
                codec="wheel",
            )
            try:
                path = fetcher.fetch(ref)
            except FetchError as exc:
                raise UpdateError(f"{file.name}: {exc}") from exc
            target = wheels / file.name
            if not target.exists():
                os.link(path, target)
        log.info("release %s fetched: %s files", version, len(files))

    def spare(self) -> str:
        """The slot the station is not running from (never the one it would go back to)."""
        current = self.current()
        return "b" if current == "a" else "a"

    def install(self, version: str, launcher: str) -> str:
        """Install the fetched release into the spare slot; its name. Raises UpdateError."""
        slot = self.spare()
        target = self.root / "slots" / slot
        wheels = self.download_dir(version) / "wheels"
        shutil.rmtree(target, ignore_errors=True)
        env = _clean_env()
        steps = [
            [launcher, "-m", "venv", "--without-pip", str(target)],
            [launcher, "-m", "pip", "--python", str(target / "bin" / "python"), "install",
             "--quiet", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
             "--find-links", str(wheels), f"loaxa-node=={version}"],
        ]  # fmt: skip
        for argv in steps:
            self._run(argv, env, INSTALL_TIMEOUT_S)
        said = self._run(
            [str(target / "bin" / "python"), "-c",
             "import node_firmware, node_firmware.agent; print(node_firmware.AGENT_VERSION)"],
            env, SMOKE_TIMEOUT_S,
        ).strip()  # fmt: skip
        if said != version:
            raise UpdateError(f"slot {slot} says version {said!r}, the manifest {version!r}")
        log.info("release %s installed in slot %s", version, slot)
        return slot

    def _run(self, argv: list[str], env: dict[str, str], timeout_s: float) -> str:
        try:
            done = subprocess.run(
                argv, env=env, cwd=self.root, capture_output=True, text=True,
                timeout=timeout_s, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UpdateError(f"{Path(argv[0]).name}: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise UpdateError(f"{' '.join(argv[:3])}… exit {done.returncode}: {' / '.join(tail)}")
        return done.stdout

    def forget_downloads(self) -> None:
        shutil.rmtree(self.root / "download", ignore_errors=True)

    # ------------------------------------------------------------ switch, commit, back

    def switch(
        self, version: str, slot: str, rollout_id: int, deadline_s: int, from_version: str
    ) -> None:
        """Mark ``slot`` on trial (first), then point ``current`` at it."""
        self.write_trial(
            {
                "slot": slot,
                "previous": self.current(),
                "version": version,
                "previous_version": from_version,
                "rollout_id": rollout_id,
                "deadline_s": deadline_s,
                "boots": 0,
            }
        )
        self.set_current(slot)
        self.forget_downloads()

    def commit(self) -> None:
        signal.alarm(0)
        self.write_trial(None)

    def roll_back(self, version: str, reason: str) -> None:
        """Back to the slot the trial came from; the agent has reported it already."""
        signal.alarm(0)
        trial = self.read_trial()
        previous = trial.get("previous") if trial is not None else None
        self.set_current(previous if previous in SLOTS else None)
        self.write_trial(None)
        log.error("release %s rolled back (%s)", version, reason)


def _clean_env() -> dict[str, str]:
    """The environment without a checkout on the path: a slot runs its own code."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", ENV_SLOT}}
    return env


def agent_argv(config: Path, verbose: bool) -> list[str]:
    """``-P``: not the working directory first on the path (a checkout there would win)."""
    return ["-P", "-m", "node_firmware", "--config", str(config.resolve())] + (
        ["-v"] if verbose else []
    )


def launch(data_dir: Path, config: Path, verbose: bool) -> None:
    """At start, as the factory install: run the slot the disk chose (``exec``, no return).

    Returns (to run the agent in this process) for the factory install, and at once for
    an agent already started in a slot.
    """
    if os.environ.get(ENV_SLOT):
        return
    os.environ[ENV_LAUNCHER] = sys.executable
    if "PYTHONPATH" in os.environ:
        os.environ[ENV_LAUNCHER_PYTHONPATH] = os.environ["PYTHONPATH"]
    slots = Slots(data_dir)
    decision = boot_decision(slots.current(), slots.read_trial())
    if decision.rolled_back is not None:
        log.error("release %s stopped on trial: going back", decision.rolled_back["version"])
        slots.write_outcome(decision.rolled_back)
        slots.set_current(decision.run)
    trial = decision.trial
    if trial is not None:
        trial = {**trial, "armed_at": _now().isoformat()}
    slots.write_trial(trial)
    if decision.run is None:
        return
    python = slots.python(decision.run)
    if not python.exists():
        log.error("slot %s has no interpreter; running the factory install", decision.run)
        slots.set_current(None)
        slots.write_trial(None)
        return
    env = {**_clean_env(), ENV_SLOT: decision.run}
    if decision.arm_s is not None:
        signal.alarm(decision.arm_s)
    log.info("launching slot %s", decision.run)
    os.execve(python, [str(python), *agent_argv(config, verbose)], env)


def relaunch(config: Path, verbose: bool) -> None:
    """Restart through the launcher (the factory install): it picks the slot again."""
    signal.alarm(0)
    launcher = os.environ.get(ENV_LAUNCHER, sys.executable)
    env = {k: v for k, v in os.environ.items() if k != ENV_SLOT}
    with contextlib.suppress(KeyError):
        env["PYTHONPATH"] = env.pop(ENV_LAUNCHER_PYTHONPATH)
    os.execve(launcher, [launcher, *agent_argv(config, verbose)], env)
