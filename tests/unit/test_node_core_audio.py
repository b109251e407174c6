"""The station's audio as the server sees it: ready early, failures named (issue 11, §3)."""

from __future__ import annotations

from datetime import timedelta

from loaxa_protocol import AudioRef
from node_firmware.core.events import AudioFetched, AudioFetchFailed, FetchAudio, PlanReceived
from tests.unit.test_node_core import SHA_A, SHA_B, item, sealed
from tests.unit.test_node_core_plan import plan_with, station

SIREN = AudioRef(sha256="c" * 64, size_bytes=5000, duration_ms=4000, url="http://s/siren")


def test_an_item_whose_audio_is_cached_is_reported_fetched_long_before_air_time() -> None:
    h = station(cached=frozenset({SHA_A}))
    h.feed(
        PlanReceived(
            sealed(item("b-1", timedelta(hours=1)), item("b-2", timedelta(hours=2), SHA_B))
        )
    )
    kinds = [(e["item_id"], e["kind"]) for e in h.events()]
    # b-1's file is re-hashed first (never trusted unverified after a boot), then ready
    assert kinds == [("b-1", "plan_accepted"), ("b-2", "plan_accepted"), ("b-1", "audio_fetched")]
    assert [a.ref.sha256 for _, a in h.of(FetchAudio)] == [SHA_B]
    h.feed(AudioFetched(SHA_B))
    assert [e["item_id"] for e in h.events("audio_fetched")] == ["b-1", "b-2"]  # once each


def test_a_full_disk_is_named_as_such_for_an_item() -> None:
    h = station()
    h.feed(PlanReceived(sealed(item("b-1", timedelta(hours=1)))))
    h.feed(AudioFetchFailed(SHA_A, "disk_full: need 31000 bytes, 12 free", "disk_full"))
    (failed,) = h.events("audio_failed")
    assert failed["reason"] == "disk_full" and "31000" in failed["detail"]


def test_a_canned_library_file_that_cannot_be_stored_is_reported_once_per_failure() -> None:
    h = station()
    h.feed(PlanReceived(plan_with(keep=[SIREN])))
    for _ in range(3):  # retried with back-off, reported once
        h.feed(AudioFetchFailed(SIREN.sha256, "disk_full: need 5000 bytes", "disk_full"))
        h.run_until(h.wake)
    (failed,) = h.events("library_failed")
    assert failed["reason"] == "disk_full" and failed["detail"].startswith(SIREN.sha256)
    assert "item_id" not in failed
    h.feed(AudioFetched(SIREN.sha256))
    h.feed(PlanReceived(plan_with(keep=[SIREN], seq=2)))
    assert len(h.events("library_failed")) == 1  # stored now: nothing more to say
