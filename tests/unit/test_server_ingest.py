"""Station reports → database: routing, state transitions that never go back, bad input counted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from loaxa_protocol import Event, EventKind, Status, StatusState, topics
from server.db import create_tables, make_engine
from server.fleet.dispatcher import Dispatcher, IngestStats, StationMessage
from server.fleet.ingest import Ingestor
from server.health.service import HealthService
from server.models import (
    Area,
    AreaLevel,
    Broadcast,
    BroadcastTarget,
    Station,
    StationEvent,
    StationStatus,
    TargetState,
)
from server.settings import Settings
from tests.db_rows import minute_of_audio

T0 = datetime(2025, 7, 1, 22, 0, tzinfo=UTC)  # 05:00 in Cao Bằng
STATION = "cb-st-001"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'loaxa.db'}")
    create_tables(engine)
    with Session(engine) as session:
        session.add(Area(code="04", name="Cao Bằng", level=AreaLevel.PROVINCE))
        session.add(
            Area(code="01273", name="Phường Thục Phán", level=AreaLevel.COMMUNE, parent_code="04")
        )
        for station_id in (STATION, "cb-st-002"):
            session.add(
                Station(
                    id=station_id,
                    name=f"Cụm loa {station_id}",
                    area_code="01273",
                    latitude=22.66,
                    longitude=106.25,
                    mqtt_username=station_id,
                    mqtt_password_hash="$7$1$x$y",
                )
            )
        session.add(minute_of_audio())
        session.commit()
        for broadcast_id in (1, 2):
            session.add(Broadcast(id=broadcast_id, audio_id=1, start_at=T0, title="Bản tin"))
        session.commit()
        for broadcast_id, seq in ((1, 100), (2, 200)):
            session.add(
                BroadcastTarget(broadcast_id=broadcast_id, station_id=STATION, first_plan_seq=seq)
            )
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def ingestor(engine: Engine) -> Ingestor:
    return Ingestor(engine, clock=lambda: T0 + timedelta(hours=1))


def event(
    kind: EventKind, at: datetime, item_id: str | None = "b-1", **fields: Any
) -> tuple[str, bytes]:
    message = Event(station_id=STATION, kind=kind, at=at, item_id=item_id, **fields)
    return topics.event(STATION), message.model_dump_json(exclude_none=True).encode()


def target(engine: Engine, broadcast_id: int = 1) -> BroadcastTarget:
    with Session(engine) as session:
        found = session.get(BroadcastTarget, (broadcast_id, STATION))
        assert found is not None
        return found


def station(engine: Engine, station_id: str = STATION) -> Station:
    with Session(engine) as session:
        found = session.get(Station, station_id)
        assert found is not None
        return found


def test_a_bulletin_advances_from_planned_to_played_with_station_timestamps(
    engine: Engine, ingestor: Ingestor
) -> None:
    started, finished = T0, T0 + timedelta(seconds=60)
    ingestor.handle([event(EventKind.PLAN_ACCEPTED, T0 - timedelta(minutes=10))])
    assert target(engine).state is TargetState.DELIVERED
    ingestor.handle([event(EventKind.AUDIO_FETCHED, T0 - timedelta(minutes=9))])
    assert target(engine).state is TargetState.FETCHED
    ingestor.handle([event(EventKind.PLAYING, T0 + timedelta(milliseconds=3), started_at=started)])
    assert target(engine).state is TargetState.PLAYING
    ingestor.handle([event(EventKind.PLAYED, finished, started_at=started, finished_at=finished)])

    done = target(engine)
    assert done.state is TargetState.PLAYED
    assert done.delivered_at == T0 - timedelta(minutes=10)
    assert done.fetched_at == T0 - timedelta(minutes=9)
    assert done.started_at == started  # the station's playback instant, not the event's
    assert done.finished_at == finished
    assert done.started_at.tzinfo is not None  # aware UTC back from SQLite
    assert ingestor.stats.applied == 4


def test_late_events_never_move_a_state_backwards(engine: Engine, ingestor: Ingestor) -> None:
    ingestor.handle([event(EventKind.PLAYED, T0 + timedelta(seconds=60), started_at=T0)])
    # MQTT redelivers an older plan_accepted after a reconnect: fill the time, keep the state.
    ingestor.handle(
        [
            event(EventKind.PLAN_ACCEPTED, T0 - timedelta(minutes=5)),
            event(EventKind.PLAYING, T0, started_at=T0),
            event(EventKind.FAILED, T0 + timedelta(seconds=61), reason="player"),
        ]
    )
    after = target(engine)
    assert after.state is TargetState.PLAYED
    assert after.reason is None
    assert after.delivered_at == T0 - timedelta(minutes=5)


def test_a_failed_download_recovers_when_the_station_reports_a_later_success(
    engine: Engine, ingestor: Ingestor
) -> None:
    ingestor.handle(
        [
            event(
                EventKind.AUDIO_FAILED, T0 - timedelta(minutes=5), reason="fetch", detail="HTTP 503"
            ),
        ]
    )
    failed = target(engine)
    assert (failed.state, failed.reason, failed.detail) == (TargetState.FAILED, "fetch", "HTTP 503")
    # An older success reported late does not undo the newer failure...
    ingestor.handle([event(EventKind.AUDIO_FETCHED, T0 - timedelta(minutes=6))])
    assert target(engine).state is TargetState.FAILED
    # ...but the retry that worked afterwards does.
    ingestor.handle([event(EventKind.AUDIO_FETCHED, T0 - timedelta(minutes=1))])
    recovered = target(engine)
    assert (recovered.state, recovered.reason, recovered.detail) == (
        TargetState.FETCHED,
        None,
        None,
    )


def test_interruption_keeps_reason_and_detail(engine: Engine, ingestor: Ingestor) -> None:
    ingestor.handle(
        [
            event(EventKind.PLAYING, T0, started_at=T0),
            event(
                EventKind.INTERRUPTED,
                T0 + timedelta(seconds=2),
                reason="preempted",
                detail="pre-empted by b-2 (priority)",
                started_at=T0,
            ),
            event(EventKind.PLAN_ACCEPTED, T0 + timedelta(seconds=3)),
        ]
    )
    after = target(engine)
    assert after.state is TargetState.INTERRUPTED
    assert after.reason == "preempted"
    assert after.detail == "pre-empted by b-2 (priority)"
    assert after.finished_at == T0 + timedelta(seconds=2)


def test_a_plan_accepted_without_item_delivers_what_that_plan_carried(
    engine: Engine, ingestor: Ingestor
) -> None:
    ingestor.handle([event(EventKind.PLAN_ACCEPTED, T0, item_id=None, plan_seq=150)])
    assert target(engine, 1).state is TargetState.DELIVERED  # first carried by plan 100
    assert target(engine, 2).state is TargetState.PLANNED  # first carried by plan 200


def test_every_event_is_logged_and_a_rejection_is_visible(
    engine: Engine, ingestor: Ingestor
) -> None:
    ingestor.handle(
        [
            event(EventKind.PLAN_ACCEPTED, T0),
            event(
                EventKind.REJECTED,
                T0 + timedelta(seconds=1),
                item_id=None,
                plan_seq=10**15,
                reason="bad_signature",
                detail="signature does not match key plan-abc",
            ),
        ]
    )
    with Session(engine) as session:
        logged = session.exec(select(StationEvent).order_by(StationEvent.id)).all()
    assert [(e.kind, e.reason) for e in logged] == [
        ("plan_accepted", None),
        ("rejected", "bad_signature"),
    ]
    assert logged[1].station_id == STATION
    assert logged[1].plan_seq == 10**15
    assert logged[1].received_at == T0 + timedelta(hours=1)
    assert target(engine).state is TargetState.DELIVERED  # the rejection touched no target


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (topics.event(STATION), b"{not json"),
        (topics.event(STATION), b"\x00\xff"),
        (topics.event(STATION), json.dumps({"type": "event", "station_id": STATION}).encode()),
        (
            topics.event(STATION),
            json.dumps(
                {"station_id": STATION, "kind": "played", "at": "2025-07-01T05:00:00"}  # naive
            ).encode(),
        ),
        (
            topics.event(STATION),
            event(EventKind.PLAYED, T0)[1].replace(STATION.encode(), b"cb-st-002"),
        ),
        (topics.status(STATION), b""),
    ],
    ids=["bad-json", "binary", "missing-fields", "naive-time", "other-station", "empty-status"],
)
def test_malformed_payloads_are_counted_and_do_not_stop_the_batch(
    engine: Engine, ingestor: Ingestor, topic: str, payload: bytes
) -> None:
    ingestor.handle([(topic, payload), event(EventKind.PLAN_ACCEPTED, T0)])
    assert ingestor.stats.malformed == 1
    assert ingestor.stats.applied == 1
    assert target(engine).state is TargetState.DELIVERED


def test_unknown_topics_stations_and_items_are_counted(engine: Engine, ingestor: Ingestor) -> None:
    stranger = Event(station_id="ghost", kind=EventKind.PLAYED, at=T0, item_id="b-1")
    ingestor.handle(
        [
            ("loaxa/v1/station/cb-st-001/cmd", b"{}"),
            ("somewhere/else", b"{}"),
            (topics.event("ghost"), stranger.model_dump_json().encode()),
            event(EventKind.PLAYED, T0, item_id="b-999"),
            event(EventKind.PLAYED, T0, item_id="alert-7"),
        ]
    )
    stats = ingestor.stats
    assert (stats.unroutable, stats.unknown_station, stats.unmatched_item) == (2, 1, 2)
    assert target(engine).state is TargetState.PLANNED


def test_status_last_will_and_stale_retained_copies(engine: Engine, ingestor: Ingestor) -> None:
    def status(state: StatusState, at: datetime | None) -> tuple[str, bytes]:
        message = Status(station_id=STATION, state=state, at=at)
        return topics.status(STATION), message.model_dump_json().encode()

    heard = T0 + timedelta(hours=1)  # the server's clock: status_at is when it changed
    ingestor.handle([status(StatusState.ONLINE, T0)])
    assert (station(engine).status, station(engine).status_at) == (StationStatus.ONLINE, heard)
    ingestor.handle([status(StatusState.OFFLINE, None)])  # the broker's last will: no time
    gone = station(engine)
    assert gone.status is StationStatus.OFFLINE
    assert gone.status_at == heard
    ingestor.handle([status(StatusState.ONLINE, T0 - timedelta(days=1))])  # an old retained copy
    assert station(engine).status is StationStatus.OFFLINE


def test_health_is_stored_and_proves_the_station_is_online(engine: Engine, tmp_path: Path) -> None:
    health_service = HealthService(
        engine, Settings(data_dir=tmp_path), clock=lambda: T0 + timedelta(hours=1)
    )
    ingestor = Ingestor(engine, clock=lambda: T0 + timedelta(hours=1), health=health_service)
    health_service.start()
    health = {
        "type": "health",
        "station_id": STATION,
        "at": "2025-07-01T22:00:00+00:00",
        "agent_version": "0.1.0",
        "uptime_s": 12.5,
        "amp_on": False,
        "relay_ok": True,
        "disk_free_bytes": 10**9,
    }
    older = {**health, "at": "2025-07-01T21:00:00+00:00", "uptime_s": 1}
    ingestor.handle(
        [
            (topics.health(STATION), json.dumps(health).encode()),
            (topics.health(STATION), json.dumps(older).encode()),
        ]
    )
    assert health_service.drain(10)
    health_service.stop()
    after = station(engine)
    assert after.status is StationStatus.ONLINE
    assert after.last_health_at == T0
    assert after.last_health is not None
    assert after.last_health["uptime_s"] == 12.5
    assert after.last_health["disk_free_bytes"] == 10**9


def test_the_dispatcher_routes_by_leaf_with_any_context() -> None:
    seen: list[tuple[str, StationMessage]] = []
    stats = IngestStats()
    dispatcher: Dispatcher[str] = Dispatcher(
        {"event": lambda ctx, msg: seen.append((ctx, msg))}, stats
    )
    assert dispatcher.dispatch(*event(EventKind.PLAYED, T0), "ctx-1")
    assert not dispatcher.dispatch(topics.health(STATION), b"{}", "ctx-2")  # no handler
    assert [(ctx, msg.type) for ctx, msg in seen] == [("ctx-1", "event")]
    assert stats.as_dict() == {
        "received": 2,
        "applied": 0,
        "malformed": 0,
        "unroutable": 1,
        "unknown_station": 0,
        "unmatched_item": 0,
        "retried": 0,
        "failed": 0,
    }


def test_the_dispatcher_refuses_a_leaf_it_cannot_validate() -> None:
    with pytest.raises(ValueError, match="cmd"):
        Dispatcher({"cmd": lambda ctx, msg: None}, IngestStats())


def test_a_poison_message_in_a_batch_costs_only_itself(
    engine: Engine, ingestor: Ingestor, caplog: pytest.LogCaptureFixture
) -> None:
    """A value SQLite cannot store (not a database error: Python's OverflowError) and an
    item naming a broadcast id beyond any integer column, amid good reports."""
    good = [
        event(EventKind.PLAN_ACCEPTED, T0 - timedelta(minutes=5)),
        event(EventKind.PLAYING, T0, item_id="b-2", started_at=T0),
        event(EventKind.PLAYED, T0 + timedelta(seconds=60), started_at=T0),
    ]
    huge_seq = event(EventKind.REJECTED, T0, item_id=None, plan_seq=2**70, reason="replayed")
    huge_ref = event(EventKind.PLAYED, T0, item_id=f"b-{10**30}")
    with caplog.at_level("ERROR", logger="server.fleet.ingest"):
        ingestor.handle([good[0], huge_seq, good[1], huge_ref, good[2]])

    assert target(engine, 1).state is TargetState.PLAYED
    assert target(engine, 2).state is TargetState.PLAYING
    with Session(engine) as session:
        kinds = session.exec(select(StationEvent.kind).order_by(StationEvent.id)).all()
    assert kinds == ["plan_accepted", "playing", "played"]
    stats = ingestor.stats
    assert (stats.applied, stats.retried, stats.failed) == (3, 5, 2)
    failures = [r.getMessage() for r in caplog.records if "could not be stored" in r.getMessage()]
    assert len(failures) == 2
    assert all(topics.event(STATION) in text for text in failures)
    assert "OverflowError" in failures[0]
