"""A week without network: one stored plan carries a commune's programme for 8 days.

Issue 11, bug 8: plans used to end 48 h after issue, so on day 3 of an outage a station
fell silent. Here the real server (real SQLite, ffmpeg, espeak-ng; an injected clock and a
recording bus instead of MQTT) takes the shipped commune week
(``schedules/commune-week.yaml``: VOV1 at 05:00 and 17:00, news and the commune's
bulletins at 05:30 and 17:30, Monday to Saturday, a notice read aloud on Friday) and
publishes a station's plan on Sunday evening. The exact bytes it published are then run
through the real station core (``node_firmware.core``, pure) for 8 simulated days with
the network gone and the station rebooted six times, each boot a new core built from
what the disk kept. A technician would check: every item starts on its instant with the
amplifier on, each day, nothing plays on Sunday, and no audio is ever fetched or evicted
after the cut.

The plan's size for this typical commune is printed (``-s``) and quoted in
docs/programmes.md.
"""

from __future__ import annotations

import heapq
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loaxa.schedule_cli import _check, _uploaded, _with_ids
from loaxa_protocol import Keyring, Plan, PlanItem, Verified, open_envelope, topics
from node_firmware.core.events import (
    Action,
    AudioFetched,
    Boot,
    BrokerConnected,
    BrokerDisconnected,
    FetchAudio,
    Input,
    PinAudio,
    PlanReceived,
    PlaybackFinished,
    PlaybackStarted,
    Publish,
    RelaySwitched,
    SaveState,
    SetRelay,
    StartPlayback,
    StopPlayback,
    Tick,
    WakeAt,
)
from node_firmware.core.machine import CoreSettings, NodeCore
from server.app import create_app
from server.auth.permissions import Role
from server.local_time import LOCAL_TZ
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_programmes_planner import Clock, FlakyBus
from tests.integration.test_server_api import make_settings, register

WEEK = Path(__file__).resolve().parents[2] / "schedules" / "commune-week.yaml"
QUANG_LAM = "01304"
STATION = "ql-st-01"
ISSUED = datetime(2026, 12, 6, 20, 0, tzinfo=LOCAL_TZ)  # Sunday evening
ISSUED_UTC = ISSUED.astimezone(UTC)
CUT = ISSUED + timedelta(minutes=5)  # the 4G tower goes down
DAYS = [date(2026, 12, 7) + timedelta(days=n) for n in range(8)]  # Mon 7 … Mon 14
SUNDAY = date(2026, 12, 13)
REBOOTS = [  # local wall time; between items, one just before the 05:00 relay
    datetime(2026, 12, 8, 3, 0),
    datetime(2026, 12, 9, 17, 50),
    datetime(2026, 12, 10, 4, 59, 50),
    datetime(2026, 12, 11, 12, 0),
    datetime(2026, 12, 13, 10, 0),
    datetime(2026, 12, 14, 4, 0),
]
END = datetime(2026, 12, 15, 0, 0, tzinfo=LOCAL_TZ)
PLAN_BUDGET_BYTES = 128 * 1024


@dataclass
class Disk:
    """What survives a reboot: the plan and memory the core saved, and the audio cache."""

    plan_raw: bytes | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    cached: set[str] = field(default_factory=set)


@dataclass
class Station:
    """The real core with its drivers simulated the way the agent loop runs them.

    The player starts on the instant it is given and finishes after the item's length;
    the relay board switches at once; downloads succeed while ``online``. Time moves from
    one wake-up (the core's ``WakeAt`` or a player callback) to the next.
    """

    settings: CoreSettings
    disk: Disk = field(default_factory=Disk)
    now: datetime = ISSUED_UTC
    online: bool = True
    core: NodeCore | None = None
    wake: datetime | None = None
    relay_on: bool = False
    player: list[tuple[datetime, int, Input]] = field(default_factory=list)
    cues: list[tuple[datetime, StartPlayback, bool]] = field(default_factory=list)
    """(when cued, the cue, amplifier on at its start)"""
    events: list[dict[str, Any]] = field(default_factory=list)
    fetches: list[tuple[datetime, str]] = field(default_factory=list)
    pins: list[frozenset[str]] = field(default_factory=list)
    _order: Iterator[int] = field(default_factory=itertools.count)

    def boot(self) -> None:
        """Power on: a fresh core from the disk; the player's queue died with the process."""
        self.core, self.wake, self.player = NodeCore(self.settings), None, []
        cached = frozenset(self.disk.cached)
        self.feed(Boot(self.disk.plan_raw, dict(self.disk.memory), cached))

    def feed(self, event: Input) -> None:
        assert self.core is not None
        for action in self.core.handle(event, self.now):
            self.run(action)

    def run(self, action: Action) -> None:
        match action:
            case WakeAt(at=at):
                self.wake = at
            case SaveState(plan_raw=raw, memory=memory):
                self.disk.plan_raw, self.disk.memory = raw, memory
            case SetRelay(on=on):
                self.relay_on = on
                self.feed(RelaySwitched(on))
            case PinAudio(sha256s=shas):
                self.pins.append(shas)
            case FetchAudio(ref=ref):
                self.fetches.append((self.now, ref.sha256))
                if self.online:
                    self.disk.cached.add(ref.sha256)
                    self.later(self.now, AudioFetched(ref.sha256))
            case StartPlayback(item_id=item_id, start_at=start, duration_ms=length):
                self.cues.append((self.now, action, False))
                self.later(start, PlaybackStarted(item_id, start))
                end = start + timedelta(milliseconds=length)
                self.later(end, PlaybackFinished(item_id, end))
            case StopPlayback(item_id=item_id):
                self.player = [p for p in self.player if getattr(p[2], "item_id", "") != item_id]
                heapq.heapify(self.player)
            case Publish(topic=topic, payload=payload) if topic.endswith("/event"):
                self.events.append(json.loads(payload))
            case _:
                pass  # heartbeats, volume: nothing this test checks

    def later(self, at: datetime, event: Input) -> None:
        heapq.heappush(self.player, (at, next(self._order), event))

    def run_until(self, until: datetime) -> None:
        """Deliver every wake-up and player callback due up to ``until``, in time order."""
        while True:
            due_player = self.player[0][0] if self.player else None
            candidates = [t for t in (self.wake, due_player) if t is not None and t <= until]
            if not candidates:
                break
            self.now = max(self.now, min(candidates))
            if due_player is not None and due_player <= self.now:
                _, _, event = heapq.heappop(self.player)
                if isinstance(event, PlaybackStarted):
                    self.mark_started(event.item_id)
                self.feed(event)
            else:
                self.wake = None
                self.feed(Tick())
        self.now = until

    def mark_started(self, item_id: str) -> None:
        """Note whether the amplifier was on when the item's audio began."""
        for index in range(len(self.cues) - 1, -1, -1):
            cued_at, cue, _ = self.cues[index]
            if cue.item_id == item_id:
                self.cues[index] = (cued_at, cue, self.relay_on)
                return


def local(instant: datetime) -> datetime:
    return instant.astimezone(LOCAL_TZ)


@pytest.fixture
def published(tmp_path: Path) -> Iterator[tuple[TestClient, FlakyBus, Clock]]:
    """The commune week applied, approved and published at Sunday 20:00 local."""
    bus, clock = FlakyBus(), Clock(ISSUED_UTC)
    settings = make_settings(tmp_path, stream_probe_timeout_s=0.5)
    with TestClient(create_app(settings, bus=bus, clock=clock)) as raw_client:
        client = authenticate(raw_client)
        register(client, QUANG_LAM, id=STATION)
        schedule, _ = _check(WEEK)
        ids = _uploaded(client, WEEK.parent, [f for p in schedule.programmes for f in p.files()])
        body = {
            "groups": [],
            "programmes": [_with_ids(p.model_dump(mode="json"), ids) for p in schedule.programmes],
            "submit": True,
            "dry_run": False,
        }
        applied = client.post("/api/v1/programmes/batch", json=body)
        assert applied.status_code == 200, applied.text
        approver = bearer(
            make_token(context_of(client).engine, "duyet", (Role.APPROVER, QUANG_LAM))
        )
        for outcome in applied.json()["programmes"]:
            pid = outcome["programme"]["id"]
            approved = client.post(f"/api/v1/programmes/{pid}/approve", headers=approver)
            assert approved.status_code == 200, approved.text
        yield client, bus, clock


def test_one_stored_plan_plays_the_commune_week_through_8_days_offline_and_6_reboots(
    published: tuple[TestClient, FlakyBus, Clock],
) -> None:
    client, bus, clock = published
    context = context_of(client)
    raw = bus.on(topics.plan(STATION))[-1]
    keyring = Keyring.from_entries(context.keys.trusted_entries(clock.now))
    opened = open_envelope(raw, keyring, clock.now, {STATION})
    assert isinstance(opened, Verified) and isinstance(opened.message, Plan)
    plan = opened.message
    print(
        f"\ncommune week, {len(plan.items)} items over "
        f"{(plan.horizon_until - plan.issued_at) / timedelta(days=1):g} days, "
        f"{len(plan.keep)} kept library files: {len(raw)} bytes sealed"
    )
    assert plan.horizon_until - plan.issued_at >= timedelta(days=8)
    assert len(raw) <= PLAN_BUDGET_BYTES

    # The relays and bulletins of each weekday, and nothing on Sunday, are in that plan.
    def starts_on(day: date) -> set[str]:
        return {
            local(i.start_at).strftime("%H:%M")
            for i in plan.items
            if local(i.start_at).date() == day
        }

    for day in DAYS:
        if day == SUNDAY:
            assert starts_on(day) == set()
        else:
            assert {"05:00", "05:30", "05:45", "17:00", "17:30", "17:45"} <= starts_on(day), day
    assert {"06:00", "18:00"} <= starts_on(date(2026, 12, 11))  # Friday's notice

    # The station takes the plan, fetches its audio, and then loses the network.
    station = Station(CoreSettings(STATION, keyring, areas=frozenset({QUANG_LAM})))
    station.boot()
    station.feed(BrokerConnected())
    station.feed(PlanReceived(raw))
    station.run_until(CUT)
    station.online = False
    station.feed(BrokerDisconnected())

    def needed(after: datetime) -> set[str]:
        """The audio of every item still to play, and the canned library."""
        coming = (i for i in plan.items if i.end_at > after)
        return {r.sha256 for i in coming for r in i.needed_audio} | {r.sha256 for r in plan.keep}

    assert needed(CUT) <= station.disk.cached, "every file of the 8 days is fetched before the cut"
    for reboot in REBOOTS:
        station.run_until(reboot.replace(tzinfo=LOCAL_TZ))
        station.boot()
        assert needed(station.now) <= station.pins[-1], "what is still to play is never evicted"
    station.run_until(END)

    assert [f for f in station.fetches if f[0] > CUT] == [], "nothing to download offline"
    due: dict[str, PlanItem] = {i.item_id: i for i in plan.items if i.start_at < END}
    cued = {cue.item_id: (cued_at, cue, amp) for cued_at, cue, amp in station.cues}
    assert sorted(cued) == sorted(due), "every item of the 8 days is cued, nothing else"
    for item_id, item in due.items():
        cued_at, cue, amp_on = cued[item_id]
        # Cued ahead, or (back to back) the instant the previous item ends: either way
        # the player is told the exact start, as on a station cut from nothing.
        assert cue.start_at == item.start_at and cued_at <= item.start_at, item_id
        assert amp_on, f"{item_id}: the amplifier was off when its audio began"
    outcomes = {e["item_id"]: e["kind"] for e in station.events if "item_id" in e}
    assert {item_id: outcomes.get(item_id) for item_id in due} == dict.fromkeys(due, "played")
    played_days = {local(item.start_at).date() for item in due.values()}
    assert played_days == set(DAYS) - {SUNDAY}


def test_the_rolling_planner_republishes_only_when_an_item_enters_the_9_day_window(
    published: tuple[TestClient, FlakyBus, Clock],
) -> None:
    client, bus, clock = published
    planner = context_of(client).planner
    assert planner is not None
    before = len(bus.on(topics.plan(STATION)))
    clock.now += timedelta(hours=1)  # Sun 21:00: the window now ends Tue 15 21:00, nothing new
    started = time.perf_counter()
    assert planner.roll_forward() == 0
    quiet_s = time.perf_counter() - started
    assert len(bus.on(topics.plan(STATION))) == before
    clock.now = datetime(2026, 12, 7, 5, 30, tzinfo=LOCAL_TZ).astimezone(UTC)
    started = time.perf_counter()
    assert planner.roll_forward() == 1  # Wed 16 05:00 entered
    busy_s = time.perf_counter() - started
    print(f"\nroll forward, one station: {quiet_s * 1000:.1f} ms idle, {busy_s * 1000:.1f} ms")
    keyring = Keyring.from_entries(context_of(client).keys.trusted_entries(clock.now))
    opened = open_envelope(bus.on(topics.plan(STATION))[-1], keyring, clock.now, {STATION})
    assert isinstance(opened, Verified) and isinstance(opened.message, Plan)
    last = max(local(i.start_at) for i in opened.message.items)
    assert last.date() == date(2026, 12, 16) and last.hour == 5
