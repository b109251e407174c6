"""Sending signed commands to stations and recording what they answer.

A command is one-shot (not retained) and short-lived: if the station is offline it
expires unseen, and the technician sees "sent" with no answer rather than a false
"done". The clock measurement rides on the same path: the server sends ``time_sync``
with its send time, the station answers with its receive and reply times, and the
offset is estimated NTP-style from the four instants.

The estimate is only as good as the round trip is short: its error is at most half the
time the exchange spent in transit. A ``time_sync`` queued while the broker was away
arrives minutes late and would read as a clock minutes off, so an exchange whose round
trip exceeds ``MAX_ROUND_TRIP`` is answered but measures nothing. Every station that talks
to us (``online`` or ``degraded``) is measured, so a clock alarm clears once the clock is
put right.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from loaxa_protocol import Command, CommandReply, seal, topics
from loaxa_protocol.commands import parse_args
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.commands.models import CommandState, StationCommand
from server.fleet.bus import Bus
from server.health.status import LIVE
from server.keys import ServerKeys
from server.models import Station

log = logging.getLogger(__name__)

COMMAND_TTL = timedelta(minutes=5)
MAX_ROUND_TRIP = timedelta(seconds=5)
"""Longer in transit than this, a time_sync exchange is no measurement (error ≤ half of it)."""
ClockOffsetSink = Callable[[Session, str, float, datetime], None]


class CommandError(ValueError):
    """The command cannot be sent as asked; the message says why."""


def clock_offset_ms(t0: datetime, t1: datetime, t2: datetime, t3: datetime) -> float:
    """Station clock minus server clock, from send/receive/reply/arrival instants."""
    return ((t1 - t0) + (t2 - t3)).total_seconds() / 2 * 1000


def round_trip(t0: datetime, t1: datetime, t2: datetime, t3: datetime) -> timedelta:
    """Time in transit: the server's send-to-arrival less the station's own turnaround."""
    return (t3 - t0) - (t2 - t1)


class CommandService:
    def __init__(
        self,
        engine: Engine,
        keys: ServerKeys,
        bus: Bus,
        clock: Callable[[], datetime],
        on_clock_offset: ClockOffsetSink | None = None,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._bus = bus
        self._clock = clock
        self._on_clock_offset = on_clock_offset

    def send(
        self,
        session: Session,
        station_id: str,
        name: str,
        args: dict[str, Any],
        actor: Actor,
        source_ip: str | None = None,
    ) -> StationCommand:
        """Validate, record, audit, commit, then publish (so a fast reply finds its row)."""
        parsed = parse_args(name, args)
        if isinstance(parsed, str):
            raise CommandError(parsed)
        now = self._clock()
        command = Command(
            sender="server",
            seq=self._keys.next_seq(),
            issued_at=now,
            expires_at=now + COMMAND_TTL,
            to=station_id,
            name=name,
            args=parsed.model_dump(mode="json"),
        )
        row = StationCommand(
            station_id=station_id,
            seq=command.seq,
            name=name,
            args=command.args,
            created_by=actor.name,
            created_at=now,
        )
        session.add(row)
        session.flush()
        if actor.kind != "system":
            record_audit(
                session, actor, f"station.command.{name}", "station", station_id,
                after={"args": command.args, "seq": command.seq}, source_ip=source_ip,
            )  # fmt: skip
        session.commit()
        session.refresh(row)
        self._bus.publish(topics.command(station_id), seal(command, self._keys.signing_key), qos=1)
        return row

    def on_reply(self, session: Session, reply: CommandReply) -> None:
        row = session.exec(
            select(StationCommand)
            .where(StationCommand.station_id == reply.station_id)
            .where(StationCommand.seq == reply.command_seq)
        ).first()
        if row is None:
            log.warning("reply from %s to unknown command %s", reply.station_id, reply.command_seq)
            return
        arrived = self._clock()
        row.state = CommandState.DONE if reply.ok else CommandState.FAILED
        row.ok, row.detail, row.replied_at = reply.ok, reply.detail, arrived
        row.result = dict(reply.data)
        if row.name == "time_sync" and reply.ok:
            self._record_offset(session, row, reply, arrived)
        session.add(row)
        session.commit()

    def _record_offset(
        self, session: Session, row: StationCommand, reply: CommandReply, arrived: datetime
    ) -> None:
        try:
            t0 = datetime.fromisoformat(str(row.args["server_sent_at"]))
            t1 = datetime.fromisoformat(str(reply.data["received_at"]))
            t2 = datetime.fromisoformat(str(reply.data["replied_at"]))
        except (KeyError, ValueError) as exc:
            log.warning("unusable time_sync reply from %s: %s", reply.station_id, exc)
            return
        transit = round_trip(t0, t1, t2, arrived)
        row.result = {**(row.result or {}), "round_trip_ms": transit / timedelta(milliseconds=1)}
        if not timedelta(0) <= transit <= MAX_ROUND_TRIP:
            row.detail = (
                f"round trip {transit.total_seconds():.1f} s is outside 0–"
                f"{MAX_ROUND_TRIP.total_seconds():g} s (queued while the broker was away?): "
                "no clock measurement"
            )
            log.info("time_sync from %s discarded: %s", reply.station_id, row.detail)
            return
        offset = clock_offset_ms(t0, t1, t2, arrived)
        row.result = {**row.result, "clock_offset_ms": offset}
        if self._on_clock_offset is not None:
            self._on_clock_offset(session, reply.station_id, offset, arrived)

    def sync_clocks(self, actor: Actor) -> int:
        """Ask every connected station (online or degraded) for its clock; answers arrive
        through ``on_reply``. Degraded ones above all: a clock alarm degrades a station,
        and only a new measurement can clear it."""
        with Session(self._engine) as session:
            connected = session.exec(select(Station.id).where(col(Station.status).in_(LIVE))).all()
            for station_id in connected:
                now = self._clock().isoformat()
                self.send(session, station_id, "time_sync", {"server_sent_at": now}, actor)
        return len(connected)
