"""The clock measurement: the offset estimate from a time_sync exchange (NTP's four
timestamps), which exchanges count, and which stations are asked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from loaxa_protocol import CommandReply, Keyring
from node_firmware.core.events import CommandReceived, Publish
from node_firmware.core.machine import CoreSettings, NodeCore
from server.auth.actor import SYSTEM
from server.commands.models import StationCommand
from server.commands.service import MAX_ROUND_TRIP, CommandService, clock_offset_ms
from server.db import create_tables, make_engine
from server.health.ingest import record_clock_offset
from server.keys import ServerKeys
from server.models import Area, AreaLevel, Station, StationStatus
from server.settings import Settings

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
STATION = "cb-st-001"
MS_40 = timedelta(milliseconds=40)


def test_a_station_ahead_by_300_ms_over_a_symmetric_80_ms_path() -> None:
    ahead, one_way = timedelta(milliseconds=300), timedelta(milliseconds=40)
    t1 = T0 + one_way + ahead  # station receives (its clock)
    t2 = t1 + timedelta(milliseconds=5)  # station replies (its clock)
    t3 = t2 - ahead + one_way  # server receives (server clock)
    assert clock_offset_ms(T0, t1, t2, t3) == 300.0


def test_an_asymmetric_path_errs_by_half_the_asymmetry() -> None:
    t1 = T0 + timedelta(milliseconds=100)  # slow way there, clocks equal
    t3 = t1 + timedelta(milliseconds=20)  # fast way back
    assert clock_offset_ms(T0, t1, t1, t3) == 40.0


# ---------------------------------------------------------------- the server's side
# A real CommandService on a real SQLite file, answered by the real station core: the
# signed command goes in, the station's own reply comes out; only the wire is left out.


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Outbox:
    """The broker as the server sees it: what was published, in order."""

    sent: list[bytes] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.sent.append(payload)

    def flush(self, timeout_s: float) -> None:
        """Nothing waits: publish kept it already."""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[CommandService, Clock, Outbox, NodeCore, Engine]]:
    settings = Settings(data_dir=tmp_path, public_url="http://testserver")
    engine = make_engine(f"sqlite:///{tmp_path / 'loaxa.db'}")
    create_tables(engine)
    with Session(engine) as session:
        session.add(Area(code="04", name="Cao Bằng", level=AreaLevel.PROVINCE))
        session.add(
            Station(
                id=STATION,
                name=STATION,
                area_code="04",
                latitude=22.6,
                longitude=106.2,
                mqtt_username=STATION,
                mqtt_password_hash="$7$1$x$y",
                status=StationStatus.ONLINE,
            )
        )
        session.commit()
    keys = ServerKeys.load(settings)
    clock, outbox = Clock(), Outbox()
    service = CommandService(engine, keys, outbox, clock, record_clock_offset)
    station = NodeCore(CoreSettings(STATION, Keyring.from_entries(keys.trusted_entries(T0))))
    yield service, clock, outbox, station, engine
    engine.dispose()


def exchange(
    world: tuple[CommandService, Clock, Outbox, NodeCore, Engine],
    station_ahead: timedelta,
    there: timedelta,
    back: timedelta,
) -> StationCommand:
    """One time_sync: sent now, read by the station ``there`` later on its own clock
    (``station_ahead`` of ours), its reply handled by the server ``back`` after that."""
    service, clock, outbox, station, engine = world
    assert service.sync_clocks(SYSTEM) == 1
    sent_at = clock.now
    actions = station.handle(CommandReceived(outbox.sent[-1]), sent_at + there + station_ahead)
    (reply,) = [a for a in actions if isinstance(a, Publish) and a.topic.endswith("/reply")]
    clock.now = sent_at + there + back
    with Session(engine) as session:
        service.on_reply(session, CommandReply.model_validate_json(reply.payload))
        return session.exec(select(StationCommand).order_by(col(StationCommand.id).desc())).first()


def measured_offset(engine: Engine) -> object:
    with Session(engine) as session:
        station = session.get(Station, STATION)
        assert station is not None
        return (station.last_health or {}).get("clock_offset_ms")


def test_a_prompt_exchange_measures_a_station_30_s_ahead(world) -> None:
    row = exchange(world, timedelta(seconds=30), timedelta(milliseconds=40), MS_40)
    assert row.result["clock_offset_ms"] == pytest.approx(30_000, abs=1)
    assert measured_offset(world[4]) == pytest.approx(30_000, abs=1)


def test_a_time_sync_queued_through_a_broker_outage_measures_nothing(world) -> None:
    # The station's clock is right; the command waited three minutes in a queue. Taken
    # at face value the exchange reads as a clock 90 s ahead (the false alarm of issue 11).
    row = exchange(world, timedelta(0), timedelta(minutes=3), MS_40)
    assert row.state == "done" and "clock_offset_ms" not in row.result
    assert row.result["round_trip_ms"] == pytest.approx(180_040, abs=1)
    assert "no clock measurement" in (row.detail or "")
    assert measured_offset(world[4]) is None
    # The same holds for a reply that waited on the station's side.
    row = exchange(world, timedelta(0), MS_40, timedelta(minutes=3))
    assert "clock_offset_ms" not in row.result and measured_offset(world[4]) is None
    # Within the limit a slow link still measures.
    row = exchange(world, timedelta(0), MAX_ROUND_TRIP / 2, MAX_ROUND_TRIP / 2)
    assert row.result["clock_offset_ms"] == pytest.approx(0, abs=1)


@pytest.mark.parametrize(
    ("status", "asked"),
    [
        (StationStatus.ONLINE, 1),
        # A clock alarm makes a station degraded; measuring only online ones left it so.
        (StationStatus.DEGRADED, 1),
        (StationStatus.OFFLINE, 0),
        (StationStatus.STOPPED, 0),
    ],
)
def test_every_connected_station_is_measured_and_no_other(
    world, status: StationStatus, asked: int
) -> None:
    service, _clock, outbox, _station, engine = world
    with Session(engine) as session:
        station = session.get(Station, STATION)
        assert station is not None
        station.status = status
        session.add(station)
        session.commit()
    assert service.sync_clocks(SYSTEM) == asked and len(outbox.sent) == asked
