"""Stations: registration (with the node's whole config), listing, and their event log."""

from __future__ import annotations

import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from loaxa_protocol.station_config import (
    BrokerAddress,
    MqttConfig,
    NodeConfig,
    RelayConfig,
    TrustedKeyConfig,
)
from server.api.deps import ContextDep, SessionDep
from server.areas import ancestry
from server.audit.log import record_audit, record_audits
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize, visible_areas
from server.auth.permissions import Action
from server.broker_accounts import accounts_changed
from server.context import ServerContext
from server.models import (
    Area,
    MqttCredentials,
    Station,
    StationCreate,
    StationEvent,
    StationEventPublic,
    StationPublic,
    StationRegistered,
    TrustedKeyPublic,
)
from server.passwords import hash_password, new_password
from server.programmes.reach import reach_new_station, settle_reach

router = APIRouter(prefix="/stations", tags=["stations"])

EVENT_PAGE_MAX = 1000
HASH_THREADS = 4
BULK_MAX = 5000
"""Stations one bulk registration may carry: a province's worth, one transaction."""


class StationBulkCreate(SQLModel):
    stations: list[StationCreate] = Field(min_length=1, max_length=BULK_MAX)


def read_station_or_404(session: Session, station_id: str) -> Station:
    station = session.get(Station, station_id)
    if station is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"station {station_id!r} does not exist")
    return station


def _generated_id(session: Session, area_code: str) -> str:
    """``st-<area>-<n>``: readable on a technician's phone, unique within the area."""
    prefix = f"st-{area_code}-"
    taken = set(session.exec(select(Station.id).where(col(Station.id).startswith(prefix))).all())
    number = len(taken) + 1
    while f"{prefix}{number:03d}" in taken:
        number += 1
    return f"{prefix}{number:03d}"


def trusted_keys(context: ServerContext) -> list[TrustedKeyPublic]:
    """The plan key, the province alert key and rotated-out keys still in their grace."""
    return [
        TrustedKeyPublic.model_validate(entry.model_dump())
        for entry in context.keys.trusted_entries(context.clock())
    ]


def station_brokers(station_id: str, addresses: list[BrokerAddress]) -> list[BrokerAddress]:
    """The broker addresses of one station, first the one it dials first.

    The list is rotated by a stable hash of the station id: with the nodes of a broker
    cluster configured, a fleet spreads over them instead of all dialling the first, and
    each station fails over along the same ring.
    """
    start = zlib.crc32(station_id.encode()) % len(addresses)
    return addresses[start:] + addresses[:start]


def node_config_for(
    context: ServerContext,
    session: Session,
    station: Station,
    password: str,
    *,
    areas: list[str] | None = None,
    keys: list[TrustedKeyPublic] | None = None,
) -> dict[str, Any]:
    """The station's config file, built through the node's own model so it always loads.

    ``areas`` (the station's ancestry) and ``keys`` may be passed when already known.
    """
    settings = context.settings
    brokers = station_brokers(
        station.id,
        [
            BrokerAddress(
                host=settings.node_mqtt_host or settings.mqtt_host,
                port=settings.node_mqtt_port or settings.mqtt_port,
            ),
            *settings.node_mqtt_fallbacks,
        ],
    )
    config = NodeConfig(
        station_id=station.id,
        areas=areas if areas is not None else ancestry(session, station.area_code),
        server_url=settings.public_url,
        mqtt=MqttConfig(
            host=brokers[0].host,
            port=brokers[0].port,
            fallbacks=brokers[1:],
            username=station.mqtt_username,
            password=password,
            tls=settings.mqtt_tls if settings.node_mqtt_tls is None else settings.node_mqtt_tls,
            ca_file=settings.node_mqtt_ca_file,
        ),
        trusted_keys=[
            TrustedKeyConfig(
                kid=k.kid, public_key=k.public_key, purposes=k.purposes, valid_until=k.valid_until
            )
            for k in (keys if keys is not None else trusted_keys(context))
        ],
        data_dir=Path(settings.node_data_dir),
        relay=RelayConfig(driver="none"),
        amp_lead_ms=settings.amp_lead_ms,
        amp_tail_ms=settings.amp_tail_ms,
    )
    return config.model_dump(mode="json")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StationRegistered)
def create_station(
    body: StationCreate, session: SessionDep, context: ContextDep, actor: ActorDep
) -> StationRegistered:
    """Register a station and return its credentials; the password is never shown again."""
    return register_station(body, session, context, actor)


def register_station(
    body: StationCreate, session: Session, context: ServerContext, actor: Actor
) -> StationRegistered:
    """The one registration path (the API and enrolment): row, audit, reach, first plan."""
    if session.get(Area, body.area_code) is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"area_code {body.area_code!r} is not a known area",
        )
    authorize(
        actor,
        Action.STATION_REGISTER,
        [body.area_code],
        session,
        object_type="station",
        object_id=body.id or f"(new in {body.area_code})",
    )
    station_id = body.id or _generated_id(session, body.area_code)
    if session.get(Station, station_id) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"station {station_id!r} already exists")
    password = new_password()
    station = Station(
        id=station_id,
        name=body.name,
        area_code=body.area_code,
        latitude=body.latitude,
        longitude=body.longitude,
        mqtt_username=station_id,
        mqtt_password_hash=hash_password(password),
        created_at=context.clock(),
    )
    session.add(station)
    try:
        session.flush()
        record_audit(
            session,
            actor,
            "station.register",
            "station",
            station_id,
            after=body.model_dump(exclude={"id"}),
        )
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"station {station_id!r} already exists"
        ) from exc
    session.refresh(station)
    # The broker's account sync (`loaxa broker sync --watch`) adds it to passwd and acl.
    accounts_changed(context.settings.data_dir)
    # Programmes whose area or group targets reach it take it in (or hold on a clash).
    reach_new_station(session, station_id, context.clock(), actor)
    # Its first plan waits retained on the broker, carrying the canned alert library, so
    # a station is ready for an alert from its first connection, not the next refresh.
    context.publisher.publish_stations(session, [station_id])
    session.refresh(station)
    return StationRegistered(
        station=StationPublic.model_validate(station),
        mqtt=MqttCredentials(username=station.mqtt_username, password=password),
        trusted_keys=trusted_keys(context),
        node_config=node_config_for(context, session, station, password),
    )


@router.post("/bulk", status_code=status.HTTP_201_CREATED, response_model=list[StationRegistered])
def create_stations(
    body: StationBulkCreate, session: SessionDep, context: ContextDep, actor: ActorDep
) -> list[StationRegistered]:
    """Register many stations at once (a province's roll-out, the benchmarks): all or none.

    One transaction, one reach settlement and one plan publication for the whole list:
    registered one by one, 1,000 stations took 21-27 s, almost all of it per-request
    work (a commit, a reach query and a signed plan each) rather than the rows themselves.
    Every station needs an explicit ``id``, so a retry after a lost answer is a clean 409.
    """
    entries = body.stations
    ids = [entry.id for entry in entries]
    if any(station_id is None for station_id in ids):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "stations[].id: every station needs an id"
        )
    duplicates = sorted(str(i) for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"stations[].id repeated: {duplicates[:5]}"
        )
    codes = sorted({entry.area_code for entry in entries})
    known = set(session.exec(select(Area.code).where(col(Area.code).in_(codes))).all())
    unknown = [code for code in codes if code not in known]
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"area_code {unknown[0]!r} is not a known area"
        )
    authorize(
        actor, Action.STATION_REGISTER, codes, session, object_type="station", object_id="(bulk)"
    )
    taken = session.exec(select(Station.id).where(col(Station.id).in_(ids))).all()
    if taken:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"station {sorted(taken)[0]!r} already exists"
        )
    now = context.clock()
    passwords = {str(entry.id): new_password() for entry in entries}
    # PBKDF2 releases the GIL: a few threads hash a thousand passwords on every core.
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        hashes = dict(zip(passwords, pool.map(hash_password, passwords.values()), strict=True))
    stations: list[Station] = []
    for entry in entries:
        station_id = str(entry.id)
        station = Station(
            id=station_id,
            name=entry.name,
            area_code=entry.area_code,
            latitude=entry.latitude,
            longitude=entry.longitude,
            mqtt_username=station_id,
            mqtt_password_hash=hashes[station_id],
            created_at=now,
        )
        session.add(station)
        stations.append(station)
    try:
        session.flush()
        publics = [StationPublic.model_validate(station) for station in stations]
        changes = [(str(entry.id), entry.model_dump(exclude={"id"})) for entry in entries]
        record_audits(session, actor, "station.register", "station", changes)
        settle_reach(session, now, station_ids=passwords, actor=actor)
        # The rows are what we just wrote: reading each back after the commit would
        # cost one SELECT per station (this session ends with the request).
        session.expire_on_commit = False
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "a station already exists") from exc
    context.publisher.publish_stations(session, list(passwords))
    keys = trusted_keys(context)
    areas = {code: ancestry(session, code) for code in codes}
    return [
        StationRegistered(
            station=public,
            mqtt=MqttCredentials(username=public.mqtt_username, password=passwords[public.id]),
            trusted_keys=keys,
            node_config=node_config_for(
                context,
                session,
                station,
                passwords[public.id],
                areas=areas[public.area_code],
                keys=keys,
            ),
        )
        for station, public in zip(stations, publics, strict=True)
    ]


@router.get("", response_model=list[StationPublic])
def read_stations(
    session: SessionDep, actor: ActorDep, area_code: str | None = None
) -> list[Station]:
    """The stations in the caller's areas (optionally only those in ``area_code``)."""
    authorize(actor, Action.STATION_READ, None, session)
    scope = visible_areas(actor, Action.STATION_READ, session)
    query = select(Station).where(col(Station.area_code).in_(scope)).order_by(col(Station.id))
    if area_code is not None:
        query = query.where(Station.area_code == area_code)
    return list(session.exec(query).all())


def read_visible_station(session: Session, actor: Actor, station_id: str) -> Station:
    station = read_station_or_404(session, station_id)
    authorize(actor, Action.STATION_READ, [station.area_code], session)
    return station


@router.get("/{station_id}", response_model=StationPublic)
def read_station(station_id: str, session: SessionDep, actor: ActorDep) -> Station:
    return read_visible_station(session, actor, station_id)


@router.get("/{station_id}/events", response_model=list[StationEventPublic])
def read_station_events(
    station_id: str,
    session: SessionDep,
    actor: ActorDep,
    limit: int = 200,
    kind: str | None = None,
) -> list[StationEvent]:
    """The station's reports, newest first: what it accepted, played, failed or refused."""
    read_visible_station(session, actor, station_id)
    limit = max(1, min(limit, EVENT_PAGE_MAX))
    query = select(StationEvent).where(StationEvent.station_id == station_id)
    if kind is not None:
        query = query.where(StationEvent.kind == kind)
    query = query.order_by(col(StationEvent.received_at).desc(), col(StationEvent.id).desc())
    return list(session.exec(query.limit(limit)).all())
