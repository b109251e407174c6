"""Key rotation: tell every station which keys to trust, then sign with the new one.

The trust update is signed by the key the stations trust *now* (the old one) and is
published retained before any plan signed by the new key, so a station that was
offline during the rotation still learns the new key first when it reconnects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Engine
from sqlmodel import Session, select

from loaxa_protocol import SigningKey, TrustUpdate, seal, topics
from server.fleet.bus import Bus
from server.keys import ServerKeys
from server.models import Station
from server.planning.publisher import PlanPublisher

log = logging.getLogger(__name__)

TRUST_TTL = timedelta(days=30)


def build_trust_update(station_id: str, keys: ServerKeys, seq: int, now: datetime) -> TrustUpdate:
    return TrustUpdate(
        sender="server",
        seq=seq,
        issued_at=now,
        expires_at=now + TRUST_TTL,
        to=station_id,
        keys=keys.trusted_entries(now),
    )


class RotationDone(NamedTuple):
    old_kid: str
    new_kid: str
    old_key_valid_until: datetime
    stations_told: int


class KeyRotation:
    def __init__(
        self,
        engine: Engine,
        keys: ServerKeys,
        bus: Bus,
        plans: PlanPublisher,
        clock: Callable[[], datetime],
        announce: Callable[[], None] = lambda: None,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._bus = bus
        self._plans = plans
        self._clock = clock
        self._announce = announce
        """tells the other replicas to read the new key (before any station hears of it)"""

    def publish_trust(self, signer: SigningKey) -> int:
        """Publish the current key set, signed by ``signer``, to every station."""
        now = self._clock()
        with Session(self._engine) as session:
            station_ids = session.exec(select(Station.id)).all()
        for station_id in station_ids:
            update = build_trust_update(station_id, self._keys, self._keys.next_seq(), now)
            self._bus.publish(topics.trust(station_id), seal(update, signer), qos=1, retain=True)
        return len(station_ids)

    def rotate(self, grace: timedelta) -> RotationDone:
        now = self._clock()
        old, new = self._keys.rotate_signing_key(now, grace)
        self._announce()
        told = self.publish_trust(old)
        self._plans.republish_all()  # now signed by the new key
        log.warning("key rotation: %s stations told to trust %s", told, new.kid)
        return RotationDone(old.kid, new.kid, now + grace, told)
