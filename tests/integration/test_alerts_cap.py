"""CAP 1.2 through the API: the shipped samples become alerts, updates and cancels.

Same app and recording bus as test_alerts_api.py; every refusal must leave the wire
untouched ("no partial alert goes out").
"""

# ruff: noqa: F811  (the fixtures are imported from test_alerts_api and named as parameters)
from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from loaxa_protocol import Alert, AlertCancel
from tests.integration.test_alerts_api import (  # noqa: F401  (fixtures)
    COMMUNE_A,
    COMMUNE_B,
    COMMUNE_C,
    Officer,
    alert_messages,
    app_client,
    bus,
    clock,
    officer,
    opened,
)
from tests.integration.test_server_api import RecordingBus

CAP = "/api/v1/alerts/cap"
SAMPLES = Path(__file__).parents[1] / "data" / "cap"
XML = {"content-type": "application/cap+xml"}


def post_cap(client: TestClient, headers: dict[str, str], name: str | bytes) -> dict:  # type: ignore[type-arg]
    raw = name if isinstance(name, bytes) else (SAMPLES / name).read_bytes()
    response = client.post(CAP, content=raw, headers={**headers, **XML})
    return {"status": response.status_code, **response.json()}


def test_alert_update_cancel_chain(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    first, second = officer("kttv-bot"), officer("duty-officer")
    created = post_cap(app_client, first, "typhoon-alert.xml")
    assert created["status"] == 201, created
    # Real and beyond one commune: held for a second officer, like any other alert.
    assert created["state"] == "awaiting_confirmation" and created["severity"] == "extreme"
    assert {s["area_code"] for s in created["stations"]} == {COMMUNE_A, COMMUNE_B}
    assert alert_messages(bus) == []
    confirmed = app_client.post(f"/api/v1/alerts/{created['id']}/confirm", headers=second)
    assert confirmed.json()["state"] == "active"
    assert len(alert_messages(bus)) == 2
    bus.published.clear()

    updated = post_cap(app_client, first, "typhoon-update.xml")
    assert updated["status"] == 201, updated
    assert updated["state"] == "active" and updated["severity"] == "severe"
    assert [s["area_code"] for s in updated["stations"]] == [COMMUNE_A, COMMUNE_A]
    sent = [(t, opened(app_client, raw).message) for t, raw in alert_messages(bus)]
    cancels = [m for _t, m in sent if isinstance(m, AlertCancel)]
    alerts = [m for _t, m in sent if isinstance(m, Alert)]
    assert {c.alert_id for c in cancels} == {created["alert_id"]} and len(cancels) == 2
    assert [a.alert_id for a in alerts] == [updated["alert_id"]]
    assert alerts[0].inline is not None  # the headline, spoken
    old = app_client.get(f"/api/v1/alerts/{created['id']}", headers=first).json()
    assert old["state"] == "cancelled"
    bus.published.clear()

    cancelled = post_cap(app_client, first, "typhoon-cancel.xml")
    assert cancelled["status"] == 200 and cancelled["id"] == updated["id"]
    assert cancelled["state"] == "cancelled"
    ((_topic, raw),) = alert_messages(bus)
    assert isinstance(opened(app_client, raw).message, AlertCancel)


def test_an_exercise_with_its_own_audio_is_a_drill_sent_inline(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    created = post_cap(app_client, officer("evn-bot"), "dam-drill-audio.xml")
    assert created["status"] == 201, created
    assert created["drill"] is True and created["state"] == "active"
    assert created["payload"] == "inline"
    assert [s["area_code"] for s in created["stations"]] == [COMMUNE_C]
    ((_topic, raw),) = alert_messages(bus)
    message = opened(app_client, raw).message
    assert isinstance(message, Alert) and message.drill and message.inline is not None
    assert base64.b64decode(message.inline.data).startswith(b"OggS")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("malformed.xml", "malformed XML"),
        ("schema-violation.xml", "Element 'severity'"),
        ("no-area-match.xml", "info[1]/area[1]/areaDesc: 'Phường Hoàn Kiếm' matches no area"),
        ("nothing-to-say.xml", "info[1]: neither audio"),
        ("typhoon-cancel.xml", "references: a Cancel must name messages this server received"),
    ],
)
def test_bad_cap_is_refused_precisely_and_nothing_goes_out(
    app_client: TestClient, bus: RecordingBus, officer: Officer, name: str, expected: str
) -> None:
    answer = post_cap(app_client, officer("kttv-bot"), name)
    assert answer["status"] == 422, answer
    assert expected in answer["detail"]
    assert alert_messages(bus) == []
    assert app_client.get("/api/v1/alerts", headers=officer("kttv-bot")).json() == []


def test_cap_outside_the_senders_area_is_forbidden(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    local = officer("local-officer", area=COMMUNE_A)
    answer = post_cap(app_client, local, "dam-drill-audio.xml")
    assert answer["status"] == 403 and "alert.send" in answer["detail"]
    assert alert_messages(bus) == []
