"""Emergency alerts through the node core: real signed envelopes, a hand-held clock."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta

import pytest

from loaxa_protocol import (
    Alert,
    AlertCancel,
    AudioRef,
    InlineAudio,
    Keyring,
    PlanItem,
    Priority,
    SigningKey,
    StreamRef,
    seal,
)
from node_firmware.core.alerts import MEMORY_MAX
from node_firmware.core.events import (
    AlertReceived,
    AudioFetched,
    Boot,
    CommandReceived,
    PlanReceived,
    PlaybackFailed,
    PlaybackFinished,
    PlaybackStarted,
    Publish,
    ReportHealth,
    SaveState,
    SetRelay,
    StartPlayback,
    StopPlayback,
    StoreAudio,
)
from node_firmware.core.machine import CoreSettings, NodeCore
from tests.unit.test_node_core import KEY, SHA_A, T0, Harness, command, item, sealed

ALERT_KEY = SigningKey.generate("alert", frozenset({"alert", "alert_cancel"}))
TONE = AudioRef(sha256="7" * 64, size_bytes=900, duration_ms=3000, url="http://s/tone")
TYPHOON = AudioRef(sha256="8" * 64, size_bytes=9000, duration_ms=20_000, url="http://s/typhoon")
LIBRARY = frozenset({TONE.sha256, TYPHOON.sha256})


def alert(
    alert_id: str = "a-1",
    *,
    drill: bool = False,
    to: str = "area:04",
    repeat: int = 2,
    gap_ms: int = 3000,
    tone: AudioRef | None = TONE,
    audio: AudioRef | None = TYPHOON,
    inline: InlineAudio | None = None,
    expires: timedelta = timedelta(hours=2),
    key: SigningKey = ALERT_KEY,
    issued_at: datetime = T0,
) -> bytes:
    message = Alert(
        sender="province",
        seq=1,
        issued_at=issued_at,
        expires_at=issued_at + expires,
        to=to,
        alert_id=alert_id,
        title="Bão số 3",
        drill=drill,
        tone=tone,
        audio=None if inline is not None else audio,
        inline=inline,
        repeat=repeat,
        gap_ms=gap_ms,
    )
    return seal(message, key)


def cancel(alert_id: str = "a-1", expires: timedelta = timedelta(hours=2)) -> bytes:
    message = AlertCancel(
        sender="province",
        seq=2,
        issued_at=T0,
        expires_at=T0 + expires,
        to="area:04",
        alert_id=alert_id,
    )
    return seal(message, ALERT_KEY)


def inline_audio(data: bytes, sha256: str | None = None) -> InlineAudio:
    return InlineAudio(
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        duration_ms=15_000,
        data=base64.b64encode(data).decode(),
    )


def make_station(cached: frozenset[str] = LIBRARY, memory: dict | None = None) -> Harness:
    settings = CoreSettings(
        station_id="st-1", keyring=Keyring.of(KEY, ALERT_KEY), areas=frozenset({"04"})
    )
    harness = Harness(core=NodeCore(settings))
    harness.feed(Boot(stored_plan=None, memory=memory or {}, cached_audio=cached))
    harness.log.clear()
    return harness


@pytest.fixture
def st() -> Harness:
    return make_station()


def alert_events(h: Harness) -> list[dict]:
    return [e for e in h.events() if e.get("alert_id") is not None]


def play_through(h: Harness) -> None:
    """Act as the player for alert parts: start each on its instant, finish it on time."""
    done: set[str] = set()
    while True:
        cues = [
            a
            for _, a in h.of(StartPlayback)
            if a.item_id.startswith("alert:") and a.item_id not in done
        ]
        if not cues and h.core.alert is None:
            return
        if not cues:  # a gap between repetitions
            assert h.wake is not None
            h.run_until(h.wake)
            continue
        cue = cues[0]
        done.add(cue.item_id)
        h.run_until(max(h.now, cue.start_at))
        h.feed(PlaybackStarted(cue.item_id, h.now))
        h.run_until(h.now + timedelta(milliseconds=cue.duration_ms))
        if h.core.alert is not None and h.core.alert.part_id == cue.item_id:
            h.feed(PlaybackFinished(cue.item_id, h.now))


# ---------------------------------------------------------------- the fast path


def test_alert_is_acked_first_then_the_amplifier_and_the_tone_start_at_once(st: Harness) -> None:
    actions = st.feed(AlertReceived(alert()))
    first = actions[0]
    assert isinstance(first, Publish) and json.loads(first.payload)["kind"] == "alert_received"
    kinds = [type(a).__name__ for a in actions]
    assert kinds.index("SetRelay") < kinds.index("StartPlayback") < kinds.index("SaveState")
    (cue,) = [a for a in actions if isinstance(a, StartPlayback)]
    assert cue.start_at == T0 and cue.sha256 == TONE.sha256  # no amplifier lead wait
    (received,) = st.events("alert_received")
    assert received["alert_id"] == "a-1" and received["drill"] is False


def test_alert_pre_empts_a_bulletin_plays_tone_and_message_twice_then_amp_off(
    st: Harness,
) -> None:
    st.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=2), duration_ms=600_000))))
    st.feed(AudioFetched(SHA_A))
    st.run_until(T0 + timedelta(seconds=2))
    st.feed(PlaybackStarted("b-1", T0 + timedelta(seconds=2)))
    st.run_until(T0 + timedelta(seconds=10))
    alert_at = st.now

    st.feed(AlertReceived(alert()))
    assert [a.item_id for _, a in st.of(StopPlayback)] == ["b-1"]
    (cut,) = st.events("interrupted")
    assert cut["reason"] == "alert" and cut["item_id"] == "b-1"
    assert cut["finished_at"] == alert_at.isoformat().replace("+00:00", "Z")
    beat = st.of(ReportHealth)[-1][1]
    assert beat.snapshot["playing_item"] == "alert:a-1"

    play_through(st)
    parts = [(a.sha256, a.start_at - alert_at) for _, a in st.of(StartPlayback)][1:]
    assert parts == [
        (TONE.sha256, timedelta(0)),
        (TYPHOON.sha256, timedelta(seconds=3)),
        (TONE.sha256, timedelta(seconds=26)),  # 3 s tone + 20 s message + 3 s gap
        (TYPHOON.sha256, timedelta(seconds=29)),
    ]
    kinds = [e["kind"] for e in alert_events(st)]
    assert kinds == ["alert_received", "alert_playing", "alert_finished"]
    finished = st.events("alert_finished")[0]
    assert finished["started_at"].startswith("2026-11-25T09:00:10")
    assert finished["finished_at"].startswith("2026-11-25T09:00:59")
    assert all(e["drill"] is False for e in alert_events(st))
    st.run_until(st.now + timedelta(seconds=5))
    assert [a.on for _, a in st.of(SetRelay)] == [True, False]
    assert st.of(SetRelay)[-1][0] == alert_at + timedelta(seconds=50)  # 49 s + 1 s tail
    assert st.of(ReportHealth)[-1][1].snapshot["playing_item"] is None


def test_inline_alert_is_verified_stored_then_played(st: Harness) -> None:
    data = b"OggS" + bytes(range(256)) * 240  # ~60 KiB
    actions = st.feed(AlertReceived(alert(inline=inline_audio(data), tone=None, repeat=1)))
    kinds = [type(a).__name__ for a in actions]
    assert kinds.index("Publish") < kinds.index("StoreAudio") < kinds.index("StartPlayback")
    (store,) = [a for a in actions if isinstance(a, StoreAudio)]
    assert store.data == data and store.sha256 == hashlib.sha256(data).hexdigest()
    (cue,) = [a for a in actions if isinstance(a, StartPlayback)]
    assert cue.sha256 == store.sha256 and cue.duration_ms == 15_000
    play_through(st)
    assert [e["kind"] for e in alert_events(st)][-1] == "alert_finished"


def test_inline_audio_not_matching_its_hash_is_refused_and_nothing_stops(st: Harness) -> None:
    st.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=2), duration_ms=60_000))))
    st.feed(AudioFetched(SHA_A))
    st.run_until(T0 + timedelta(seconds=2))
    lying = inline_audio(b"the real words", sha256="0" * 64)
    actions = st.feed(AlertReceived(alert(inline=lying)))
    assert not [a for a in actions if isinstance(a, StoreAudio | StopPlayback | StartPlayback)]
    (failed,) = st.events("alert_failed")
    assert failed["reason"] == "inline_hash" and "0" * 64 in failed["detail"]
    assert st.core.current == "b-1"


def test_canned_audio_missing_fails_the_alert_and_spares_the_programme() -> None:
    st = make_station(cached=frozenset({TONE.sha256, SHA_A}))
    st.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=2), duration_ms=60_000))))
    st.run_until(T0 + timedelta(seconds=2))
    st.feed(AlertReceived(alert()))
    (failed,) = st.events("alert_failed")
    assert failed["reason"] == "audio_missing" and TYPHOON.sha256 in failed["detail"]
    assert st.of(StopPlayback) == [] and st.core.current == "b-1"


def test_missing_tone_is_skipped_and_said(st: Harness) -> None:
    other_tone = AudioRef(sha256="9" * 64, size_bytes=9, duration_ms=1000, url="http://s/t2")
    st.feed(AlertReceived(alert(tone=other_tone, repeat=1)))
    play_through(st)
    assert [a.sha256 for _, a in st.of(StartPlayback)] == [TYPHOON.sha256]
    assert "tone" in st.events("alert_playing")[0]["detail"]


def test_player_failure_is_reported_as_alert_failed(st: Harness) -> None:
    st.feed(AlertReceived(alert()))
    (_, cue) = st.of(StartPlayback)[0]
    st.feed(PlaybackFailed(cue.item_id, "ALSA device busy"))
    (failed,) = st.events("alert_failed")
    assert failed["reason"] == "player" and failed["detail"] == "ALSA device busy"
    st.run_until(st.now + timedelta(seconds=2))
    assert [a.on for _, a in st.of(SetRelay)] == [True, False]


def test_alert_beats_a_technicians_forced_amplifier_off(st: Harness) -> None:
    st.feed(CommandReceived(command("set_amp", 1, on=False, hold_s=600)))
    st.feed(AlertReceived(alert(repeat=1)))
    st.run_until(T0 + timedelta(seconds=1))
    assert [a.on for _, a in st.of(SetRelay)][-1] is True


# ---------------------------------------------------------------- admission


def test_refused_alerts_are_reported_with_their_id_once_signature_checked(st: Harness) -> None:
    plan_key = SigningKey(KEY.kid, KEY.private_key, frozenset({"alert"}))
    plan_key_alert = alert("a-plan", drill=True, key=plan_key)  # the station trusts it for plans
    forged = alert("a-forged", key=SigningKey.generate("alert", frozenset({"alert"})))
    envelope = json.loads(alert("a-tampered"))
    envelope["payload"] = envelope["payload"][:-8] + "AAAAAAAA"
    tampered = json.dumps(envelope).encode()
    expired = alert("a-old", issued_at=T0 - timedelta(hours=3))
    elsewhere = alert("a-elsewhere", to="area:05")
    for raw in (plan_key_alert, forged, tampered, expired, elsewhere, b"{"):
        actions = st.feed(AlertReceived(raw))
        assert not [a for a in actions if isinstance(a, StartPlayback | SetRelay | SaveState)]
    rejected = [(e["reason"], e.get("alert_id"), e.get("drill")) for e in st.events("rejected")]
    assert rejected == [
        ("wrong_purpose", "a-plan", True),
        ("unknown_key", None, None),  # unsigned content is never repeated
        ("bad_signature", None, None),
        ("expired", "a-old", False),
        ("wrong_station", "a-elsewhere", False),
        ("malformed", None, None),
    ]
    assert st.events("alert_received") == []


def test_a_plan_on_the_alert_topic_is_refused(st: Harness) -> None:
    st.feed(AlertReceived(sealed(item("b-1", timedelta(minutes=1)))))
    (rejected,) = st.events("rejected")
    assert rejected["reason"] == "malformed" and "plan" in rejected["detail"]


def test_a_copy_of_a_heard_alert_is_only_re_acked_even_after_a_reboot(st: Harness) -> None:
    raw = alert(repeat=1)
    st.feed(AlertReceived(raw))
    play_through(st)
    cues = len(st.of(StartPlayback))
    st.feed(AlertReceived(raw))
    assert [e["kind"] for e in alert_events(st)] == [
        "alert_received",
        "alert_playing",
        "alert_finished",
        "alert_received",
    ]
    assert len(st.of(StartPlayback)) == cues
    memory = st.of(SaveState)[-1][1].memory
    assert "a-1" in memory["alerts"]

    rebooted = make_station(memory=json.loads(json.dumps(memory)))
    rebooted.now = st.now
    rebooted.feed(AlertReceived(raw))
    assert [e["kind"] for e in alert_events(rebooted)] == ["alert_received"]
    assert rebooted.of(StartPlayback) == []


def test_alert_memory_is_pruned_at_expiry_and_bounded(st: Harness) -> None:
    st.feed(AlertReceived(alert("short", expires=timedelta(minutes=1), repeat=1)))
    entry = st.core.alerts.entries["short"]
    st.now = T0 + timedelta(minutes=2)
    for n in range(MEMORY_MAX + 20):
        later = entry._replace(expires_at=st.now + timedelta(hours=n + 1))
        st.core.alerts.remember(f"x-{n}", later, st.now)
    assert "short" not in st.core.alerts.entries
    assert len(st.core.alerts.entries) <= MEMORY_MAX
    assert "x-0" not in st.core.alerts.entries  # the soonest to expire go first
    assert f"x-{MEMORY_MAX + 19}" in st.core.alerts.entries


# ---------------------------------------------------------------- cancel, expiry, overlap


def test_cancel_stops_a_playing_alert_at_once_and_the_amp_after_the_tail(st: Harness) -> None:
    st.feed(AlertReceived(alert()))
    (_, cue) = st.of(StartPlayback)[0]
    st.feed(PlaybackStarted(cue.item_id, T0))
    st.now = T0 + timedelta(seconds=2)
    st.feed(AlertReceived(cancel()))
    assert [a.item_id for _, a in st.of(StopPlayback)] == [cue.item_id]
    (cancelled,) = st.events("alert_cancelled")
    assert cancelled["reason"] == "stopped" and cancelled["drill"] is False
    assert cancelled["finished_at"].startswith("2026-11-25T09:00:02")
    st.run_until(T0 + timedelta(seconds=10))
    assert [a.on for _, a in st.of(SetRelay)] == [True, False]
    assert st.of(SetRelay)[-1][0] == T0 + timedelta(seconds=3)
    assert len(st.of(StartPlayback)) == 1


def test_cancel_during_the_gap_prevents_the_next_repetition(st: Harness) -> None:
    st.feed(AlertReceived(alert(tone=None, gap_ms=10_000)))
    (_, cue) = st.of(StartPlayback)[0]
    st.feed(PlaybackStarted(cue.item_id, T0))
    st.now = T0 + timedelta(seconds=20)
    st.feed(PlaybackFinished(cue.item_id, st.now))
    st.now += timedelta(seconds=2)
    st.feed(AlertReceived(cancel()))
    st.run_until(T0 + timedelta(minutes=2))
    assert len(st.of(StartPlayback)) == 1 and st.of(StopPlayback) == []
    assert "1 of 2" in st.events("alert_cancelled")[0]["detail"]


def test_a_cancel_arriving_first_keeps_the_late_alert_silent(st: Harness) -> None:
    st.feed(AlertReceived(cancel()))
    st.feed(AlertReceived(alert()))
    assert st.of(StartPlayback) == [] and st.events("alert_received") == []
    reasons = [e["reason"] for e in st.events("alert_cancelled")]
    assert reasons == ["before_arrival", "before_arrival"]


def test_an_alert_reaching_its_expiry_mid_play_is_stopped(st: Harness) -> None:
    st.feed(AlertReceived(alert(expires=timedelta(seconds=10), repeat=3)))
    play_through(st)
    assert len(st.of(StopPlayback)) == 1
    (finished,) = st.events("alert_finished")
    assert finished["reason"] == "expired" and "0 of 3" in finished["detail"]


def test_a_newer_alert_supersedes_the_one_playing(st: Harness) -> None:
    st.feed(AlertReceived(alert("a-1")))
    (_, first) = st.of(StartPlayback)[0]
    st.feed(PlaybackStarted(first.item_id, T0))
    st.now = T0 + timedelta(seconds=1)
    st.feed(AlertReceived(alert("a-2")))
    assert [a.item_id for _, a in st.of(StopPlayback)] == [first.item_id]
    (failed,) = st.events("alert_failed")
    assert failed["alert_id"] == "a-1" and failed["reason"] == "superseded"
    assert st.of(StartPlayback)[-1][1].item_id.startswith("alert:a-2")
    assert st.of(ReportHealth)[-1][1].snapshot["playing_item"] == "alert:a-2"


def test_a_drill_never_cuts_a_real_alert(st: Harness) -> None:
    st.feed(AlertReceived(alert("real")))
    st.feed(AlertReceived(alert("exercise", drill=True)))
    (failed,) = st.events("alert_failed")
    assert (failed["alert_id"], failed["drill"], failed["reason"]) == ("exercise", True, "busy")
    assert st.of(StopPlayback) == []


def test_a_drill_is_a_drill_in_every_event(st: Harness) -> None:
    st.feed(AlertReceived(alert("d-1", drill=True, repeat=1)))
    play_through(st)
    st.feed(AlertReceived(cancel("d-1")))
    events = alert_events(st)
    assert [e["kind"] for e in events] == [
        "alert_received",
        "alert_playing",
        "alert_finished",
        "alert_cancelled",
    ]
    assert all(e["drill"] is True for e in events)


# ---------------------------------------------------------------- the programme around it


def test_items_due_during_an_alert_fail_busy_but_a_stream_relays_the_rest_after(
    st: Harness,
) -> None:
    vov = StreamRef(url="http://vov.example/vov1")
    stream = PlanItem(
        item_id="vov-1",
        start_at=T0 + timedelta(seconds=10),
        priority=Priority.BACKGROUND,
        stream=vov,
        window_ms=120_000,
    )
    bulletin = item("b-1", timedelta(seconds=20))
    st.feed(PlanReceived(sealed(stream, bulletin)))
    st.feed(AudioFetched(SHA_A))
    st.now = T0 + timedelta(seconds=5)
    st.feed(AlertReceived(alert(repeat=1)))
    play_through(st)  # 23 s of alert: 09:00:05 to 09:00:28
    (busy,) = st.events("failed")
    assert busy["item_id"] == "b-1" and busy["reason"] == "busy" and "a-1" in busy["detail"]
    relay = st.of(StartPlayback)[-1]
    assert relay[1].item_id == "vov-1" and relay[1].stream == vov and relay[1].sha256 is None
    assert relay[0] == T0 + timedelta(seconds=28)
    assert relay[1].duration_ms == 102_000  # what is left of the window
    assert [a.on for _, a in st.of(SetRelay)] == [True]  # the amplifier stays on between


def test_an_item_due_just_before_the_alert_ends_starts_within_the_grace(st: Harness) -> None:
    st.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=19, milliseconds=500)))))
    st.feed(AudioFetched(SHA_A))
    st.feed(AlertReceived(alert(tone=None, repeat=1)))  # 20 s of message from T0
    play_through(st)
    ((cued_at, cue),) = [(t, a) for t, a in st.of(StartPlayback) if a.item_id == "b-1"]
    assert cued_at == cue.start_at == T0 + timedelta(seconds=20)
    assert st.events("failed") == []


def test_cancels_are_acked_every_time_and_remembered_across_a_reboot(st: Harness) -> None:
    st.feed(AlertReceived(alert("a-1", tone=None, repeat=1)))
    play_through(st)
    st.feed(AlertReceived(cancel("a-1")))
    st.feed(AlertReceived(cancel("a-1")))
    st.feed(AlertReceived(cancel("a-2")))  # its alert has not arrived yet
    reasons = [(e["alert_id"], e["reason"]) for e in st.events("alert_cancelled")]
    assert reasons == [
        ("a-1", "already_over"),
        ("a-1", "already_cancelled"),
        ("a-2", "before_arrival"),
    ]
    memory = json.loads(json.dumps(st.of(SaveState)[-1][1].memory))
    rebooted = make_station(memory=memory)
    rebooted.feed(AlertReceived(alert("a-2")))
    assert rebooted.of(StartPlayback) == []
    assert [e["reason"] for e in rebooted.events("alert_cancelled")] == ["before_arrival"]


def test_inline_audio_that_is_not_base64_is_refused(st: Harness) -> None:
    garbled = InlineAudio(sha256="1" * 64, duration_ms=1000, data="T2dnUw==\n!!")
    actions = st.feed(AlertReceived(alert(inline=garbled)))
    assert not [a for a in actions if isinstance(a, StoreAudio | StartPlayback)]
    (failed,) = st.events("alert_failed")
    assert failed["reason"] == "inline_hash" and "not base64" in failed["detail"]
