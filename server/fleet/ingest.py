"""Apply what stations report (events, status, health) to the database.

Theory of operation: every event is appended to the ``StationEvent`` log exactly as
received, then, if it names a plan item, advances that ``BroadcastTarget``. States
only move forward (planned → delivered → fetched → playing → played, or to failed /
interrupted), because MQTT does not order messages across reconnects and a late
``plan_accepted`` must not turn "played" back into "delivered". The one way back out
of ``failed`` is progress the station reports *after* the failure (it retries
downloads), since that is newer truth, not a reordering. Timestamps the event carries
are still filled in when the state cannot move.

Messages arrive in batches and are applied in one transaction per batch; if the batch
fails, for whatever reason, each message is retried on its own so one bad row cannot
drop its neighbours (one that fails alone is logged with its topic and counted).
Health reports (thousands a second) are handed untouched to the health writer
(``server.health.ingest``), which validates them field by field and writes them in
batches of its own; availability messages and amplifier / relay fault events are
applied here, through that package's functions, so one package owns station status.

Security reports go to two places: the station's event log (what a technician reads
per station) and the audit log (what an auditor reads for the whole system). A station
refusing a command (``rejected``) is audited as ``station.rejected_command``; with an
:class:`~server.fleet.watch.IntrusionWatch`, a down-topic message the server did not
issue becomes an ``intrusion`` event plus an ``intrusion.detected`` audit entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy import select as sa_select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from loaxa_protocol import CommandReply, Event, EventKind, Status, StatusState, topics
from server.alerts.models import AlertRecord
from server.areas import ancestry
from server.audit.log import record_audit
from server.auth.actor import SYSTEM
from server.db import session_scope, utcnow
from server.fleet.dispatcher import Dispatcher, Inbound, IngestStats, StationMessage
from server.fleet.watch import DownTopic, Intrusion, IntrusionWatch, parse_down_topic
from server.health.ingest import apply_link_status, note_fault
from server.health.service import HealthService
from server.models import BroadcastTarget, Station, StationEvent, TargetState
from server.planning.compiler import broadcast_id_of
from server.programmes.timeline import programme_item_of

log = logging.getLogger(__name__)

LIVE_REFUSAL = "live_"
"""Reason prefix of a station's refusal of a live frame (``node_firmware.core.live``)."""
LIVE_KINDS = frozenset({EventKind.LIVE_STARTED, EventKind.LIVE_ENDED})
INTRUSION_KIND = "intrusion"
"""``StationEvent.kind`` of an intrusion; not an EventKind, since no station sends it."""

EVENT_STATE: dict[EventKind, TargetState] = {
    EventKind.PLAN_ACCEPTED: TargetState.DELIVERED,
    EventKind.AUDIO_FETCHED: TargetState.FETCHED,
    EventKind.AUDIO_FAILED: TargetState.FAILED,
    EventKind.PLAYING: TargetState.PLAYING,
    EventKind.PLAYED: TargetState.PLAYED,
    EventKind.INTERRUPTED: TargetState.INTERRUPTED,
    EventKind.FAILED: TargetState.FAILED,
}

RANK: dict[TargetState, int] = {
    TargetState.PLANNED: 0,
    TargetState.DELIVERED: 1,
    TargetState.FETCHED: 2,
    TargetState.PLAYING: 3,
    TargetState.FAILED: 4,
    TargetState.INTERRUPTED: 4,
    TargetState.PLAYED: 5,
}

_FAILURES = {TargetState.FAILED, TargetState.INTERRUPTED}
FAULTS = frozenset({EventKind.AMP_FAULT, EventKind.RELAY_FAULT})
HEALTH_LEAF = "health"
EVENT_LOG = "loaxa.event_log"
"""``Session.info`` key: the batch's ``StationEvent`` rows, inserted together."""
KNOWN = "loaxa.known_stations"
ALERT_EVENTS = "loaxa.alert_events"
UPDATE_EVENTS = "loaxa.update_events"
"""``Session.info`` key: the batch's ``update_*`` events, for the rollouts they report on."""
UPDATE_KINDS = frozenset(k for k in EventKind if k.value.startswith("update_"))
"""``Session.info`` key: ids of the batch's stations that are registered."""


def _moves(target: BroadcastTarget, new: TargetState, at: datetime) -> bool:
    current = target.state
    newer = target.state_at is None or at > target.state_at
    if current is TargetState.FAILED and new in {TargetState.FETCHED, TargetState.PLAYING}:
        return newer  # a retry that worked
    if current is new and new in _FAILURES:
        return newer  # keep the latest reason
    return RANK[new] > RANK[current]


def apply_event(target: BroadcastTarget, event: Event, now: datetime) -> bool:
    """Advance one target by one station event; returns whether its state changed."""
    new = EVENT_STATE[event.kind]
    if new is TargetState.DELIVERED and target.delivered_at is None:
        target.delivered_at = event.at
    elif new is TargetState.FETCHED and target.fetched_at is None:
        target.fetched_at = event.at

    moved = _moves(target, new, event.at)
    if new in {TargetState.PLAYING, TargetState.PLAYED, TargetState.INTERRUPTED}:
        started = event.started_at or (event.at if new is TargetState.PLAYING else None)
        if started is not None and (moved or target.started_at is None):
            target.started_at = started
    if new in {TargetState.PLAYED, TargetState.INTERRUPTED} or event.finished_at is not None:
        finished = event.finished_at or event.at
        if moved or target.finished_at is None:
            target.finished_at = finished

    if moved:
        target.state = new
        target.state_at = event.at
        if new in _FAILURES:
            target.reason = event.reason or event.kind.value
            target.detail = event.detail
        else:
            target.reason = target.detail = None
    target.updated_at = now
    return moved


class Ingestor:
    """Owns the dispatcher and the handlers that write station reports to the database."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime] = utcnow,
        watch: IntrusionWatch | None = None,
        on_reply: Callable[[Session, CommandReply], None] | None = None,
        health: HealthService | None = None,
        on_alert_events: Callable[[Session, Sequence[Event]], None] | None = None,
        on_online: Callable[[Session, str], None] | None = None,
        on_update_events: Callable[[Session, Sequence[Event]], None] | None = None,
    ) -> None:
        self._engine = engine
        self._on_update_events = on_update_events
        self._on_alert_events = on_alert_events
        self._on_online = on_online
        self._clock = clock
        self._watch = watch
        self.live_intrusions = 0
        self._health = health
        self.stats = IngestStats()
        handlers: dict[str, Callable[[Session, Any], None]] = {
            "event": self._on_event,
            "status": self._on_status,
        }
        if on_reply is not None:
            handlers["reply"] = on_reply
        self.dispatcher: Dispatcher[Session] = Dispatcher(handlers, self.stats)

    @property
    def intrusions(self) -> int:
        """Intrusions the watch has found since start-up, and live frames stations refused."""
        found = self._watch.intrusions if self._watch is not None else 0
        return found + self.live_intrusions

    def handle(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Validate and apply a batch of raw (topic, payload) messages; never raises."""
        if self._watch is not None:
            down = [(t, p) for t, p in messages if parse_down_topic(t) is not None]
            if down:
                try:
                    self._watch_down(self._watch, down)
                except Exception:  # the watch must never cost the station reports below
                    self.stats.failed += len(down)
                    log.exception("intrusion watch failed on %s down-topic messages", len(down))
                messages = [(t, p) for t, p in messages if parse_down_topic(t) is None]
        if self._health is not None:
            messages = self._hand_over_health(self._health, messages)
        inbound = [m for m in (self.dispatcher.decode(t, p) for t, p in messages) if m]
        if not inbound:
            return
        try:
            self._apply(inbound)
        except Exception:  # any exception: a bug or bad row must not drop its neighbours
            log.exception("batch of %s station messages failed; retrying one by one", len(inbound))
            self._apply_one_by_one(inbound)
        faulty = {
            one.station_id
            for one in inbound
            if isinstance(one.message, Event) and one.message.kind in FAULTS
        }
        if faulty and self._health is not None:
            self._health.evaluate_soon(faulty)  # after the commit, so the writer sees it

    def _apply_one_by_one(self, inbound: Sequence[Inbound]) -> None:
        """Apply each message in its own transaction; one that still fails is logged, counted."""
        self.stats.retried += len(inbound)
        for one in inbound:
            try:
                self._apply([one])
            except Exception as exc:
                self.stats.failed += 1
                log.exception(
                    "station message on %s could not be stored (%s: %s); the others were",
                    one.topic,
                    type(exc).__name__,
                    exc,
                )

    @staticmethod
    def _hand_over_health(
        health: HealthService, messages: Sequence[tuple[str, bytes]]
    ) -> Sequence[tuple[str, bytes]]:
        """Queue heartbeats for the health writer; return every other message."""
        rest = []
        for topic, payload in messages:
            station_id = topics.station_of(topic)
            if station_id is not None and topics.leaf_of(topic) == HEALTH_LEAF:
                health.submit(station_id, payload)
            else:
                rest.append((topic, payload))
        return rest

    def _watch_down(self, watch: IntrusionWatch, down: Sequence[tuple[str, bytes]]) -> None:
        """Judge down-topic messages; record each intrusion in its own transaction.

        Inspection runs in a read-only session first: nearly every message is the
        server's own echo, recognised by its hash without touching the database.
        """
        with Session(self._engine) as session:

            def addressees(target: DownTopic) -> set[str]:
                if target.scope == "area":
                    return {f"area:{target.name}"}
                station = session.get(Station, target.name)
                areas = ancestry(session, station.area_code) if station is not None else []
                return {target.name, *(f"area:{code}" for code in areas)}

            def cancelled_at(alert_id: str) -> datetime | None:
                query = select(AlertRecord.cancelled_at).where(AlertRecord.alert_id == alert_id)
                return session.exec(query).first()

            found = [
                intrusion
                for topic, payload in down
                if (intrusion := watch.inspect(topic, payload, addressees, cancelled_at))
            ]
        for intrusion in found:
            log.warning(
                "INTRUSION on %s: %s (%s), sha256 %s",
                intrusion.topic,
                intrusion.reason,
                intrusion.detail,
                intrusion.sha256,
            )
            try:
                with session_scope(self._engine) as session:
                    self._record_intrusion(session, intrusion)
            except SQLAlchemyError:
                self.stats.failed += 1
                log.exception("could not record the intrusion on %s", intrusion.topic)

    def _record_intrusion(self, session: Session, intrusion: Intrusion) -> None:
        target = intrusion.target
        now = self._clock()
        if target.scope == "station" and session.get(Station, target.name) is not None:
            session.add(
                StationEvent(
                    station_id=target.name,
                    kind=INTRUSION_KIND,
                    plan_seq=intrusion.seq,
                    reason=intrusion.reason,
                    detail=f"{intrusion.topic}: {intrusion.detail}"[:500],
                    at=now,
                    received_at=now,
                )
            )
        record_audit(
            session,
            SYSTEM,
            "intrusion.detected",
            target.scope,
            target.name,
            after={
                "topic": intrusion.topic,
                "reason": intrusion.reason,
                "detail": intrusion.detail,
                "sha256": intrusion.sha256,
                "seq": intrusion.seq,
                "issued_at": intrusion.issued_at,
            },
        )

    def _apply(self, inbound: Sequence[Inbound]) -> None:
        with session_scope(self._engine) as session:
            # One query for which of the batch's stations exist (events need no more).
            ids = list({one.station_id for one in inbound})
            table = Station.__table__  # type: ignore[attr-defined]
            query = sa_select(table.c.id).where(table.c.id.in_(ids))
            session.info[KNOWN] = set(session.connection().execute(query).scalars())
            for one in inbound:
                self.dispatcher.deliver(one, session)
            logged = session.info.pop(EVENT_LOG, None)
            if logged:  # one Core executemany: the ORM inserts such rows one by one
                events = StationEvent.__table__  # type: ignore[attr-defined]
                session.connection().execute(insert(events), logged)
            alert_events = session.info.pop(ALERT_EVENTS, None)
            if alert_events and self._on_alert_events is not None:
                # The whole batch at once: a few statements, not three round trips an ack.
                self._on_alert_events(session, alert_events)
            update_events = session.info.pop(UPDATE_EVENTS, None)
            if update_events and self._on_update_events is not None:
                self._on_update_events(session, update_events)
        self.stats.applied += len(inbound)

    def _station(self, session: Session, message: StationMessage) -> Station | None:
        station = session.get(Station, message.station_id)
        if station is None:
            self.stats.unknown_station += 1
            log.warning("%s from unregistered station %r ignored", message.type, message.station_id)
        return station

    def _on_event(self, session: Session, message: StationMessage) -> None:
        assert isinstance(message, Event)
        if message.station_id not in session.info.get(KNOWN, ()) and (
            self._station(session, message) is None
        ):
            return
        now = self._clock()
        session.info.setdefault(EVENT_LOG, []).append(
            dict(
                station_id=message.station_id,
                kind=message.kind.value,
                item_id=message.item_id,
                plan_seq=message.plan_seq,
                reason=message.reason,
                detail=message.detail,
                at=message.at,
                started_at=message.started_at,
                finished_at=message.finished_at,
                alert_id=message.alert_id,
                received_at=now,
            )
        )
        if message.alert_id is not None:
            session.info.setdefault(ALERT_EVENTS, []).append(message)
            return
        if message.kind is EventKind.REJECTED and (message.reason or "").startswith(LIVE_REFUSAL):
            self._live_intrusion(session, message)
        elif message.kind is EventKind.REJECTED:
            record_audit(
                session,
                SYSTEM,
                "station.rejected_command",
                "station",
                message.station_id,
                after={
                    "reason": message.reason,
                    "detail": message.detail,
                    "seq": message.plan_seq,
                    "at": message.at,
                },
            )
        if message.kind in FAULTS:
            note_fault(session, message)
        if message.kind in LIVE_KINDS:
            return  # its record is the stored event (server.live.service.as_run)
        if message.kind in UPDATE_KINDS:
            session.info.setdefault(UPDATE_EVENTS, []).append(message)
            return
        if message.kind not in EVENT_STATE:
            log.warning(
                "station %s reported %s: %s %s",
                message.station_id,
                message.kind.value,
                message.reason,
                message.detail or "",
            )
            return
        for target in self._targets(session, message):
            apply_event(target, message, now)
            session.add(target)

    def _live_intrusion(self, session: Session, message: Event) -> None:
        """A station refused a live frame (forged, replayed, for no session): someone wrote
        on its ``live`` topic who is not this server. Same records as the intrusion watch."""
        self.live_intrusions += 1
        log.warning(
            "INTRUSION on %s's live topic: %s (%s)",
            message.station_id,
            message.reason,
            message.detail,
        )
        session.info.setdefault(EVENT_LOG, []).append(
            dict(
                station_id=message.station_id,
                kind=INTRUSION_KIND,
                item_id=message.item_id,
                plan_seq=None,
                reason=message.reason,
                detail=f"{topics.live(message.station_id)}: {message.detail or ''}"[:500],
                at=message.at,
                started_at=None,
                finished_at=None,
                alert_id=None,
                received_at=self._clock(),
            )
        )
        record_audit(
            session,
            SYSTEM,
            "intrusion.detected",
            "station",
            message.station_id,
            after={
                "topic": topics.live(message.station_id),
                "reason": message.reason,
                "detail": message.detail,
                "at": message.at,
            },
        )

    def _targets(self, session: Session, event: Event) -> list[BroadcastTarget]:
        if event.item_id is not None:
            if programme_item_of(event.item_id) is not None:
                return []  # a programme's item: its record is the stored event (as-run)
            broadcast_id = broadcast_id_of(event.item_id)
            target = (
                session.get(BroadcastTarget, (broadcast_id, event.station_id))
                if broadcast_id is not None
                else None
            )
            if target is None:
                self.stats.unmatched_item += 1
                log.warning("%s names unknown item %r", event.station_id, event.item_id)
                return []
            return [target]
        if event.kind is not EventKind.PLAN_ACCEPTED:
            self.stats.unmatched_item += 1
            log.warning("%s from %s names no item", event.kind.value, event.station_id)
            return []
        # A whole plan was accepted: it carried every item first published at or
        # before its sequence (plans are complete replacements).
        query = select(BroadcastTarget).where(
            BroadcastTarget.station_id == event.station_id,
            col(BroadcastTarget.first_plan_seq).is_not(None),
        )
        if event.plan_seq is not None:
            query = query.where(col(BroadcastTarget.first_plan_seq) <= event.plan_seq)
        return list(session.exec(query).all())

    def _on_status(self, session: Session, message: StationMessage) -> None:
        assert isinstance(message, Status)
        station = self._station(session, message)
        if station is not None:
            apply_link_status(session, station, message, self._clock())
            if message.state is StatusState.ONLINE and self._on_online is not None:
                self._on_online(session, station.id)
