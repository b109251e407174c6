"""Plan items as the node core plays them: streams, volume, the kept library, as-run truth."""

from __future__ import annotations

from datetime import timedelta

from loaxa_protocol import AudioRef, Keyring, PlanItem, Priority, StreamRef, seal
from loaxa_protocol.messages import Plan
from node_firmware.core.events import (
    AlertReceived,
    AudioFetched,
    Boot,
    FetchAudio,
    PinAudio,
    PlanReceived,
    PlaybackFinished,
    PlaybackStarted,
    StartPlayback,
    StopPlayback,
    StreamUnreachable,
)
from node_firmware.core.machine import CoreSettings, NodeCore
from tests.unit.test_node_core import KEY, SHA_A, SHA_B, T0, Harness, item, sealed
from tests.unit.test_node_core_alerts import (
    ALERT_KEY,
    LIBRARY,
    TONE,
    TYPHOON,
    alert,
    play_through,
)

FALLBACK = AudioRef(sha256="f" * 64, size_bytes=500, duration_ms=30_000, url="http://s/fallback")
VOV = StreamRef(url="http://vov.example/vov1", fallback=FALLBACK)
FINAL = ("played", "interrupted", "failed")


def stream(
    item_id: str, start: timedelta, window_ms: int = 600_000, ref: StreamRef = VOV
) -> PlanItem:
    return PlanItem(
        item_id=item_id,
        start_at=T0 + start,
        priority=Priority.BACKGROUND,
        stream=ref,
        window_ms=window_ms,
        volume_pct=80,
    )


def plan_with(*items: PlanItem, keep: list[AudioRef], seq: int = 1) -> bytes:
    plan = Plan(
        sender="server",
        seq=seq,
        issued_at=T0,
        expires_at=T0 + timedelta(days=2),
        to="st-1",
        station_id="st-1",
        horizon_until=T0 + timedelta(hours=48),
        items=list(items),
        keep=keep,
    )
    return seal(plan, KEY)


def station(cached: frozenset[str] = frozenset()) -> Harness:
    settings = CoreSettings(
        station_id="st-1",
        keyring=Keyring.of(KEY, ALERT_KEY),
        areas=frozenset({"04"}),
        test_tone=TONE,
    )
    harness = Harness(core=NodeCore(settings))
    harness.feed(Boot(stored_plan=None, cached_audio=cached))
    harness.log.clear()
    return harness


def finals(h: Harness) -> dict[str, list[dict]]:
    """Every final as-run event, by item."""
    by_item: dict[str, list[dict]] = {}
    for event in h.events():
        if event["kind"] in FINAL:
            by_item.setdefault(event["item_id"], []).append(event)
    return by_item


# ---------------------------------------------------------------- streams


def test_stream_item_relays_its_window_with_the_fallback_fetched_ahead() -> None:
    h = station()
    h.feed(PlanReceived(sealed(stream("vov-1", timedelta(seconds=30)))))
    assert [a.ref for _, a in h.of(FetchAudio)] == [FALLBACK]
    assert FALLBACK.sha256 in h.of(PinAudio)[0][1].sha256s
    h.run_until(T0 + timedelta(seconds=30))  # the fallback never arrived: the stream starts
    ((_, cue),) = h.of(StartPlayback)
    assert cue == StartPlayback("vov-1", None, T0 + timedelta(seconds=30), 600_000, 80, VOV)

    h.feed(PlaybackStarted("vov-1", cue.start_at))
    h.feed(StreamUnreachable("vov-1", "http_status 503"))
    (unreachable,) = h.events("stream_unreachable")
    assert unreachable["item_id"] == "vov-1" and unreachable["reason"] == "http_status 503"
    assert "no fallback" in unreachable["detail"]
    assert h.of(StopPlayback) == []  # the player fell back; the core keeps the item playing

    h.feed(AudioFetched(FALLBACK.sha256))
    h.feed(StreamUnreachable("vov-1", "timeout"))
    assert FALLBACK.sha256 in h.events("stream_unreachable")[-1]["detail"]
    h.now = cue.start_at + timedelta(minutes=10)
    h.feed(PlaybackFinished("vov-1", h.now))
    (played,) = finals(h)["vov-1"]
    assert played["kind"] == "played" and played["finished_at"].startswith("2026-11-25T09:10:30")


def test_stream_plan_arriving_mid_window_relays_the_rest_and_a_past_window_fails_late() -> None:
    h = station()
    h.now = T0 + timedelta(minutes=4)
    h.feed(
        PlanReceived(sealed(stream("vov-1", timedelta(0)), stream("vov-0", -timedelta(hours=1))))
    )
    ((_, cue),) = h.of(StartPlayback)
    assert cue.item_id == "vov-1" and cue.start_at == h.now and cue.duration_ms == 360_000
    (late,) = finals(h)["vov-0"]
    assert late["kind"] == "failed" and late["reason"] == "late"


def test_a_stream_cut_by_an_alert_is_reported_once_and_relays_the_rest_of_its_window() -> None:
    h = station(cached=LIBRARY)
    h.feed(PlanReceived(sealed(stream("vov-1", timedelta(seconds=1)))))
    h.run_until(T0 + timedelta(seconds=1))
    h.feed(PlaybackStarted("vov-1", h.now))
    h.run_until(T0 + timedelta(seconds=60))
    h.feed(AlertReceived(alert(repeat=1)))
    play_through(h)  # 3 s tone + 20 s message
    relays = [(t, a) for t, a in h.of(StartPlayback) if a.item_id == "vov-1"]
    assert len(relays) == 2
    resumed_at, resumed = relays[-1]
    assert resumed_at == T0 + timedelta(seconds=83) and resumed.stream == VOV
    assert resumed.duration_ms == 600_000 - 82_000
    h.feed(PlaybackStarted("vov-1", h.now))
    h.now = T0 + timedelta(seconds=601)
    h.feed(PlaybackFinished("vov-1", h.now))
    (cut,) = finals(h)["vov-1"]  # exactly one final event, written at the cut
    assert cut["kind"] == "interrupted" and cut["reason"] == "alert"
    assert cut["finished_at"].startswith("2026-11-25T09:01:00")


# ---------------------------------------------------------------- volume and the kept library


def test_per_item_volume_reaches_the_player() -> None:
    h = station(cached=frozenset({SHA_A}))
    loud = item("b-1", timedelta(seconds=5)).model_copy(update={"volume_pct": 100})
    h.feed(PlanReceived(sealed(loud, item("b-2", timedelta(minutes=5)))))
    h.run_until(T0 + timedelta(seconds=15))
    h.feed(PlaybackFinished("b-1", h.now))
    h.run_until(T0 + timedelta(minutes=5))
    assert [a.volume_pct for _, a in h.of(StartPlayback)] == [100, None]


def test_keep_is_fetched_and_pinned_with_the_plan_audio_and_the_test_tone() -> None:
    h = station(cached=frozenset({TONE.sha256}))
    h.feed(PlanReceived(plan_with(item("b-1", timedelta(minutes=5)), keep=[TONE, TYPHOON])))
    ((_, pin),) = h.of(PinAudio)
    assert pin.sha256s == {SHA_A, TONE.sha256, TYPHOON.sha256}
    assert {a.ref.sha256 for _, a in h.of(FetchAudio)} == {SHA_A, TYPHOON.sha256}
    h.feed(AudioFetched(SHA_A))
    h.feed(AudioFetched(TYPHOON.sha256))
    h.run_until(T0 + timedelta(minutes=10))
    h.feed(PlaybackFinished("b-1", h.now))
    # the library stays pinned in the next plan, though no item needs it
    h.feed(PlanReceived(plan_with(keep=[TONE, TYPHOON], seq=2)))
    assert h.of(PinAudio)[-1][1].sha256s == {TONE.sha256, TYPHOON.sha256}
    assert len(h.of(FetchAudio)) == 2


# ---------------------------------------------------------------- as-run truth


def test_every_item_ends_in_exactly_one_final_event_with_its_times() -> None:
    h = station(cached=frozenset({SHA_A, SHA_B}))
    h.feed(
        PlanReceived(
            sealed(
                item("played", timedelta(seconds=10), duration_ms=5000),
                item("cut", timedelta(seconds=20), duration_ms=60_000),
                item("urgent", timedelta(seconds=30), SHA_B, priority=Priority.PRIORITY),
                item("busy", timedelta(seconds=35)),
                item("missing", timedelta(seconds=90), "c" * 64),
                item("dropped", timedelta(minutes=5)),
                item("dropped-live", timedelta(seconds=100), duration_ms=60_000),
            )
        )
    )
    for step in (10, 20, 30, 100):
        h.run_until(T0 + timedelta(seconds=step))
        cue = h.of(StartPlayback)[-1][1]
        h.feed(PlaybackStarted(cue.item_id, h.now))
        if cue.item_id == "played":
            h.now += timedelta(seconds=5)
            h.feed(PlaybackFinished("played", h.now))
        if cue.item_id == "urgent":
            h.run_until(T0 + timedelta(seconds=40))
            h.feed(PlaybackFinished("urgent", h.now))
    h.run_until(T0 + timedelta(seconds=110))
    h.feed(PlanReceived(sealed(seq=2)))  # the server removed what was left

    by_item = finals(h)
    assert {k: [(e["kind"], e.get("reason")) for e in v] for k, v in by_item.items()} == {
        "played": [("played", None)],
        "cut": [("interrupted", "preempted")],
        "urgent": [("played", None)],
        "busy": [("failed", "busy")],
        "missing": [("failed", "audio_missing")],
        "dropped-live": [("interrupted", "cancelled")],
        "dropped": [("failed", "cancelled")],
    }
    cut = by_item["cut"][0]
    assert cut["started_at"].startswith("2026-11-25T09:00:20")
    assert cut["finished_at"].startswith("2026-11-25T09:00:29.7")  # cut as urgent is cued
    assert by_item["dropped-live"][0]["finished_at"].startswith("2026-11-25T09:01:50")
    assert "started_at" not in by_item["dropped"][0]
    assert [a.item_id for _, a in h.of(StopPlayback)] == ["cut", "dropped-live"]


def test_an_item_cued_but_not_yet_sounding_when_cut_is_failed_not_interrupted() -> None:
    h = station(cached=frozenset({SHA_A, SHA_B}))
    normal = item("n-1", timedelta(seconds=10))
    urgent = item("p-1", timedelta(seconds=10, milliseconds=100), SHA_B, priority=Priority.LIVE)
    h.feed(PlanReceived(sealed(normal, urgent)))
    h.run_until(T0 + timedelta(seconds=10))  # both cued within the preroll; n-1 never sounded
    (cut,) = finals(h)["n-1"]
    assert (cut["kind"], cut["reason"]) == ("failed", "preempted")
    assert "finished_at" not in cut


# ---------------------------------------------------------------- back to back


def test_back_to_back_items_both_play_and_nothing_is_cut() -> None:
    """A playlist or a repeat without a gap: the next item starts where the last ends."""
    h = station()
    first = item("p1.1-0.1.202611250500", timedelta(seconds=10), SHA_A, duration_ms=5_000)
    second = item("p1.1-1.1.202611250500", timedelta(seconds=15), SHA_B, duration_ms=5_000)
    higher = item(
        "b-9", timedelta(seconds=20), SHA_A, duration_ms=5_000, priority=Priority.PRIORITY
    )
    h.feed(PlanReceived(sealed(first, second, higher)))
    h.feed(AudioFetched(SHA_A))
    h.feed(AudioFetched(SHA_B))
    h.run_until(T0 + timedelta(seconds=10))
    h.feed(PlaybackStarted(first.item_id, first.start_at))
    h.run_until(first.end_at - timedelta(milliseconds=10))  # the next cue time has passed
    assert [a.item_id for _, a in h.of(StartPlayback)] == [first.item_id]
    h.now = first.end_at + timedelta(milliseconds=3)
    h.feed(PlaybackFinished(first.item_id, first.end_at))
    cues = [a for _, a in h.of(StartPlayback)]
    assert [c.item_id for c in cues] == [first.item_id, second.item_id]
    h.feed(PlaybackStarted(second.item_id, h.now))
    h.now = second.end_at
    h.feed(PlaybackFinished(second.item_id, second.end_at))
    h.run_until(higher.start_at)
    h.feed(PlaybackStarted(higher.item_id, higher.start_at))
    outcomes = {e["item_id"]: e["kind"] for e in h.events() if e["kind"] in FINAL}
    assert outcomes == {first.item_id: "played", second.item_id: "played"}
    assert h.of(StopPlayback) == []
