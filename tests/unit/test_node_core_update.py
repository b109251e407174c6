"""The station's update state machine (``core/update.py``) through the whole core.

The release is signed by a release key, the command by the plan key; the core must
switch only at an idle moment, must commit a trial only once healthy, and must roll a
trial back by itself when its deadline passes. The launcher's boot decision is a pure
function and is tested as one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loaxa_protocol import Keyring, SigningKey
from loaxa_protocol.release import ReleaseFile, ReleaseManifest, sign_manifest
from node_firmware.core.events import (
    AlertReceived,
    AudioFetched,
    Boot,
    BrokerConnected,
    CommandReceived,
    CommitRelease,
    FetchRelease,
    ForgetUpdateOutcome,
    InstallRelease,
    PlanReceived,
    PlaybackFinished,
    PlaybackStarted,
    Publish,
    ReleaseFailed,
    ReleaseFetched,
    ReleaseInstalled,
    RollBackRelease,
    SlotStatus,
    SwitchRelease,
    TrialBoot,
    UpdateOutcome,
)
from node_firmware.core.machine import CoreSettings, NodeCore
from node_firmware.core.update import TRIAL_SLACK_S, Activity, boot_decision, switch_blocker
from tests.unit.test_node_core import KEY, SHA_A, T0, Harness, command, item, sealed
from tests.unit.test_node_core_alerts import ALERT_KEY, LIBRARY, alert

RELEASE_KEY = SigningKey.generate("release", frozenset({"release"}))
QUIET = timedelta(minutes=2)


def manifest(version: str = "0.2.0", key: SigningKey = RELEASE_KEY) -> str:
    wheel = ReleaseFile(name=f"loaxa_node-{version}-py3-none-any.whl", sha256="d" * 64,
                        size_bytes=1000)  # fmt: skip
    return sign_manifest(ReleaseManifest(version=version, created_at=T0, files=[wheel]), key)


def update(seq: int, version: str = "0.2.0", key: SigningKey = RELEASE_KEY) -> CommandReceived:
    return CommandReceived(
        command("update", seq, rollout_id=7, manifest=manifest(version, key),
                base_url="http://srv/releases/1", health_deadline_s=60)
    )  # fmt: skip


def harness(slots: SlotStatus | None = None) -> Harness:
    settings = CoreSettings(
        station_id="st-1",
        keyring=Keyring.of(KEY, RELEASE_KEY, ALERT_KEY),
        agent_version="0.1.0",
        update_quiet=QUIET,
    )
    h = Harness(core=NodeCore(settings))
    h.feed(Boot(stored_plan=None, slots=slots))
    return h


@pytest.fixture
def h() -> Harness:
    station = harness()
    station.log.clear()
    return station


def installed(h: Harness, seq: int = 1) -> None:
    """Take an update command through fetch and install (no switch yet if busy)."""
    h.feed(update(seq))
    h.feed(ReleaseFetched("0.2.0"))
    h.feed(ReleaseInstalled("0.2.0", "b"))


def kinds(h: Harness) -> list[str]:
    return [e["kind"] for e in h.events() if e["kind"].startswith("update_")]


def test_an_idle_station_fetches_installs_and_switches_to_a_signed_release(h: Harness) -> None:
    h.feed(update(1))
    (fetch,) = [a for _, a in h.of(FetchRelease)]
    assert fetch.version == "0.2.0" and fetch.base_url == "http://srv/releases/1"
    h.feed(ReleaseFetched("0.2.0"))
    assert [a.version for _, a in h.of(InstallRelease)] == ["0.2.0"]
    h.feed(ReleaseInstalled("0.2.0", "b"))
    (switch,) = [a for _, a in h.of(SwitchRelease)]
    assert switch == SwitchRelease("0.2.0", "b", rollout_id=7, deadline_s=60)
    assert kinds(h) == [
        "update_downloading", "update_installed", "update_switching",
    ]  # fmt: skip
    assert all(e["rollout_id"] == 7 and e["version"] == "0.2.0" for e in h.events()
               if e["kind"].startswith("update_"))  # fmt: skip


def test_a_release_not_signed_by_the_release_key_is_refused_whoever_sends_the_command(
    h: Harness,
) -> None:
    # The plan key signs commands; it must not be able to vouch for code.
    plan_signed = SigningKey(KEY.kid, KEY.private_key, frozenset({"release"}))
    h.feed(update(1, key=plan_signed))
    h.feed(update(2, key=SigningKey.generate("release", frozenset({"release"}))))
    assert not h.of(FetchRelease)
    failures = h.events("update_failed")
    assert [f["reason"] for f in failures] == ["manifest", "manifest"]
    assert "may not sign releases" in failures[0]["detail"]
    assert "not trusted" in failures[1]["detail"]


def test_a_replayed_update_command_is_refused(h: Harness) -> None:
    h.feed(update(5))
    h.feed(ReleaseFailed("0.2.0", "fetch", "connection refused"))
    h.feed(update(4))
    assert len(h.of(FetchRelease)) == 1
    assert h.events("rejected")[0]["reason"] == "replayed"


def test_the_switch_waits_for_the_broadcast_to_end(h: Harness) -> None:
    h.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=30), duration_ms=60_000))))
    h.feed(AudioFetched(SHA_A))
    installed(h)
    assert not h.of(SwitchRelease), "a broadcast is due within the quiet time"
    h.run_until(T0 + timedelta(seconds=30))
    h.feed(PlaybackStarted("b-1", h.now))
    h.run_until(T0 + timedelta(seconds=80))
    assert not h.of(SwitchRelease), "never while a broadcast plays"
    h.now = T0 + timedelta(seconds=90)
    h.feed(PlaybackFinished("b-1", h.now))
    h.run_until(T0 + timedelta(seconds=200))
    ((at, _),) = h.of(SwitchRelease)
    assert at > T0 + timedelta(seconds=90)


def test_the_switch_never_happens_during_an_alert() -> None:
    settings = CoreSettings(
        station_id="st-1", keyring=Keyring.of(KEY, RELEASE_KEY, ALERT_KEY),
        areas=frozenset({"04"}), agent_version="0.1.0", update_quiet=QUIET,
    )  # fmt: skip
    h = Harness(core=NodeCore(settings))
    h.feed(Boot(stored_plan=None, cached_audio=LIBRARY))
    h.feed(AlertReceived(alert(repeat=3, gap_ms=10_000)))
    assert h.core.alert is not None
    h.now = T0 + timedelta(seconds=1)
    installed(h)
    h.run_until(T0 + timedelta(seconds=5))
    assert not h.of(SwitchRelease), "an alert is on"
    # No player answers here, so the alert ends as hung; only then may the station switch.
    h.run_until(T0 + timedelta(seconds=90))
    ended = [t for t, a in h.log if isinstance(a, Publish) and b'"alert_failed"' in a.payload]
    ((switched_at, _),) = h.of(SwitchRelease)
    assert ended and switched_at >= ended[0]


def test_switch_blocker_is_the_idle_moment_rule() -> None:
    quiet = timedelta(minutes=2)
    idle = Activity(alert=False, playing=False, amp_held=False, next_due=None)
    assert switch_blocker(idle, T0, quiet) is None
    assert switch_blocker(Activity(True, False, False, None), T0, quiet) == "an alert is playing"
    assert "broadcast is playing" in str(switch_blocker(Activity(False, True, False, None), T0,
                                                        quiet))  # fmt: skip
    assert switch_blocker(Activity(False, False, True, None), T0, quiet)
    soon = Activity(False, False, False, T0 + timedelta(seconds=119))
    later = Activity(False, False, False, T0 + timedelta(seconds=121))
    assert switch_blocker(soon, T0, quiet) and switch_blocker(later, T0, quiet) is None


def test_a_trial_that_connects_commits() -> None:
    trial = TrialBoot("0.2.0", 7, deadline_at=T0 + timedelta(seconds=60))
    h = harness(SlotStatus("0.2.0", trial=trial))
    assert not h.of(CommitRelease), "not before the broker answers"
    h.now = T0 + timedelta(seconds=5)
    h.feed(BrokerConnected())
    assert [a for _, a in h.of(CommitRelease)] == [CommitRelease("0.2.0")]
    (committed,) = h.events("update_committed")
    assert committed["version"] == "0.2.0" and committed["rollout_id"] == 7
    h.run_until(T0 + timedelta(minutes=5))
    assert not h.of(RollBackRelease)


def test_a_trial_not_healthy_by_its_deadline_rolls_back_by_itself() -> None:
    trial = TrialBoot("0.2.0", 7, deadline_at=T0 + timedelta(seconds=60))
    h = harness(SlotStatus("0.2.0", trial=trial))
    h.run_until(T0 + timedelta(seconds=59))
    assert not h.of(RollBackRelease)
    h.run_until(T0 + timedelta(seconds=61))
    ((at, rollback),) = h.of(RollBackRelease)
    assert at == T0 + timedelta(seconds=60) and rollback.version == "0.2.0"
    (event,) = h.events("update_rolled_back")
    assert event["reason"] == "unhealthy"
    h.feed(BrokerConnected())  # too late: the rollback is under way
    assert not h.of(CommitRelease)


def test_a_rollback_the_launcher_did_is_reported_once_at_boot() -> None:
    outcome = UpdateOutcome("0.2.0", 7, "stopped_on_trial", "it hung")
    h = harness(SlotStatus("0.1.0", outcome=outcome))
    (event,) = h.events("update_rolled_back")
    assert event["version"] == "0.2.0" and event["reason"] == "stopped_on_trial"
    assert h.of(ForgetUpdateOutcome)


def test_the_running_version_is_acknowledged_without_reinstalling(h: Harness) -> None:
    h.feed(update(1, version="0.1.0"))
    assert not h.of(FetchRelease)
    assert h.events("update_committed")[0]["reason"] == "already"


def test_a_failed_install_leaves_the_station_ready_for_the_next_command(h: Harness) -> None:
    h.feed(update(1))
    h.feed(ReleaseFetched("0.2.0"))
    h.feed(ReleaseFailed("0.2.0", "install", "pip: no space left"))
    assert h.events("update_failed")[0]["reason"] == "install"
    h.feed(ReleaseInstalled("0.2.0", "b"))  # a late result for an abandoned update
    assert not h.of(SwitchRelease)
    h.feed(update(2))
    assert len(h.of(FetchRelease)) == 2


# ------------------------------------------------------------- the launcher


def test_the_launcher_runs_a_trial_once_with_an_alarm_then_goes_back() -> None:
    mark = {"slot": "b", "previous": "a", "version": "0.2.0", "rollout_id": 7,
            "deadline_s": 60, "boots": 0}  # fmt: skip
    first = boot_decision("b", mark)
    assert first.run == "b" and first.arm_s == 60 + TRIAL_SLACK_S
    assert first.trial is not None and first.trial["boots"] == 1
    second = boot_decision("b", first.trial)
    assert second.run == "a" and second.trial is None and second.arm_s is None
    assert second.rolled_back is not None and second.rolled_back["version"] == "0.2.0"


def test_the_launcher_back_to_the_factory_install_and_without_a_trial() -> None:
    mark = {"slot": "a", "previous": None, "version": "0.2.0", "deadline_s": 60, "boots": 1}
    assert boot_decision("a", mark).run is None
    assert boot_decision("a", None) == boot_decision("a", None)
    assert boot_decision("a", None).run == "a" and boot_decision(None, None).run is None
    # A stale mark for a slot that is not current (already rolled back) is dropped.
    assert boot_decision("a", {**mark, "slot": "b"}).trial is None


def test_core_imports_nothing_of_the_drivers() -> None:
    import node_firmware.core.update as module

    assert "paho" not in module.__dict__ and "subprocess" not in module.__dict__
    assert datetime(2026, 1, 1, tzinfo=UTC)  # the clock is an argument, never read
