"""Signed A/B updates, the station's side: a pure state machine behind ``NodeCore``.

Theory of operation
-------------------
A rollout sends an ``update`` command (signed, addressed, replay-checked like every
command) carrying the release's signed manifest. The manifest must be signed by a key
trusted for ``release``; the command alone cannot make a station install anything.

The station fetches the files, installs them into the slot it is *not* running from
(the running slot is never touched, so a failure anywhere leaves it as it was) and
then waits for an *idle moment*: no alert, no broadcast playing or cued, the amplifier
not held, and nothing due within ``quiet`` (the restart must be over before the next
item's amplifier lead). Only then does it switch: the slot is marked on trial, the
``current`` link is moved and the process restarts through the launcher.

The launcher (:func:`boot_decision`, run by the factory install at every start, like a
boot loader counting boots) runs a trial slot once. The new agent must report healthy
(connected to the broker) by its deadline; it then commits. If it is not healthy by
the deadline, it rolls itself back; if it cannot even get that far (it hangs or dies),
the launcher's alarm kills it and the next start finds the trial already used and
switches back. Either way the old release runs again and says so.

Transitions (input, condition → what it emits, in order)::

    update command   manifest refused           → reply(fail), update_failed(manifest)
    update command   running that version       → reply(ok), update_committed(already)
    update command   on trial or switching      → reply(fail: busy)
    update command   new version                → reply(ok), update_downloading, FetchRelease
    ReleaseFetched   awaited version            → InstallRelease
    ReleaseInstalled awaited version            → update_installed (phase READY)
    ReleaseFailed    awaited version            → update_failed(fetch|install) (phase IDLE)
    any, READY       idle for ``quiet``         → update_switching, SwitchRelease
    Boot             trial mark for this slot   → phase TRIAL
    Boot             launcher rolled back       → update_rolled_back, ForgetUpdateOutcome
    BrokerConnected  TRIAL                      → CommitRelease, update_committed
    any, TRIAL       deadline passed            → update_rolled_back(unhealthy), RollBackRelease

Results of an update the station no longer wants (a newer command replaced it) are
ignored. A station restarted mid-download forgets it; the rollout sends the command
again (``server/updates``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from loaxa_protocol import EventKind, Keyring
from loaxa_protocol.commands import UpdateArgs
from loaxa_protocol.release import ReleaseManifest, open_manifest
from node_firmware.core.events import (
    Action,
    CommitRelease,
    FetchRelease,
    ForgetUpdateOutcome,
    InstallRelease,
    ReleaseFailed,
    ReleaseFetched,
    ReleaseInstalled,
    RollBackRelease,
    SlotStatus,
    SwitchRelease,
    TrialBoot,
)

QUIET = timedelta(minutes=2)
"""Nothing may be due this soon after a switch: the restart must be over by then."""
BUSY_RETRY = timedelta(seconds=30)

Report = Callable[..., None]
"""``report(kind, now, out, version=, rollout_id=, reason=, detail=)``: publish an event."""


class Phase(enum.StrEnum):
    IDLE = "idle"
    FETCHING = "fetching"
    INSTALLING = "installing"
    READY = "ready"
    """installed, waiting for an idle moment"""
    SWITCHING = "switching"
    TRIAL = "trial"


@dataclass(frozen=True)
class Activity:
    """What the station is doing, as far as switching releases is concerned."""

    alert: bool
    playing: bool
    amp_held: bool
    next_due: datetime | None
    """the earliest amplifier-on instant of an item still to play"""


def switch_blocker(activity: Activity, now: datetime, quiet: timedelta) -> str | None:
    """Why the station may not restart now, or None: the idle-moment rule."""
    if activity.alert:
        return "an alert is playing"
    if activity.playing:
        return "a broadcast is playing"
    if activity.amp_held:
        return "the amplifier is held on"
    if activity.next_due is not None and activity.next_due - now < quiet:
        return f"a broadcast is due at {activity.next_due.isoformat()}"
    return None


@dataclass(frozen=True)
class BootDecision:
    """What the launcher does at start: which slot runs, and what it writes first."""

    run: str | None
    """the slot to run, None for the factory install"""
    trial: dict[str, Any] | None
    """the trial mark to write back (its boot counted), or None to remove it"""
    arm_s: int | None
    """arm the alarm for this many seconds before running a trial slot"""
    rolled_back: dict[str, Any] | None = None
    """an outcome to leave for the agent to report"""


TRIAL_SLACK_S = 15
"""The launcher's alarm fires this long after the agent's own deadline: a live agent
rolls itself back (and says why) before the alarm has to kill it."""


def boot_decision(current: str | None, trial: dict[str, Any] | None) -> BootDecision:
    """The launcher's choice from the ``current`` link and the trial mark (pure).

    A trial slot runs once: the first start counts the boot and arms the alarm; a second
    start with the mark still there means the trial agent died or was killed before it
    committed, so the previous slot runs again.
    """
    if trial is None or trial.get("slot") != current:
        return BootDecision(run=current, trial=None, arm_s=None)
    if int(trial.get("boots", 0)) < 1:
        counted = {**trial, "boots": int(trial.get("boots", 0)) + 1}
        return BootDecision(
            run=current, trial=counted, arm_s=int(trial["deadline_s"]) + TRIAL_SLACK_S
        )
    outcome = {
        "version": trial.get("version"),
        "rollout_id": trial.get("rollout_id"),
        "reason": "stopped_on_trial",
        "detail": "the new release stopped (crashed, hung or was killed) before it was healthy",
    }
    return BootDecision(run=trial.get("previous"), trial=None, arm_s=None, rolled_back=outcome)


@dataclass
class Updater:
    """The update state of one station; ``NodeCore`` feeds it and reports its events."""

    report: Report
    running_version: str = "unknown"
    quiet: timedelta = QUIET
    phase: Phase = Phase.IDLE
    wanted: UpdateArgs | None = None
    manifest: ReleaseManifest | None = None
    slot: str | None = None
    trial: TrialBoot | None = None

    @property
    def version(self) -> str | None:
        return self.manifest.version if self.manifest is not None else None

    def boot(self, slots: SlotStatus | None, now: datetime, out: list[Action]) -> None:
        if slots is None:
            return
        self.running_version = slots.running_version
        if slots.outcome is not None:
            o = slots.outcome
            self.report(
                EventKind.UPDATE_ROLLED_BACK, now, out, version=o.version,
                rollout_id=o.rollout_id, reason=o.reason, detail=o.detail,
            )  # fmt: skip
            out.append(ForgetUpdateOutcome())
        if slots.trial is not None:
            self.trial, self.phase = slots.trial, Phase.TRIAL

    def command(
        self, args: UpdateArgs, keyring: Keyring, now: datetime, out: list[Action]
    ) -> tuple[bool, str]:
        """Take an update command; the (ok, detail) of the command's reply."""
        manifest = open_manifest(args.manifest, keyring)
        if isinstance(manifest, str):
            self.report(
                EventKind.UPDATE_FAILED, now, out, rollout_id=args.rollout_id,
                reason="manifest", detail=manifest,
            )  # fmt: skip
            return False, f"release refused: {manifest}"
        if manifest.version == self.running_version:
            self.report(
                EventKind.UPDATE_COMMITTED, now, out, version=manifest.version,
                rollout_id=args.rollout_id, reason="already", detail="already running it",
            )  # fmt: skip
            return True, f"already running {manifest.version}"
        if self.phase in (Phase.TRIAL, Phase.SWITCHING):
            return False, f"busy: {self.phase} of {self.version or self._trial_version()}"
        if self.version == manifest.version and self.phase is not Phase.IDLE:
            self.wanted = args  # a re-sent command: same release, keep going
            return True, f"{manifest.version}: {self.phase}"
        self.wanted, self.manifest, self.slot = args, manifest, None
        self.phase = Phase.FETCHING
        self.report(
            EventKind.UPDATE_DOWNLOADING, now, out, version=manifest.version,
            rollout_id=args.rollout_id, detail=f"{len(manifest.files)} files, "
            f"{manifest.size_bytes} bytes",
        )  # fmt: skip
        out.append(FetchRelease(manifest.version, tuple(manifest.files), args.base_url))
        return True, f"fetching {manifest.version}"

    def _trial_version(self) -> str:
        return self.trial.version if self.trial is not None else "?"

    def fetched(self, event: ReleaseFetched, out: list[Action]) -> None:
        if self.phase is Phase.FETCHING and event.version == self.version:
            assert self.wanted is not None
            self.phase = Phase.INSTALLING
            out.append(InstallRelease(event.version, self.wanted.manifest))

    def installed(self, event: ReleaseInstalled, now: datetime, out: list[Action]) -> None:
        if self.phase is Phase.INSTALLING and event.version == self.version:
            self.phase, self.slot = Phase.READY, event.slot
            self.report(
                EventKind.UPDATE_INSTALLED, now, out, version=event.version,
                rollout_id=self._rollout(), detail=f"slot {event.slot}",
            )  # fmt: skip

    def failed(self, event: ReleaseFailed, now: datetime, out: list[Action]) -> None:
        if self.phase in (Phase.FETCHING, Phase.INSTALLING) and event.version == self.version:
            self.report(
                EventKind.UPDATE_FAILED, now, out, version=event.version,
                rollout_id=self._rollout(), reason=event.stage, detail=event.reason[:500],
            )  # fmt: skip
            self._reset()

    def connected(self, now: datetime, out: list[Action]) -> None:
        """The broker answered: a release on trial has proved itself."""
        if self.phase is Phase.TRIAL and self.trial is not None:
            trial = self.trial
            out.append(CommitRelease(trial.version))
            self.report(
                EventKind.UPDATE_COMMITTED, now, out, version=trial.version,
                rollout_id=trial.rollout_id, detail="healthy on trial",
            )  # fmt: skip
            self.trial, self.phase = None, Phase.IDLE

    def advance(
        self, activity: Activity, now: datetime, out: list[Action], wakes: list[datetime]
    ) -> None:
        """Switch at an idle moment; roll back a trial past its deadline."""
        if self.phase is Phase.TRIAL and self.trial is not None:
            if now >= self.trial.deadline_at:
                trial = self.trial
                self.report(
                    EventKind.UPDATE_ROLLED_BACK, now, out, version=trial.version,
                    rollout_id=trial.rollout_id, reason="unhealthy",
                    detail="not connected to the broker by the trial deadline",
                )  # fmt: skip
                out.append(RollBackRelease(trial.version, "unhealthy"))
                self.trial, self.phase = None, Phase.SWITCHING
            else:
                wakes.append(self.trial.deadline_at)
            return
        if self.phase is not Phase.READY:
            return
        blocker = switch_blocker(activity, now, self.quiet)
        if blocker is not None:
            wakes.append(now + BUSY_RETRY)
            return
        assert self.wanted is not None and self.slot is not None and self.version is not None
        self.report(
            EventKind.UPDATE_SWITCHING, now, out, version=self.version,
            rollout_id=self.wanted.rollout_id, detail=f"from {self.running_version}",
        )  # fmt: skip
        out.append(
            SwitchRelease(
                self.version, self.slot, self.wanted.rollout_id, self.wanted.health_deadline_s
            )
        )
        self.phase = Phase.SWITCHING

    def _rollout(self) -> int | None:
        return self.wanted.rollout_id if self.wanted is not None else None

    def _reset(self) -> None:
        self.phase, self.wanted, self.manifest, self.slot = Phase.IDLE, None, None, None
