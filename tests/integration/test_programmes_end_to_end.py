"""Programmes on real parts: real Mosquitto, the real server on a real port, real ffmpeg,
and stations running the real agent (simulated relay board and player).

A recurring programme with a near-future rule fires at its next occurrences, and a
priority programme pre-empts the normal one mid-bulletin, which the station reports as
interrupted (reason ``preempted``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loaxa.stack import LocalStack
from server.auth.permissions import Role
from server.programmes.recurrence import to_local
from server.programmes.timeline import occurrence_stamp as stamp
from tests.audio_samples import make_audio
from tests.brokers import ProductionMosquitto
from tests.integration.auth_helpers import bearer, make_token

COMMUNE = "01273"


@pytest.fixture
def stack(tmp_path: Path, production_mosquitto: ProductionMosquitto) -> Iterator[LocalStack]:
    with LocalStack.on_broker(tmp_path, production_mosquitto) as running:
        yield running


def events_of(stack: LocalStack, station_id: str) -> list[dict[str, Any]]:
    with stack.client() as http:
        response = http.get(f"/api/v1/stations/{station_id}/events", params={"limit": 500})
    response.raise_for_status()
    return list(response.json())


def wait_for_event(
    stack: LocalStack, station_id: str, kind: str, item_id: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for event in events_of(stack, station_id):
            if event["kind"] == kind and event["item_id"] == item_id:
                return event
        if time.monotonic() > deadline:
            seen = [(e["kind"], e["item_id"]) for e in events_of(stack, station_id)]
            raise AssertionError(f"no {kind} for {item_id} at {station_id}; events: {seen}")
        time.sleep(0.2)


def test_a_recurring_programme_fires_and_a_priority_one_preempts_it(stack: LocalStack) -> None:
    config = stack.register_station("Cụm loa chợ", COMMUNE, 22.666, 106.257)
    node = stack.start_node(config)
    station = node.station_id
    bulletin = stack.upload(make_audio("mp3", 4.0), "ban-tin.mp3")
    urgent = stack.upload(make_audio("mp3", 1.0, kind="tone"), "tin-khan.mp3")
    approver = bearer(make_token(stack.context.engine, "duyet", (Role.APPROVER, COMMUNE)))

    # Two occurrences 12 s apart, starting 8 s from now (a COUNT-bounded rule may be close).
    first = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    second = first + timedelta(seconds=12)
    local_first = to_local(first)
    seconds = f"{local_first.second},{to_local(second).second}"
    minutes = sorted({local_first.minute, to_local(second).minute})
    rule = f"FREQ=MINUTELY;BYMINUTE={','.join(map(str, minutes))};BYSECOND={seconds};COUNT=2"
    normal = {
        "key": "ban-tin-gan",
        "title": "Bản tin xã",
        "area": COMMUNE,
        "start": local_first.isoformat(),
        "rrule": rule,
        "targets": {"stations": [station]},
        "items": [{"kind": "audio", "audio_id": bulletin["id"], "title": "Bản tin"}],
    }
    # The priority item starts 2 s into the second occurrence of the 4-second bulletin.
    cut_in = second + timedelta(seconds=2)
    priority = {
        "key": "tin-khan",
        "title": "Tin khẩn của tỉnh",
        "area": COMMUNE,
        "priority": "priority",
        "start": to_local(cut_in).isoformat(),
        "targets": {"stations": [station]},
        "items": [{"kind": "audio", "audio_id": urgent["id"], "title": "Tin khẩn"}],
    }
    with stack.client() as http:
        ids = []
        for body in (normal, priority):
            created = http.post("/api/v1/programmes", json=body)
            assert created.status_code == 201, created.text
            pid = created.json()["id"]
            assert http.post(f"/api/v1/programmes/{pid}/submit").status_code == 200
            approved = http.post(f"/api/v1/programmes/{pid}/approve", headers=approver)
            assert approved.status_code == 200, approved.text
            ids.append(pid)
        occurrences = http.get(f"/api/v1/programmes/{ids[0]}/occurrences").json()
    assert [o["start_at"] for o in occurrences] == [
        first.isoformat().replace("+00:00", "Z"),
        second.isoformat().replace("+00:00", "Z"),
    ]

    first_id = f"p{ids[0]}.1.1.{stamp(first)}"
    playing = wait_for_event(stack, station, "playing", first_id, 30)
    assert abs((datetime.fromisoformat(playing["at"]) - first).total_seconds()) < 0.1
    wait_for_event(stack, station, "played", first_id, 30)
    interrupted = wait_for_event(
        stack, station, "interrupted", f"p{ids[0]}.1.1.{stamp(second)}", 30
    )
    assert interrupted["reason"] == "preempted"
    assert f"p{ids[1]}.1.1.{stamp(cut_in)}" in interrupted["detail"]
    urgent_id = f"p{ids[1]}.1.1.{stamp(cut_in)}"
    urgent_playing = wait_for_event(stack, station, "playing", urgent_id, 30)
    assert abs((datetime.fromisoformat(urgent_playing["at"]) - cut_in).total_seconds()) < 0.1
    wait_for_event(stack, station, "played", urgent_id, 30)
    # The programme's occurrences carry what the station reported for each.
    with stack.client() as http:
        since = (first - timedelta(minutes=1)).isoformat()
        listed = http.get(f"/api/v1/programmes/{ids[0]}/occurrences", params={"from": since})
    assert [o["outcomes"] for o in listed.json()] == [{"played": 1}, {"interrupted": 1}]
