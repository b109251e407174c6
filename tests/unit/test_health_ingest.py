"""The health writer on a real SQLite file: batches, rate limits, flags, status and alarms."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server.db import create_tables, make_engine
from server.health.alarms import evaluate_fleet
from server.health.ingest import HealthIngest, RateLimiter, record_clock_offset
from server.health.models import (
    Alarm,
    AlarmEvent,
    HealthHourly,
    HealthSample,
    StationLiveness,
)
from server.health.store import aggregate_complete_hours, prune, read_series
from server.models import (
    Area,
    AreaLevel,
    Broadcast,
    BroadcastTarget,
    Station,
    StationStatus,
    TargetState,
)
from server.settings import Settings
from tests.db_rows import minute_of_audio

T0 = datetime(2025, 7, 1, 22, 0, tzinfo=UTC)
STATIONS = ("cb-st-001", "cb-st-002")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return (self.now - T0).total_seconds()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'loaxa.db'}")
    create_tables(engine)
    with Session(engine) as session:
        session.add(Area(code="04", name="Cao Bằng", level=AreaLevel.PROVINCE))
        for station_id in STATIONS:
            session.add(
                Station(
                    id=station_id,
                    name=station_id,
                    area_code="04",
                    latitude=22.6,
                    longitude=106.2,
                    mqtt_username=station_id,
                    mqtt_password_hash="$7$1$x$y",
                )
            )
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


def writer(engine: Engine, clock: Clock, tmp_path: Path, **settings: Any) -> HealthIngest:
    ingest = HealthIngest(
        engine, Settings(data_dir=tmp_path, **settings), clock, monotonic=clock.monotonic
    )
    ingest.start()
    return ingest


def heartbeat(station_id: str = STATIONS[0], at: datetime = T0, **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "type": "health",
        "station_id": station_id,
        "at": at.isoformat(),
        "agent_version": "0.3.0",
        "uptime_s": 60.0,
        "amp_on": False,
        "relay_ok": True,
        "disk_free_bytes": 4 * 10**9,
        "disk_total_bytes": 8 * 10**9,
        "cpu_temp_c": 50.0,
    }
    body.update(fields)
    return json.dumps(body).encode()


def station(engine: Engine, station_id: str = STATIONS[0]) -> Station:
    with Session(engine) as session:
        found = session.get(Station, station_id)
        assert found is not None
        return found


def alarms(engine: Engine) -> list[Alarm]:
    with Session(engine) as session:
        return list(session.exec(select(Alarm).order_by(col(Alarm.id))).all())


def test_reports_are_written_in_batches_not_one_commit_each(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    ingest = writer(engine, clock, tmp_path, health_batch_max=100, health_rate_limit=1000)
    for n in range(250):
        ingest.submit(STATIONS[n % 2], heartbeat(STATIONS[n % 2], cpu_temp_c=40.0 + n % 7))
    assert ingest.drain(10)
    ingest.stop()
    assert ingest.stats.stored == 250
    assert ingest.stats.batches <= 4  # 100 + 100 + 50, or fewer flushes by the interval
    with Session(engine) as session:
        assert len(session.exec(select(HealthSample)).all()) == 250


def test_a_flooding_station_is_limited_without_hurting_its_neighbour(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    ingest = writer(engine, clock, tmp_path, health_rate_limit=20)
    for _ in range(50):
        ingest.submit(STATIONS[0], heartbeat(STATIONS[0]))
    for _ in range(5):
        ingest.submit(STATIONS[1], heartbeat(STATIONS[1]))
    assert ingest.drain(10)
    stats = ingest.stats
    assert (stats.received, stats.stored, stats.dropped_rate_limited) == (55, 25, 30)
    clock.now += timedelta(seconds=10)  # a new window
    ingest.submit(STATIONS[0], heartbeat(STATIONS[0], at=clock.now))
    assert ingest.drain(10)
    ingest.stop()
    assert ingest.stats.stored == 26


def test_the_sliding_window_forgets_old_reports() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 10.0, lambda: now[0])
    assert limiter.allow("a") and limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")
    now[0] = 9.9
    assert not limiter.allow("a")
    now[0] = 10.0
    assert limiter.allow("a")


def test_an_absurd_report_is_stored_as_far_as_valid_and_flagged(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    ingest = writer(engine, clock, tmp_path)
    absurd = heartbeat(at=datetime(1970, 1, 1, tzinfo=UTC), cpu_temp_c=1e9, disk_free_bytes=-5)
    ingest.submit(STATIONS[0], absurd)
    ingest.submit(STATIONS[0], b"\x00 not json")
    ingest.submit("ghost", heartbeat("ghost"))
    assert ingest.drain(10)
    ingest.stop()
    assert ingest.stats.as_dict() | {"batches": 0} == {
        "received": 3,
        "stored": 1,
        "flagged": 1,
        "dropped_rate_limited": 0,
        "dropped_backlog": 0,
        "rejected": 1,
        "unknown_station": 1,
        "retried": 0,
        "failed": 0,
        "batches": 0,
    }
    with Session(engine) as session:
        (sample,) = session.exec(select(HealthSample)).all()
    assert sample.at == T0 and sample.node_at is None
    assert sample.cpu_temp_c is None and sample.disk_free_bytes is None
    assert sample.disk_total_bytes == 8 * 10**9 and sample.amp_on is False
    assert sample.flags is not None and len(sample.flags) == 3
    latest = station(engine)
    assert latest.status is StationStatus.ONLINE
    assert latest.last_health is not None and latest.last_health["flags"] == sample.flags
    assert latest.last_health_at == T0  # the server's clock stands in for the bad one


def test_disk_alarm_opens_once_degrades_the_station_and_resolves_itself(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    ingest = writer(engine, clock, tmp_path)
    full = {"disk_free_bytes": 4 * 10**8}  # 5 %
    for minute in range(3):
        clock.now = T0 + timedelta(minutes=minute)
        ingest.submit(STATIONS[0], heartbeat(at=clock.now, **full))
        assert ingest.drain(10)
    (alarm,) = alarms(engine)
    assert (alarm.kind, alarm.severity, alarm.state) == ("disk_low", "warning", "open")
    assert alarm.opened_at == T0
    assert station(engine).status is StationStatus.DEGRADED

    clock.now = T0 + timedelta(minutes=5)
    ingest.submit(STATIONS[0], heartbeat(at=clock.now))
    assert ingest.drain(10)
    ingest.stop()
    (alarm,) = alarms(engine)
    assert alarm.state == "resolved" and alarm.resolved_at == clock.now
    assert station(engine).status is StationStatus.ONLINE
    with Session(engine) as session:
        history = session.exec(select(AlarmEvent).where(AlarmEvent.alarm_id == alarm.id)).all()
    assert [(e.state, e.by) for e in history] == [("open", None), ("resolved", None)]


def test_silence_turns_a_station_offline_and_then_raises_the_offline_alarm(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, offline_after_min=10, alarm_offline_min=10)
    ingest = writer(engine, clock, tmp_path)
    ingest.submit(STATIONS[0], heartbeat())
    assert ingest.drain(10)
    ingest.stop()
    with Session(engine) as session:
        clock.now = T0 + timedelta(minutes=10)
        assert evaluate_fleet(session, clock.now, settings) == []
        session.commit()
    assert station(engine).status is StationStatus.ONLINE
    with Session(engine) as session:
        clock.now = T0 + timedelta(minutes=10, seconds=1)
        (change,) = evaluate_fleet(session, clock.now, settings)
        session.commit()
    assert (change.kind, change.state) == ("offline", "open")
    gone = station(engine)
    assert (gone.status, gone.status_at) == (StationStatus.OFFLINE, clock.now)
    assert station(engine, STATIONS[1]).status is StationStatus.UNKNOWN  # never heard


def test_a_measured_clock_offset_survives_heartbeats_and_raises_an_alarm(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path)
    with Session(engine) as session:
        record_clock_offset(session, STATIONS[0], -742.0, T0)
        session.commit()
    ingest = writer(engine, clock, tmp_path)
    clock.now = T0 + timedelta(seconds=30)
    ingest.submit(STATIONS[0], heartbeat(at=clock.now))
    assert ingest.drain(10)
    ingest.stop()
    health = station(engine).last_health
    assert health is not None and health["clock_offset_ms"] == -742.0
    assert [a.kind for a in alarms(engine)] == ["clock_offset"]  # evaluated with the heartbeat
    with Session(engine) as session:
        evaluate_fleet(session, clock.now, settings)  # the periodic run opens no duplicate
        session.commit()
        record_clock_offset(session, STATIONS[0], 20.0, clock.now)
        evaluate_fleet(session, clock.now, settings)
        session.commit()
    assert [(a.kind, a.state) for a in alarms(engine)] == [("clock_offset", "resolved")]
    with pytest.raises(LookupError), Session(engine) as session:
        record_clock_offset(session, "ghost", 1.0, T0)


def test_an_item_not_played_by_its_deadline_raises_an_alarm(engine: Engine, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, alarm_item_grace_min=2)
    with Session(engine) as session:
        session.add(minute_of_audio())
        session.commit()
        session.add(Broadcast(id=1, audio_id=1, start_at=T0, title="Bản tin"))
        session.commit()
        session.add(
            BroadcastTarget(broadcast_id=1, station_id=STATIONS[0], state=TargetState.DELIVERED)
        )
        session.commit()
        in_time = T0 + timedelta(minutes=3)  # 1 min of audio + 2 min of grace
        assert evaluate_fleet(session, in_time, settings) == []
        (change,) = evaluate_fleet(session, in_time + timedelta(seconds=1), settings)
        assert (change.kind, change.detail) == ("item_not_played", "not played: b-1 (delivered)")
        target = session.get(BroadcastTarget, (1, STATIONS[0]))
        assert target is not None
        target.state = TargetState.PLAYED  # a late report: it did play
        session.add(target)
        (resolved,) = evaluate_fleet(session, in_time + timedelta(seconds=2), settings)
        assert resolved.state == "resolved"


def test_known_samples_become_exact_hourly_aggregates_and_chart_series(
    engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, health_raw_days=7, health_hourly_days=365)
    hour = T0 - timedelta(hours=2)  # 20:00
    values = [(0, 40.0), (10, 50.0), (20, 60.0), (61, 70.0)]  # minutes after 20:00
    with Session(engine) as session:
        for minute, temp in values:
            session.add(
                HealthSample(
                    station_id=STATIONS[0],
                    at=hour + timedelta(minutes=minute),
                    cpu_temp_c=temp,
                    amp_on=minute < 15,
                )
            )
        session.add(HealthSample(station_id=STATIONS[0], at=T0 - timedelta(days=8), load_1m=1.0))
        session.commit()
    now = T0 + timedelta(minutes=1)
    assert aggregate_complete_hours(engine, now, settings) == 7 * 24  # the oldest kept hour on
    assert aggregate_complete_hours(engine, now, settings) == 0  # nothing left to do
    with Session(engine) as session:
        rows = session.exec(
            select(HealthHourly).where(HealthHourly.metric == "cpu_temp_c").order_by("hour")
        ).all()
        assert [(r.hour, r.min, r.avg, r.max, r.count) for r in rows] == [
            (hour, 40.0, 50.0, 60.0, 3),
            (hour + timedelta(hours=1), 70.0, 70.0, 70.0, 1),
        ]
        amp = session.get(HealthHourly, (STATIONS[0], "amp_on", hour))
        assert amp is not None and (amp.avg, amp.count) == (2 / 3, 3)  # on 2 of 3 reports

        week = read_series(session, STATIONS[0], "7d", ["cpu_temp_c"], now)
        assert week.source == "hourly" and week.bucket_s == 3600
        assert [(p.t, p.min, p.avg, p.max) for p in week.series["cpu_temp_c"]] == [
            (hour, 40.0, 50.0, 60.0),
            (hour + timedelta(hours=1), 70.0, 70.0, 70.0),
        ]
        day = read_series(session, STATIONS[0], "24h", ["cpu_temp_c"], now)
        assert [(p.t, p.avg, p.count) for p in day.series["cpu_temp_c"]] == [
            (hour, 40.0, 1),
            (hour + timedelta(minutes=10), 50.0, 1),
            (hour + timedelta(minutes=20), 60.0, 1),
            (hour + timedelta(minutes=60), 70.0, 1),
        ]
    assert prune(engine, now, settings) == (1, 0)  # the 8-day-old sample


def test_a_redelivered_older_report_keeps_the_stored_health_and_its_alarm(
    engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    """The writer reads only part of ``last_health``; a stale report must not shrink it."""
    ingest = writer(engine, clock, tmp_path)
    ingest.submit(STATIONS[0], heartbeat(at=T0, disk_free_bytes=4 * 10**8))  # 5 %: alarm
    assert ingest.drain(10)
    clock.now = T0 + timedelta(minutes=1)
    ingest.submit(STATIONS[0], heartbeat(at=T0 - timedelta(seconds=30)))  # older, disk fine
    assert ingest.drain(10)
    ingest.stop()
    kept = station(engine)
    assert kept.last_health_at == T0 and kept.last_health is not None
    assert kept.last_health["disk_free_pct"] == pytest.approx(5.0)
    assert kept.status is StationStatus.DEGRADED
    assert [(a.kind, a.state) for a in alarms(engine)] == [("disk_low", "open")]
    with Session(engine) as session:
        assert len(session.exec(select(HealthSample)).all()) == 2
        live = session.get(StationLiveness, STATIONS[0])
    assert live is not None and live.last_seen_at == clock.now
