"""Enrolment on the database: issue codes, take asks and polls, approve or reject.

Functions take a session and leave committing to the caller, except that a refusal is
audited and must be kept even though the caller answers with an error: the router
commits before raising. Every use and every refusal of a code goes into the audit log;
a refusal is also logged as an intrusion (an unknown, expired or replayed code at the
enrolment door is someone trying codes, or a stolen sticker).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from loaxa_protocol.enrolment import (
    EnrolmentAsk,
    SealedBox,
    claim_digest,
    is_usable_public_key,
    key_fingerprint,
    new_claim_code,
    normalise_claim_code,
    seal,
)
from server.api.stations import register_station
from server.areas import subtree_codes
from server.audit.log import record_audit
from server.audit.models import AuditEntry
from server.auth.actor import SYSTEM, Actor
from server.auth.admin import cli_actor, database
from server.context import ServerContext
from server.db import utcnow
from server.enrolment.claims import ClaimFacts, Refusal, judge
from server.enrolment.models import ClaimCode, EnrolmentRequest, RequestState
from server.fleet.ingest import INTRUSION_KIND
from server.models import Area, StationCreate, StationEvent
from server.settings import Settings

log = logging.getLogger(__name__)

MAX_CODES_AT_ONCE = 1000
POLL_AFTER_S = 10
"""What the server suggests between two polls while a request waits."""


class EnrolmentRefused(Exception):
    """A claim code was refused; already audited."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


@dataclass(frozen=True)
class Placement:
    """Where a technician puts an approved station."""

    name: str
    area_code: str
    latitude: float
    longitude: float


def create_claim_codes(
    session: Session, actor: Actor, area_code: str, count: int, valid_for: timedelta, now: datetime
) -> list[tuple[ClaimCode, str]]:
    """``count`` fresh codes for stations of ``area_code``; the plain codes are shown once."""
    if not 1 <= count <= MAX_CODES_AT_ONCE:
        raise ValueError(f"count must be 1..{MAX_CODES_AT_ONCE}, got {count}")
    if valid_for <= timedelta(0):
        raise ValueError("a claim code must be valid for some time")
    if session.get(Area, area_code) is None:
        raise ValueError(f"area {area_code!r} is not a known area")
    issued = []
    for _ in range(count):
        code = new_claim_code()
        claim = ClaimCode(
            code_hash=claim_digest(code),
            hint=code[-4:],
            area_code=area_code,
            created_at=now,
            created_by=actor.name,
            expires_at=now + valid_for,
        )
        session.add(claim)
        issued.append((claim, code))
    session.flush()
    record_audit(
        session,
        actor,
        "enrolment.claim_codes_created",
        "area",
        area_code,
        after={
            "count": count,
            "expires_at": (now + valid_for).isoformat(),
            "hints": [claim.hint for claim, _ in issued][:50],
        },
    )
    return issued


def ask(
    session: Session, body: EnrolmentAsk, source_ip: str | None, now: datetime
) -> EnrolmentRequest:
    """A station asks to join: bind its code to its key (or find its earlier request)."""
    claim, request = _claim_and_request(session, body, source_ip, now)
    if request is not None:
        return request
    claim.used_at = now
    assert claim.id is not None
    request = EnrolmentRequest(
        claim_id=claim.id,
        public_key=body.public_key,
        hostname=body.hostname,
        source_ip=source_ip,
        requested_at=now,
    )
    session.add(claim)
    session.add(request)
    session.flush()
    record_audit(
        session,
        SYSTEM,
        "enrolment.requested",
        "enrolment",
        str(request.id),
        after={
            "claim": claim.hint,
            "area": claim.area_code,
            "hostname": body.hostname,
            "key": key_fingerprint(body.public_key),
        },
        source_ip=source_ip,
    )
    return request


def poll(
    session: Session, body: EnrolmentAsk, source_ip: str | None, now: datetime
) -> EnrolmentRequest:
    """The station's request as it stands; the first collection of an answer is audited."""
    _, request = _claim_and_request(session, body, source_ip, now)
    if request is None:  # a valid, unused code: the station must ask before it polls
        raise _refuse(session, Refusal.UNKNOWN, body, source_ip, now, "polled before asking")
    request.last_poll_at = now
    if request.state == RequestState.APPROVED.value:
        request.state = RequestState.COLLECTED.value
        record_audit(
            session,
            SYSTEM,
            "enrolment.collected",
            "station",
            request.station_id or "-",
            after={"request": request.id, "key": key_fingerprint(request.public_key)},
            source_ip=source_ip,
        )
    session.add(request)
    return request


def approve(
    session: Session,
    context: ServerContext,
    actor: Actor,
    request: EnrolmentRequest,
    place: Placement,
) -> EnrolmentRequest:
    """Register the station through the normal path and seal its config to its key."""
    if request.state != RequestState.PENDING.value:
        raise ValueError(f"request {request.id} is {request.state}; only a pending one is approved")
    claim = session.get(ClaimCode, request.claim_id)
    assert claim is not None
    if place.area_code not in subtree_codes(session, [claim.area_code]):
        raise ValueError(
            f"area {place.area_code!r} is outside {claim.area_code!r}, the area of its claim code"
        )
    registered = register_station(
        StationCreate(
            name=place.name,
            area_code=place.area_code,
            latitude=place.latitude,
            longitude=place.longitude,
        ),
        session,
        context,
        actor,
    )
    config = json.dumps(registered.node_config).encode("utf-8")
    request.sealed = seal(request.public_key, config).model_dump()
    request.station_id = registered.station.id
    request.state = RequestState.APPROVED.value
    request.decided_by = actor.name
    request.decided_at = context.clock()
    session.add(request)
    record_audit(
        session,
        actor,
        "enrolment.approved",
        "station",
        registered.station.id,
        after={"request": request.id, "key": key_fingerprint(request.public_key)},
    )
    return request


def reject(
    session: Session, actor: Actor, request: EnrolmentRequest, now: datetime
) -> EnrolmentRequest:
    if request.state != RequestState.PENDING.value:
        raise ValueError(f"request {request.id} is {request.state}; only a pending one is rejected")
    request.state = RequestState.REJECTED.value
    request.decided_by = actor.name
    request.decided_at = now
    session.add(request)
    record_audit(session, actor, "enrolment.rejected", "enrolment", str(request.id))
    return request


def pending_requests(session: Session, areas: set[str]) -> list[tuple[EnrolmentRequest, str]]:
    """Requests waiting for a technician in ``areas``, oldest first, with the claim's area."""
    query = (
        select(EnrolmentRequest, ClaimCode.area_code)
        .join(ClaimCode, col(ClaimCode.id) == EnrolmentRequest.claim_id)
        .where(EnrolmentRequest.state == RequestState.PENDING.value)
        .where(col(ClaimCode.area_code).in_(areas))
        .order_by(col(EnrolmentRequest.requested_at), col(EnrolmentRequest.id))
    )
    return [(request, area) for request, area in session.exec(query).all()]


def sealed_answer(request: EnrolmentRequest) -> SealedBox | None:
    return SealedBox.model_validate(request.sealed) if request.sealed else None


@dataclass(frozen=True)
class RefusalSeen:
    """One refused claim code, as the waiting page lists it."""

    at: datetime
    reason: str
    source_ip: str | None
    code: str
    area_code: str | None


def recent_refusals(session: Session, since: datetime, limit: int = 50) -> list[RefusalSeen]:
    """Refused claim codes since ``since``, newest first, read back from the audit log."""
    query = (
        select(AuditEntry)
        .where(AuditEntry.action == "enrolment.refused", col(AuditEntry.at) >= since)
        .order_by(col(AuditEntry.id).desc())
        .limit(limit)
    )
    seen = []
    for entry in session.exec(query).all():
        after = json.loads(entry.after) if entry.after else {}
        seen.append(
            RefusalSeen(
                entry.at,
                str(after.get("reason")),
                entry.source_ip,
                entry.object_id,
                after.get("area"),
            )
        )
    return seen


def _claim_and_request(
    session: Session, body: EnrolmentAsk, source_ip: str | None, now: datetime
) -> tuple[ClaimCode, EnrolmentRequest | None]:
    if normalise_claim_code(body.claim_code) is None:
        raise _refuse(session, Refusal.MALFORMED, body, source_ip, now)
    if not is_usable_public_key(body.public_key):
        raise _refuse(session, Refusal.MALFORMED, body, source_ip, now, "unusable public key")
    claim = session.exec(
        select(ClaimCode).where(ClaimCode.code_hash == claim_digest(body.claim_code))
    ).first()
    request = None
    if claim is not None:
        request = session.exec(
            select(EnrolmentRequest).where(EnrolmentRequest.claim_id == claim.id)
        ).first()
    facts = None
    if claim is not None:
        facts = ClaimFacts(
            expires_at=claim.expires_at,
            bound_key=request.public_key if request is not None else None,
            rejected=request is not None and request.state == RequestState.REJECTED.value,
        )
    refusal = judge(facts, body.public_key, now)
    if refusal is not None:
        station_id = request.station_id if request is not None else None
        raise _refuse(session, refusal, body, source_ip, now, claim=claim, station_id=station_id)
    assert claim is not None
    return claim, request


def _refuse(
    session: Session,
    refusal: Refusal,
    body: EnrolmentAsk,
    source_ip: str | None,
    now: datetime,
    detail: str = "",
    claim: ClaimCode | None = None,
    station_id: str | None = None,
) -> EnrolmentRefused:
    """Audit a refusal and log it as an intrusion; the caller raises what this returns."""
    hint = claim.hint if claim is not None else (normalise_claim_code(body.claim_code) or "")[-4:]
    record_audit(
        session,
        SYSTEM,
        "enrolment.refused",
        "enrolment",
        f"claim …{hint}" if hint else "claim ?",
        after={
            "reason": refusal.value,
            "detail": detail,
            "area": claim.area_code if claim is not None else None,
            "key": key_fingerprint(body.public_key),
            "hostname": body.hostname,
        },
        source_ip=source_ip,
    )
    if station_id is not None and refusal is Refusal.REPLAYED:
        # Someone holds the code of a station already in service: the intrusion watch's
        # kind of event, in that station's log.
        session.add(
            StationEvent(
                station_id=station_id,
                kind=INTRUSION_KIND,
                reason="enrolment_replayed",
                detail=f"claim code …{hint} presented again by key "
                f"{key_fingerprint(body.public_key)} from {source_ip}"[:500],
                at=now,
                received_at=now,
            )
        )
    if refusal is not Refusal.REJECTED:
        log.warning(
            "intrusion: enrolment refused (%s) from %s, claim …%s, key %s",
            refusal.value,
            source_ip,
            hint,
            key_fingerprint(body.public_key),
        )
    return EnrolmentRefused(refusal)


def issue_claim_codes_from_shell(
    settings: Settings, area_code: str, count: int, valid_days: float
) -> list[str]:
    """``loaxa station claim-codes``: codes issued on the server itself, audited as the OS user."""
    with database(settings) as session:
        issued = create_claim_codes(
            session, cli_actor(), area_code, count, timedelta(days=valid_days), utcnow()
        )
        session.commit()
        return [code for _, code in issued]
