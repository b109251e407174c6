"""The as-run report against what simulated stations really played, on real parts.

Real Mosquitto, the real server on a real port (its publisher records every plan it
sends), stations running the real agent with the simulated player. The report's
counts and played time are checked against the stations' own playback records.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from loaxa.stack import LocalStack, RunningNode
from server.auth.permissions import Role
from server.reports.asrun import LOCAL_TZ
from tests.audio_samples import make_audio
from tests.brokers import ProductionMosquitto
from tests.integration.auth_helpers import bearer, make_token

COMMUNE = "01273"
REPORT = "/api/v1/reports/as-run"


@pytest.fixture
def stack(tmp_path: Path, production_mosquitto: ProductionMosquitto) -> Iterator[LocalStack]:
    overrides = {"alarm_item_grace_min": 0}  # an unplayed item is "missed" right at its end
    with LocalStack.on_broker(
        tmp_path, production_mosquitto, settings_overrides=overrides
    ) as running:
        yield running


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def report(stack: LocalStack, **params: str) -> Any:
    with stack.client() as http:
        response = http.get(REPORT, params=params)
    assert response.status_code == 200, response.text
    return response.json() if params.get("format") != "csv" else response


STOP_MS = 150
"""Longest a busy player may take to go quiet after the station asked it to stop."""


def played_ms_of(node: RunningNode) -> dict[str, int]:
    """What the station's player really played, per item: the ground truth."""
    return {
        r.item_id: round((r.finished_at - r.started_at).total_seconds() * 1000)
        for r in node.agent.player.records
        if r.finished_at is not None
    }


def test_as_run_matches_what_the_stations_played(stack: LocalStack) -> None:
    a, b = (
        stack.start_node(stack.register_station(f"Cụm loa {n}", COMMUNE, 22.66, 106.25))
        for n in "AB"
    )
    silent = stack.register_station("Cụm loa mất điện", COMMUNE, 22.67, 106.26)  # never runs
    with stack.client() as http:
        spoken = http.post("/api/v1/audio/tts", json={"text": "Đài truyền thanh xã xin thông báo."})
    assert spoken.status_code == 201, spoken.text
    bulletin = spoken.json()  # text-to-speech, a few seconds
    urgent = stack.upload(make_audio("mp3", 1.0), "khan.mp3")
    window_from = datetime.now(UTC) - timedelta(minutes=5)

    start = datetime.now(UTC) + timedelta(seconds=3)
    normal = stack.broadcast(bulletin["id"], start, [a.station_id, b.station_id, silent.station_id])
    stack.broadcast(urgent["id"], start + timedelta(seconds=1.5), [a.station_id], "priority")
    later = stack.broadcast(bulletin["id"], start + timedelta(hours=2), [b.station_id])
    stack.wait_for_states(normal["id"], {"played", "interrupted", "delivered", "planned"}, 30)
    end = start + timedelta(milliseconds=bulletin["duration_ms"])
    wait_until(
        lambda: (
            datetime.now(UTC) > end + timedelta(seconds=1)
            and stack.broadcast_state(normal["id"])["counts"].get("playing", 0) == 0
        ),
        30,
        "the bulletin to end everywhere",
    )
    wait_until(lambda: len(played_ms_of(a)) == 2, 10, "station A to finish both items")

    params = {
        "from": window_from.isoformat(),
        "to": (datetime.now(UTC) + timedelta(hours=3)).isoformat(),
        "items": "true",
    }
    body = report(stack, **params)
    rows = {row["station_id"]: row for row in body["stations"]}
    assert set(rows) == {a.station_id, b.station_id, silent.station_id}

    # A: the normal bulletin was pre-empted by the priority one, which played whole.
    truth_a = played_ms_of(a)
    row_a = rows[a.station_id]
    assert (row_a["planned"], row_a["played"], row_a["interrupted"]) == (2, 1, 1), row_a
    assert (row_a["failed"], row_a["missed"], row_a["pending"]) == (0, 0, 0), row_a
    assert row_a["requested_ms"] == bulletin["duration_ms"] + urgent["duration_ms"]
    # The interrupted play is reported up to the instant the station cut it; its player
    # stops a moment later (42 ms once on a loaded CI machine), so the report may fall
    # that much short of the sound, never exceed it.
    assert -STOP_MS <= row_a["played_ms"] - sum(truth_a.values()) <= 20
    assert row_a["played_ms"] < row_a["requested_ms"]

    # B: the bulletin played whole; the one in two hours is pending.
    truth_b = played_ms_of(b)
    row_b = rows[b.station_id]
    assert (row_b["planned"], row_b["played"], row_b["pending"]) == (2, 1, 1), row_b
    assert row_b["requested_ms"] == 2 * bulletin["duration_ms"]
    assert row_b["played_ms"] == pytest.approx(sum(truth_b.values()), abs=20)
    # Whole: its length, give or take a busy machine's player start and stop (seen: +128 ms
    # on two loaded cores); an interrupted play would be a second or more short.
    assert row_b["played_ms"] == pytest.approx(bulletin["duration_ms"], abs=300)

    # The station that never came online: its bulletin is missed, not silently absent.
    row_silent = rows[silent.station_id]
    assert (row_silent["planned"], row_silent["missed"], row_silent["played_ms"]) == (1, 1, 0)
    missed = [i for i in body["items"] if i["station_id"] == silent.station_id]
    assert missed[0]["reason"] == "no report from the station"

    totals = body["totals"]
    assert totals["planned"] == 5 and totals["played"] == 2 and totals["interrupted"] == 1
    assert totals["played_ms"] == row_a["played_ms"] + row_b["played_ms"]
    pending = [i for i in body["items"] if i["outcome"] == "pending"]
    assert [i["item_id"] for i in pending] == [f"b-{later['id']}"]

    # The CSV says the same, one line per station plus the total.
    response = report(stack, **{**params, "format": "csv", "items": "false"})
    assert response.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"))))
    by_id = {line["station_id"]: line for line in lines}
    assert by_id[a.station_id]["interrupted"] == "1"
    assert float(by_id[b.station_id]["played_s"]) == pytest.approx(row_b["played_ms"] / 1000, 0.01)
    assert lines[-1]["station_name"] == "total" and lines[-1]["planned"] == "5"

    # Item by item, in Vietnam time: which bulletin played, when, or why not.
    response = report(stack, **{**params, "format": "csv", "items": "true"})
    items_csv = list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert len(items_csv) == 5
    missed_line = next(i for i in items_csv if i["station_id"] == silent.station_id)
    assert missed_line["outcome"] == "missed" and missed_line["started_local"] == ""
    local_start = start.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S")
    assert missed_line["planned_start_local"] == local_start
    assert "attachment" in response.headers["content-disposition"]

    # A commune the stations are not in has nothing to report.
    empty = report(stack, area="01279", **{k: v for k, v in params.items() if k != "items"})
    assert empty["stations"] == [] and empty["totals"]["planned"] == 0

    # Someone who may only see the neighbouring commune sees none of these stations, and
    # is refused this commune by name.
    token = make_token(stack.context.engine, "xem-xa-ben", (Role.VIEWER, "01279"))
    with httpx.Client(base_url=stack.base_url, headers=bearer(token)) as http:
        mine = http.get(REPORT, params={k: v for k, v in params.items() if k != "items"})
        theirs = http.get(REPORT, params={"area": COMMUNE})
    assert mine.status_code == 200 and mine.json()["stations"] == []
    assert theirs.status_code == 403 and "broadcast.read" in theirs.json()["detail"]


def test_bad_windows_are_refused_with_the_reason(stack: LocalStack) -> None:
    with stack.client() as http:
        cases = {
            "from=yesterday": "is not a date",
            "from=2026-11-25&to=2026-11-24": "is not after from",
            "from=2026-01-01&to=2026-12-31": "at most 93 days",
            "area=99999": "does not exist",
            "format=xml": "format",
        }
        for query, fragment in cases.items():
            response = http.get(f"{REPORT}?{query}")
            assert response.status_code in {404, 422}, (query, response.text)
            assert fragment in response.json()["detail"], (query, response.text)


def test_a_drill_alert_counts_apart_once_it_has_played(stack: LocalStack) -> None:
    node = stack.start_node(stack.register_station("Cụm loa trung tâm", COMMUNE, 22.66, 106.25))
    window_from = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    with stack.client() as http:
        wait_until(
            lambda: http.get(f"/api/v1/stations/{node.station_id}").json()["status"] == "online",
            20,
            "the station to come online",
        )
        created = http.post(
            "/api/v1/alerts",
            json={
                "title": "Diễn tập báo bão",
                "text": "Đây là bản tin diễn tập. Bão số 3 sắp đổ bộ.",
                "repeat": 1,
                "gap_s": 0,
                "tone": False,
                "drill": True,
                "station_ids": [node.station_id],
            },
        )
        assert created.status_code == 201, created.text
        alert = created.json()

        def finished() -> bool:
            detail = http.get(f"/api/v1/alerts/{alert['id']}").json()
            return bool(detail["counts"].get("finished"))

        wait_until(finished, 40, "the station to finish the alert")
    row = report(stack, **{"from": window_from})["stations"][0]
    # A drill is reported apart: the province's emergency count holds only real warnings.
    assert (row["drills"], row["drills_played"]) == (1, 1), row
    assert (row["emergency"], row["emergency_played"]) == (0, 0), row
    assert row["planned"] == 0  # an alert is not a plan item: requested time is unchanged
