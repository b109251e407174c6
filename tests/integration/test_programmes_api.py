"""Programmes through the real app: save checks, approval, plans, proposals, timelines.

Real SQLite, ffmpeg, espeak-ng (text-to-speech) and a real local HTTP server for stream
probes; a recording bus instead of MQTT and an injected clock, so the week is fixed:
"now" is Sunday 2026-12-06 22:00 in Cao Bằng.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from loaxa_protocol import Keyring, Plan, Verified, open_envelope, topics
from server.app import create_app
from server.auth.permissions import Role
from server.programmes.models import Programme
from server.reports.planned import PlannedItem
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_server_api import RecordingBus, make_settings, register, upload

NOW = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)  # Sun 22:00 local
COMMUNE_A, COMMUNE_B = "01273", "01279"
API = "/api/v1"
MON_TO_SAT = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA"


class AudioStreamHandler(BaseHTTPRequestHandler):
    """``/live.mp3`` is an MP3 stream; ``/page`` is an HTML page; anything else 404."""

    mp3 = b""

    def do_GET(self) -> None:
        if self.path == "/live.mp3":
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.end_headers()
            self.wfile.write(self.mp3)
        elif self.path == "/page":
            body = b"<html><body>VOV</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stream_server() -> Iterator[str]:
    AudioStreamHandler.mp3 = make_audio("mp3", 1.0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), AudioStreamHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
def client(tmp_path: Path, bus: RecordingBus) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path, stream_probe_timeout_s=2), bus=bus, clock=lambda: NOW)
    with TestClient(app) as test_client:
        yield authenticate(test_client)


@pytest.fixture
def world(client: TestClient) -> dict[str, Any]:
    station_a = register(client, COMMUNE_A, id="cb-st-001")
    station_b = register(client, COMMUNE_B, id="cb-st-002")
    audio = upload(client, make_audio("wav", 2.0), "ban-tin.wav")
    return {"a": station_a["station"]["id"], "b": station_b["station"]["id"], "audio": audio}


def programme(key: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "title": "Chương trình buổi sáng",
        "area": COMMUNE_A,
        "start": "2026-12-07T05:00:00",
        "rrule": MON_TO_SAT,
        "targets": {"areas": [COMMUNE_A]},
        "items": [{"kind": "silence", "seconds": 60, "title": "chờ"}],
    }
    body.update(overrides)
    return body


def token_for(client: TestClient, name: str, role: Role, area: str) -> dict[str, str]:
    return bearer(make_token(context_of(client).engine, name, (role, area)))


def latest_plan(client: TestClient, bus: RecordingBus, station_id: str) -> Plan:
    payloads = bus.on(topics.plan(station_id))
    assert payloads, f"no plan was published for {station_id}"
    keyring = Keyring.from_entries(context_of(client).keys.trusted_entries(NOW))
    opened = open_envelope(payloads[-1], keyring, NOW, {station_id})
    assert isinstance(opened, Verified) and isinstance(opened.message, Plan)
    return opened.message


def approve(client: TestClient, programme_id: int) -> dict[str, Any]:
    assert client.post(f"{API}/programmes/{programme_id}/submit").status_code == 200
    approver = token_for(client, "duyet", Role.APPROVER, COMMUNE_A)
    response = client.post(f"{API}/programmes/{programme_id}/approve", headers=approver)
    assert response.status_code == 200, response.text
    return dict(response.json())


def count_programmes(client: TestClient) -> int:
    with Session(context_of(client).engine) as session:
        return len(session.exec(select(Programme)).all())


# ------------------------------------------------------------------ the happy path


def test_a_commune_morning_airs_once_approved_with_stream_speech_and_audio(
    client: TestClient, bus: RecordingBus, world: dict[str, Any], stream_server: str
) -> None:
    body = programme(
        "sang",
        items=[
            {
                "kind": "stream",
                "url": f"{stream_server}/live.mp3",
                "window_min": 30,
                "title": "VOV1",
                "volume": 70,
                "fallback": {"audio_id": world["audio"]["id"]},
            },
            {
                "kind": "tts",
                "text": "Thông báo của Ủy ban nhân dân xã về lịch tiêm chủng.",
                "title": "Thông báo",
            },
            {
                "kind": "audio",
                "audio_id": world["audio"]["id"],
                "title": "Bản tin xã",
                "repeat": 2,
                "gap_s": 5,
                "volume": 90,
            },
        ],
    )
    created = client.post(f"{API}/programmes", json=body)
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["state"] == "draft" and view["warnings"] == []
    assert view["stations"] == [world["a"]]
    # Sunday 22:00 now: Monday to Saturday 05:00 local are the next starts (22:00 UTC).
    assert view["next_occurrences"][:2] == ["2026-12-06T22:00:00Z", "2026-12-07T22:00:00Z"]
    speech_ms = view["duration_ms"] - 30 * 60_000 - 2 * 2000 - 5000
    assert 2000 < speech_ms < 15_000, "espeak speaks one sentence in a few seconds"
    published_before = len(bus.on(topics.plan(world["a"])))
    published_b = len(bus.on(topics.plan(world["b"])))  # its first plan, at registration
    # A draft does not air.
    assert len(bus.on(topics.plan(world["a"]))) == published_before

    approve(client, view["id"])
    plan = latest_plan(client, bus, world["a"])
    items = [i for i in plan.items if i.item_id.startswith("p")]
    pid = view["id"]
    # Eight mornings (Mon 7 to Tue 15, Sunday off) fall inside the 9-day horizon: 4 items each.
    assert [i.item_id for i in items[:4]] == [
        f"p{pid}.1.1.202612070500",
        f"p{pid}.2.1.202612070500",
        f"p{pid}.3.1.202612070500",
        f"p{pid}.3.2.202612070500",
    ]
    assert len(items) == 8 * 4
    stream, speech, first, second = items[:4]
    assert stream.stream is not None and stream.window_ms == 30 * 60_000
    assert stream.stream.url == f"{stream_server}/live.mp3"
    assert stream.stream.fallback is not None and stream.volume_pct == 70
    assert stream.start_at == datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
    assert speech.audio is not None and speech.start_at == stream.end_at
    assert first.start_at == speech.end_at and first.volume_pct == 90
    assert second.start_at == first.end_at + timedelta(seconds=5)
    assert "Bản tin xã" in first.title and "(lần 2)" in second.title
    # The other commune's station was not even republished.
    assert len(bus.on(topics.plan(world["b"]))) == published_b
    # The as-run report was told what the plan carries (server.reports.planned).
    with Session(context_of(client).engine) as session:
        planned = session.exec(select(PlannedItem).where(PlannedItem.station_id == world["a"]))
        recorded = {(p.item_id, p.source) for p in planned.all()}
    assert (f"p{pid}.1.1.202612070500", "stream") in recorded
    assert (f"p{pid}.3.2.202612080500", "audio") in recorded


def test_the_timeline_shows_the_day_and_marks_drafts_and_preemption(
    client: TestClient, world: dict[str, Any]
) -> None:
    normal = client.post(
        f"{API}/programmes",
        json=programme(
            "tin",
            items=[
                {
                    "kind": "audio",
                    "audio_id": world["audio"]["id"],
                    "title": "Bản tin",
                    "repeat": 3,
                    "gap_s": 60,
                }
            ],
        ),
    ).json()
    approve(client, normal["id"])
    client.post(
        f"{API}/programmes",
        json=programme(
            "nhac",
            priority="background",
            start="2026-12-07T05:01:00",
            items=[{"kind": "silence", "seconds": 30, "title": "nghỉ"}],
        ),
    )
    urgent = client.post(
        f"{API}/programmes",
        json=programme(
            "khan",
            priority="priority",
            rrule=None,
            start="2026-12-07T05:01:00",
            items=[{"kind": "audio", "audio_id": world["audio"]["id"], "title": "Tin khẩn"}],
        ),
    ).json()
    approve(client, urgent["id"])
    timeline = client.get(f"{API}/stations/{world['a']}/timeline", params={"date": "2026-12-07"})
    assert timeline.status_code == 200, timeline.text
    entries = timeline.json()["entries"]
    rows = [(e["start_local"][11:], e["kind"], e["priority"], e["on_air"]) for e in entries]
    assert rows == [
        ("05:00:00", "audio", "normal", True),
        ("05:01:00", "audio", "priority", True),
        ("05:01:00", "silence", "background", False),
        ("05:01:02", "audio", "normal", True),
        ("05:02:04", "audio", "normal", True),
    ]
    assert entries[0]["preempted_by"] is None
    assert entries[2]["preempted_by"].startswith("khan") or "Tin khẩn" in entries[2]["preempted_by"]
    assert entries[1]["item_id"] == f"p{urgent['id']}.1.1.202612070501"
    # Sunday has nothing (Monday to Saturday only).
    sunday = client.get(f"{API}/stations/{world['a']}/timeline", params={"date": "2026-12-13"})
    assert [e for e in sunday.json()["entries"] if e["programme_id"] == normal["id"]] == []


# ------------------------------------------------------------------ save checks


def test_an_overlap_at_the_same_priority_names_both_items_and_the_local_time(
    client: TestClient, world: dict[str, Any]
) -> None:
    first = programme(
        "vov",
        title="Tiếp sóng VOV1",
        start="2026-12-07T05:00:00",
        items=[{"kind": "silence", "seconds": 1800, "title": "VOV1"}],
    )
    assert client.post(f"{API}/programmes", json=first).status_code == 201
    clash = programme(
        "huyen",
        title="Tin huyện",
        start="2026-12-09T05:20:00",
        rrule="FREQ=WEEKLY;BYDAY=WE",
        items=[{"kind": "silence", "seconds": 600, "title": "Bản tin huyện"}],
    )
    response = client.post(f"{API}/programmes", json=clash)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "station cb-st-001" in detail and "Wed 2026-12-09 05:20" in detail
    assert "'Tin huyện [huyen]' item 1 'Bản tin huyện' (05:20–05:30)" in detail
    assert "'Tiếp sóng VOV1 [vov]' item 1 'VOV1' (05:00–05:30)" in detail
    assert count_programmes(client) == 1
    # Background under a normal programme is fine: the normal one pre-empts it.
    clash["priority"] = "background"
    assert client.post(f"{API}/programmes", json=clash).status_code == 201
    # A programme that overlaps its own next occurrence clashes with itself.
    selfish = programme(
        "dai",
        start="2026-12-08T06:00:00",
        rrule="FREQ=MINUTELY;INTERVAL=5",
        items=[{"kind": "silence", "seconds": 600}],
    )
    response = client.post(f"{API}/programmes", json=selfish)
    assert response.status_code == 409 and "'dai'" not in response.json()["detail"]
    assert "06:05" in response.json()["detail"]


@pytest.mark.parametrize(
    ("rrule", "start", "expected"),
    [
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "2026-12-07T05:00:00", "never fires"),
        ("FREQ=DAILY;COUNT=3", "2026-11-01T05:00:00", "never fires after now"),
        ("FREQ=SECONDLY", "2026-12-07T05:00:00", "FREQ=SECONDLY"),
        ("FREQ=MINUTELY;BYSECOND=0,30", "2026-12-07T05:00:00", "fires every 30 s"),
        ("FREQ=WEEKLY;BYDAY=XX", "2026-12-07T05:00:00", "rrule 'FREQ=WEEKLY;BYDAY=XX'"),
        ("BYDAY=MO", "2026-12-07T05:00:00", "FREQ is missing"),
    ],
)
def test_a_rule_that_cannot_be_scheduled_is_refused_precisely(
    client: TestClient, world: dict[str, Any], rrule: str, start: str, expected: str
) -> None:
    response = client.post(f"{API}/programmes", json=programme("x", rrule=rrule, start=start))
    assert response.status_code == 422
    assert expected in response.json()["detail"]
    assert count_programmes(client) == 0


def test_streams_are_probed_not_audio_is_refused_unreachable_is_a_warning(
    client: TestClient, world: dict[str, Any], stream_server: str
) -> None:
    page = programme(
        "web", items=[{"kind": "stream", "url": f"{stream_server}/page", "window_min": 10}]
    )
    response = client.post(f"{API}/programmes", json=page)
    assert response.status_code == 422
    assert "is not audio (Content-Type 'text/html'" in response.json()["detail"]
    missing = programme(
        "missing", items=[{"kind": "stream", "url": f"{stream_server}/nope", "window_min": 10}]
    )
    response = client.post(f"{API}/programmes", json=missing)
    assert response.status_code == 422 and "HTTP 404" in response.json()["detail"]
    down = programme(
        "down", items=[{"kind": "stream", "url": "http://127.0.0.1:9/vov1", "window_min": 10}]
    )
    response = client.post(f"{API}/programmes", json=down)
    assert response.status_code == 201, response.text
    assert "could not be reached" in response.json()["warnings"][0]


def test_speech_longer_than_its_slot_is_refused(client: TestClient, world: dict[str, Any]) -> None:
    text = "Thông báo lịch cắt điện ngày mai tại các thôn Nà Rị, Bản Giới và Pác Bó. " * 3
    body = programme("loa", items=[{"kind": "tts", "text": text, "slot_s": 2}])
    response = client.post(f"{API}/programmes", json=body)
    assert response.status_code == 422
    assert "items[1]: the text takes" in response.json()["detail"]
    assert "but its slot is 2 s" in response.json()["detail"]


def test_a_commune_operator_stays_in_its_area_and_at_normal_priority(
    client: TestClient, world: dict[str, Any]
) -> None:
    operator = token_for(client, "xa-a", Role.COMMUNE_OPERATOR, COMMUNE_A)
    outside = programme("ngoai", targets={"stations": [world["a"], world["b"]]})
    response = client.post(f"{API}/programmes", json=outside, headers=operator)
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert "programme.edit" in detail and "station cb-st-002 (area 01279)" in detail
    assert "cb-st-001" not in detail.split("targets outside your area:")[1]
    high = programme("uu-tien", priority="priority")
    response = client.post(f"{API}/programmes", json=high, headers=operator)
    assert response.status_code == 403
    assert "commune operators may use normal or background only" in response.json()["detail"]
    assert count_programmes(client) == 0
    ok = client.post(f"{API}/programmes", json=programme("cua-xa"), headers=operator)
    assert ok.status_code == 201


def test_approval_needs_a_second_person_and_a_rejection_carries_its_reason(
    client: TestClient, world: dict[str, Any]
) -> None:
    created = client.post(f"{API}/programmes", json=programme("duyet")).json()
    pid = created["id"]
    assert client.post(f"{API}/programmes/{pid}/approve").status_code == 409  # still a draft
    assert client.post(f"{API}/programmes/{pid}/submit").json()["state"] == "submitted"
    self_approve = client.post(f"{API}/programmes/{pid}/approve")
    assert self_approve.status_code == 403 and "submitted this" in self_approve.json()["detail"]
    approver = token_for(client, "duyet-a", Role.APPROVER, COMMUNE_A)
    rejected = client.post(
        f"{API}/programmes/{pid}/reject", json={"reason": "sai giờ phát"}, headers=approver
    ).json()
    assert (rejected["state"], rejected["reject_reason"]) == ("rejected", "sai giờ phát")
    # The province says who approves this commune's programmes: now only a province approver.
    rule = client.put(f"{API}/approval-rules/{COMMUNE_A}", json={"approver_area_code": "04"})
    assert rule.status_code == 200, rule.text
    client.post(f"{API}/programmes/{pid}/submit")
    refused = client.post(f"{API}/programmes/{pid}/approve", headers=approver)
    assert refused.status_code == 403 and "area 04" in refused.json()["detail"]
    province = token_for(client, "duyet-tinh", Role.APPROVER, "04")
    approved = client.post(f"{API}/programmes/{pid}/approve", headers=province)
    assert approved.json()["state"] == "approved"


def test_a_change_republishes_only_the_affected_stations_and_same_body_changes_nothing(
    client: TestClient, bus: RecordingBus, world: dict[str, Any]
) -> None:
    body = programme("sua", items=[{"kind": "audio", "audio_id": world["audio"]["id"]}])
    pid = client.post(f"{API}/programmes", json=body).json()["id"]
    approve(client, pid)
    counts = {s: len(bus.on(topics.plan(s))) for s in (world["a"], world["b"])}
    same = client.put(f"{API}/programmes/{pid}", json=body)
    assert same.status_code == 200 and same.json()["changed"] is False
    assert same.json()["state"] == "approved"
    assert {s: len(bus.on(topics.plan(s))) for s in counts} == counts
    changed = client.put(f"{API}/programmes/{pid}", json={**body, "start": "2026-12-07T06:00:00"})
    assert changed.json()["state"] == "draft"  # off the air until approved again
    assert len(bus.on(topics.plan(world["a"]))) == counts[world["a"]] + 1
    assert len(bus.on(topics.plan(world["b"]))) == counts[world["b"]]
    assert not [i for i in latest_plan(client, bus, world["a"]).items if i.item_id[0] == "p"]
    # A bad change leaves the programme as it was.
    bad = client.put(f"{API}/programmes/{pid}", json={**body, "rrule": "FREQ=SECONDLY"})
    assert bad.status_code == 422
    assert client.get(f"{API}/programmes/{pid}").json()["spec"]["start"] == "2026-12-07T06:00:00"


def test_a_province_proposal_is_accepted_into_a_commune_programme(
    client: TestClient, world: dict[str, Any]
) -> None:
    proposal = programme(
        "tinh-tuan",
        area="04",
        proposal=True,
        title="Bản tin tỉnh",
        targets={"areas": ["04"]},
        start="2026-12-07T17:00:00",
    )
    created = client.post(f"{API}/programmes", json=proposal)
    assert created.status_code == 201, created.text
    operator = token_for(client, "xa-a2", Role.COMMUNE_OPERATOR, COMMUNE_A)
    listed = client.get(f"{API}/programmes", params={"proposals": True}, headers=operator).json()
    assert [p["key"] for p in listed] == ["tinh-tuan"]
    accepted = client.post(
        f"{API}/programmes/{created.json()['id']}/accept",
        json={"area_code": COMMUNE_A},
        headers=operator,
    )
    assert accepted.status_code == 201, accepted.text
    copy = accepted.json()
    assert (copy["key"], copy["area_code"], copy["proposal"], copy["state"]) == (
        f"tinh-tuan.{COMMUNE_A}",
        COMMUNE_A,
        False,
        "draft",
    )
    assert copy["stations"] == [world["a"]] and copy["proposal_of"] == created.json()["id"]
    occurrences = client.get(f"{API}/programmes/{copy['id']}/occurrences", params={"days": 7})
    assert [o["start_local"] for o in occurrences.json()][:2] == [
        "Mon 2026-12-07 17:00",
        "Tue 2026-12-08 17:00",
    ]
    assert len(occurrences.json()) == 6  # no Sunday


def test_station_groups_are_targets(client: TestClient, world: dict[str, Any]) -> None:
    group = client.post(
        f"{API}/station-groups",
        json={
            "name": "cho",
            "title": "Dọc đường chợ",
            "area_code": COMMUNE_A,
            "station_ids": [world["a"]],
        },
    )
    assert group.status_code == 201, group.text
    created = client.post(f"{API}/programmes", json=programme("nhom", targets={"groups": ["cho"]}))
    assert created.json()["stations"] == [world["a"]]
    unknown = client.post(f"{API}/programmes", json=programme("x", targets={"groups": ["chợ"]}))
    assert unknown.status_code == 422 and "unknown group(s) 'chợ'" in unknown.json()["detail"]


def test_approval_rechecks_the_slot_against_a_broadcast_booked_since(
    client: TestClient, world: dict[str, Any]
) -> None:
    body = programme("sang-som", items=[{"kind": "silence", "seconds": 600, "title": "chờ"}])
    pid = client.post(f"{API}/programmes", json=body).json()["id"]
    booked = client.post(
        f"{API}/broadcasts",
        json={
            "audio_id": world["audio"]["id"],
            "start_at": "2026-12-08T05:05:00+07:00",
            "station_ids": [world["a"]],
            "title": "Loa cưới",
        },
    )
    assert booked.status_code == 201, booked.text
    assert client.post(f"{API}/programmes/{pid}/submit").status_code == 200
    approver = token_for(client, "duyet-b", Role.APPROVER, COMMUNE_A)
    refused = client.post(f"{API}/programmes/{pid}/approve", headers=approver)
    assert refused.status_code == 409
    assert "Tue 2026-12-08 05:05" in refused.json()["detail"]
    assert "'Loa cưới'" in refused.json()["detail"]
    assert client.get(f"{API}/programmes/{pid}").json()["state"] == "submitted"
