"""Live sessions through the node core: real signed starts, real frame tags, a hand-held clock."""

from __future__ import annotations

import secrets
from datetime import timedelta

from loaxa_protocol import (
    AudioRef,
    Keyring,
    LiveStart,
    LiveStop,
    Plan,
    PlanItem,
    Priority,
    SigningKey,
    StreamRef,
    seal,
)
from loaxa_protocol.live import Frame, SeqWindow, key_text, new_key, pack
from node_firmware.core.events import (
    AlertReceived,
    AudioFetched,
    Boot,
    FetchAudio,
    LiveReceived,
    PlanReceived,
    PlaybackFinished,
    PlaybackStarted,
    PlayLiveFrame,
    SetRelay,
    StartLive,
    StartPlayback,
    StopLive,
    StopPlayback,
)
from node_firmware.core.live import JitterBuffer, Playout
from node_firmware.core.machine import CoreSettings, NodeCore
from tests.unit.test_node_core import SHA_A, SHA_B, T0, Harness, item, sealed
from tests.unit.test_node_core_alerts import ALERT_KEY, LIBRARY, TONE, alert

KEY = SigningKey.generate("plan", frozenset({"plan", "command", "live_start", "live_stop"}))
SESSION = "0123456789abcdef"
SECRET = secrets.token_bytes(32)
FRAME_KEY = new_key(SECRET, SESSION, "st-1")


def start(
    session: str = SESSION, seq: int = 100, minutes: int = 30, frame_key: bytes = FRAME_KEY
) -> bytes:
    message = LiveStart(
        sender="server",
        seq=seq,
        issued_at=T0,
        expires_at=T0 + timedelta(minutes=minutes),
        to="st-1",
        session_id=session,
        frame_key=key_text(frame_key),
        ends_by=T0 + timedelta(minutes=minutes),
        chime=TONE,
    )
    return seal(message, KEY)


def stop(session: str = SESSION, seq: int = 101) -> bytes:
    message = LiveStop(
        sender="server",
        seq=seq,
        issued_at=T0,
        expires_at=T0 + timedelta(minutes=5),
        to="st-1",
        session_id=session,
    )
    return seal(message, KEY)


def frame(seq: int, session: str = SESSION, key: bytes = FRAME_KEY) -> bytes:
    return pack(Frame(session, seq, 1_700_000_000_000 + seq * 60, 2880, b"\xf8opus"), key)


def harness() -> Harness:
    h = Harness(core=NodeCore(CoreSettings("st-1", Keyring.of(KEY, ALERT_KEY), frozenset({"04"}))))
    h.feed(Boot(stored_plan=None, cached_audio=LIBRARY | {SHA_A}))
    h.log.clear()
    return h


def test_a_signed_start_warms_the_amplifier_with_the_chime_and_frames_play() -> None:
    h = harness()
    actions = h.feed(LiveReceived(start()))
    assert SetRelay(True) in actions
    (opened,) = [a for a in actions if isinstance(a, StartLive)]
    assert opened == StartLive(SESSION, TONE.sha256, 1500, None)
    (started,) = h.events("live_started")
    assert started["item_id"] == f"live-{SESSION}"
    for seq in range(3):
        h.now += timedelta(milliseconds=60)
        (played,) = [a for a in h.feed(LiveReceived(frame(seq))) if isinstance(a, PlayLiveFrame)]
        assert played.frame.seq == seq and played.frame.opus == b"\xf8opus"
    h.feed(LiveReceived(stop()))
    assert [a for _, a in h.of(StopLive)] == [StopLive(SESSION, "stopped")]
    (ended,) = h.events("live_ended")
    assert ended["reason"] == "stopped" and "3 frames played" in ended["detail"]
    h.run_until(h.now + timedelta(seconds=2))
    assert [a.on for _, a in h.of(SetRelay)] == [True, False]


def test_forged_replayed_and_unknown_frames_are_refused_and_reported_once() -> None:
    h = harness()
    h.feed(LiveReceived(start()))
    h.feed(LiveReceived(frame(0)))
    forged = frame(1, key=secrets.token_bytes(32))
    for raw in (forged, forged, frame(0), frame(5, session="fedcba9876543210")):
        actions = h.feed(LiveReceived(raw))
        assert not any(isinstance(a, PlayLiveFrame) for a in actions)
    reasons = [e["reason"] for e in h.events("rejected")]
    assert reasons == ["live_bad_tag", "live_replayed", "live_unknown_session"]
    h.now += timedelta(seconds=11)
    h.feed(LiveReceived(forged))
    assert h.events("rejected")[-1]["detail"].endswith("(2 refused since the last report)")
    # a frame tagged with another station's key is forged here too
    other = new_key(SECRET, SESSION, "st-2")
    h.feed(LiveReceived(frame(7, key=other)))
    assert not any(a.frame.seq == 7 for _, a in h.of(PlayLiveFrame))


def test_three_seconds_without_frames_silence_the_station_and_frames_bring_it_back() -> None:
    h = harness()
    h.feed(LiveReceived(start()))
    h.feed(LiveReceived(frame(0)))
    h.run_until(h.now + timedelta(seconds=3))
    assert [a.reason for _, a in h.of(StopLive)] == ["silent"]
    h.run_until(h.now + timedelta(seconds=2))
    assert [a.on for _, a in h.of(SetRelay)] == [True, False]
    actions = h.feed(LiveReceived(frame(1)))
    assert SetRelay(True) in actions and any(isinstance(a, StartLive) for a in actions)
    assert any(isinstance(a, PlayLiveFrame) for a in actions)


def test_an_alert_pre_empts_live_which_resumes_after_it() -> None:
    h = harness()
    h.feed(LiveReceived(start()))
    h.feed(LiveReceived(frame(0)))
    h.feed(AlertReceived(alert(repeat=1, tone=None)))
    assert [a.reason for _, a in h.of(StopLive)] == ["alert"]
    assert h.events("live_ended")[0]["reason"] == "alert"
    actions = h.feed(LiveReceived(frame(1)))  # during the alert: dropped
    assert not any(isinstance(a, PlayLiveFrame) for a in actions)
    (part,) = [a for _, a in h.of(StartPlayback)]
    h.feed(PlaybackStarted(part.item_id, h.now))
    h.now += timedelta(seconds=1)
    actions = h.feed(PlaybackFinished(part.item_id, h.now))
    assert any(isinstance(a, StartLive) for a in actions)  # frames still come: back on air
    actions = h.feed(LiveReceived(frame(2)))
    assert any(isinstance(a, PlayLiveFrame) and a.frame.seq == 2 for a in actions)


def test_live_pre_empts_a_bulletin_and_a_relayed_stream_resumes_after_it() -> None:
    h = harness()
    stream = PlanItem(
        item_id="s-1",
        start_at=T0 + timedelta(seconds=10),
        priority=Priority.BACKGROUND,
        stream=StreamRef(url="http://vov.example/vov1"),
        window_ms=600_000,
    )
    h.feed(PlanReceived(sealed(stream, key=KEY)))
    h.run_until(T0 + timedelta(seconds=10))
    h.feed(PlaybackStarted("s-1", h.now))
    h.feed(LiveReceived(start()))
    assert StopPlayback("s-1", f"live session {SESSION}") in [a for _, a in h.of(StopPlayback)]
    assert h.events("interrupted")[0]["reason"] == "preempted"
    h.feed(LiveReceived(stop()))
    cues = [a for _, a in h.of(StartPlayback) if a.item_id == "s-1"]
    assert len(cues) == 2 and cues[1].start_at == h.now


def test_an_emergency_item_pre_empts_live_and_lower_items_fail_busy() -> None:
    h = harness()
    h.feed(
        PlanReceived(
            sealed(
                item("n-1", timedelta(seconds=20)),
                item("e-1", timedelta(seconds=60), priority=Priority.EMERGENCY),
                key=KEY,
            )
        )
    )
    h.feed(AudioFetched(SHA_A))
    h.feed(LiveReceived(start()))
    for second in range(0, 70):
        h.now = T0 + timedelta(seconds=second)
        h.feed(LiveReceived(frame(second)))
    busy = [e for e in h.events("failed") if e["item_id"] == "n-1"]
    assert busy and busy[0]["reason"] == "busy"
    assert h.events("live_ended")[0]["reason"] == "preempted"
    assert any(a.item_id == "e-1" for _, a in h.of(StartPlayback))


def test_the_retained_start_is_joined_once_and_rejoined_after_a_reboot() -> None:
    h = harness()
    h.feed(LiveReceived(start()))
    assert len(h.of(StartLive)) == 1
    h.feed(LiveReceived(start()))  # the retained copy on a reconnect
    assert len(h.of(StartLive)) == 1
    memory = h.core._memory()
    rebooted = Harness(core=NodeCore(CoreSettings("st-1", Keyring.of(KEY), frozenset({"04"}))))
    rebooted.feed(Boot(stored_plan=None, memory=memory))
    rebooted.feed(LiveReceived(start()))
    assert not rebooted.of(StartLive)  # rejoined quietly: it sounds when frames come
    rebooted.feed(LiveReceived(frame(40)))
    assert len(rebooted.of(StartLive)) == 1 and len(rebooted.of(PlayLiveFrame)) == 1
    older = start(session="00000000000000aa", seq=99)
    rebooted.feed(LiveReceived(older))
    assert rebooted.events("rejected")[0]["reason"] == "replayed"


def test_a_session_ends_at_its_maximum_length() -> None:
    h = harness()
    h.feed(LiveReceived(start(minutes=1)))
    for n in range(25):
        h.now = T0 + timedelta(seconds=2.5 * n)
        h.feed(LiveReceived(frame(n)))
    h.run_until(T0 + timedelta(minutes=1, seconds=1))
    assert h.events("live_ended")[-1]["reason"] == "max_length"
    assert h.core.live is None


def test_seq_window_refuses_repeats_and_very_old_sequences() -> None:
    window = SeqWindow(size=8)
    assert all(window.accept(s) for s in (0, 2, 1, 10))
    assert not window.accept(2) and not window.accept(1)  # 1 and 2 are behind 10 - 8
    assert window.accept(5) and not window.accept(5)


def test_jitter_buffer_waits_plays_conceals_and_adapts() -> None:
    jb: JitterBuffer[int] = JitterBuffer(frame_ms=60, target_ms=120)
    jb.push(0, 0)
    assert jb.pop(0.0)[0] is Playout.WAIT
    jb.push(1, 1)
    assert jb.pop(0.06) == (Playout.PLAY, 0)
    jb.push(3, 3)
    assert jb.pop(0.12) == (Playout.PLAY, 1)
    assert jb.pop(0.18) == (Playout.CONCEAL, None)  # 2 lost, 3 is here
    assert jb.pop(0.24) == (Playout.PLAY, 3)
    assert jb.pop(0.30) == (Playout.CONCEAL, None)  # underrun: target grows
    assert jb.target_ms == 180 and jb.concealed == 2
    jb.push(2, 2)
    assert jb.late == 1
    for n in range(5):
        jb.pop(0.36 + n * 0.06)
    assert jb.rebuffered == 1


def test_jitter_buffer_wins_latency_back_after_congestion() -> None:
    jb: JitterBuffer[int] = JitterBuffer(frame_ms=60, target_ms=120, min_ms=120)
    for seq in range(12):  # a burst: 12 frames (720 ms) queued behind a download
        jb.push(seq, seq)
    jb.target_ms = 600  # raised by the underruns the congestion caused
    now, seq = 0.0, 12
    for _ in range(4000):  # 4 min of steady arrivals, one frame a period
        jb.push(seq, seq)
        seq += 1
        jb.pop(now)
        now += 0.06
    assert jb.target_ms == 120 and jb.depth_ms() <= 120 + 2 * 60
    assert jb.shrunk >= 5 and jb.concealed == 0


def test_programme_downloads_wait_while_live_sounds_and_resume_after() -> None:
    """On a slow link a download queues the live frames behind it: while live sounds only
    what may pre-empt it (the alert library, emergency items' audio) is fetched."""
    h = harness()
    h.feed(LiveReceived(start()))
    h.feed(LiveReceived(frame(0)))
    sha_e, sha_lib = "e" * 64, "f" * 64
    emergency = item("e-1", timedelta(hours=1), sha=sha_e, priority=Priority.EMERGENCY)
    library = AudioRef(sha256=sha_lib, size_bytes=500, duration_ms=4000, url="http://s/lib")
    plan = Plan(
        sender="server", seq=1, issued_at=T0, expires_at=T0 + timedelta(days=2), to="st-1",
        station_id="st-1", horizon_until=T0 + timedelta(hours=48),
        items=[item("n-1", timedelta(hours=1), sha=SHA_B), emergency], keep=[library],
    )  # fmt: skip
    h.feed(PlanReceived(seal(plan, KEY)))
    assert {a.ref.sha256 for _, a in h.of(FetchAudio)} == {sha_lib, sha_e}
    h.feed(LiveReceived(frame(1)))
    h.run_until(h.now + timedelta(seconds=1))
    assert SHA_B not in {a.ref.sha256 for _, a in h.of(FetchAudio)}  # still held
    actions = h.feed(LiveReceived(stop()))
    assert [a.ref.sha256 for a in actions if isinstance(a, FetchAudio)] == [SHA_B]


def test_held_downloads_resume_when_an_alert_silences_live() -> None:
    h = harness()
    h.feed(LiveReceived(start()))
    h.feed(LiveReceived(frame(0)))
    h.feed(PlanReceived(sealed(item("n-1", timedelta(hours=1), sha=SHA_B), key=KEY)))
    assert not h.of(FetchAudio)
    actions = h.feed(AlertReceived(alert(repeat=1, tone=None)))
    assert [a.ref.sha256 for a in actions if isinstance(a, FetchAudio)] == [SHA_B]
    h.feed(AudioFetched(SHA_B))
    assert SHA_B in h.core.cached
