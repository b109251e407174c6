"""Cached audio is re-checked: changed bytes never play nor count as played (issue 11, §3.2)."""

from __future__ import annotations

from datetime import timedelta

from node_firmware.core.events import (
    AlertReceived,
    AudioFetched,
    AudioVerified,
    Boot,
    FetchAudio,
    PlanReceived,
    StartPlayback,
    VerifyAudio,
)
from node_firmware.core.integrity import VERIFY_EVERY, VERIFY_SPREAD, AudioChecks
from tests.unit.test_node_core import SHA_A, T0, Harness, item, sealed
from tests.unit.test_node_core_alerts import TYPHOON, alert, make_station
from tests.unit.test_node_core_plan import plan_with


def rebooted(*items, rotten: frozenset[str] = frozenset()) -> Harness:
    """A station booting with its plan and its cache (``rotten`` files changed on disk)."""
    h = Harness(rotten=set(rotten))
    h.feed(Boot(sealed(*items), {"asrun": {"started": {}, "ended": {}}}, frozenset({SHA_A})))
    return h


def test_every_cached_file_is_verified_after_boot_before_it_may_play() -> None:
    h = Harness()
    h.feed(Boot(sealed(item("b-1", timedelta(seconds=30))), {}, frozenset({SHA_A})))
    assert [a.sha256 for _, a in h.of(VerifyAudio)] == [SHA_A]
    h.run_until(T0 + timedelta(seconds=30))
    assert [a.item_id for _, a in h.of(StartPlayback)] == ["b-1"]


def test_an_unverified_file_does_not_play_and_the_item_fails_at_its_deadline() -> None:
    h = Harness(disk_answers=False)  # the check never comes back (a disk that hangs)
    h.feed(Boot(sealed(item("b-1", timedelta(seconds=30))), {}, frozenset({SHA_A})))
    h.run_until(T0 + timedelta(seconds=35))
    assert h.of(StartPlayback) == []
    (failed,) = h.events("failed")
    assert failed["reason"] == "audio_unverified"


def test_a_changed_file_is_reported_discarded_fetched_again_and_only_then_played() -> None:
    h = rebooted(item("b-1", timedelta(minutes=5)), rotten=frozenset({SHA_A}))
    (corrupt,) = h.events("audio_corrupt")
    assert corrupt["reason"] == "hash_mismatch" and corrupt["detail"].startswith(SHA_A)
    assert "b-1" in corrupt["detail"]
    assert [a.ref.sha256 for _, a in h.of(FetchAudio)] == [SHA_A]
    assert SHA_A not in h.core.cached

    h.run_until(T0 + timedelta(minutes=1))
    h.feed(AudioFetched(SHA_A))  # the fetcher checked the new copy's hash
    assert [e["item_id"] for e in h.events("audio_fetched")] == ["b-1"]
    h.run_until(T0 + timedelta(minutes=5))
    assert [a.item_id for _, a in h.of(StartPlayback)] == ["b-1"]


def test_a_file_that_rots_is_caught_by_the_periodic_check_before_its_item() -> None:
    h = rebooted(item("b-late", timedelta(hours=20)))
    h.run_until(T0 + VERIFY_EVERY - timedelta(minutes=1))
    assert len(h.of(VerifyAudio)) == 1  # at boot only
    h.rotten.add(SHA_A)  # the SD card rots during the day
    h.run_until(T0 + VERIFY_EVERY + VERIFY_SPREAD)
    assert len(h.of(VerifyAudio)) == 2
    assert len(h.events("audio_corrupt")) == 1
    assert [a.ref.sha256 for _, a in h.of(FetchAudio)] == [SHA_A]


def test_re_checks_of_a_library_are_spread_out() -> None:
    checks = AudioChecks()
    library = [f"{n:02x}" * 32 for n in range(0, 256, 8)]
    for sha in library:
        checks.verified(sha, T0)
    due = sorted(at for sha in library if (at := checks.due_at(sha)) is not None)
    assert due[0] >= T0 + VERIFY_EVERY and due[-1] < T0 + VERIFY_EVERY + VERIFY_SPREAD
    assert due[-1] - due[0] > VERIFY_SPREAD / 2
    now_due, next_at = checks.take_due(library, T0 + VERIFY_EVERY - timedelta(seconds=1))
    assert now_due == [] and next_at == due[0]


def test_an_alert_whose_audio_is_not_yet_verified_is_hashed_at_its_cue() -> None:
    st = make_station()  # boots with the library cached; no plan, so nothing checked yet
    st.feed(AlertReceived(alert(tone=None, repeat=1)))
    (cue,) = [a for _, a in st.of(StartPlayback)]
    assert cue.sha256 == TYPHOON.sha256 and cue.verify is True
    st.feed(AudioVerified(TYPHOON.sha256, True))
    st.feed(AlertReceived(alert("a-2", tone=None, repeat=1)))
    assert [a.verify for _, a in st.of(StartPlayback)] == [True, False]


def test_the_plan_keeps_the_library_checked_too() -> None:
    h = Harness()
    h.feed(Boot(None, {}, frozenset({TYPHOON.sha256})))
    h.feed(PlanReceived(plan_with(keep=[TYPHOON])))
    assert [a.sha256 for _, a in h.of(VerifyAudio)] == [TYPHOON.sha256]
