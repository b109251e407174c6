"""The audit log, read-only: list with filters, CSV export, chain verification.

There is deliberately no write, update or delete endpoint: entries are made only by
``server.audit.log.record_audit`` inside the transaction of the change they describe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, AwareDatetime
from sqlalchemy import ColumnElement
from sqlmodel import Session, col, select

from server.api.deps import ContextDep, SessionDep
from server.audit.export import csv_lines
from server.audit.log import ChainReport, verify_chain
from server.audit.models import AuditEntry, AuditEntryPublic
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize
from server.auth.permissions import Action

router = APIRouter(prefix="/audit", tags=["audit"])

LIST_MAX = 1000
OFFSET_MAX = 10**9  # far beyond any real log; keeps OFFSET inside a 64-bit integer
EXPORT_BATCH = 500


def require_audit_reader(actor: ActorDep, session: SessionDep) -> Actor:
    """``audit.read`` in some area. Entries belong to no single area (a login, a token),
    so the whole log is for those who hold it: province admins."""
    authorize(actor, Action.AUDIT_READ, None, session)
    return actor


AuditReaderDep = Annotated[Actor, Depends(require_audit_reader)]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("instant out of range") from exc


UtcInstant = Annotated[AwareDatetime, AfterValidator(_utc)]


def _text_filter(description: str) -> Any:
    # PostgreSQL refuses NUL in text; refuse it here with a 422 instead of a 500 there.
    return Query(max_length=200, pattern=r"^[^\x00]*$", description=description)


def audit_filters(
    actor: Annotated[str | None, _text_filter("actor name, exactly")] = None,
    action: Annotated[
        str | None, _text_filter("action prefix, e.g. 'broadcast.' or 'denied:'")
    ] = None,
    object_type: Annotated[str | None, _text_filter("e.g. 'broadcast', exactly")] = None,
    object_id: Annotated[str | None, _text_filter("exactly")] = None,
    from_: Annotated[
        UtcInstant | None, Query(alias="from", description="inclusive, with an offset")
    ] = None,
    to: Annotated[UtcInstant | None, Query(description="exclusive, with an offset")] = None,
) -> list[ColumnElement[bool]]:
    """The WHERE clauses shared by the list and the export."""
    where: list[ColumnElement[bool]] = []
    if actor is not None:
        where.append(col(AuditEntry.actor_name) == actor)
    if action is not None:
        where.append(col(AuditEntry.action).startswith(action, autoescape=True))
    if object_type is not None:
        where.append(col(AuditEntry.object_type) == object_type)
    if object_id is not None:
        where.append(col(AuditEntry.object_id) == object_id)
    if from_ is not None:
        where.append(col(AuditEntry.at) >= from_)
    if to is not None:
        where.append(col(AuditEntry.at) < to)
    return where


FiltersDep = Annotated[list[ColumnElement[bool]], Depends(audit_filters)]


def _json_or_text(text: str | None) -> Any:
    """A summary as JSON; a row altered into invalid JSON is shown, not turned into a 500."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _public(entry: AuditEntry) -> AuditEntryPublic:
    return AuditEntryPublic.model_validate(
        {
            **entry.model_dump(),
            "before": _json_or_text(entry.before),
            "after": _json_or_text(entry.after),
        }
    )


@router.get("", response_model=list[AuditEntryPublic])
def read_audit_entries(
    session: SessionDep,
    reader: AuditReaderDep,
    where: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=LIST_MAX)] = 100,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
) -> list[AuditEntryPublic]:
    """Entries matching every filter given, newest first."""
    query = (
        select(AuditEntry)
        .where(*where)
        .order_by(col(AuditEntry.id).desc())
        .offset(offset)
        .limit(limit)
    )
    return [_public(entry) for entry in session.exec(query)]


def _entries_in_chain_order(
    context: ContextDep, where: list[ColumnElement[bool]]
) -> Iterator[AuditEntry]:
    """Every matching entry, oldest first, read in batches by id.

    Opens its own session: the response streams after the request's session is gone.
    """
    after_id = 0
    while True:
        with Session(context.engine) as session:
            batch = session.exec(
                select(AuditEntry)
                .where(*where, col(AuditEntry.id) > after_id)
                .order_by(col(AuditEntry.id))
                .limit(EXPORT_BATCH)
            ).all()
        yield from batch
        if len(batch) < EXPORT_BATCH:
            return
        last_id = batch[-1].id
        assert last_id is not None  # a stored row always has one
        after_id = last_id


@router.get(
    "/export.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "UTF-8 CSV, oldest first"}},
)
def export_audit_csv(
    context: ContextDep, reader: AuditReaderDep, where: FiltersDep
) -> StreamingResponse:
    """Every entry matching the filters as CSV in chain order, verifiable offline."""
    return StreamingResponse(
        csv_lines(_entries_in_chain_order(context, where)),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="loaxa-audit.csv"'},
    )


@router.get("/verify", response_model=ChainReport)
def verify_audit_chain(session: SessionDep, reader: AuditReaderDep) -> ChainReport:
    """Recompute the whole chain now; ``ok`` is false at the first entry that does not fit."""
    return verify_chain(session)
