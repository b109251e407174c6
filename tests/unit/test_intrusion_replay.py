"""Replay detection: a copy of the server's own message, seen after it was superseded or
expired, is an intrusion, reported once; the broker's normal echoes and retained copies
never are. The watch alone, with a clock the test moves (no broker, no database)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from loaxa_protocol import Alert, AudioRef, Keyring, SigningKey, seal, topics
from server.fleet.watch import IntrusionWatch
from tests.integration.test_intrusion_watch import NOW as T0
from tests.integration.test_intrusion_watch import OURS, A, addressees, plan_for

ALERTS = SigningKey.generate("alert", frozenset({"alert", "alert_cancel"}))
STATION = A.station_id
AREA = "01273"
PLAN_TOPIC = topics.plan(STATION)
AREA_TOPIC = topics.area_alert(AREA)


@pytest.fixture
def clock() -> list[datetime]:
    """The watch's clock: a test moves ``clock[0]``."""
    return [T0]


@pytest.fixture
def watch(clock: list[datetime]) -> IntrusionWatch:
    return IntrusionWatch(lambda: Keyring.of(OURS, ALERTS), lambda: clock[0])


def plan(seq: int) -> bytes:
    return plan_for(STATION, seq)


def alert(seq: int, to: str, lasts: timedelta) -> bytes:
    audio = AudioRef(sha256="a" * 64, size_bytes=1000, duration_ms=2000, url="http://x/a")
    message = Alert(
        sender="server",
        seq=seq,
        issued_at=T0,
        expires_at=T0 + lasts,
        to=to,
        alert_id="al-20261207-flood",
        drill=False,
        audio=audio,
    )
    return seal(message, ALERTS)


def publish_and_echo(watch: IntrusionWatch, topic: str, raw: bytes, retain: bool) -> None:
    watch.published(topic, raw, retain=retain)
    assert watch.inspect(topic, raw, addressees) is None


def test_a_copy_of_a_superseded_plan_is_a_replay_reported_once(watch: IntrusionWatch) -> None:
    old, new = plan(10), plan(11)
    publish_and_echo(watch, PLAN_TOPIC, old, retain=True)
    publish_and_echo(watch, PLAN_TOPIC, new, retain=True)

    found = watch.inspect(PLAN_TOPIC, old, addressees)  # the attacker re-sends the old bytes
    assert found is not None
    assert (found.reason, found.seq, found.issued_at) == ("replayed", 10, T0)
    assert found.topic == PLAN_TOPIC and "plan seq 10" in found.detail
    assert f"issued {T0.isoformat()}" in found.detail
    assert "newer plan of ours replaced it" in found.detail
    for _copy in range(3):
        assert watch.inspect(PLAN_TOPIC, old, addressees) is None
    assert watch.intrusions == 1


def test_echoes_that_arrive_late_and_retained_copies_are_not_replays(
    watch: IntrusionWatch,
) -> None:
    old, new = plan(10), plan(11)
    watch.published(PLAN_TOPIC, old, retain=True)
    watch.published(PLAN_TOPIC, new, retain=True)  # replaced before its echo came back
    assert watch.inspect(PLAN_TOPIC, old, addressees) is None
    assert watch.inspect(PLAN_TOPIC, new, addressees) is None
    for _resubscription in range(2):  # the broker re-sends the current retained plan
        assert watch.inspect(PLAN_TOPIC, new, addressees) is None
    assert watch.intrusions == 0


def test_after_a_broker_restart_the_retained_plan_before_our_republish_is_no_replay(
    watch: IntrusionWatch,
) -> None:
    old, new = plan(10), plan(11)
    publish_and_echo(watch, PLAN_TOPIC, old, retain=True)
    watch.published(PLAN_TOPIC, new, retain=True)  # republished on reconnect...
    assert watch.inspect(PLAN_TOPIC, old, addressees) is None  # ...after the stored copy
    assert watch.inspect(PLAN_TOPIC, new, addressees) is None
    replay = watch.inspect(PLAN_TOPIC, old, addressees)
    assert replay is not None and replay.reason == "replayed"


def test_a_copy_of_an_expired_alert_is_one_replay_on_however_many_topics(
    watch: IntrusionWatch, clock: list[datetime]
) -> None:
    raw = alert(40, f"area:{AREA}", lasts=timedelta(minutes=30))
    publish_and_echo(watch, AREA_TOPIC, raw, retain=False)
    assert watch.inspect(AREA_TOPIC, raw, addressees) is None  # a QoS 1 redelivery, still live

    clock[0] = T0 + timedelta(minutes=31)
    found = watch.inspect(AREA_TOPIC, raw, addressees)
    assert found is not None and found.reason == "replayed"
    assert "alert al-20261207-flood seq 40" in found.detail
    assert f"expired at {(T0 + timedelta(minutes=30)).isoformat()}" in found.detail
    assert found.issued_at == T0
    # The same bytes on the station's own topic (its area is an addressee there), and the
    # copy the server sealed for that station: the same alert, no second alarm.
    assert watch.inspect(topics.alert(STATION), raw, addressees) is None
    per_station = alert(41, STATION, lasts=timedelta(minutes=30))
    assert watch.inspect(topics.alert(STATION), per_station, addressees) is None
    assert watch.intrusions == 1


def test_a_copy_of_a_cancelled_alert_is_a_replay_before_it_expires(
    watch: IntrusionWatch,
) -> None:
    raw = alert(40, f"area:{AREA}", lasts=timedelta(hours=1))
    publish_and_echo(watch, AREA_TOPIC, raw, retain=False)
    cancelled = {"al-20261207-flood": T0 + timedelta(minutes=1)}

    found = watch.inspect(AREA_TOPIC, raw, addressees, cancelled.get)
    assert found is not None and found.reason == "replayed"
    assert f"cancelled at {(T0 + timedelta(minutes=1)).isoformat()}" in found.detail
    assert watch.inspect(AREA_TOPIC, raw, addressees, cancelled.get) is None  # once


def plan_issued(seq: int, issued_at: datetime) -> bytes:
    from loaxa_protocol import Plan
    from tests.integration.test_intrusion_watch import OURS

    message = Plan(
        sender="server",
        seq=seq,
        issued_at=issued_at,
        expires_at=issued_at + timedelta(hours=72),
        to=STATION,
        station_id=STATION,
        horizon_until=issued_at + timedelta(hours=48),
    )
    return seal(message, OURS)


def test_a_peer_replicas_newer_plan_is_new_but_older_copies_are_replays(
    watch: IntrusionWatch, clock: list[datetime]
) -> None:
    """Replicas share the key: a plan signed after ours went out is another replica's."""
    clock[0] = T0 + timedelta(seconds=1)
    publish_and_echo(watch, PLAN_TOPIC, plan_issued(10, T0), retain=True)
    peer = plan_issued(11, T0 + timedelta(seconds=2))
    assert watch.inspect(PLAN_TOPIC, peer, addressees) is None
    assert watch.inspect(PLAN_TOPIC, peer, addressees) is None  # its retained copy again
    signed_before = plan_issued(9, T0 + timedelta(milliseconds=500))  # never published
    found = watch.inspect(PLAN_TOPIC, signed_before, addressees)
    assert found is not None and found.reason == "replayed"
    clock[0] = T0 + timedelta(seconds=3)
    publish_and_echo(watch, PLAN_TOPIC, plan_issued(12, clock[0]), retain=True)
    superseded = watch.inspect(PLAN_TOPIC, peer, addressees)  # the peer's, now old
    assert superseded is not None and "newer plan of ours replaced it" in superseded.detail
    assert watch.intrusions == 2


def test_a_peer_replicas_rotated_key_is_read_again_but_a_forgers_key_stays_unknown(
    clock: list[datetime],
) -> None:
    """A plan under a key this replica has not read yet may be a peer's fresh rotation:
    the watch reads the keys again (at most once a second) before it calls it forged."""
    rotated = SigningKey.generate("plan", frozenset({"plan", "command"}))
    on_disk = [OURS]  # what the shared keys directory holds
    known = [OURS]  # what this replica has read
    reads: list[datetime] = []

    def reload() -> bool:
        reads.append(clock[0])
        changed = known != on_disk
        known[:] = on_disk
        return changed

    watch = IntrusionWatch(lambda: Keyring.of(*known, ALERTS), lambda: clock[0], reload_keys=reload)
    on_disk[:] = [rotated, OURS]  # the peer rotated; nobody told this replica yet
    peers = plan_for(STATION, 11, rotated)
    assert watch.inspect(PLAN_TOPIC, peers, addressees) is None
    assert len(reads) == 1 and watch.intrusions == 0

    forger = SigningKey.generate("plan", frozenset({"plan"}))
    found = watch.inspect(PLAN_TOPIC, plan_for(STATION, 12, forger), addressees)
    assert found is not None and found.reason == "unknown_key"
    assert len(reads) == 1  # within the second: the disk is not read at a forger's rate
    other = "cb-st-099"
    found = watch.inspect(topics.plan(other), plan_for(other, 13, forger), addressees)
    assert found is not None and found.reason == "unknown_key"
    assert len(reads) == 1 and watch.intrusions == 2
