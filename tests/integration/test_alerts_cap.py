"""CAP 1.2 through the API: the shipped samples become alerts, updates and cancels.

Same app and recording bus as test_alerts_api.py; every refusal must leave the wire
untouched ("no partial alert goes out").
"""

# ruff: noqa: F811  (the fixtures are imported from test_alerts_api and named as parameters)
from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from loaxa_protocol import Alert, AlertCancel
from server.alerts.models import AlertRecord
from server.auth.permissions import Role
from server.models import AudioAsset
from tests.integration.auth_helpers import bearer, context_of, make_token
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
        ("typhoon-cancel.xml", "references: this Cancel names what this server did not receive"),
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


# ------------------------------------------------ one message, one alert


def wire(client: TestClient, bus: RecordingBus) -> list[tuple[str, str]]:
    """(kind, alert id) of every alert message published so far, in order."""
    opened_all = [opened(client, raw).message for _t, raw in alert_messages(bus)]
    return [(type(m).__name__, m.alert_id) for m in opened_all]  # type: ignore[union-attr]


def cap_rows(client: TestClient) -> list[tuple[str | None, str | None, str]]:
    with Session(context_of(client).engine) as session:
        rows = session.exec(select(AlertRecord).order_by(col(AlertRecord.id))).all()
        return [(r.cap_sender, r.cap_identifier, r.state) for r in rows]


def test_a_cancelled_typhoon_posted_again_is_answered_with_the_same_alert_and_never_resent(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    """CAP senders retry after a time-out: the retry must not bring a cancelled warning back."""
    bot, duty = officer("kttv-bot"), officer("duty-officer")
    created = post_cap(app_client, bot, "typhoon-alert.xml")
    assert created["status"] == 201, created
    app_client.post(f"/api/v1/alerts/{created['id']}/confirm", headers=duty)
    cancelled = app_client.post(f"/api/v1/alerts/{created['id']}/cancel", headers=duty)
    assert cancelled.json()["state"] == "cancelled"
    before = wire(app_client, bus)
    assert before[-1][0] == "AlertCancel"

    again = post_cap(app_client, bot, "typhoon-alert.xml")
    assert again["status"] == 200, again
    assert again["id"] == created["id"] and again["state"] == "cancelled"
    assert wire(app_client, bus) == before  # nothing published: stations stay silent
    assert len(cap_rows(app_client)) == 1

    # The Update and the Cancel chain are idempotent in the same way.
    updated = post_cap(app_client, bot, "typhoon-update.xml")
    assert updated["status"] == 201
    sent = wire(app_client, bus)
    assert post_cap(app_client, bot, "typhoon-update.xml")["id"] == updated["id"]
    assert post_cap(app_client, bot, "typhoon-cancel.xml")["state"] == "cancelled"
    after_cancel = wire(app_client, bus)
    assert len(after_cancel) == len(sent) + 1
    retried = post_cap(app_client, bot, "typhoon-cancel.xml")
    assert retried["status"] == 200 and retried["id"] == updated["id"]
    assert wire(app_client, bus) == after_cancel


def test_an_identifier_reused_for_another_message_is_refused(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    raw = (SAMPLES / "flood-instruction.xml").read_bytes()
    assert post_cap(app_client, officer("kttv-bot"), raw)["status"] == 201
    sent = wire(app_client, bus)
    other = raw.replace(b"2026-10-02T16:00:00+07:00", b"2026-10-02T18:30:00+07:00")
    answer = post_cap(app_client, officer("kttv-bot"), other)
    assert answer["status"] == 409, answer
    assert "'KTTV-CB-2026-1002-07'" in answer["detail"] and "new identifier" in answer["detail"]
    assert wire(app_client, bus) == sent


def test_the_same_message_posted_at_once_from_several_threads_makes_one_alert(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    """Two copies in flight together: the database's unique index decides, not a lookup."""
    headers = officer("evn-bot")
    raw = (SAMPLES / "dam-drill-audio.xml").read_bytes()
    start = threading.Barrier(4)

    def post() -> dict:  # type: ignore[type-arg]
        start.wait()
        return post_cap(app_client, headers, raw)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _i: post(), range(4)))
    assert sorted(a["status"] for a in answers) == [200, 200, 200, 201], answers
    assert len({a["id"] for a in answers}) == 1
    assert len(cap_rows(app_client)) == 1
    assert [kind for kind, _id in wire(app_client, bus)] == ["Alert"]


def test_the_database_refuses_a_second_row_for_one_cap_message(app_client: TestClient) -> None:
    """Not only the API's lookup: the unique index itself (any writer, any replica)."""
    created = post_cap(app_client, officer_headers(app_client), "flood-instruction.xml")
    with Session(context_of(app_client).engine) as session:
        first = session.get(AlertRecord, created["id"])
        assert first is not None
        copy = AlertRecord.model_validate(first.model_dump(exclude={"id"}))
        copy.alert_id = "al-copy"
        session.add(copy)
        with pytest.raises(IntegrityError):
            session.commit()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda _update: (SAMPLES / "update-unknown-reference.xml").read_bytes(),
            "references: this Update names what this server did not receive: "
            "'kttv-caobang@nchmf.gov.vn,KTTV-CB-2026-0913-99,2026-09-13T08:00:00+07:00' "
            "(no such message was received)",
        ),
        (
            lambda raw: raw.replace(
                b"T05:00:00+07:00</references>", b"T06:00:00+07:00</references>"
            ),
            "(that message was sent 2026-09-12T22:00:00+00:00)",
        ),
    ],
    ids=["unknown-identifier", "wrong-sent"],
)
def test_an_update_naming_a_message_never_received_is_refused_and_changes_nothing(
    app_client: TestClient,
    bus: RecordingBus,
    officer: Officer,
    mutate: Callable[[bytes], bytes],
    expected: str,
) -> None:
    bot, duty = officer("kttv-bot"), officer("duty-officer")
    created = post_cap(app_client, bot, "typhoon-alert.xml")
    app_client.post(f"/api/v1/alerts/{created['id']}/confirm", headers=duty)
    sent = wire(app_client, bus)
    answer = post_cap(app_client, bot, mutate((SAMPLES / "typhoon-update.xml").read_bytes()))
    assert answer["status"] == 422, answer
    assert expected in answer["detail"] and "nothing was changed" in answer["detail"]
    assert wire(app_client, bus) == sent  # neither a new alert nor a cancel of the old
    assert [state for _s, _i, state in cap_rows(app_client)] == ["active"]


def test_the_instruction_is_spoken_after_the_description(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    created = post_cap(app_client, officer("kttv-bot"), "flood-instruction.xml")
    assert created["status"] == 201 and created["state"] == "active", created
    with Session(context_of(app_client).engine) as session:
        record = session.get(AlertRecord, created["id"])
        assert record is not None
        assert record.text == (
            "Cảnh báo lũ quét. Mưa lớn trên thượng nguồn sông Bằng. "
            "Bà con ven suối di chuyển lên chỗ cao ngay."
        )
        spoken = session.get(AudioAsset, record.audio_id)
        assert spoken is not None and spoken.duration_ms > 3000
    ((_topic, raw),) = alert_messages(bus)
    message = opened(app_client, raw).message
    assert isinstance(message, Alert) and message.inline is not None
    assert message.inline.sha256 == spoken.sha256


def officer_headers(client: TestClient) -> dict[str, str]:
    return bearer(make_token(context_of(client).engine, "kttv-bot", (Role.ALERT_OFFICER, "04")))
