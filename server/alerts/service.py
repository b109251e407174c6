"""Where an alert becomes signed messages on the broker, and station events become its record.

The API (and CAP ingest) decide *whether* someone may send; this service does the
sending and the tracking. It seals with the province alert key (``ServerKeys.alert_key``,
which stations trust for alerts only), publishes one message per topic of the minimal
cover (``server.alerts.logic``), keeps one delivery row per station and moves it with the
station's ``alert_*`` events. A station that comes back online before expiry without
having acked gets a freshly sealed copy on its own topic.

Order on send: the alert row and every delivery row are committed *before* the publish,
in one bulk insert, so an ack that arrives a millisecond later always finds its row and
nothing is lost if the server dies mid-way; then the messages (sealed beforehand) go out.

State changes cannot race. Confirm, cancel, expiry and "finished" are conditional
updates (``UPDATE … WHERE state IN (expected)``; the row count says who won), and each
holds the row from that update to its commit. A confirm publishes *while* it holds the
row, so a cancel that waits for it publishes after it: on the wire a cancel always
follows the alert it stops. A station's re-send takes the same row first, so it is never
published after a cancel either.
"""

from __future__ import annotations

import base64
import functools
import logging
import secrets
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, func, insert, literal, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from loaxa_protocol import (
    Alert,
    AlertCancel,
    AlertSeverity,
    AudioRef,
    Event,
    InlineAudio,
    seal,
    topics,
)
from loaxa_protocol.errors import LoaxaError
from loaxa_protocol.messages import INLINE_AUDIO_MAX_BYTES
from server.alerts import canned as library
from server.alerts.logic import (
    FINAL,
    OPEN_STATES,
    AlertEventIn,
    ConfirmPolicy,
    Cover,
    DeliveryRow,
    apply_alert_event,
    minimal_cover,
    needs_confirmation,
    settled_state,
    should_resend,
)
from server.alerts.models import (
    AlertDelivery,
    AlertRecord,
    AlertState,
    DeliveryState,
    PayloadKind,
)
from server.audio.store import AudioStore
from server.audit.log import record_audit
from server.auth.actor import SYSTEM, Actor
from server.cluster.feed import ChangeFeed
from server.db import session_scope
from server.fleet.bus import FLUSH_TIMEOUT_S, Bus
from server.keys import ServerKeys
from server.locking import lock_rows
from server.models import Area, AudioAsset, Station
from server.settings import Settings

log = logging.getLogger(__name__)

SENDER = "province"
"""The ``sender`` of every alert and cancel: the province's alert key signs them."""
URL_MARGIN = timedelta(hours=1)
DELIVERY_COLUMNS = ("alert_pk", "station_id", "area_code", "state", "resent", "updated_at")
DELIVERY_CHUNK = 10_000
"""Station ids bound in one statement at most (SQLite takes 32,766 parameters)."""


class AlertError(LoaxaError):
    """A request the alert service refuses; ``status`` is the HTTP code it maps to."""

    def __init__(
        self,
        detail: str,
        status: int = 422,
        code: str = "",
        params: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code
        """with ``params``: the same refusal for the web pages to translate"""
        self.params = params or {}


class AlreadyReceived(LoaxaError):
    """This CAP message (sender, identifier) already made an alert: answer with that one."""

    def __init__(self, record: AlertRecord) -> None:
        super().__init__(f"CAP message already received as alert {record.id}")
        self.record = record


_TABLE = AlertRecord.__table__  # type: ignore[attr-defined]


def insert_deliveries(
    session: Session, alert_pk: int, station_ids: Collection[str], now: datetime
) -> None:
    """One pending delivery row per station, by ``INSERT … SELECT`` (DELIVERY_CHUNK ids each).

    The rows are made by the database from the stations' rows: at 1,000 stations,
    binding six values a row from Python cost 6.7 ms on SQLite, this 2.5 ms, and it
    stands between the officer's call and the alert on the wire.
    """
    table = AlertDelivery.__table__  # type: ignore[attr-defined]
    ids = sorted(station_ids)
    for start in range(0, len(ids), DELIVERY_CHUNK):
        rows = sa_select(
            literal(alert_pk),
            col(Station.id),
            col(Station.area_code),
            literal(DeliveryState.PENDING.value),
            literal(0),
            literal(now, type_=table.c.updated_at.type),
        ).where(col(Station.id).in_(ids[start : start + DELIVERY_CHUNK]))
        session.execute(insert(table).from_select(list(DELIVERY_COLUMNS), rows))


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in sorted(values))


def too_big_detail(size_bytes: int) -> str:
    kib = -(-size_bytes // 1024)
    return (
        f"audio is {kib} KiB, inline alerts carry at most {INLINE_AUDIO_MAX_BYTES // 1024} KiB; "
        "shorten it or use a canned message"
    )


@dataclass
class AreaTree:
    """The whole area table in memory (a province has a few hundred rows)."""

    parent: dict[str, str | None]
    name: dict[str, str]

    @classmethod
    def load(cls, session: Session) -> AreaTree:
        rows = session.exec(select(Area.code, Area.parent_code, Area.name)).all()
        return cls({c: p for c, p, _n in rows}, {c: n for c, _p, n in rows})

    def ancestors(self, code: str) -> list[str]:
        chain: list[str] = []
        current: str | None = code
        while current is not None and current not in chain:
            chain.append(current)
            current = self.parent.get(current)
        return chain

    def subtree(self, roots: Iterable[str]) -> set[str]:
        children: dict[str, list[str]] = {}
        for code, parent in self.parent.items():
            if parent is not None:
                children.setdefault(parent, []).append(code)
        found: set[str] = set()
        pending = list(roots)
        while pending:
            code = pending.pop()
            if code not in found:
                found.add(code)
                pending.extend(children.get(code, ()))
        return found


@dataclass
class Targets:
    """Everyone an alert reaches, and how to reach them."""

    stations: dict[str, str]
    """station id → its area code, for every station that will hear it"""
    area_codes: list[str]
    station_ids: list[str]
    cover: Cover
    tree: AreaTree

    @property
    def scope_areas(self) -> set[str]:
        """Areas the sender needs the right in: every named area, and every station's area
        that no named area contains (a right in an area covers its whole subtree, so those
        need no check of their own: one check for a province-wide alert, not hundreds)."""
        named = set(self.area_codes)
        return named | {
            area
            for area in set(self.stations.values())
            if not any(a in named for a in self.tree.ancestors(area))
        }


@dataclass(frozen=True)
class Payload:
    kind: PayloadKind
    audio: AudioAsset
    tone: AudioAsset | None
    canned: str | None = None
    text: str | None = None


@dataclass
class AlertSpec:
    """Everything about an alert except its targets and audio, however it arrived."""

    title: str
    severity: AlertSeverity
    drill: bool
    tone: bool
    repeat: int
    gap_s: int
    expires_at: datetime
    source: str = "api"
    cap_sender: str | None = None
    cap_identifier: str | None = None
    cap_sent: datetime | None = None


class AlertService:
    """Sends, re-sends, cancels and tracks alerts; safe to call from any thread."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        keys: ServerKeys,
        bus: Bus,
        store: AudioStore,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._keys = keys
        self._bus = bus
        self._store = store
        self._clock = clock
        self.changes = ChangeFeed(engine)

    # ------------------------------------------------------------ targets

    def resolve(self, session: Session, area_codes: list[str], station_ids: list[str]) -> Targets:
        """Who hears it; every unknown id or code is an error naming it."""
        tree = AreaTree.load(session)
        unknown_areas = set(area_codes) - set(tree.parent)
        if unknown_areas:
            raise AlertError(f"area_codes: unknown area(s) {_quoted(unknown_areas)}")
        named: dict[str, str] = {}
        if station_ids:
            rows = session.exec(
                select(Station.id, Station.area_code).where(col(Station.id).in_(set(station_ids)))
            ).all()
            named = {sid: area for sid, area in rows}
            missing = set(station_ids) - set(named)
            if missing:
                raise AlertError(f"station_ids: unknown station(s) {_quoted(missing)}")
        stations = dict(named)
        if area_codes:
            codes = tree.subtree(area_codes)
            rows = session.exec(
                select(Station.id, Station.area_code).where(col(Station.area_code).in_(codes))
            ).all()
            stations.update({sid: area for sid, area in rows})
        if not stations:
            raise AlertError(
                f"area_codes: no station is registered in area(s) {_quoted(area_codes)}"
            )
        cover = minimal_cover(area_codes, named, tree.ancestors)
        return Targets(stations, sorted(set(area_codes)), sorted(named), cover, tree)

    def needs_confirmation(self, targets: Targets, drill: bool) -> bool:
        policies = {code: ConfirmPolicy(p) for code, p in self._settings.alert_confirmation.items()}
        return needs_confirmation(
            drill,
            targets.stations.values(),
            policies,
            ConfirmPolicy(self._settings.alert_confirmation_default),
            targets.tree.ancestors,
        )

    # ------------------------------------------------------------ payload

    def payload_for(
        self,
        session: Session,
        *,
        canned: str | None = None,
        audio_id: int | None = None,
        text: str | None = None,
        tone: bool = True,
        where: str | None = None,
    ) -> Payload:
        """The audio an alert carries: a library reference, or an asset sent inline."""
        assets = library.library_assets(session)
        tone_asset = assets.get(library.TONE) if tone else None
        if tone and tone_asset is None:
            log.warning("alerts: the attention tone is not in the library; sending without")
        if canned is not None:
            asset = assets.get(canned)
            if asset is None:
                raise AlertError(
                    f"canned: unknown message {canned!r}; the library has "
                    f"{_quoted(n for n in assets if n != library.TONE) or 'nothing'}"
                )
            return Payload(PayloadKind.CANNED, asset, tone_asset, canned=canned)
        if audio_id is None:
            raise AlertError(
                "an alert needs a message: give text, audio_id or canned", code="alert_no_message"
            )
        found = session.get(AudioAsset, audio_id)
        if found is None:
            raise AlertError(f"audio_id: audio {audio_id} does not exist; upload it first")
        if found.size_bytes > INLINE_AUDIO_MAX_BYTES:
            where = where or ("text" if text is not None else "audio_id")
            raise AlertError(
                f"{where}: {too_big_detail(found.size_bytes)}",
                code="inline_too_big",
                params={
                    "field": where,
                    "kib": -(-found.size_bytes // 1024),
                    "limit_kib": INLINE_AUDIO_MAX_BYTES // 1024,
                },
            )
        return Payload(PayloadKind.INLINE, found, tone_asset, text=text)

    @functools.lru_cache(maxsize=8)  # noqa: B019 (the service lives as long as the app)
    def _inline_data(self, sha256: str) -> str:
        return base64.b64encode(self._store.path(sha256).read_bytes()).decode("ascii")

    def _ref(self, asset: AudioAsset, expires_at: datetime, now: datetime) -> AudioRef:
        assert asset.id is not None
        ttl = max(expires_at - now, timedelta(0)) + URL_MARGIN
        return AudioRef(
            sha256=asset.sha256,
            size_bytes=asset.size_bytes,
            duration_ms=asset.duration_ms,
            codec=asset.codec,
            url=self._keys.urls.sign_url(asset.id, ttl, now),
        )

    def _wire(self, record: AlertRecord, payload: Payload, to: str, now: datetime) -> Alert:
        inline = None
        audio = None
        if payload.kind is PayloadKind.INLINE:
            inline = InlineAudio(
                sha256=payload.audio.sha256,
                codec=payload.audio.codec,
                duration_ms=payload.audio.duration_ms,
                data=self._inline_data(payload.audio.sha256),
            )
        else:
            audio = self._ref(payload.audio, record.expires_at, now)
        return Alert(
            sender=SENDER,
            seq=self._keys.next_seq(),
            issued_at=now,
            expires_at=record.expires_at,
            to=to,
            alert_id=record.alert_id,
            severity=AlertSeverity(record.severity),
            title=record.title,
            drill=record.drill,
            tone=self._ref(payload.tone, record.expires_at, now) if payload.tone else None,
            audio=audio,
            inline=inline,
            repeat=record.repeat,
            gap_ms=record.gap_s * 1000,
        )

    def _payload_of(self, session: Session, record: AlertRecord) -> Payload:
        audio = session.get(AudioAsset, record.audio_id)
        if audio is None:
            raise AlertError(f"alert {record.id}: its audio {record.audio_id} is gone", 500)
        tone = library.library_assets(session).get(library.TONE) if record.tone else None
        return Payload(PayloadKind(record.payload), audio, tone, canned=record.canned)

    def _seal_all(
        self, record: AlertRecord, payload: Payload, now: datetime
    ) -> list[tuple[str, bytes]]:
        messages = []
        for to in record.topic_targets:
            topic = (
                topics.area_alert(to.removeprefix("area:"))
                if to.startswith("area:")
                else topics.alert(to)
            )
            raw = seal(self._wire(record, payload, to, now), self._keys.alert_key)
            messages.append((topic, raw))
        return messages

    def _publish(self, messages: list[tuple[str, bytes]]) -> None:
        for topic, raw in messages:
            self._bus.publish(topic, raw, qos=1, retain=False)
        if messages:
            # Until the broker has them, nothing else of ours may take the interpreter
            # from paho's network thread (``FleetLink.flush``).
            self._bus.flush(FLUSH_TIMEOUT_S)

    # ------------------------------------------------------------- create

    def check_expiry(self, expires_at: datetime, where: str = "expires_at") -> None:
        """Refuse an expiry in the past or beyond ``alert_max_hours``."""
        now = self._clock()
        if expires_at <= now:
            raise AlertError(
                f"{where} {expires_at.isoformat()} is in the past (server time {now.isoformat()})"
            )
        limit = now + timedelta(hours=self._settings.alert_max_hours)
        if expires_at > limit:
            raise AlertError(
                f"{where} {expires_at.isoformat()} is more than "
                f"{self._settings.alert_max_hours:g} h ahead (latest {limit.isoformat()})"
            )

    def create(
        self,
        session: Session,
        actor: Actor,
        spec: AlertSpec,
        targets: Targets,
        payload: Payload,
        replaces: Sequence[AlertRecord] = (),
    ) -> AlertRecord:
        """Record the alert and, unless a second officer must confirm, send it now.

        ``replaces`` (a CAP Update): alerts cancelled in the same transaction, those
        still open; their cancels go out before the new alert. The caller has authorised
        ``actor`` for all of it. Raises :class:`AlreadyReceived` when the CAP message
        (``spec.cap_sender``, ``spec.cap_identifier``) is already an alert: nothing is
        written or sent then. Returns the committed record.
        """
        now = self._clock()
        self.check_expiry(spec.expires_at)
        confirm = self.needs_confirmation(targets, spec.drill)
        record = AlertRecord(
            alert_id=f"al-{now:%Y%m%d}-{secrets.token_hex(5)}",
            title=spec.title,
            severity=spec.severity.value,
            drill=spec.drill,
            state=(AlertState.AWAITING_CONFIRMATION if confirm else AlertState.ACTIVE).value,
            tone=payload.tone is not None,
            repeat=spec.repeat,
            gap_s=spec.gap_s,
            payload=payload.kind.value,
            canned=payload.canned,
            audio_id=payload.audio.id,
            text=payload.text,
            area_codes=targets.area_codes,
            station_ids=targets.station_ids,
            topic_targets=targets.cover.addressees,
            needs_confirmation=confirm,
            created_by=actor.name,
            created_by_user_id=actor.user_id,
            source=spec.source,
            cap_sender=spec.cap_sender,
            cap_identifier=spec.cap_identifier,
            cap_sent=spec.cap_sent,
            created_at=now,
            expires_at=spec.expires_at,
        )
        messages: list[tuple[str, bytes]] = []
        if not confirm:
            record.sent_at = now
            messages = self._seal_all(record, payload, now)
            record.payload_bytes = max(len(raw) for _t, raw in messages)
        else:
            # What it will weigh: a copy sealed now, never published.
            record.payload_bytes = len(
                seal(self._wire(record, payload, "area:x", now), self._keys.alert_key)
            )
        session.add(record)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            existing = self.find_cap(session, spec.cap_sender, spec.cap_identifier)
            if existing is None:
                raise
            raise AlreadyReceived(existing) from None
        assert record.id is not None
        cancels = [m for old in replaces for m in self._take_down(session, actor, old, now) or []]
        # These rows stand between the call and the alert on the wire, as acks must find
        # them: the database copies them from the resolved stations' own rows.
        insert_deliveries(session, record.id, targets.stations, now)
        record_audit(
            session,
            actor,
            "alert.send" if not confirm else "alert.create",
            "alert",
            str(record.id),
            after=self._audit_summary(record, len(targets.stations)),
        )
        self._publish(cancels)  # while the replaced rows are held (module doc)
        session.commit()
        self._publish(messages)
        if messages:
            log.warning(
                "%sALERT %s %r sent to %s stations via %s",
                "DRILL " if record.drill else "",
                record.alert_id,
                record.title,
                len(targets.stations),
                ", ".join(record.topic_targets),
            )
        return record

    @staticmethod
    def _audit_summary(record: AlertRecord, stations: int) -> dict[str, object]:
        return {
            "alert_id": record.alert_id,
            "title": record.title,
            "severity": record.severity,
            "drill": record.drill,
            "payload": record.payload,
            "canned": record.canned,
            "audio_id": record.audio_id,
            "expires_at": record.expires_at,
            "area_codes": record.area_codes,
            "station_ids": record.station_ids,
            "topics": record.topic_targets,
            "station_count": stations,
            "source": record.source,
        }

    # -------------------------------------------------- confirm and cancel

    def find_cap(
        self, session: Session, sender: str | None, identifier: str | None
    ) -> AlertRecord | None:
        """The alert a CAP message (sender, identifier) made, if any."""
        if sender is None or identifier is None:
            return None
        return session.exec(
            select(AlertRecord).where(
                AlertRecord.cap_sender == sender, AlertRecord.cap_identifier == identifier
            )
        ).first()

    def _claim(
        self,
        session: Session,
        record: AlertRecord,
        expected: Iterable[AlertState],
        *conditions: object,
        **values: object,
    ) -> bool:
        """Move ``record`` only if it is still in an ``expected`` state; True if this call won.

        The row stays held until the session's transaction ends. ``record`` is not
        re-read here: callers that go on using it ``session.refresh`` it (the loser then
        sees what the winner wrote).
        """
        result = session.execute(
            update(_TABLE)
            .where(
                _TABLE.c.id == record.id,
                _TABLE.c.state.in_([s.value for s in expected]),
                *conditions,  # type: ignore[arg-type]
            )
            .values(**values)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def _cancels(
        self, session: Session, record: AlertRecord, now: datetime
    ) -> list[tuple[str, bytes]]:
        """A sealed cancel for every topic the alert went to, re-sends included."""
        if record.sent_at is None:
            return []  # never on the wire: nothing to stop
        resent = session.exec(
            select(AlertDelivery.station_id).where(
                AlertDelivery.alert_pk == record.id, col(AlertDelivery.resent) > 0
            )
        ).all()
        messages = []
        for to in dict.fromkeys([*record.topic_targets, *resent]):
            topic = (
                topics.area_alert(to.removeprefix("area:"))
                if to.startswith("area:")
                else topics.alert(to)
            )
            message = AlertCancel(
                sender=SENDER,
                seq=self._keys.next_seq(),
                issued_at=now,
                # A cancel must outlive every copy of the alert it stops.
                expires_at=max(record.expires_at, now) + URL_MARGIN,
                to=to,
                alert_id=record.alert_id,
            )
            messages.append((topic, seal(message, self._keys.alert_key)))
        return messages

    def _take_down(
        self, session: Session, actor: Actor, record: AlertRecord, now: datetime
    ) -> list[tuple[str, bytes]] | None:
        """Mark an open alert cancelled (held until commit) and seal its cancels.

        None when it was over already (someone else won): nothing to send.
        """
        before = record.state
        won = self._claim(
            session,
            record,
            OPEN_STATES,
            state=AlertState.CANCELLED.value,
            cancelled_at=now,
            cancelled_by=actor.name,
            ended_at=now,
        )
        session.refresh(record)
        if not won:
            return None
        messages = self._cancels(session, record, now)
        record_audit(
            session,
            actor,
            "alert.cancel",
            "alert",
            str(record.id),
            before={"state": before},
            after={
                "state": record.state,
                "alert_id": record.alert_id,
                "topics": [t for t, _r in messages],
            },
        )
        return messages

    def confirm(self, session: Session, actor: Actor, record: AlertRecord) -> AlertRecord:
        """A second, different officer releases an alert that waited for them.

        The messages go out while the row is held and before the commit, so a cancel
        arriving at the same instant either wins first (nothing is sent) or publishes
        after them. Should the commit then fail, the stations get a cancel at once: the
        record still says it waits, so nothing may play.
        """
        if record.state != AlertState.AWAITING_CONFIRMATION:
            raise AlertError(f"alert {record.id} is {record.state}, not awaiting confirmation", 409)
        same = (
            actor.user_id == record.created_by_user_id
            if actor.user_id is not None and record.created_by_user_id is not None
            else actor.name == record.created_by
        )
        if same:
            raise AlertError(
                f"alert {record.id} was created by {record.created_by}: a different officer "
                "must confirm it",
                403,
            )
        now = self._clock()
        if now >= record.expires_at:
            raise AlertError(
                f"alert {record.id} expired at {record.expires_at.isoformat()} before it was "
                "confirmed",
                409,
            )
        payload = self._payload_of(session, record)
        messages = self._seal_all(record, payload, now)
        won = self._claim(
            session,
            record,
            [AlertState.AWAITING_CONFIRMATION],
            _TABLE.c.expires_at > now,
            state=AlertState.ACTIVE.value,
            confirmed_by=actor.name,
            sent_at=now,
            payload_bytes=max(len(raw) for _t, raw in messages),
        )
        session.refresh(record)
        if not won:
            state = record.state
            session.rollback()
            raise AlertError(
                f"alert {record.id} is {state} now, not awaiting confirmation (another officer "
                "acted at the same moment)",
                409,
            )
        record_audit(
            session,
            actor,
            "alert.confirm",
            "alert",
            str(record.id),
            before={
                "state": AlertState.AWAITING_CONFIRMATION.value,
                "created_by": record.created_by,
            },
            after={
                "state": record.state,
                "alert_id": record.alert_id,
                "topics": record.topic_targets,
            },
        )
        takeback = self._cancels(session, record, now)
        self._publish(messages)
        try:
            session.commit()
        except Exception:
            log.exception("ALERT %s: confirm not recorded; taking it back", record.alert_id)
            session.rollback()
            self._publish(takeback)
            raise
        assert record.id is not None
        self.changes.bump(record.id)
        log.warning("ALERT %s confirmed by %s and sent", record.alert_id, actor.name)
        return record

    def cancel(self, session: Session, actor: Actor, record: AlertRecord) -> AlertRecord:
        """Stop it everywhere: a cancel on every topic the alert went to (and re-sends).

        The row is taken first (a conditional update): a confirm or a re-send in flight
        has then either published already, and the cancel goes out after it, or it
        finds the alert cancelled and sends nothing. The cancels are published before
        the commit, so stopping a false alarm does not wait for the rest of the write.
        If the commit then fails, the stations have stopped anyway; the error is raised
        and the record stays as it was, so the officer cancels again (a second cancel is
        harmless: stations remember the first).
        """
        if AlertState(record.state) not in OPEN_STATES:
            raise AlertError(f"alert {record.id} is already {record.state}", 409)
        assert record.id is not None
        messages = self._take_down(session, actor, record, self._clock())
        if messages is None:
            state = record.state
            session.rollback()
            raise AlertError(f"alert {record.id} is already {state}", 409)
        self._publish(messages)
        log.warning("ALERT %s cancel published on %s topic(s)", record.alert_id, len(messages))
        session.commit()
        self.changes.bump(record.id)
        log.warning("ALERT %s cancelled by %s", record.alert_id, actor.name)
        return record

    # ------------------------------------------------------- station events

    def on_alert_events(self, session: Session, events: Sequence[Event]) -> None:
        """Move the delivery rows of a batch of alert events, in order (the caller commits).

        The ingest hands over each batch of station messages' alert events at once: a few
        statements per batch instead of three ORM round trips per event, which is what let
        1,000 stations' acks keep the server busy for seconds (docs/performance.md).

        Per alert in the batch: one query for the rows it touches, one executemany of the
        rows that changed, and (when one became final) one count of those still going.
        """
        by_alert: dict[str, list[Event]] = {}
        for one in events:
            assert one.alert_id is not None
            by_alert.setdefault(one.alert_id, []).append(one)
        records = {
            r.alert_id: r
            for r in session.exec(
                select(AlertRecord).where(col(AlertRecord.alert_id).in_(list(by_alert)))
            ).all()
        }
        now = self._clock()
        for alert_id, batch in by_alert.items():
            record = records.get(alert_id)
            if record is None or record.id is None:
                log.warning(
                    "%s event(s) for unknown alert %r (first from %s)",
                    len(batch),
                    alert_id,
                    batch[0].station_id,
                )
                continue
            self._apply_batch(session, record, batch, now)

    def _apply_batch(
        self, session: Session, record: AlertRecord, batch: list[Event], now: datetime
    ) -> None:
        assert record.id is not None
        db = session.connection()  # Core statements: no ORM layer per row
        table = AlertDelivery.__table__  # type: ignore[attr-defined]
        stations = Station.__table__  # type: ignore[attr-defined]
        wanted = list(dict.fromkeys(e.station_id for e in batch))
        rows: dict[str, DeliveryRow] = {}
        for sid, state, received, playing, finished, reason, detail in db.execute(
            sa_select(
                table.c.station_id,
                table.c.state,
                table.c.received_at,
                table.c.playing_at,
                table.c.finished_at,
                table.c.reason,
                table.c.detail,
            ).where(table.c.alert_pk == record.id, table.c.station_id.in_(wanted))
        ).all():
            rows[sid] = DeliveryRow(
                DeliveryState(state), received, playing, finished, reason, detail
            )
        new: dict[str, str] = {}
        missing = [sid for sid in wanted if sid not in rows]
        if missing:
            # It heard an area alert although it was not counted (registered since).
            for sid, area in db.execute(
                sa_select(stations.c.id, stations.c.area_code).where(stations.c.id.in_(missing))
            ).all():
                rows[sid] = DeliveryRow()
                new[sid] = area
        changed: set[str] = set()
        for one in batch:
            mirror = rows.get(one.station_id)
            if mirror is None:
                continue  # not a registered station
            moved = apply_alert_event(
                mirror,
                AlertEventIn(
                    one.kind.value, one.at, one.started_at, one.finished_at, one.reason, one.detail
                ),
            )
            if not moved:
                continue
            changed.add(one.station_id)
            if one.kind.value == "rejected":
                record_audit(
                    session,
                    SYSTEM,
                    "station.refused_alert",
                    "station",
                    one.station_id,
                    after={"alert_id": one.alert_id, "reason": one.reason, "detail": one.detail},
                )
        if not changed:
            return

        def values(sid: str) -> dict[str, object]:
            m = rows[sid]
            return {
                "state": m.state.value,
                "received_at": m.received_at,
                "playing_at": m.playing_at,
                "finished_at": m.finished_at,
                "reason": m.reason,
                "detail": m.detail or None,
                "updated_at": now,
            }

        inserted = [sid for sid in changed if sid in new]
        if inserted:
            db.execute(
                insert(table),
                [
                    {"alert_pk": record.id, "station_id": sid, "area_code": new[sid], **values(sid)}
                    for sid in inserted
                ],
            )
        updated = [sid for sid in changed if sid not in new]
        if updated:
            db.execute(  # Core executemany, keyed by the primary key
                update(table)
                .where(
                    table.c.alert_pk == bindparam("k_alert"),
                    table.c.station_id == bindparam("k_station"),
                )
                .values({name: bindparam(name) for name in values(updated[0])}),
                [{"k_alert": record.id, "k_station": sid, **values(sid)} for sid in updated],
            )
        if record.state == AlertState.ACTIVE and any(rows[s].state in FINAL for s in changed):
            going = db.execute(
                sa_select(func.count())
                .select_from(table)
                .where(
                    table.c.alert_pk == record.id,
                    table.c.state.not_in([s.value for s in FINAL]),
                )
            ).scalar_one()
            if going == 0:  # finished, unless a cancel or the expiry got there first
                self._claim(
                    session,
                    record,
                    [AlertState.ACTIVE],
                    state=AlertState.FINISHED.value,
                    ended_at=now,
                )
        self.changes.bump(record.id, session)

    def on_online(self, session: Session, station_id: str) -> None:
        """Re-send every live alert this station has not acked (Ingestor hook).

        The alerts' rows are held first and the copies published before the caller
        commits, so a cancel racing with the re-send waits and then covers this
        station's topic too (it reads ``resent``).
        """
        now = self._clock()
        pending = select(AlertDelivery.alert_pk).where(
            AlertDelivery.station_id == station_id,
            AlertDelivery.state == DeliveryState.PENDING.value,
        )
        lock_rows(
            session,
            _TABLE,
            _TABLE.c.id.in_(pending),
            _TABLE.c.state == AlertState.ACTIVE.value,
        )
        rows = session.exec(
            select(AlertDelivery, AlertRecord)
            .join(AlertRecord, col(AlertRecord.id) == col(AlertDelivery.alert_pk))
            .where(AlertDelivery.station_id == station_id)
            .where(AlertRecord.state == AlertState.ACTIVE.value)
            .where(col(AlertRecord.expires_at) > now)
        ).all()
        messages = []
        for row, record in rows:
            if not should_resend(
                DeliveryState(row.state), AlertState(record.state), record.expires_at, now
            ):
                continue
            payload = self._payload_of(session, record)
            raw = seal(self._wire(record, payload, station_id, now), self._keys.alert_key)
            messages.append((topics.alert(station_id), raw))
            row.resent += 1
            row.updated_at = now
            session.add(row)
            log.info("re-sending alert %s to %s (back online)", record.alert_id, station_id)
        if messages:
            session.flush()
            self._publish(messages)

    # ---------------------------------------------------------------- expiry

    def settle(self) -> int:
        """Move alerts that are over to finished / expired; returns how many moved.

        Each move is conditional on the state read: an alert confirmed or cancelled
        meanwhile keeps what the officer did.
        """
        now = self._clock()
        moved = 0
        with session_scope(self._engine) as session:
            records = session.exec(
                select(AlertRecord).where(
                    col(AlertRecord.state).in_(
                        [AlertState.ACTIVE.value, AlertState.AWAITING_CONFIRMATION.value]
                    )
                )
            ).all()
            for record in records:
                assert record.id is not None
                if record.state == AlertState.AWAITING_CONFIRMATION:
                    new = AlertState.EXPIRED if now >= record.expires_at else None
                else:
                    states = session.exec(
                        select(AlertDelivery.state).where(AlertDelivery.alert_pk == record.id)
                    ).all()
                    new = settled_state((DeliveryState(s) for s in states), record.expires_at, now)
                if new is None:
                    continue
                expected = AlertState(record.state)
                if not self._claim(session, record, [expected], state=new.value, ended_at=now):
                    continue
                moved += 1
                self.changes.bump(record.id, session)
                log.info("alert %s is %s", record.alert_id, new.value)
        return moved
