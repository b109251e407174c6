"""Emergency alerts: preview who hears it, send (or wait for a second officer), cancel, watch.

Only province roles (``alert.send`` / ``alert.confirm`` / ``alert.cancel``) may act, and
only over their own area subtree: every area named and every station reached must lie in
it. Reading follows ``broadcast.read``: a commune sees its own stations' part of a
province-wide alert. Every send, confirm and cancel is in the audit log.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from server.alerts import canned as library
from server.alerts.cap import CapError, CapMessage, parse_cap
from server.alerts.logic import OPEN_STATES
from server.alerts.models import (
    AlertCreate,
    AlertDelivery,
    AlertDetail,
    AlertPreview,
    AlertPublic,
    AlertRecord,
    AlertState,
    AlertStationPublic,
    CannedPublic,
    DeliveryState,
    PayloadKind,
    PreviewArea,
)
from server.alerts.service import AlertError, AlertSpec, AlreadyReceived, AreaTree, Targets
from server.alerts.speech import speak
from server.api.deps import ContextDep, DbId, SessionDep
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize, visible_areas
from server.auth.permissions import Action
from server.context import ServerContext
from server.health.models import StationLiveness
from server.i18n import language
from server.local_time import LOCAL_TZ
from server.models import Station
from server.reports.csv_words import ALERT_CSV_COLUMNS, alert_report_words

router = APIRouter(prefix="/alerts", tags=["alerts"])

LIST_MAX = 500
DEFAULT_TTL = timedelta(hours=2)
WORKER_POLL_S = 1.0
"""With ingest workers, how often the live view re-reads an open alert on its own."""
STREAM_EVERY_S = 0.25
CAP_MAX_BYTES = 8 * 1024 * 1024


def _http(exc: AlertError) -> HTTPException:
    return HTTPException(exc.status, exc.detail)


# ------------------------------------------------------------------ reading


def _scope_of(session: Session, record: AlertRecord) -> set[str]:
    areas = session.exec(
        select(AlertDelivery.area_code).where(AlertDelivery.alert_pk == record.id).distinct()
    ).all()
    return set(record.area_codes) | set(areas)


def _station_rows(
    session: Session, record: AlertRecord, in_areas: set[str] | None
) -> list[AlertStationPublic]:
    # Columns, not ``AlertDelivery`` objects: at 1,000 stations the ORM rows cost 9 ms
    # of the 16 this took, right after the alert went out (the answer to the POST).
    d = AlertDelivery
    query = (
        sa_select(
            col(d.station_id),
            col(Station.name),
            col(d.area_code),
            col(d.state),
            col(d.received_at),
            col(d.playing_at),
            col(d.finished_at),
            col(d.reason),
            col(Station.status),
            col(StationLiveness.last_seen_at),
        )
        .join(Station, col(Station.id) == col(d.station_id))
        .outerjoin(StationLiveness, col(StationLiveness.station_id) == col(Station.id))
        .where(col(d.alert_pk) == record.id)
    )
    if in_areas is not None:
        query = query.where(col(d.area_code).in_(in_areas))
    rows = session.execute(query.order_by(col(d.station_id))).all()
    return [
        AlertStationPublic(
            station_id=sid,
            name=name,
            area_code=area,
            state=DeliveryState(state),
            received_at=received,
            playing_at=playing,
            finished_at=finished,
            reason=reason,
            link_status=str(link),
            last_seen_at=last_seen,
        )
        for sid, name, area, state, received, playing, finished, reason, link, last_seen in rows
    ]


def _counts(stations: list[AlertStationPublic]) -> dict[str, int]:
    tally = Counter(s.state.value for s in stations)
    return {s.value: tally.get(s.value, 0) for s in DeliveryState}


def _public(record: AlertRecord, counts: dict[str, int]) -> dict[str, Any]:
    return {
        **{name: getattr(record, name) for name in AlertPublic.model_fields if name != "counts"},
        "state": AlertState(record.state),
        "payload": PayloadKind(record.payload),
        "counts": counts,
    }


def alert_detail(
    session: Session, record: AlertRecord, in_areas: set[str] | None = None
) -> AlertDetail:
    stations = _station_rows(session, record, in_areas)
    return AlertDetail(**_public(record, _counts(stations)), stations=stations)


def _record_or_404(session: Session, alert_pk: int) -> AlertRecord:
    record = session.get(AlertRecord, alert_pk)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_pk} does not exist")
    return record


def visible_detail(session: Session, actor: Actor, alert_pk: int) -> AlertDetail:
    """The caller's part of an alert; 403 when it reaches none of the caller's areas."""
    record = _record_or_404(session, alert_pk)
    visible = visible_areas(actor, Action.BROADCAST_READ, session)
    detail = alert_detail(session, record, visible)
    if not detail.stations and not set(record.area_codes) & visible:
        authorize(actor, Action.BROADCAST_READ, _scope_of(session, record), session)
    return detail


# ------------------------------------------------------------------ sending


def _targets(context: ServerContext, session: Session, body: AlertCreate) -> Targets:
    try:
        return context.alerts.resolve(session, body.area_codes, body.station_ids)
    except AlertError as exc:
        raise _http(exc) from exc


def _authorize_send(actor: Actor, session: Session, targets: Targets, what: str) -> None:
    authorize(
        actor,
        Action.ALERT_SEND,
        targets.scope_areas,
        session,
        object_type="alert",
        object_id=f"{what} ({len(targets.stations)} stations)",
    )


def send_alert(
    context: ServerContext,
    session: Session,
    actor: Actor,
    spec: AlertSpec,
    targets: Targets,
    *,
    text: str | None = None,
    audio_id: int | None = None,
    canned: str | None = None,
    where_text: str = "text",
    where_audio: str | None = None,
) -> AlertRecord:
    """Render (when text), check and send or hold; nothing goes out if any step fails."""
    try:
        if text is not None:
            audio_id = speak(context, text, actor, where_text).id
        payload = context.alerts.payload_for(
            session,
            canned=canned,
            audio_id=audio_id,
            text=text,
            tone=spec.tone,
            where=where_text if text is not None else where_audio,
        )
        return context.alerts.create(session, actor, spec, targets, payload)
    except AlertError as exc:
        session.rollback()
        raise _http(exc) from exc


@router.get("/canned", response_model=list[CannedPublic])
def read_canned(session: SessionDep, actor: ActorDep) -> list[CannedPublic]:
    """The canned library: every station keeps these cached, so they start at once."""
    authorize(actor, Action.AUDIO_READ, None, session)
    assets = library.library_assets(session)
    return [
        CannedPublic(
            name=m.name,
            title_vi=m.title_vi,
            title_en=m.title_en,
            duration_ms=assets[m.name].duration_ms,
            audio_id=assets[m.name].id or 0,
        )
        for m in library.MESSAGES
        if m.name in assets
    ]


@router.post("/preview", response_model=AlertPreview)
def preview_alert(
    body: AlertCreate, session: SessionDep, context: ContextDep, actor: ActorDep
) -> AlertPreview:
    """Exactly who will hear it, and whether a second officer must confirm it."""
    targets = _targets(context, session, body)
    _authorize_send(actor, session, targets, "preview")
    per_area = Counter(targets.stations.values())
    return AlertPreview(
        stations=len(targets.stations),
        station_ids=sorted(targets.stations),
        areas=[
            PreviewArea(code=code, name=targets.tree.name.get(code, code), stations=n)
            for code, n in sorted(per_area.items())
        ],
        needs_confirmation=context.alerts.needs_confirmation(targets, body.drill),
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AlertDetail)
def create_alert(
    body: AlertCreate, session: SessionDep, context: ContextDep, actor: ActorDep
) -> AlertDetail:
    """Send an alert now, or hold it for a second officer when the area's policy says so.

    When the answer says ``active`` the alert is already on the broker.
    """
    targets = _targets(context, session, body)
    _authorize_send(actor, session, targets, body.title)
    now = context.clock()
    spec = AlertSpec(
        title=body.title,
        severity=body.severity,
        drill=body.drill,
        tone=body.tone,
        repeat=body.repeat,
        gap_s=body.gap_s,
        expires_at=body.expires_at or now + DEFAULT_TTL,
    )
    record = send_alert(
        context,
        session,
        actor,
        spec,
        targets,
        text=body.text,
        audio_id=body.audio_id,
        canned=body.canned,
    )
    return alert_detail(session, record)


@router.post("/cap", status_code=status.HTTP_201_CREATED, response_model=AlertDetail)
async def create_cap_alert(
    request: Request, response: Response, context: ContextDep, actor: ActorDep
) -> AlertDetail:
    """An OASIS CAP 1.2 message (Alert, Update or Cancel) as the request body.

    Validated against the CAP 1.2 schema; ``info/area`` is matched to the area tree by
    ``geocode`` (valueName ``VN-ADMIN``: official codes) or by ``areaDesc`` names.
    """
    raw = await request.body()
    if len(raw) > CAP_MAX_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"CAP message is {len(raw)} bytes; the limit is {CAP_MAX_BYTES} bytes",
        )
    detail, created = await run_in_threadpool(_ingest_cap, context, actor, raw)
    if not created:
        response.status_code = status.HTTP_200_OK
    return detail


def _ingest_cap(context: ServerContext, actor: Actor, raw: bytes) -> tuple[AlertDetail, bool]:
    with Session(context.engine) as session:
        try:
            message = parse_cap(raw, AreaTree.load(session).name, context.clock())
        except CapError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        existing = context.alerts.find_cap(session, message.sender, message.identifier)
        if existing is not None:
            return _repeat(session, actor, message, existing), False
        replaced = _referenced(session, message)
        if message.msg_type == "Cancel":
            for record in replaced:
                _cancel_if_open(context, session, actor, record)
            return alert_detail(session, replaced[-1]), False
        assert message.area_codes is not None
        try:
            targets = context.alerts.resolve(session, message.area_codes, [])
        except AlertError as exc:
            raise HTTPException(exc.status, f"info/area: {exc.detail}") from exc
        _authorize_send(actor, session, targets, f"CAP {message.identifier}")
        for record in replaced:  # an Update: all scope checks first, then cancel the old
            _authorize_on(actor, Action.ALERT_CANCEL, session, record)
        if message.audio is None and message.text is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"{message.info_where}: neither audio (resource with mimeType audio/* and "
                "derefUri) nor text (headline, description or instruction) to broadcast",
            )
        assert message.expires_at is not None
        spec = AlertSpec(
            title=message.title,
            severity=message.severity,
            drill=message.drill,
            tone=True,
            repeat=2,
            gap_s=3,
            expires_at=message.expires_at,
            source="cap",
            cap_sender=message.sender,
            cap_identifier=message.identifier,
            cap_sent=message.sent,
        )
        # Everything that can fail happens before an Update cancels the old alert.
        try:
            context.alerts.check_expiry(message.expires_at, f"{message.info_where}/expires")
            audio_id: int | None
            if message.audio is not None:
                audio_id = _cap_audio(context, actor, message)
                where = message.audio_where
            else:
                assert message.text is not None
                where = f"{message.info_where}/headline"
                audio_id = speak(context, message.text, actor, where).id
            payload = context.alerts.payload_for(
                session, audio_id=audio_id, text=message.text, where=where
            )
            record = context.alerts.create(session, actor, spec, targets, payload, replaced)
        except AlreadyReceived as exc:  # the same message posted twice at once
            return _repeat(session, actor, message, exc.record), False
        except AlertError as exc:
            session.rollback()
            raise _http(exc) from exc
        return alert_detail(session, record), True


def _repeat(
    session: Session, actor: Actor, message: CapMessage, existing: AlertRecord
) -> AlertDetail:
    """A CAP message received before: its alert as it stands, never a second broadcast.

    Sender and identifier name one message for good (CAP 1.2 §3.2.1); the same pair with
    another ``sent`` is a new message that reused an identifier, which is refused.
    """
    if (
        existing.cap_sent is not None
        and message.sent is not None
        and existing.cap_sent != message.sent
    ):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"identifier: {message.identifier!r} from {message.sender!r} was already used by "
            f"the message sent {existing.cap_sent.isoformat()} (alert {existing.id}); a new "
            "message needs a new identifier",
        )
    _authorize_on(actor, Action.BROADCAST_READ, session, existing)
    return alert_detail(session, existing)


def _cap_audio(context: ServerContext, actor: Actor, message: CapMessage) -> int:
    from loaxa_protocol.errors import AudioError
    from server.api.audio import ingest_upload

    assert message.audio is not None
    try:
        asset, _created = ingest_upload(context, message.audio, message.audio_name, actor)
    except AudioError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{message.audio_where}: {exc}"
        ) from exc
    assert asset.id is not None
    return asset.id


def _referenced(session: Session, message: CapMessage) -> list[AlertRecord]:
    """The alerts an Update or Cancel names; 422 naming each reference this server
    never received (or received with another ``sent``): nothing is changed then."""
    found: list[AlertRecord] = []
    unknown: list[str] = []
    for ref in message.referenced:
        record = session.exec(
            select(AlertRecord).where(
                AlertRecord.cap_sender == ref.sender, AlertRecord.cap_identifier == ref.identifier
            )
        ).first()
        if record is None:
            unknown.append(f"{str(ref)!r} (no such message was received)")
        elif record.cap_sent is not None and record.cap_sent != ref.sent:
            unknown.append(f"{str(ref)!r} (that message was sent {record.cap_sent.isoformat()})")
        else:
            found.append(record)
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"references: this {message.msg_type} names what this server did not receive: "
            f"{', '.join(unknown)}; nothing was changed",
        )
    return found


def _cancel_if_open(
    context: ServerContext, session: Session, actor: Actor, record: AlertRecord
) -> None:
    """A CAP Cancel: stop the alert if it still runs; one already over stays as it is."""
    if AlertState(record.state) not in OPEN_STATES:
        _authorize_on(actor, Action.ALERT_CANCEL, session, record)
        return
    try:
        _cancel(context, session, actor, record)
    except HTTPException as exc:
        session.refresh(record)
        # Another cancel (a retry of this message, or an officer) won the race: done.
        if exc.status_code != status.HTTP_409_CONFLICT or record.state in OPEN_STATES:
            raise


@router.post("/{alert_pk}/confirm", response_model=AlertDetail)
def confirm_alert(
    alert_pk: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> AlertDetail:
    """A second, different officer releases a held alert: it goes out now."""
    record = _record_or_404(session, alert_pk)
    _authorize_on(actor, Action.ALERT_CONFIRM, session, record)
    try:
        context.alerts.confirm(session, actor, record)
    except AlertError as exc:
        session.rollback()
        raise _http(exc) from exc
    return alert_detail(session, record)


def _authorize_on(actor: Actor, action: Action, session: Session, record: AlertRecord) -> None:
    """``action`` over every area the alert named or reached (403 otherwise)."""
    authorize(
        actor,
        action,
        _scope_of(session, record),
        session,
        object_type="alert",
        object_id=str(record.id),
    )


def _cancel(context: ServerContext, session: Session, actor: Actor, record: AlertRecord) -> None:
    _authorize_on(actor, Action.ALERT_CANCEL, session, record)
    try:
        context.alerts.cancel(session, actor, record)
    except AlertError as exc:
        session.rollback()
        raise _http(exc) from exc


@router.post("/{alert_pk}/cancel", response_model=AlertDetail)
def cancel_alert(
    alert_pk: DbId, session: SessionDep, context: ContextDep, actor: ActorDep
) -> AlertDetail:
    """All-clear: one call stops it on every station the way it went out (same topics)."""
    record = _record_or_404(session, alert_pk)
    _cancel(context, session, actor, record)
    return alert_detail(session, record)


@router.get("", response_model=list[AlertPublic])
def read_alerts(session: SessionDep, actor: ActorDep, limit: int = 100) -> list[AlertPublic]:
    """Newest first, those reaching at least one station in the caller's areas."""
    authorize(actor, Action.BROADCAST_READ, None, session)
    visible = visible_areas(actor, Action.BROADCAST_READ, session)
    reaching = select(AlertDelivery.alert_pk).where(col(AlertDelivery.area_code).in_(visible))
    records = session.exec(
        select(AlertRecord)
        .where(col(AlertRecord.id).in_(reaching))
        .order_by(col(AlertRecord.created_at).desc(), col(AlertRecord.id).desc())
        .limit(max(1, min(limit, LIST_MAX)))
    ).all()
    result = []
    for record in records:
        states = session.exec(
            select(AlertDelivery.state).where(
                AlertDelivery.alert_pk == record.id, col(AlertDelivery.area_code).in_(visible)
            )
        ).all()
        tally = Counter(states)
        counts = {s.value: tally.get(s.value, 0) for s in DeliveryState}
        result.append(AlertPublic.model_validate(_public(record, counts)))
    return result


@router.get("/{alert_pk}", response_model=AlertDetail)
def read_alert(alert_pk: DbId, session: SessionDep, actor: ActorDep) -> AlertDetail:
    """Each visible station's state, timestamps and last known link status, with counts."""
    return visible_detail(session, actor, alert_pk)


@router.get("/{alert_pk}/stream")
async def stream_alert(
    alert_pk: DbId, request: Request, context: ContextDep, actor: ActorDep
) -> StreamingResponse:
    """Server-sent events: ``{counts, stations: [changed rows], state}`` at most every 250 ms.

    The first event carries every visible station; later ones only those that changed.
    The stream ends once the alert is over (finished, cancelled or expired).
    """

    def first() -> tuple[AlertDetail, set[str]]:
        with Session(context.engine) as session:
            visible = visible_areas(actor, Action.BROADCAST_READ, session)
            return visible_detail(session, actor, alert_pk), visible

    detail, visible = await run_in_threadpool(first)

    def snapshot() -> AlertDetail:
        with Session(context.engine) as session:
            return alert_detail(session, _record_or_404(session, alert_pk), visible)

    async def events() -> AsyncIterator[str]:
        current = detail
        seen = {s.station_id: s for s in current.stations}
        yield _sse(current.counts, current.stations, current.state)
        version = -1
        read_at = time.monotonic()
        while current.state in OPEN_STATES:
            await asyncio.sleep(STREAM_EVERY_S)
            if await request.is_disconnected():
                return
            now_version = context.alerts.changes.version(alert_pk)
            # Acks written by ingest worker processes reach this process's feed only through
            # PostgreSQL's NOTIFY: with workers, the view also re-reads every WORKER_POLL_S.
            polled = context.settings.ingest_workers and time.monotonic() - read_at >= WORKER_POLL_S
            if now_version == version and not polled:
                continue
            version = now_version
            read_at = time.monotonic()
            current = await run_in_threadpool(snapshot)
            changed = [s for s in current.stations if seen.get(s.station_id) != s]
            seen.update({s.station_id: s for s in changed})
            yield _sse(current.counts, changed, current.state)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _sse(counts: dict[str, int], stations: list[AlertStationPublic], state: AlertState) -> str:
    data = {
        "counts": counts,
        "stations": [json.loads(s.model_dump_json()) for s in stations],
        "state": state.value,
    }
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _local(at: datetime | None) -> str:
    return at.astimezone(LOCAL_TZ).isoformat(timespec="seconds") if at is not None else ""


@router.get("/{alert_pk}/report.csv")
def read_alert_report(
    alert_pk: DbId,
    session: SessionDep,
    actor: ActorDep,
    lang: Annotated[
        Literal["vi", "en"] | None,
        Query(description="the report in this language (the page's); default: machine names"),
    ] = None,
) -> Response:
    """The final report: one row per station (times in Vietnam time); a drill says so."""
    detail = visible_detail(session, actor, alert_pk)
    if lang is not None:
        with language(lang):
            text = alert_report_words(detail)
        return _csv_answer(detail, "\ufeff" + text)
    kind = "DRILL (DIỄN TẬP) - not a real alert" if detail.drill else "REAL ALERT"
    out = io.StringIO()
    out.write(f"# {kind}\n")
    out.write(
        f"# alert {detail.id} ({detail.alert_id}): {detail.title!r}, severity {detail.severity}, "
        f"state {detail.state.value}\n"
    )
    out.write(
        f"# created by {detail.created_by} at {_local(detail.created_at)}; confirmed by "
        f"{detail.confirmed_by or '-'}; sent {_local(detail.sent_at) or '-'}; "
        f"expires {_local(detail.expires_at)}; cancelled {_local(detail.cancelled_at) or '-'}\n"
    )
    out.write("# " + ", ".join(f"{k} {v}" for k, v in detail.counts.items()) + "\n")
    writer = csv.writer(out)
    writer.writerow(ALERT_CSV_COLUMNS)
    for s in detail.stations:
        writer.writerow(
            [
                "drill" if detail.drill else "real",
                s.station_id,
                s.name,
                s.area_code,
                s.state.value,
                _local(s.received_at),
                _local(s.playing_at),
                _local(s.finished_at),
                s.reason or "",
                s.link_status,
                _local(s.last_seen_at),
            ]
        )
    return _csv_answer(detail, out.getvalue())


def _csv_answer(detail: AlertDetail, text: str) -> Response:
    name = f"alert-{detail.id}{'-drill' if detail.drill else ''}-report.csv"
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
