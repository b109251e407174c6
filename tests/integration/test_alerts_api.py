"""The alert API on a real app with a recording bus: what goes on the wire, and who may.

Every published message is opened the way a station opens it (``open_envelope`` with
a keyring holding only the alert key), so a test passing here means a node would
accept the message, and the sizes asserted are the sizes on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from loaxa_protocol import (
    Alert,
    AlertCancel,
    Event,
    EventKind,
    Keyring,
    Status,
    StatusState,
    Verified,
    open_envelope,
    topics,
)
from loaxa_protocol.messages import INLINE_AUDIO_MAX_BYTES
from server.alerts.models import AlertRecord
from server.app import create_app
from server.audit.models import AuditEntry
from server.auth.permissions import Role
from server.cluster.leader import shared
from server.models import AudioAsset
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import bearer, context_of, make_token
from tests.integration.test_server_api import RecordingBus, make_settings

API = "/api/v1/alerts"
PROVINCE = "04"
COMMUNE_A, COMMUNE_B, COMMUNE_C = "01273", "01279", "01288"
STATIONS = {
    "a-1": COMMUNE_A,
    "a-2": COMMUNE_A,
    "b-1": COMMUNE_B,
    "c-1": COMMUNE_C,
}


class Clock:
    """The server's clock, moved by the test (expiry and re-send decisions)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app_client(tmp_path: Path, bus: RecordingBus, clock: Clock) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, alert_settle_s=0)
    with TestClient(create_app(settings, bus=bus, clock=clock)) as client:
        engine = context_of(client).engine
        admin = make_token(engine, "admin", (Role.PROVINCE_ADMIN, PROVINCE))
        for station_id, area in STATIONS.items():
            body = {"id": station_id, "name": f"Loa {station_id}", "area_code": area}
            response = client.post(
                "/api/v1/stations",
                json={**body, "latitude": 22.6, "longitude": 106.2},
                headers=bearer(admin),
            )
            assert response.status_code == 201, response.text
        bus.published.clear()  # plans
        yield client


Officer = Callable[..., dict[str, str]]


@pytest.fixture
def officer(app_client: TestClient) -> Officer:
    """``officer(name, role=alert_officer, area=province)`` → auth headers for that user."""

    def make(name: str, role: Role = Role.ALERT_OFFICER, area: str = PROVINCE) -> dict[str, str]:
        return bearer(make_token(context_of(app_client).engine, name, (role, area)))

    return make


def alert_body(**overrides: Any) -> dict[str, Any]:
    return {"title": "Bão số 3", "canned": "typhoon", "area_codes": [COMMUNE_A], **overrides}


def alert_messages(bus: RecordingBus) -> list[tuple[str, bytes]]:
    return [(t, p) for t, p, _q, _r in bus.published if t.endswith("/alert")]


def opened(client: TestClient, raw: bytes) -> Verified:
    """Open a message as a station does: only the province alert key is trusted."""
    keys = context_of(client).keys
    verdict = open_envelope(
        raw,
        Keyring.of(keys.alert_key),
        context_of(client).clock(),
        accept_to={f"area:{c}" for c in (PROVINCE, *STATIONS.values())} | set(STATIONS),
    )
    assert isinstance(verdict, Verified), verdict
    return verdict


def send_event(client: TestClient, station_id: str, kind: EventKind, **fields: Any) -> None:
    event = Event(
        station_id=station_id,
        kind=kind,
        at=fields.pop("at", context_of(client).clock()),
        **fields,
    )
    context_of(client).ingestor.handle(
        [(topics.event(station_id), event.model_dump_json().encode())]
    )


def go_online(client: TestClient, station_id: str) -> None:
    status = Status(station_id=station_id, state=StatusState.ONLINE, at=context_of(client).clock())
    context_of(client).ingestor.handle(
        [(topics.status(station_id), status.model_dump_json().encode())]
    )


def audit_actions(client: TestClient) -> list[tuple[str, str, str]]:
    with Session(context_of(client).engine) as session:
        rows = session.exec(select(AuditEntry).order_by(AuditEntry.id)).all()  # type: ignore[arg-type]
        return [(r.action, r.actor_name, r.object_id) for r in rows if "alert" in r.action]


# ----------------------------------------------------------------- canned


def test_the_canned_library_is_seeded_and_kept_on_every_station(
    app_client: TestClient, officer: Officer
) -> None:
    listed = app_client.get(f"{API}/canned", headers=officer("o1")).json()
    names = [c["name"] for c in listed]
    assert names == ["typhoon", "flood", "dam_release", "fire", "epidemic", "all_clear"]
    assert all(c["duration_ms"] > 3000 and c["title_vi"] and c["title_en"] for c in listed)
    with Session(context_of(app_client).engine) as session:
        library = {
            a.library: a.sha256
            for a in session.exec(select(AudioAsset).where(AudioAsset.library != None))  # noqa: E711
        }
    assert set(library) == {f"alert:{n}" for n in [*names, "tone"]}
    # Every plan keeps the library cached ahead of need.
    context_of(app_client).publisher.republish_all()
    plan = [p for t, p, _q, _r in app_client.app.state.context.bus.published if t.endswith("/plan")]  # type: ignore[attr-defined]
    envelope = json.loads(plan[0])
    payload = json.loads(base64.urlsafe_b64decode(envelope["payload"] + "=="))
    assert {k["sha256"] for k in payload["keep"]} == set(library.values())


# ---------------------------------------------------------- sending canned


def test_a_canned_alert_to_one_commune_is_on_the_wire_before_the_answer(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    response = app_client.post(API, json=alert_body(), headers=officer("o1"))
    assert response.status_code == 201, response.text
    detail = response.json()
    assert detail["state"] == "active" and detail["payload"] == "canned"
    assert detail["created_by"].startswith("o1") and detail["confirmed_by"] is None
    assert [s["station_id"] for s in detail["stations"]] == ["a-1", "a-2"]
    assert detail["counts"]["pending"] == 2

    ((topic, raw),) = alert_messages(bus)
    assert topic == topics.area_alert(COMMUNE_A)
    message = opened(app_client, raw).message
    assert isinstance(message, Alert)
    assert message.to == f"area:{COMMUNE_A}" and message.alert_id == detail["alert_id"]
    assert message.audio is not None and message.inline is None and message.tone is not None
    assert message.repeat == 2 and message.gap_ms == 3000 and not message.drill
    assert len(raw) == detail["payload_bytes"] < 2048  # a few hundred bytes, not the audio
    assert [q for t, _p, q, r in bus.published if t == topic] == [1]
    assert ("alert.send", detail["created_by"], str(detail["id"])) in audit_actions(app_client)


def test_targets_are_published_to_a_minimal_cover(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    body = alert_body(area_codes=[PROVINCE, COMMUNE_A], station_ids=["b-1"], drill=True)
    response = app_client.post(API, json=body, headers=officer("o1"))
    assert response.status_code == 201, response.text
    assert [t for t, _p in alert_messages(bus)] == [topics.area_alert(PROVINCE)]
    assert response.json()["counts"]["pending"] == 4

    bus.published.clear()
    body = alert_body(area_codes=[COMMUNE_A], station_ids=["a-1", "b-1"], drill=True)
    app_client.post(API, json=body, headers=officer("o1"))
    sent = alert_messages(bus)
    assert [t for t, _p in sent] == [topics.area_alert(COMMUNE_A), topics.alert("b-1")]
    assert [opened(app_client, raw).message.to for _t, raw in sent] == [f"area:{COMMUNE_A}", "b-1"]


def test_every_target_gets_one_delivery_row_when_they_are_written_in_chunks(
    app_client: TestClient, bus: RecordingBus, officer: Officer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A national alert binds its station ids in chunks (SQLite's parameter limit).
    monkeypatch.setattr("server.alerts.service.DELIVERY_CHUNK", 3)
    body = alert_body(area_codes=[PROVINCE], drill=True)
    response = app_client.post(API, json=body, headers=officer("o1"))
    assert response.status_code == 201, response.text
    stations = response.json()["stations"]
    assert [s["station_id"] for s in stations] == sorted(STATIONS)  # each once
    assert {s["station_id"]: s["area_code"] for s in stations} == STATIONS
    assert all(s["state"] == "pending" for s in stations)


def test_preview_says_exactly_who_hears_it_and_sends_nothing(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    body = alert_body(area_codes=[COMMUNE_A, COMMUNE_B])
    preview = app_client.post(f"{API}/preview", json=body, headers=officer("o1")).json()
    assert preview == {
        "stations": 3,
        "station_ids": ["a-1", "a-2", "b-1"],
        "areas": [
            {"code": COMMUNE_A, "name": "Phường Thục Phán", "stations": 2},
            {"code": COMMUNE_B, "name": "Phường Nùng Trí Cao", "stations": 1},
        ],
        "needs_confirmation": True,
    }
    drill = app_client.post(f"{API}/preview", json={**body, "drill": True}, headers=officer("o1"))
    assert drill.json()["needs_confirmation"] is False
    assert alert_messages(bus) == []


# ------------------------------------------------------------ confirmation


def test_a_real_alert_beyond_one_commune_waits_for_a_second_officer(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    first, second = officer("first"), officer("second")
    body = alert_body(area_codes=[COMMUNE_A, COMMUNE_B])
    created = app_client.post(API, json=body, headers=first).json()
    assert created["state"] == "awaiting_confirmation" and created["sent_at"] is None
    assert alert_messages(bus) == []

    alert_pk = created["id"]
    same = app_client.post(f"{API}/{alert_pk}/confirm", headers=first)
    assert same.status_code == 403 and "different officer" in same.json()["detail"]
    assert alert_messages(bus) == []

    confirmed = app_client.post(f"{API}/{alert_pk}/confirm", headers=second)
    assert confirmed.status_code == 200, confirmed.text
    detail = confirmed.json()
    assert detail["state"] == "active" and detail["confirmed_by"].startswith("second")
    assert detail["created_by"].startswith("first") and detail["sent_at"] is not None
    assert sorted(t for t, _p in alert_messages(bus)) == [
        topics.area_alert(COMMUNE_A),
        topics.area_alert(COMMUNE_B),
    ]
    again = app_client.post(f"{API}/{alert_pk}/confirm", headers=officer("third"))
    assert again.status_code == 409
    actions = [a for a, _n, o in audit_actions(app_client) if o == str(alert_pk)]
    assert actions == ["alert.create", "alert.confirm"]


def test_confirmation_policy_is_configurable_per_area(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    settings = context_of(app_client).settings
    settings.alert_confirmation = {COMMUNE_C: "always", PROVINCE: "never"}
    two = app_client.post(
        API, json=alert_body(area_codes=[COMMUNE_A, COMMUNE_B]), headers=officer("o1")
    )
    assert two.json()["state"] == "active"
    one = app_client.post(API, json=alert_body(area_codes=[COMMUNE_C]), headers=officer("o1"))
    assert one.json()["state"] == "awaiting_confirmation"


# ------------------------------------------------------------------- scope


def test_only_province_roles_send_and_only_in_their_subtree(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    local = officer("local", Role.ALERT_OFFICER, COMMUNE_A)
    assert app_client.post(API, json=alert_body(), headers=local).status_code == 201
    bus.published.clear()
    outside = app_client.post(API, json=alert_body(station_ids=["b-1"]), headers=local)
    assert outside.status_code == 403
    assert f"alert.send in area {COMMUNE_B}" in outside.json()["detail"]
    province = app_client.post(API, json=alert_body(area_codes=[PROVINCE]), headers=local)
    assert province.status_code == 403
    operator = officer("operator", Role.COMMUNE_OPERATOR, COMMUNE_A)
    assert app_client.post(API, json=alert_body(), headers=operator).status_code == 403
    assert alert_messages(bus) == []
    denied = [a for a, _n, _o in audit_actions(app_client) if a.startswith("denied")]
    assert denied == ["denied:alert.send"] * 3


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"canned": None}, "an alert needs a message"),
        ({"text": "Lũ"}, "exactly one of text, audio_id or canned"),
        ({"area_codes": []}, "the alert has no target"),
        ({"area_codes": ["99999"]}, "area_codes: unknown area(s) '99999'"),
        ({"station_ids": ["nope"]}, "station_ids: unknown station(s) 'nope'"),
        ({"canned": "meteor"}, "canned: unknown message 'meteor'"),
        ({"audio_id": 999, "canned": None}, "audio_id: audio 999 does not exist"),
        ({"repeat": 11}, "repeat"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at must include a timezone offset"),
        ({"expires_at": "2020-01-01T00:00:00+07:00"}, "is in the past"),
        ({"area_codes": ["01304"]}, "no station is registered in area(s) '01304'"),
        ({"canned": None, "text": "!!! ..."}, "text: nothing to read aloud"),
    ],
)
def test_bad_input_is_refused_with_what_and_where(
    app_client: TestClient,
    bus: RecordingBus,
    officer: Officer,
    change: dict[str, Any],
    expected: str,
) -> None:
    response = app_client.post(API, json=alert_body(**change), headers=officer("o1"))
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]
    assert alert_messages(bus) == []


def test_expiry_beyond_48_hours_is_refused(
    app_client: TestClient, officer: Officer, clock: Clock
) -> None:
    late = (clock.now + timedelta(hours=49)).isoformat()
    response = app_client.post(API, json=alert_body(expires_at=late), headers=officer("o1"))
    assert response.status_code == 422 and "more than 48 h ahead" in response.json()["detail"]


# ------------------------------------------------------------------ inline


def test_uploaded_audio_travels_inline_and_too_big_audio_is_refused(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    headers = officer("o1")
    upload = app_client.post(
        "/api/v1/audio", files={"file": ("loa.wav", make_audio("wav", 2.0))}, headers=headers
    ).json()
    body = alert_body(canned=None, audio_id=upload["id"], tone=False)
    created = app_client.post(API, json=body, headers=headers).json()
    assert created["payload"] == "inline"
    ((_topic, raw),) = alert_messages(bus)
    message = opened(app_client, raw).message
    assert isinstance(message, Alert) and message.inline is not None and message.tone is None
    data = base64.b64decode(message.inline.data)
    assert hashlib.sha256(data).hexdigest() == message.inline.sha256 == upload["sha256"]
    assert created["payload_bytes"] == len(raw) > len(data)

    with Session(context_of(app_client).engine) as session:
        big = AudioAsset(
            sha256="b" * 64, source_sha256="b" * 64, size_bytes=INLINE_AUDIO_MAX_BYTES + 5000,
            duration_ms=70_000, codec="opus", mime_type="audio/ogg", original_filename="long.ogg",
            lufs_before=-20, lufs_after=-16, true_peak_before_dbtp=-3, true_peak_after_dbtp=-1,
            gain_db=4, sample_rate=48000,
        )  # fmt: skip
        session.add(big)
        session.commit()
        big_id = big.id
    bus.published.clear()
    refused = app_client.post(API, json={**body, "audio_id": big_id}, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "audio_id: audio is 261 KiB, inline alerts carry at most 256 KiB; "
        "shorten it or use a canned message"
    )
    assert alert_messages(bus) == []


def test_text_is_spoken_and_carried_inline(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    body = alert_body(canned=None, text="Lũ quét ở thôn Nà Rị. Bà con di chuyển lên cao ngay.")
    created = app_client.post(API, json=body, headers=officer("o1"))
    assert created.status_code == 201, created.text
    ((_topic, raw),) = alert_messages(bus)
    message = opened(app_client, raw).message
    assert isinstance(message, Alert) and message.inline is not None
    assert 2000 < message.inline.duration_ms < 15000
    assert len(raw) < INLINE_AUDIO_MAX_BYTES


# ---------------------------------------------------------------- tracking


def test_station_events_move_each_row_and_finish_the_alert(
    app_client: TestClient, officer: Officer, clock: Clock
) -> None:
    headers = officer("o1")
    created = app_client.post(API, json=alert_body(), headers=headers).json()
    alert_id, pk = created["alert_id"], created["id"]
    t0 = clock.now
    common = {"alert_id": alert_id, "drill": False}
    send_event(app_client, "a-1", EventKind.ALERT_RECEIVED, at=t0, **common)
    send_event(app_client, "a-1", EventKind.ALERT_PLAYING, at=t0 + timedelta(seconds=1), **common)
    send_event(app_client, "a-2", EventKind.REJECTED, reason="bad_signature", **common)
    detail = app_client.get(f"{API}/{pk}", headers=headers).json()
    rows = {s["station_id"]: s for s in detail["stations"]}
    assert rows["a-1"]["state"] == "playing"
    assert rows["a-1"]["received_at"].startswith(t0.isoformat()[:19])
    assert rows["a-2"]["state"] == "refused" and rows["a-2"]["reason"] == "bad_signature"
    assert detail["counts"]["playing"] == 1 and detail["counts"]["refused"] == 1
    assert detail["state"] == "active"

    # A late "received" never moves a station back; "finished" ends the alert.
    send_event(app_client, "a-1", EventKind.ALERT_FINISHED, at=t0 + timedelta(seconds=20), **common)
    send_event(app_client, "a-1", EventKind.ALERT_RECEIVED, at=t0 + timedelta(seconds=30), **common)
    detail = app_client.get(f"{API}/{pk}", headers=headers).json()
    assert {s["station_id"]: s["state"] for s in detail["stations"]} == {
        "a-1": "finished",
        "a-2": "refused",
    }
    assert detail["state"] == "finished"
    assert ("station.refused_alert", "system", "a-2") in audit_actions(app_client)


def test_a_station_back_online_gets_a_fresh_copy_until_it_acks_or_it_expires(
    app_client: TestClient, bus: RecordingBus, officer: Officer, clock: Clock
) -> None:
    created = app_client.post(
        API, json=alert_body(expires_at=(clock.now + timedelta(minutes=30)).isoformat()),
        headers=officer("o1"),
    ).json()  # fmt: skip
    bus.published.clear()
    go_online(app_client, "a-1")
    ((topic, raw),) = alert_messages(bus)
    assert topic == topics.alert("a-1")
    message = opened(app_client, raw).message
    assert isinstance(message, Alert)
    assert message.to == "a-1" and message.alert_id == created["alert_id"]

    bus.published.clear()
    send_event(
        app_client, "a-1", EventKind.ALERT_RECEIVED, alert_id=created["alert_id"], drill=False
    )
    go_online(app_client, "a-1")
    assert alert_messages(bus) == []  # acked: nothing more

    clock.advance(minutes=31)
    go_online(app_client, "a-2")
    assert alert_messages(bus) == []  # expired: nothing after expiry
    assert context_of(app_client).alerts.settle() == 1
    assert (
        app_client.get(f"{API}/{created['id']}", headers=officer("o1")).json()["state"] == "expired"
    )


def test_cancel_reaches_every_station_the_way_the_alert_did(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    body = alert_body(area_codes=[COMMUNE_A], station_ids=["b-1"], drill=True)
    created = app_client.post(API, json=body, headers=officer("o1")).json()
    go_online(app_client, "a-2")  # a re-send on a station topic: the cancel goes there too
    sent = {t for t, _p in alert_messages(bus)}
    bus.published.clear()
    cancelled = app_client.post(f"{API}/{created['id']}/cancel", headers=officer("o2"))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled" and cancelled.json()["cancelled_at"]
    cancels = alert_messages(bus)
    assert {t for t, _p in cancels} == sent
    for _topic, raw in cancels:
        message = opened(app_client, raw).message
        assert isinstance(message, AlertCancel) and message.alert_id == created["alert_id"]
    assert (
        app_client.post(f"{API}/{created['id']}/cancel", headers=officer("o2")).status_code == 409
    )
    assert ("alert.cancel", "o2/test-o2", str(created["id"])) in audit_actions(app_client)


def test_a_held_alert_cancelled_sends_nothing(
    app_client: TestClient, bus: RecordingBus, officer: Officer
) -> None:
    held = app_client.post(
        API, json=alert_body(area_codes=[PROVINCE]), headers=officer("o1")
    ).json()
    assert held["state"] == "awaiting_confirmation"
    app_client.post(f"{API}/{held['id']}/cancel", headers=officer("o1"))
    assert alert_messages(bus) == []
    assert app_client.post(f"{API}/{held['id']}/confirm", headers=officer("o2")).status_code == 409


# ------------------------------------------------------------ list, report


def test_a_commune_sees_its_own_part_and_a_drill_is_reported_as_a_drill(
    app_client: TestClient, officer: Officer
) -> None:
    body = alert_body(area_codes=[COMMUNE_A, COMMUNE_B], drill=True)
    created = app_client.post(API, json=body, headers=officer("o1")).json()
    viewer_b = officer("viewer-b", Role.VIEWER, COMMUNE_B)
    viewer_c = officer("viewer-c", Role.VIEWER, COMMUNE_C)
    listed = app_client.get(API, headers=viewer_b).json()
    assert [a["id"] for a in listed] == [created["id"]] and listed[0]["drill"] is True
    assert listed[0]["counts"]["pending"] == 1
    part = app_client.get(f"{API}/{created['id']}", headers=viewer_b).json()
    assert [s["station_id"] for s in part["stations"]] == ["b-1"]
    assert app_client.get(API, headers=viewer_c).json() == []
    assert app_client.get(f"{API}/{created['id']}", headers=viewer_c).status_code == 403

    report = app_client.get(f"{API}/{created['id']}/report.csv", headers=officer("o1"))
    assert report.status_code == 200
    assert "drill" in report.headers["content-disposition"]
    lines = report.text.splitlines()
    assert lines[0] == "# DRILL (DIỄN TẬP) - not a real alert"
    rows = [line for line in lines if not line.startswith("#")]
    assert rows[0].startswith("drill,station_id,name,area_code,state")
    assert len(rows) == 4 and all(r.startswith("drill,") for r in rows[1:])
    assert ",pending," in rows[1] and ",unknown," in rows[1]


def test_the_live_stream_sends_changes_and_ends_with_the_alert(
    app_client: TestClient, officer: Officer
) -> None:
    headers = officer("o1")
    created = app_client.post(API, json=alert_body(), headers=headers).json()
    common = {"alert_id": created["alert_id"], "drill": False}
    with app_client.stream("GET", f"{API}/{created['id']}/stream", headers=headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        first = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
        assert first["state"] == "active" and len(first["stations"]) == 2
        send_event(app_client, "a-1", EventKind.ALERT_PLAYING, **common)
        second = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
        assert [s["station_id"] for s in second["stations"]] == ["a-1"]
        assert second["counts"]["playing"] == 1
        app_client.post(f"{API}/{created['id']}/cancel", headers=headers)
        last = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert last[-1]["state"] == "cancelled"


def test_with_ingest_workers_the_live_stream_sees_acks_written_by_another_process(
    tmp_path: Path, clock: Clock
) -> None:
    """A worker's AlertService bumps its own counter, not the server's: the view polls."""
    from server.alerts.service import AlertService
    from server.fleet.bus import NullBus
    from server.fleet.ingest import Ingestor

    settings = make_settings(tmp_path, alert_settle_s=0, ingest_workers=True)
    with TestClient(create_app(settings, bus=RecordingBus(), clock=clock)) as client:
        context = context_of(client)
        admin = bearer(make_token(context.engine, "admin", (Role.PROVINCE_ADMIN, PROVINCE)))
        body = {"id": "a-1", "name": "Loa", "area_code": COMMUNE_A}
        registered = client.post(
            "/api/v1/stations", json={**body, "latitude": 22.6, "longitude": 106.2}, headers=admin
        )
        assert registered.status_code == 201, registered.text
        headers = bearer(make_token(context.engine, "o1", (Role.ALERT_OFFICER, PROVINCE)))
        created = client.post(API, json=alert_body(), headers=headers).json()
        # What `loaxa worker ingest` builds: its own AlertService, its own counter.
        elsewhere = AlertService(
            context.engine, settings, context.keys, NullBus(), context.store, clock
        )
        worker = Ingestor(context.engine, clock, on_alert_events=elsewhere.on_alert_events)
        with client.stream("GET", f"{API}/{created['id']}/stream", headers=headers) as stream:
            lines = stream.iter_lines()
            data = (json.loads(line[5:]) for line in lines if line.startswith("data:"))
            # The opening state, then the first poll (its counter moved from "never read").
            assert next(data)["counts"].get("playing", 0) == 0
            assert next(data)["counts"].get("playing", 0) == 0
            event = Event(
                station_id="a-1",
                kind=EventKind.ALERT_PLAYING,
                at=clock(),
                alert_id=created["alert_id"],
                drill=False,
            )
            worker.handle([(topics.event("a-1"), event.model_dump_json().encode())])
            if not shared(context.engine):
                # SQLite: nothing told this process; on PostgreSQL the worker's NOTIFY
                # may already have. Either way the stream must show the ack.
                assert context.alerts.changes.version(created["id"]) == 0
            assert next(data)["counts"]["playing"] == 1
            client.post(f"{API}/{created['id']}/cancel", headers=headers)


def test_ids_that_do_not_exist_are_404(app_client: TestClient, officer: Officer) -> None:
    for method, url in [("GET", f"{API}/999"), ("POST", f"{API}/999/cancel")]:
        assert app_client.request(method, url, headers=officer("o1")).status_code == 404
    with Session(context_of(app_client).engine) as session:
        assert session.exec(select(AlertRecord)).all() == []


# ----------------------------------------------------------------- at fleet scale


def _event_payload(station_id: str, kind: EventKind, at: datetime, **fields: Any) -> bytes:
    return Event(station_id=station_id, kind=kind, at=at, **fields).model_dump_json().encode()


def test_a_batch_of_acks_is_applied_in_a_few_statements_and_in_order(
    app_client: TestClient, officer: Officer, clock: Clock
) -> None:
    """The ingest applies a batch of alert events together: statements per alert, not per ack.

    1,000 stations ack an alert within a second; one ORM round trip per ack kept the
    server's writer busy for seconds and the cancel waited behind it.
    """
    from sqlalchemy import event as sa_event

    headers = officer("o1")
    created = app_client.post(
        API, json=alert_body(area_codes=[PROVINCE], drill=True), headers=headers
    ).json()
    alert_id, pk, t0 = created["alert_id"], created["id"], clock.now
    common = {"alert_id": alert_id, "drill": True}
    ingestor, engine = context_of(app_client).ingestor, context_of(app_client).engine
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def batch(stations: list[str]) -> list[tuple[str, bytes]]:
        messages = []
        for sid in stations:
            for kind, seconds in [
                (EventKind.ALERT_RECEIVED, 0),
                (EventKind.ALERT_PLAYING, 1),
                (EventKind.ALERT_FINISHED, 20),
            ]:
                at = t0 + timedelta(seconds=seconds)
                messages.append((topics.event(sid), _event_payload(sid, kind, at, **common)))
        return messages

    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        ingestor.handle(batch(["a-1"]))
        one_station = len(statements)
        statements.clear()
        # Three stations in one batch, "finished" of c-1 before its "received" (MQTT does
        # not order across topics), and an ack for an alert this server never sent.
        messages = batch(["a-2", "b-1"]) + list(reversed(batch(["c-1"])))
        stray = _event_payload("a-2", EventKind.ALERT_RECEIVED, t0, alert_id="al-x", drill=True)
        ingestor.handle([*messages, (topics.event("a-2"), stray)])
        three_stations = len(statements)
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    # The event log, the stations, the alert and its delivery rows: a fixed number of
    # statements whatever the batch holds (an executemany counts once); the second
    # batch also finishes the alert (one more).
    assert three_stations == one_station + 1, (one_station, three_stations)

    detail = app_client.get(f"{API}/{pk}", headers=headers).json()
    rows = {s["station_id"]: s for s in detail["stations"]}
    assert {sid: r["state"] for sid, r in rows.items()} == dict.fromkeys(STATIONS, "finished")
    for sid in STATIONS:
        assert rows[sid]["received_at"] and rows[sid]["playing_at"] and rows[sid]["finished_at"]
    assert rows["c-1"]["playing_at"].startswith((t0 + timedelta(seconds=1)).isoformat()[:19])
    assert detail["state"] == "finished"


def test_the_cancel_is_on_the_wire_before_the_server_writes_anything(
    app_client: TestClient, officer: Officer, bus: RecordingBus
) -> None:
    """Stopping a false alarm never waits for the database (busy ingesting acks then)."""
    headers = officer("o1")
    created = app_client.post(API, json=alert_body(), headers=headers).json()
    engine = context_of(app_client).engine
    seen_at_publish: list[str] = []
    publish = bus.publish

    def spy(topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if topic.endswith("/alert"):
            with Session(engine) as session:  # what another reader sees at that instant
                record = session.get(AlertRecord, created["id"])
                assert record is not None
                seen_at_publish.append(record.state)
        publish(topic, payload, qos=qos, retain=retain)

    bus.publish = spy  # type: ignore[method-assign]
    bus.published.clear()
    cancelled = app_client.post(f"{API}/{created['id']}/cancel", headers=officer("o2"))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert seen_at_publish == ["active"]  # published first, recorded after
    assert isinstance(opened(app_client, alert_messages(bus)[0][1]).message, AlertCancel)
