"""Replays on real parts: the real server (its plans, its alerts API) on a real Mosquitto.

An attacker with broker rights records what the server publishes and sends the exact
bytes again later: an old plan after a newer one replaced it, an alert after it
expired. Stations refuse such copies; the server must raise the intrusion alarm too,
once, saying which topic, which message and when the server first issued it.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from loaxa.stack import LocalStack
from loaxa_protocol import topics
from server.audit.models import AuditEntry
from server.fleet.ingest import INTRUSION_KIND
from server.models import StationEvent
from tests.integration.test_alerts_end_to_end import stack, wait_until

__all__ = ["stack"]  # the fixture: the real server on a real port

COMMUNE = "01273"


def intrusions(stack: LocalStack) -> list[AuditEntry]:
    with Session(stack.context.engine) as session:
        query = select(AuditEntry).where(AuditEntry.action == "intrusion.detected")
        return list(session.exec(query.order_by(col(AuditEntry.id))).all())


def _opened(raw: bytes) -> bytes:
    """The signed message inside an envelope, as the attacker can read it too."""
    payload = json.loads(raw)["payload"]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


def issued_at(raw: bytes) -> str:
    """The issue time sealed in an envelope, read straight from the captured bytes."""
    return datetime.fromisoformat(json.loads(_opened(raw))["issued_at"]).isoformat()


def test_a_replayed_old_plan_and_an_expired_alert_each_raise_one_alarm(
    stack: LocalStack, mqtt_probe: Any, production_mosquitto: Any
) -> None:
    station_id = stack.register_station("Cụm loa 1", COMMUNE, 22.666, 106.257).station_id
    plan_topic, alert_topic = topics.plan(station_id), topics.area_alert(COMMUNE)
    attacker = mqtt_probe(production_mosquitto, topics=[plan_topic, alert_topic])

    # What the attacker records: a plan, then the plan that replaced it...
    stack.context.publisher.republish_all()
    old_plan = attacker.wait_for(lambda m: m.topic == plan_topic).payload
    stack.context.publisher.republish_all()
    attacker.wait_for(lambda m: m.topic == plan_topic and m.payload != old_plan)
    # ...and a real alert sent through the API, which expires three seconds later.
    expires = datetime.now(UTC) + timedelta(seconds=3)
    with stack.client() as http:
        response = http.post(
            "/api/v1/alerts",
            json={
                "title": "Cháy rừng",
                "canned": "fire",
                "tone": False,
                "area_codes": [COMMUNE],
                "expires_at": expires.isoformat(),
            },
        )
    assert response.status_code == 201, response.text
    old_alert = attacker.wait_for(lambda m: m.topic == alert_topic).payload
    # A second alert, cancelled by the officer long before it would expire.
    with stack.client() as http:
        second = http.post(
            "/api/v1/alerts",
            json={"title": "Lũ", "canned": "flood", "tone": False, "area_codes": [COMMUNE]},
        ).json()
        cancelled_alert = attacker.wait_for(
            lambda m: m.topic == alert_topic and second["alert_id"].encode() in _opened(m.payload)
        ).payload
        assert http.post(f"/api/v1/alerts/{second['id']}/cancel").status_code == 200
    wait_until(lambda: datetime.now(UTC) > expires + timedelta(seconds=0.5), 10, "expiry")
    assert intrusions(stack) == []  # the server's own traffic raised nothing

    for _copy in range(3):  # the replay, sent more than once
        attacker.publish(plan_topic, old_plan, retain=True)
        attacker.publish(alert_topic, old_alert)
        attacker.publish(alert_topic, cancelled_alert)
    attacker.publish(topics.area_alert("04"), b"sentinel")  # judged after all of the above
    wait_until(lambda: len(intrusions(stack)) >= 4, 10, "the alarms")
    time.sleep(0.5)  # time for any further (wrong) alarm to be written

    entries = intrusions(stack)
    assert [(e.object_type, e.object_id) for e in entries] == [
        ("station", station_id),
        ("area", COMMUNE),
        ("area", COMMUNE),
        ("area", "04"),
    ]
    plan_alarm, alert_alarm, cancelled_alarm = (json.loads(e.after or "{}") for e in entries[:3])
    plan_issued = issued_at(old_plan)
    assert plan_alarm["topic"] == plan_topic
    assert plan_alarm["reason"] == "replayed"
    assert f"plan seq {plan_alarm['seq']}" in plan_alarm["detail"]
    assert f"issued {plan_issued}" in plan_alarm["detail"]
    assert "replaced it" in plan_alarm["detail"]

    alert_id = response.json()["alert_id"]
    assert alert_alarm["topic"] == alert_topic
    assert alert_alarm["reason"] == "replayed"
    assert f"alert {alert_id} seq" in alert_alarm["detail"]
    assert f"issued {issued_at(old_alert)}" in alert_alarm["detail"]
    assert "expired at" in alert_alarm["detail"]
    assert f"alert {second['alert_id']} seq" in cancelled_alarm["detail"]
    assert "after it was cancelled at" in cancelled_alarm["detail"]

    # The technician sees it on the station's page too: one event, naming the topic.
    with Session(stack.context.engine) as session:
        events = session.exec(select(StationEvent).where(StationEvent.kind == INTRUSION_KIND)).all()
    assert [(e.station_id, e.reason) for e in events] == [(station_id, "replayed")]
    assert events[0].detail is not None and plan_topic in events[0].detail
