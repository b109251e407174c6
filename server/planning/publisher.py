"""Where a broadcast becomes a signed plan on the broker.

Gathers each station's live broadcasts and approved programme occurrences from the
database, compiles them with the pure compiler, seals the plan with the server key and
publishes it retained on the station's plan topic. A plan is always the station's
*whole* programme, so any change (a new broadcast, a programme approved, a rolled
horizon, a restart) is handled the same way: recompile the affected stations and publish.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from loaxa_protocol import AudioRef, Plan, seal, topics
from loaxa_protocol.envelope import MAX_ENVELOPE_BYTES
from server.cluster.leader import PUBLISH_LOCK_KEY, held
from server.db import utcnow
from server.fleet.bus import FLUSH_TIMEOUT_S, Bus
from server.keys import ServerKeys
from server.models import AudioAsset, Broadcast, BroadcastTarget, Station
from server.planning.compiler import MAX_PLAN_ITEMS, PlanEntry, compile_plan, item_id_for
from server.planning.rolling import Published, Starts, due_stations, earliest_horizon
from server.programmes.service import programme_entries, programme_starts
from server.reports.planned import record_plans
from server.settings import Settings

log = logging.getLogger(__name__)

# The reads on the way of every plan to its station, built once: columns, not ORM
# objects, and no statement construction per publish.
TARGET_ROWS = (
    sa_select(
        col(BroadcastTarget.station_id),
        col(BroadcastTarget.first_plan_seq),
        col(Broadcast.id),
        col(Broadcast.title),
        col(Broadcast.start_at),
        col(Broadcast.priority),
        col(AudioAsset.id),
        col(AudioAsset.sha256),
        col(AudioAsset.size_bytes),
        col(AudioAsset.duration_ms),
        col(AudioAsset.codec),
    )
    .join(Broadcast, col(Broadcast.id) == col(BroadcastTarget.broadcast_id))
    .join(AudioAsset, col(AudioAsset.id) == col(Broadcast.audio_id))
    .where(col(BroadcastTarget.station_id).in_(bindparam("wanted", expanding=True)))
    .where(col(Broadcast.start_at) < bindparam("until"))
    .where(col(Broadcast.start_at) > bindparam("since"))
)
LIBRARY = (
    sa_select(
        col(AudioAsset.id),
        col(AudioAsset.sha256),
        col(AudioAsset.size_bytes),
        col(AudioAsset.duration_ms),
        col(AudioAsset.codec),
    )
    .where(col(AudioAsset.library).is_not(None))
    .order_by(col(AudioAsset.library))
)


class PlanPublisher:
    """Recompiles and publishes station plans; safe to call from any thread."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        keys: ServerKeys,
        bus: Bus,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._bus = bus
        self._clock = clock
        self._horizon = timedelta(hours=settings.plan_horizon_h)
        self._plan_ttl = timedelta(hours=settings.plan_ttl_h)
        self._url_ttl = timedelta(hours=settings.audio_url_ttl_h)
        # Renew a plan well before a reconnecting station would refuse it as expired.
        self._renew_after = min(self._plan_ttl, self._url_ttl) / 2
        self._published: dict[str, Published] = {}
        """station → what its last plan covered (this process; empty after a restart)"""
        # One compile-and-publish at a time: otherwise a plan read from older data could
        # draw the higher sequence number and be retained over the newer one. Across
        # replicas the same holds through a PostgreSQL advisory lock (``held``): the
        # sequence comes from the database, and a number drawn by one replica must
        # reach the broker before any higher number another replica draws.
        self._lock = threading.Lock()

    def publish_stations(self, session: Session, station_ids: Iterable[str]) -> dict[str, Plan]:
        """Recompile, seal and publish the plans of these stations; returns them by station.

        Also records, on each target, the first plan sequence that carried it, so a
        later ``plan_accepted`` can be matched to the items it delivered. The caller's
        session is committed, the caller's own pending change with it, and the plans are
        published right after that commit.
        """
        wanted = sorted(set(station_ids))
        if not wanted:
            session.commit()  # the caller's change, which it left for this commit
            return {}
        with self._lock, held(self._engine, PUBLISH_LOCK_KEY):
            return self._publish(session, wanted)

    def _publish(self, session: Session, wanted: list[str]) -> dict[str, Plan]:
        now = self._clock()
        urls: dict[int, str] = {}

        def url(audio_id: int) -> str:
            # One signature per audio file and publish, not one per item and station.
            if audio_id not in urls:
                urls[audio_id] = self._keys.urls.sign_url(audio_id, self._url_ttl, now)
            return urls[audio_id]

        target_table = BroadcastTarget.__table__  # type: ignore[attr-defined]
        rows = session.execute(
            TARGET_ROWS,
            # Coarse window; the compiler applies the exact one (audio end).
            {"wanted": wanted, "until": now + self._horizon, "since": now - timedelta(days=1)},
        ).all()
        entries: dict[str, list[PlanEntry]] = defaultdict(list)
        shared: dict[int, PlanEntry] = {}
        """broadcast → its one entry: every station's plan reuses the item built once"""
        unsent: dict[str, list[int]] = defaultdict(list)
        """station → broadcasts of its targets that no plan carried yet"""
        for (
            station_id,
            first_plan_seq,
            broadcast_id,
            title,
            start_at,
            priority,
            audio_id,
            sha256,
            size_bytes,
            duration_ms,
            codec,
        ) in rows:
            entry = shared.get(broadcast_id)
            if entry is None:
                entry = shared[broadcast_id] = PlanEntry(
                    broadcast_id=broadcast_id,
                    title=title,
                    start_at=start_at,
                    priority=priority,
                    sha256=sha256,
                    size_bytes=size_bytes,
                    duration_ms=duration_ms,
                    codec=codec,
                    audio_url=url(audio_id),
                )
            entries[station_id].append(entry)
            if first_plan_seq is None:
                unsent[station_id].append(broadcast_id)
        for station_id, programme_items in programme_entries(
            session, wanted, now, now + self._horizon, url
        ).items():
            entries[station_id].extend(programme_items)

        keep = [
            AudioRef(
                sha256=sha256,
                size_bytes=size_bytes,
                duration_ms=duration_ms,
                codec=codec,
                url=url(audio_id),
            )
            for audio_id, sha256, size_bytes, duration_ms, codec in session.execute(LIBRARY)
        ]
        plans: dict[str, Plan] = {}
        sealed: dict[str, bytes] = {}
        first_seqs: list[dict[str, int | str]] = []
        for station_id in wanted:
            plan, sealed[station_id] = self._fitting_plan(
                station_id, entries.get(station_id, []), now, keep
            )
            carried = {item.item_id for item in plan.items}
            first_seqs.extend(
                {"k_broadcast": broadcast_id, "k_station": station_id, "seq": plan.seq}
                for broadcast_id in unsent.get(station_id, [])
                if item_id_for(broadcast_id) in carried
            )
            plans[station_id] = plan
        if first_seqs:
            session.execute(
                update(target_table)
                .where(
                    target_table.c.broadcast_id == bindparam("k_broadcast"),
                    target_table.c.station_id == bindparam("k_station"),
                )
                .values(first_plan_seq=bindparam("seq")),
                first_seqs,
            )
        published = {s: Published(p.issued_at, p.horizon_until) for s, p in plans.items()}
        # Record sequences before publishing: an instant plan_accepted must find them.
        # This commit also carries the caller's change (a new broadcast): one transaction.
        session.commit()
        # The plans go out the moment they are committed, before any bookkeeping.
        for station_id, raw in sealed.items():
            self._bus.publish(topics.plan(station_id), raw, qos=1, retain=True)
        self._bus.flush(FLUSH_TIMEOUT_S)
        self._published.update(published)
        # The as-run report compares what stations played with what their plans carried;
        # nothing on a station's path waits for it. Still under the lock: an older plan
        # never records over a newer one (record_plans also compares sequences).
        try:
            record_plans(session, plans.values(), now)
            session.commit()
        except Exception:
            session.rollback()
            log.exception("as-run bookkeeping of %s plans failed", len(plans))
        log.info("published %s plans", len(plans))
        return plans

    def _fitting_plan(
        self, station_id: str, entries: list[PlanEntry], now: datetime, keep: list[AudioRef]
    ) -> tuple[Plan, bytes]:
        """The station's plan and its sealed bytes, within the protocol's 1 MiB envelope.

        A plan too large (a station with hundreds of items a day over a long horizon)
        is compiled again with fewer items, in proportion, so its horizon ends earlier
        rather than a station refusing the whole plan as ``malformed``.
        """
        max_items = MAX_PLAN_ITEMS
        while True:
            plan = compile_plan(
                station_id,
                entries,
                now=now,
                horizon=self._horizon,
                seq=self._keys.next_seq(),
                ttl=self._plan_ttl,
                keep=keep,
                max_items=max_items,
            )
            raw = seal(plan, self._keys.signing_key)
            if len(raw) <= MAX_ENVELOPE_BYTES or len(plan.items) <= 1:
                break
            max_items = max(1, int(len(plan.items) * MAX_ENVELOPE_BYTES / len(raw) * 0.95))
        if plan.horizon_until < now + self._horizon:
            log.warning(
                "plan for %s cut to %s items (ends %s instead of %s): too many to carry",
                station_id,
                len(plan.items),
                plan.horizon_until.isoformat(),
                (now + self._horizon).isoformat(),
            )
        return plan, raw

    def roll_forward(self) -> list[str]:
        """Republish only the stations whose window gained an item since their last plan
        (or whose plan is due for renewal); returns them. See ``server.planning.rolling``."""
        with Session(self._engine) as session:
            now = self._clock()
            until = now + self._horizon
            with self._lock:
                last = dict(self._published)
            station_ids = set(session.exec(select(Station.id)).all())
            floor = earliest_horizon({s: p for s, p in last.items() if s in station_ids}, until)
            sources = [
                *programme_starts(session, floor, until),
                *self._broadcast_starts(session, floor, until),
            ]
            due = due_stations(station_ids, last, sources, until, now, self._renew_after)
            self.publish_stations(session, due)
            return sorted(due)

    @staticmethod
    def _broadcast_starts(session: Session, floor: datetime, until: datetime) -> list[Starts]:
        rows = session.exec(
            select(BroadcastTarget.station_id, Broadcast.start_at)
            .join(Broadcast, col(Broadcast.id) == col(BroadcastTarget.broadcast_id))
            .where(col(Broadcast.start_at) >= floor)
            .where(col(Broadcast.start_at) < until)
        ).all()
        return [Starts((station_id,), (start_at,)) for station_id, start_at in rows]

    def republish_all(self) -> int:
        """Publish a fresh plan to every registered station (start-up, reconnect, timer)."""
        with Session(self._engine) as session:
            station_ids = session.exec(select(Station.id)).all()
            return len(self.publish_stations(session, station_ids))
