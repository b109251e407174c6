"""The release slots on disk (``drivers/slots.py``): the link, the trial mark, going back."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_firmware.drivers import slots as slots_module
from node_firmware.drivers.slots import (
    ENV_LAUNCHER,
    ENV_LAUNCHER_PYTHONPATH,
    ENV_SLOT,
    Slots,
    launch,
)


def test_a_switch_marks_the_trial_first_then_moves_the_link(tmp_path: Path) -> None:
    slots = Slots(tmp_path)
    assert slots.current() is None and slots.spare() == "a"
    slots.switch("0.2.0", "a", rollout_id=3, deadline_s=60, from_version="0.1.0")
    assert slots.current() == "a" and slots.spare() == "b"
    assert slots.link.is_symlink() and str(slots.link.readlink()) == "slots/a"
    trial = slots.read_trial()
    assert trial is not None and trial["previous"] is None and trial["boots"] == 0
    slots.switch("0.3.0", "b", rollout_id=4, deadline_s=60, from_version="0.2.0")
    assert slots.current() == "b" and slots.read_trial()["previous"] == "a"  # type: ignore[index]


def test_a_rollback_returns_to_the_previous_slot_and_clears_the_mark(tmp_path: Path) -> None:
    slots = Slots(tmp_path)
    slots.set_current("a")
    slots.switch("0.3.0", "b", rollout_id=4, deadline_s=60, from_version="0.2.0")
    slots.roll_back("0.3.0", "unhealthy")
    assert slots.current() == "a" and slots.read_trial() is None


def test_the_agent_on_trial_learns_its_deadline_and_a_launcher_rollback_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = Slots(tmp_path)
    slots.switch("0.2.0", "a", rollout_id=3, deadline_s=60, from_version="0.1.0")
    slots.write_trial({**(slots.read_trial() or {}), "boots": 1,
                       "armed_at": "2026-12-07T08:00:00+00:00"})  # fmt: skip
    monkeypatch.setenv(ENV_SLOT, "a")
    status = slots.status("0.2.0")
    assert status.trial is not None and status.trial.deadline_at.isoformat().endswith(
        "08:01:00+00:00"
    )
    monkeypatch.setenv(ENV_SLOT, "b")  # another slot's mark is not this agent's trial
    assert slots.status("0.2.0").trial is None
    slots.write_outcome({"version": "0.2.0", "rollout_id": 3, "reason": "stopped_on_trial"})
    outcome = slots.status("0.1.0").outcome
    assert outcome is not None and outcome.reason == "stopped_on_trial"


def test_the_launcher_goes_back_when_the_trial_slot_already_had_its_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = Slots(tmp_path)
    slots.switch("0.2.0", "a", rollout_id=3, deadline_s=60, from_version="0.1.0")
    slots.write_trial({**(slots.read_trial() or {}), "boots": 1})
    monkeypatch.delenv(ENV_SLOT, raising=False)
    monkeypatch.setenv(ENV_LAUNCHER, "restored after the test")
    monkeypatch.setenv(ENV_LAUNCHER_PYTHONPATH, "restored after the test")
    execs: list[object] = []
    monkeypatch.setattr(slots_module.os, "execve", lambda *a: execs.append(a))
    launch(tmp_path, tmp_path / "station.yaml", verbose=False)
    # Back to the factory install (the trial came from it): this process runs the agent.
    assert execs == [] and slots.current() is None and slots.read_trial() is None
    assert (slots.read_outcome() or {}).get("reason") == "stopped_on_trial"
