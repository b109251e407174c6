"""Live sessions in the as-run report, on real parts: an operator goes live through the
real server and broker to two real station agents; the report API, its CSV and the
reports page (Vietnamese and English) then say who went live and how long it sounded
at each station — the stations' own ``live_started`` / ``live_ended`` figures."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from loaxa.bench.live import LiveSender
from loaxa.stack import LocalStack, RunningNode
from server.i18n import LANGUAGE_COOKIE
from tests.brokers import ProductionMosquitto
from tests.integration.test_live_end_to_end import (
    COMMUNE,
    PASSWORD,
    go_live,
    stations_on_air,
    wait_until,
)


@pytest.fixture
def on_air(
    tmp_path: Path, production_mosquitto: ProductionMosquitto
) -> Iterator[tuple[LocalStack, list[RunningNode]]]:
    with stations_on_air(tmp_path, production_mosquitto, 2, "Cán bộ Lan") as running:
        yield running


def test_the_as_run_report_shows_each_stations_live_session(on_air) -> None:
    stack, nodes = on_air
    with stack.sign_in("op", PASSWORD) as http:
        body = go_live(stack, http, {"areas": [COMMUNE]})
        LiveSender(stack.base_url, body["id"], body["token"]).run(3.0)

    def report() -> dict[str, Any] | None:
        with stack.client() as http:
            found = http.get("/api/v1/reports/as-run", params={"area": COMMUNE}).json()
        done = [r for r in found["live"] if r["reason"] == "stopped"]
        return found if len(done) == len(nodes) else None

    found = wait_until(report, 30, "both stations' live_ended in the report")
    rows = {r["station_id"]: r for r in found["live"]}
    assert sorted(rows) == sorted(n.station_id for n in nodes)
    for row in rows.values():
        assert row["session_id"] == body["id"] and row["title"] == "Họp"
        assert row["created_by"].startswith("op") and row["rounds"] == 1 and not row["on_air"]
        begun, ended = (datetime.fromisoformat(row[k]) for k in ("started_at", "finished_at"))
        # the station's own figure: from its amplifier warm-up to the operator's stop
        assert row["sounded_ms"] == round((ended - begun).total_seconds() * 1000)
        assert 1500 <= row["sounded_ms"] <= 6000, row
    per_station = {r["station_id"]: r for r in found["stations"]}
    for station_id, row in rows.items():
        assert (per_station[station_id]["live"], per_station[station_id]["live_ms"]) == (
            1,
            row["sounded_ms"],
        )
        assert per_station[station_id]["planned"] == 0  # a live session is not an item
    assert found["totals"]["live"] == 2

    with stack.client() as http:
        response = http.get(
            "/api/v1/reports/as-run", params={"area": COMMUNE, "format": "csv", "live": "true"}
        )
    assert response.status_code == 200 and "as-run-live-" in response.headers["content-disposition"]
    lines = list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert {line["station_id"] for line in lines} == set(rows)
    for line in lines:
        assert line["end_reason"] == "stopped" and line["created_by"].startswith("op")
        assert float(line["sounded_s"]) == pytest.approx(
            rows[line["station_id"]]["sounded_ms"] / 1000, abs=0.05
        )

    with stack.sign_in("op", PASSWORD) as http:
        page = http.get("/reports", params={"area": COMMUNE})
        assert page.status_code == 200
        assert "Phát trực tiếp" in page.text and "Người phát đã dừng" in page.text
        speaker = next(iter(rows.values()))["created_by"]
        assert (
            "Cụm loa 0" in page.text and f'<td data-label="Người phát">{speaker}</td>' in page.text
        )
        http.cookies.set(LANGUAGE_COOKIE, "en")
        english = http.get("/reports", params={"area": COMMUNE}).text
        assert "Live broadcasts" in english and "Stopped by the operator" in english
