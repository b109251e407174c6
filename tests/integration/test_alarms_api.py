"""Alarms over HTTP: webhooks on open and resolve, acknowledge with history and audit, scope."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from server.app import create_app
from server.audit.models import AuditEntry
from server.auth.permissions import Role
from server.health.models import Alarm
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_health_mqtt import heartbeat
from tests.integration.test_server_api import COMMUNE_A, COMMUNE_B, RecordingBus, make_settings
from tests.integration.test_server_fleet import wait_until

STATION = {COMMUNE_A: "cb-st-001", COMMUNE_B: "cb-st-002"}


class Webhook:
    """A local HTTP server that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.put(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/loaxa-alarms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def next(self, timeout: float = 10) -> dict[str, Any]:
        return self.received.get(timeout=timeout)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


@pytest.fixture
def admin(tmp_path: Path, webhook: Webhook) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, alarm_webhooks=[webhook.url], health_batch_interval_ms=20)
    with TestClient(create_app(settings, bus=RecordingBus())) as client:
        authenticate(client)
        for area, station_id in STATION.items():
            body = {"id": station_id, "name": "Cụm loa", "area_code": area, "latitude": 22.6}
            response = client.post("/api/v1/stations", json={**body, "longitude": 106.2})
            assert response.status_code == 201, response.text
        yield client


def report(client: TestClient, station_id: str, **fields: Any) -> None:
    """A heartbeat through the same entry point the MQTT ingest uses, then wait for it."""
    health = context_of(client).health
    health.submit(station_id, heartbeat(station_id, **fields))
    assert health.drain(10)


def test_the_webhook_hears_an_alarm_open_and_resolve(admin: TestClient, webhook: Webhook) -> None:
    station = STATION[COMMUNE_A]
    report(admin, station, cpu_temp_c=82.5)
    opened = webhook.next()
    assert opened["type"] == "alarm"
    assert (opened["station_id"], opened["kind"], opened["state"]) == (station, "cpu_temp", "open")
    assert opened["severity"] == "warning" and "82.5 °C" in opened["detail"]
    report(admin, station)
    resolved = webhook.next()
    assert (resolved["alarm_id"], resolved["state"]) == (opened["alarm_id"], "resolved")
    health = context_of(admin).health
    wait_until(lambda: health.as_dict()["notifications_sent"] == 2, 5, "both calls counted")


def test_acknowledging_records_who_and_why_in_the_history_and_the_audit_log(
    admin: TestClient,
) -> None:
    station = STATION[COMMUNE_A]
    report(admin, station, disk_free_bytes=10**8)
    (alarm,) = admin.get("/api/v1/alarms", params={"state": "open"}).json()
    technician = make_token(context_of(admin).engine, "ky-thuat-vien", (Role.TECHNICIAN, COMMUNE_A))
    url = f"/api/v1/alarms/{alarm['id']}/acknowledge"
    response = admin.post(url, json={"note": "thay thẻ nhớ chiều nay"}, headers=bearer(technician))
    assert response.status_code == 200, response.text
    acked = response.json()
    assert (
        acked["state"] == "acknowledged"
        and acked["acknowledged_by"] == "ky-thuat-vien/test-ky-thuat-vien"
    )
    assert [(h["state"], h["note"]) for h in acked["history"]] == [
        ("open", None),
        ("acknowledged", "thay thẻ nhớ chiều nay"),
    ]
    again = admin.post(url, json={}, headers=bearer(technician))
    assert again.status_code == 409

    with Session(context_of(admin).engine) as session:
        (entry,) = session.exec(
            select(AuditEntry).where(AuditEntry.action == "alarm.acknowledge")
        ).all()
    assert entry.object_id == str(alarm["id"])
    assert entry.after is not None and "thay thẻ nhớ" in entry.after

    # Acknowledged is not resolved: the station stays degraded until the card is replaced.
    assert admin.get(f"/api/v1/stations/{station}").json()["status"] == "degraded"
    report(admin, station)
    detail = admin.get(f"/api/v1/alarms/{alarm['id']}").json()
    assert detail["state"] == "resolved"
    assert [h["state"] for h in detail["history"]] == ["open", "acknowledged", "resolved"]
    assert [h["by"] for h in detail["history"]] == [None, acked["acknowledged_by"], None]
    assert admin.post(url, json={}, headers=bearer(technician)).status_code == 409


def test_alarms_and_the_summary_are_cut_to_the_callers_areas(admin: TestClient) -> None:
    fault = "no_current_while_playing"
    report(admin, STATION[COMMUNE_A], amp_fault=fault)
    report(admin, STATION[COMMUNE_B], amp_fault=fault, cpu_temp_c=90.0)
    engine = context_of(admin).engine
    viewer = bearer(make_token(engine, "xem-a", (Role.VIEWER, COMMUNE_A)))
    operator = bearer(make_token(engine, "van-hanh-a", (Role.COMMUNE_OPERATOR, COMMUNE_A)))

    seen = admin.get("/api/v1/alarms", headers=viewer).json()
    assert [a["station_id"] for a in seen] == [STATION[COMMUNE_A]]
    assert len(admin.get("/api/v1/alarms").json()) == 3
    assert len(admin.get("/api/v1/alarms", params={"area": COMMUNE_B}).json()) == 2
    with Session(engine) as session:
        other = session.exec(select(Alarm).where(Alarm.station_id == STATION[COMMUNE_B])).first()
        assert other is not None
    assert admin.get(f"/api/v1/alarms/{other.id}", headers=viewer).status_code == 403
    denied = admin.post(f"/api/v1/alarms/{other.id}/acknowledge", json={}, headers=viewer)
    assert denied.status_code == 403 and "alarm.ack" in denied.json()["detail"]

    summary = admin.get("/api/v1/fleet/summary").json()
    assert summary["stations"] == 2 and summary["by_status"]["degraded"] == 2
    assert summary["open_alarms"] == {"info": 0, "warning": 1, "critical": 2}
    assert admin.get("/api/v1/fleet/summary", headers=viewer).json()["open_alarms"]["critical"] == 1
    blind = admin.get("/api/v1/fleet/summary", headers=operator).json()
    assert blind["alarms_visible"] is False and blind["by_status"]["degraded"] == 1
