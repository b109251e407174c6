"""The node core, driven with a hand-held clock: no sockets, no threads, no sleeps."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from loaxa_protocol import (
    AudioRef,
    Command,
    KeyEntry,
    Keyring,
    Plan,
    PlanItem,
    Priority,
    SigningKey,
    TrustUpdate,
    seal,
)
from node_firmware.core.events import (
    Action,
    AudioFetched,
    AudioFetchFailed,
    AudioVerified,
    Boot,
    CommandReceived,
    FetchAudio,
    Input,
    PinAudio,
    PlanReceived,
    PlaybackFinished,
    PlaybackStarted,
    Publish,
    ReadAmplifier,
    RelayFailed,
    RelayReadback,
    RelaySwitched,
    ReportHealth,
    Restart,
    SaveState,
    SendLog,
    SetRelay,
    SetVolume,
    StartPlayback,
    StopPlayback,
    Tick,
    TrustReceived,
    VerifyAudio,
    WakeAt,
)
from node_firmware.core.machine import LATE_GRACE, PREROLL, CoreSettings, NodeCore

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
KEY = SigningKey.generate("plan", frozenset({"plan", "command"}))
SHA_A, SHA_B = "a" * 64, "b" * 64


def item(
    item_id: str,
    start: timedelta,
    sha: str = SHA_A,
    duration_ms: int = 10_000,
    priority: Priority = Priority.NORMAL,
) -> PlanItem:
    return PlanItem(
        item_id=item_id,
        start_at=T0 + start,
        priority=priority,
        audio=AudioRef(sha256=sha, size_bytes=1234, duration_ms=duration_ms, url=f"http://s/{sha}"),
    )


def sealed(*items: PlanItem, seq: int = 1, station: str = "st-1", key: SigningKey = KEY) -> bytes:
    plan = Plan(
        sender="server",
        seq=seq,
        issued_at=T0,
        expires_at=T0 + timedelta(days=2),
        to=station,
        station_id=station,
        horizon_until=T0 + timedelta(hours=48),
        items=list(items),
    )
    return seal(plan, key)


@dataclass
class Harness:
    """Feeds the core and keeps time the way the agent loop does: by its WakeAt."""

    core: NodeCore = field(
        default_factory=lambda: NodeCore(CoreSettings(station_id="st-1", keyring=Keyring.of(KEY)))
    )
    now: datetime = T0
    log: list[tuple[datetime, Action]] = field(default_factory=list)
    wake: datetime | None = None
    rotten: set[str] = field(default_factory=set)
    """cached files whose bytes changed on disk (their verification fails)"""
    disk_answers: bool = True
    """False: a verification never comes back (a disk that hangs)"""

    def feed(self, event: Input) -> list[Action]:
        actions = self.core.handle(event, self.now)
        for action in actions:
            if isinstance(action, WakeAt):
                assert action.at > self.now, "the core asked to be woken in the past"
                self.wake = action.at
            self.log.append((self.now, action))
            if isinstance(action, SetRelay):  # a healthy relay board answers at once
                self.core.handle(RelaySwitched(action.on), self.now)
        for action in actions:
            if (
                isinstance(action, VerifyAudio) and self.disk_answers
            ):  # a healthy disk: the file is what it was
                self.feed(AudioVerified(action.sha256, self.disk_ok(action.sha256)))
        return actions

    def disk_ok(self, sha: str) -> bool:
        return sha not in self.rotten

    def run_until(self, until: datetime) -> None:
        while self.wake is not None and self.wake <= until:
            self.now = self.wake
            self.wake = None
            self.feed(Tick())
        self.now = until

    def events(self, kind: str | None = None) -> list[dict]:
        found = [
            json.loads(a.payload)
            for _, a in self.log
            if isinstance(a, Publish) and a.topic.endswith("/event")
        ]
        return [e for e in found if kind is None or e["kind"] == kind]

    def of(self, kind: type) -> list[tuple[datetime, Action]]:
        return [(t, a) for t, a in self.log if isinstance(a, kind)]


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.feed(Boot(stored_plan=None))
    harness.log.clear()
    return harness


def test_boot_switches_the_amplifier_to_a_known_off_state() -> None:
    fresh = Harness()
    fresh.feed(Boot(stored_plan=None))
    assert [a for _, a in fresh.of(SetRelay)] == [SetRelay(False)]


def test_accepted_plan_is_saved_first_then_audio_is_fetched_and_acknowledged(h: Harness) -> None:
    raw = sealed(item("b-1", timedelta(minutes=1)), item("b-2", timedelta(minutes=2), SHA_B))
    actions = h.feed(PlanReceived(raw))
    assert isinstance(actions[0], SaveState) and actions[0].plan_raw == raw
    assert PinAudio(frozenset({SHA_A, SHA_B})) in actions
    assert {a.ref.sha256 for a in actions if isinstance(a, FetchAudio)} == {SHA_A, SHA_B}
    assert [e["item_id"] for e in h.events("plan_accepted")] == ["b-1", "b-2"]


def test_bulletin_timeline_relay_on_then_audio_then_off(h: Harness) -> None:
    start = timedelta(seconds=30)
    h.feed(PlanReceived(sealed(item("b-1", start))))
    h.feed(AudioFetched(SHA_A))
    assert h.events("audio_fetched")[0]["item_id"] == "b-1"

    h.run_until(T0 + start)
    ((on_at, on),) = h.of(SetRelay)
    ((cue_at, cue),) = h.of(StartPlayback)
    assert on == SetRelay(True) and on_at == T0 + start - timedelta(milliseconds=1500)
    assert cue_at == T0 + start - PREROLL and cue.start_at == T0 + start

    h.feed(PlaybackStarted("b-1", T0 + start))
    h.now = T0 + start + timedelta(seconds=10)
    h.feed(PlaybackFinished("b-1", h.now))
    played = h.events("played")[0]
    assert played["started_at"].startswith("2026-11-25T09:00:30")
    assert played["finished_at"].startswith("2026-11-25T09:00:40")
    h.run_until(h.now + timedelta(seconds=5))
    relays = [a.on for _, a in h.of(SetRelay)]
    assert relays == [True, False]
    off_at = h.of(SetRelay)[-1][0]
    assert off_at == T0 + start + timedelta(seconds=11)


def test_refused_plans_are_reported_and_change_nothing(h: Harness) -> None:
    good = sealed(item("b-1", timedelta(minutes=1)), seq=10)
    h.feed(PlanReceived(good))
    forged = sealed(item("evil", timedelta(minutes=1)), seq=11, key=SigningKey.generate("plan"))
    replayed = sealed(item("old", timedelta(minutes=1)), seq=9)
    other = sealed(item("b-9", timedelta(minutes=1)), seq=12, station="st-2")
    for raw in (forged, replayed, other, b"\xff garbage"):
        actions = h.feed(PlanReceived(raw))
        assert not any(isinstance(a, SaveState | FetchAudio | StartPlayback) for a in actions)
    reasons = [e["reason"] for e in h.events("rejected")]
    assert reasons == ["unknown_key", "replayed", "wrong_station", "malformed"]
    assert [i.item_id for i in h.core.plan.items] == ["b-1"]


def test_retained_duplicate_is_ignored_quietly(h: Harness) -> None:
    raw = sealed(item("b-1", timedelta(minutes=1)))
    h.feed(PlanReceived(raw))
    again = h.feed(PlanReceived(raw))
    assert all(isinstance(a, WakeAt) for a in again)


def test_stored_plan_plays_after_reboot_without_network(h: Harness) -> None:
    raw = sealed(item("b-1", timedelta(seconds=20)))
    saved = h.feed(PlanReceived(raw))[0]
    assert isinstance(saved, SaveState)

    rebooted = Harness(now=T0 + timedelta(seconds=10))
    rebooted.feed(Boot(saved.plan_raw, saved.memory, cached_audio=frozenset({SHA_A})))
    rebooted.run_until(T0 + timedelta(seconds=20))
    assert [a.item_id for _, a in rebooted.of(StartPlayback)] == ["b-1"]
    # and the retained copy arriving later is the same plan, not a replay
    rebooted.feed(PlanReceived(raw))
    assert rebooted.events("rejected") == []


def test_stored_plan_survives_its_own_expiry_after_a_long_outage() -> None:
    raw = sealed(item("b-1", timedelta(days=7)))
    week_later = Harness(now=T0 + timedelta(days=7) - timedelta(minutes=1))
    week_later.feed(Boot(raw, {"guard": {"server/plan": [1, "x"]}}, frozenset({SHA_A})))
    week_later.run_until(T0 + timedelta(days=7))
    assert len(week_later.of(StartPlayback)) == 1


def test_audio_still_missing_at_start_fails_with_reason(h: Harness) -> None:
    h.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=5)))))
    h.run_until(T0 + timedelta(seconds=5) + LATE_GRACE)
    assert h.of(StartPlayback) == []
    failed = h.events("failed")[0]
    assert failed["reason"] == "audio_missing"
    assert [a.on for _, a in h.of(SetRelay)][-1] is False


def test_audio_arriving_within_the_grace_starts_late_rather_than_never(h: Harness) -> None:
    h.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=5)))))
    h.run_until(T0 + timedelta(seconds=6))
    h.feed(AudioFetched(SHA_A))
    ((_, cue),) = h.of(StartPlayback)
    assert cue.start_at == T0 + timedelta(seconds=6)


def test_failed_download_is_reported_once_and_retried_with_backoff(h: Harness) -> None:
    h.feed(PlanReceived(sealed(item("b-1", timedelta(minutes=30)))))
    for _ in range(4):
        h.feed(AudioFetchFailed(SHA_A, "connection reset"))
        h.run_until(h.wake)
    fetch_times = [t for t, _ in h.of(FetchAudio)]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(fetch_times)]
    assert gaps == [2, 4, 8, 16]
    assert len(h.events("audio_failed")) == 1


def test_higher_priority_preempts_and_lower_reports_interrupted(h: Harness) -> None:
    normal = item("n-1", timedelta(seconds=10), duration_ms=60_000)
    urgent = item("p-1", timedelta(seconds=30), SHA_B, priority=Priority.PRIORITY)
    h.feed(PlanReceived(sealed(normal, urgent)))
    h.feed(AudioFetched(SHA_A))
    h.feed(AudioFetched(SHA_B))
    h.run_until(T0 + timedelta(seconds=10))
    h.feed(PlaybackStarted("n-1", T0 + timedelta(seconds=10)))
    h.run_until(T0 + timedelta(seconds=30))
    assert [a.item_id for _, a in h.of(StopPlayback)] == ["n-1"]
    assert [a.item_id for _, a in h.of(StartPlayback)] == ["n-1", "p-1"]
    interrupted = h.events("interrupted")[0]
    assert interrupted["item_id"] == "n-1" and "p-1" in interrupted["detail"]
    assert [a.on for _, a in h.of(SetRelay)] == [True]  # the amplifier stays on throughout


def test_equal_priority_overlap_fails_the_later_item_as_busy(h: Harness) -> None:
    first = item("n-1", timedelta(seconds=10), duration_ms=60_000)
    second = item("n-2", timedelta(seconds=30), SHA_B)
    h.feed(PlanReceived(sealed(first, second)))
    h.feed(AudioFetched(SHA_A))
    h.feed(AudioFetched(SHA_B))
    h.run_until(T0 + timedelta(seconds=10))
    h.feed(PlaybackStarted("n-1", T0 + timedelta(seconds=10)))
    h.run_until(T0 + timedelta(seconds=30))
    assert h.of(StopPlayback) == []
    assert h.events("failed")[0]["item_id"] == "n-2"
    assert h.events("failed")[0]["reason"] == "busy"


def test_relay_fault_is_reported_and_retried(h: Harness) -> None:
    h.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=10)))))
    h.feed(AudioFetched(SHA_A))
    h.run_until(T0 + timedelta(seconds=8, milliseconds=500))
    h.feed(RelayFailed(True, "port vanished"))
    h.run_until(T0 + timedelta(seconds=14))
    assert len(h.events("relay_fault")) == 1
    retries = [t for t, a in h.of(SetRelay) if a.on]
    assert retries[-1] >= T0 + timedelta(seconds=13, milliseconds=500)
    assert len(h.of(StartPlayback)) == 1  # the programme does not wait for the relay


def test_heartbeat_is_periodic(h: Harness) -> None:
    h.run_until(T0 + timedelta(minutes=3))
    beats = [t for t, _ in h.of(ReportHealth)]
    assert beats == [T0 + timedelta(minutes=m) for m in range(1, 4)]
    assert h.of(ReportHealth)[0][1].snapshot["plan_items"] == 0


def test_retained_plan_outliving_its_expiry_is_not_reported_as_expired() -> None:
    raw = sealed(item("b-1", timedelta(days=5)))
    after_outage = Harness(now=T0 + timedelta(days=4))
    after_outage.feed(Boot(raw, {}, frozenset({SHA_A})))
    after_outage.feed(PlanReceived(raw))  # reconnect: the broker re-delivers the retained copy
    assert after_outage.events("rejected") == []


# ---------------------------------------------------------------- key rotation

NEW_KEY = SigningKey.generate("plan", frozenset({"plan", "command", "trust"}))
OLD_KEY_FOR_TRUST = SigningKey(KEY.kid, KEY.private_key, frozenset({"plan", "command", "trust"}))


def trust_update(*entries: KeyEntry, seq: int = 100, key: SigningKey = OLD_KEY_FOR_TRUST) -> bytes:
    update = TrustUpdate(
        sender="server",
        seq=seq,
        issued_at=T0,
        expires_at=T0 + timedelta(days=2),
        to="st-1",
        keys=list(entries),
    )
    return seal(update, key)


def entry(key: SigningKey, valid_until: datetime | None = None) -> KeyEntry:
    return KeyEntry(
        kid=key.kid,
        public_key=key.public_b64,
        purposes=sorted(key.purposes),
        valid_until=valid_until,
    )


@pytest.fixture
def rotating() -> Harness:
    ring = Keyring.of(OLD_KEY_FOR_TRUST)
    harness = Harness(core=NodeCore(CoreSettings(station_id="st-1", keyring=ring)))
    harness.feed(Boot(stored_plan=None))
    harness.log.clear()
    return harness


def test_rotation_new_key_is_trusted_and_old_one_honoured_until_retired(rotating: Harness) -> None:
    retire_at = T0 + timedelta(hours=1)
    rotating.feed(PlanReceived(sealed(item("b-1", timedelta(hours=2)), seq=1, key=KEY)))
    rotating.feed(TrustReceived(trust_update(entry(NEW_KEY), entry(KEY, retire_at))))
    assert rotating.events("trust_updated")
    saved = rotating.of(SaveState)[-1][1]
    assert {k["kid"] for k in saved.memory["keys"]} == {NEW_KEY.kid, KEY.kid}

    rotating.feed(PlanReceived(sealed(item("b-2", timedelta(hours=2)), seq=2, key=KEY)))
    assert [i.item_id for i in rotating.core.plan.items] == ["b-2"]  # old key still honoured
    rotating.now = retire_at
    rotating.feed(PlanReceived(sealed(item("b-3", timedelta(hours=2)), seq=3, key=KEY)))
    assert rotating.events("rejected")[-1]["reason"] == "retired_key"
    rotating.feed(PlanReceived(sealed(item("b-4", timedelta(hours=2)), seq=4, key=NEW_KEY)))
    assert [i.item_id for i in rotating.core.plan.items] == ["b-4"]


def test_plan_overtaking_its_trust_update_is_accepted_once_the_update_arrives(
    rotating: Harness,
) -> None:
    rotating.feed(PlanReceived(sealed(item("b-1", timedelta(hours=2)), seq=5, key=NEW_KEY)))
    assert rotating.events("rejected")[-1]["reason"] == "unknown_key"
    rotating.feed(TrustReceived(trust_update(entry(NEW_KEY))))
    assert [i.item_id for i in rotating.core.plan.items] == ["b-1"]


def test_trust_updates_that_would_lock_out_or_are_forged_are_refused(rotating: Harness) -> None:
    plan_only = SigningKey(NEW_KEY.kid, NEW_KEY.private_key, frozenset({"plan"}))
    rotating.feed(TrustReceived(trust_update(entry(plan_only))))
    forged = trust_update(entry(NEW_KEY), key=SigningKey.generate("trust"))
    rotating.feed(TrustReceived(forged))
    plan_key_signing_trust = SigningKey(KEY.kid, KEY.private_key, frozenset({"trust"}))
    ring_without_trust = Harness()  # its config key may sign plans, not trust updates
    ring_without_trust.feed(Boot(stored_plan=None))
    ring_without_trust.feed(TrustReceived(trust_update(entry(NEW_KEY), key=plan_key_signing_trust)))
    assert [e["reason"] for e in rotating.events("rejected")] == ["malformed", "unknown_key"]
    assert [e["reason"] for e in ring_without_trust.events("rejected")] == ["wrong_purpose"]
    assert set(rotating.core.keyring.keys) == {KEY.kid}


def test_rotated_keys_survive_a_reboot(rotating: Harness) -> None:
    rotating.feed(TrustReceived(trust_update(entry(NEW_KEY))))
    saved = rotating.of(SaveState)[-1][1]
    rebooted = Harness(core=NodeCore(CoreSettings(station_id="st-1", keyring=Keyring.of(KEY))))
    rebooted.feed(Boot(saved.plan_raw, saved.memory))
    rebooted.feed(PlanReceived(sealed(item("b-1", timedelta(hours=2)), seq=7, key=NEW_KEY)))
    assert rebooted.events("rejected") == []


# ---------------------------------------------------------------- commands

TONE = AudioRef(sha256="c" * 64, size_bytes=100, duration_ms=5000, url="local:test-tone")


def command(name: str, seq: int, **args: object) -> bytes:
    message = Command(
        sender="server",
        seq=seq,
        issued_at=T0,
        expires_at=T0 + timedelta(minutes=5),
        to="st-1",
        name=name,
        args=args,
    )
    return seal(message, KEY)


def replies(h: Harness) -> list[dict]:
    return [
        json.loads(a.payload)
        for _, a in h.log
        if isinstance(a, Publish) and a.topic.endswith("/reply")
    ]


@pytest.fixture
def station() -> Harness:
    settings = CoreSettings(
        station_id="st-1", keyring=Keyring.of(KEY), test_tone=TONE, amp_readback=True
    )
    harness = Harness(core=NodeCore(settings))
    harness.feed(Boot(stored_plan=None, cached_audio=frozenset({TONE.sha256})))
    harness.log.clear()
    return harness


def test_test_tone_plays_the_stations_own_tone_and_answers_the_command(station: Harness) -> None:
    station.feed(CommandReceived(command("test_tone", 1)))
    station.run_until(T0 + timedelta(seconds=2))
    ((_, cue),) = station.of(StartPlayback)
    assert cue.sha256 == TONE.sha256 and cue.item_id == "cmd-1"
    assert [a.on for _, a in station.of(SetRelay)] == [True]
    station.feed(PlaybackStarted("cmd-1", cue.start_at))
    station.now = cue.start_at + timedelta(seconds=5)
    station.feed(PlaybackFinished("cmd-1", station.now))
    (reply,) = replies(station)
    assert reply["ok"] is True and reply["command_seq"] == 1 and reply["name"] == "test_tone"


def test_commands_with_bad_arguments_or_unknown_names_are_answered_not_obeyed(
    station: Harness,
) -> None:
    station.feed(CommandReceived(command("set_volume", 1, percent=150)))
    station.feed(CommandReceived(command("self_destruct", 2)))
    answers = replies(station)
    assert [a["ok"] for a in answers] == [False, False]
    assert "percent" in answers[0]["detail"] and "unknown command" in answers[1]["detail"]
    assert station.of(SetVolume) == []


def test_replayed_and_forged_commands_are_refused(station: Harness) -> None:
    station.feed(CommandReceived(command("set_volume", 5, percent=40)))
    station.feed(CommandReceived(command("set_volume", 4, percent=90)))
    forged = seal(
        Command(
            sender="server",
            seq=9,
            issued_at=T0,
            expires_at=T0 + timedelta(minutes=5),
            to="st-1",
            name="restart",
        ),
        SigningKey.generate("plan", frozenset({"command"})),
    )
    station.feed(CommandReceived(forged))
    assert [a.percent for _, a in station.of(SetVolume)] == [40]
    assert [e["reason"] for e in station.events("rejected")] == ["replayed", "unknown_key"]
    assert station.of(Restart) == []


def test_set_amp_overrides_for_a_while_then_returns_to_automatic(station: Harness) -> None:
    station.feed(CommandReceived(command("set_amp", 1, on=True, hold_s=30)))
    station.run_until(T0 + timedelta(seconds=31))
    assert [(t - T0).total_seconds() for t, a in station.of(SetRelay)] == [0, 30]
    assert [a.on for _, a in station.of(SetRelay)] == [True, False]


def test_time_sync_restart_and_log_requests(station: Harness) -> None:
    sent = T0 - timedelta(milliseconds=40)
    station.feed(CommandReceived(command("time_sync", 1, server_sent_at=sent.isoformat())))
    station.feed(CommandReceived(command("fetch_log", 2, lines=20)))
    station.feed(CommandReceived(command("restart", 3)))
    sync, restart = replies(station)
    assert sync["data"]["received_at"].startswith("2026-11-25T09:00:00")
    assert station.of(SendLog)[0][1] == SendLog(2, 20)
    assert restart["name"] == "restart" and len(station.of(Restart)) == 1


def test_amplifier_drawing_no_current_while_playing_is_a_fault(station: Harness) -> None:
    station.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=10)))))
    station.feed(AudioFetched(SHA_A))
    station.run_until(T0 + timedelta(seconds=10))
    station.feed(PlaybackStarted("b-1", T0 + timedelta(seconds=10)))
    assert len(station.of(ReadAmplifier)) == 1
    station.feed(RelayReadback(on=True, current_ma=850.0, temp_c=41.0))
    assert station.events("amp_fault") == []
    station.run_until(T0 + timedelta(seconds=15))
    assert len(station.of(ReadAmplifier)) == 2
    station.feed(RelayReadback(on=True, current_ma=0.0, temp_c=40.0))
    (fault,) = station.events("amp_fault")
    assert fault["reason"] == "no_current_while_playing" and fault["item_id"] == "b-1"
    beats = station.of(ReportHealth)
    assert beats[-1][1].snapshot["amp_fault"] == "no_current_while_playing"
