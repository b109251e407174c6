"""The HTTP API on a real app (tmp data dir, real ffmpeg), with a recording bus instead of MQTT."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from loaxa_protocol import Keyring, Plan, Verified, open_envelope, topics
from node_firmware.config import NodeConfig
from server.app import create_app
from server.context import ServerContext
from server.passwords import verify_password
from server.settings import Settings
from tests.audio_samples import make_audio
from tests.db_rows import library_file_names, uploaded_assets
from tests.integration.auth_helpers import authenticate

PROVINCE = "04"  # Cao Bằng
COMMUNE_A, COMMUNE_B = "01273", "01279"


# ------------------------------------------------------------------ helpers


@dataclass
class RecordingBus:
    """Records publishes; the real paho path is covered in test_server_fleet.py."""

    published: list[tuple[str, bytes, int, bool]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, payload, qos, retain))

    def flush(self, timeout_s: float) -> None:
        """Nothing waits: publish kept it already."""

    def on(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _q, _r in self.published if t == topic]


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "server",
        "public_url": "http://testserver",
        "plan_refresh_min": 0,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture
def client(tmp_path: Path, bus: RecordingBus) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path), bus=bus)) as test_client:
        yield authenticate(test_client)


def context_of(client: TestClient) -> ServerContext:
    context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
    return context


def register(client: TestClient, area_code: str = COMMUNE_A, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "Cụm loa thôn Nà Rị",
        "area_code": area_code,
        "latitude": 22.66,
        "longitude": 106.25,
    }
    response = client.post("/api/v1/stations", json={**body, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


def upload(client: TestClient, data: bytes, filename: str, expect: int = 201) -> dict[str, Any]:
    response = client.post("/api/v1/audio", files={"file": (filename, data)})
    assert response.status_code == expect, response.text
    return dict(response.json())


def in_future(minutes: float = 30) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def stored_files(client: TestClient) -> list[Path]:
    """Audio files the store holds beyond the canned alert library seeded at start."""
    context = context_of(client)
    root = context.settings.audio_dir
    library = library_file_names(context.engine)
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and p.name.split(".")[0] not in library]


# --------------------------------------------------------------- stations


def test_registration_returns_credentials_and_a_node_config_that_loads(client: TestClient) -> None:
    registered = register(client, id="cb-st-001")
    station, mqtt = registered["station"], registered["mqtt"]
    assert station["id"] == "cb-st-001"
    assert station["status"] == "unknown"
    assert mqtt["username"] == "cb-st-001" and len(mqtt["password"]) >= 24

    config = NodeConfig.model_validate(registered["node_config"])
    assert config.station_id == "cb-st-001"
    assert config.areas == [COMMUNE_A, PROVINCE]
    assert config.mqtt.username == "cb-st-001"
    assert config.mqtt.password == mqtt["password"]
    assert config.relay.driver == "none"
    assert str(config.data_dir) == "/var/lib/loaxa-node"
    keys = context_of(client).keys
    assert [(k.kid, k.public_key, k.purposes) for k in config.trusted_keys] == [
        (
            keys.signing_key.kid,
            keys.signing_key.public_b64,
            ["command", "live_start", "live_stop", "plan", "trust"],
        ),
        (keys.alert_key.kid, keys.alert_key.public_b64, ["alert", "alert_cancel"]),
    ]

    # Only the hash is kept, in Mosquitto's format; the password is not in the station view.
    shown = client.get("/api/v1/stations/cb-st-001").json()
    assert "mqtt_password_hash" not in shown and "password" not in str(shown)
    from sqlmodel import Session

    from server.models import Station

    with Session(context_of(client).engine) as session:
        row = session.get(Station, "cb-st-001")
        assert row is not None
        assert row.mqtt_password_hash.startswith("$7$")
        assert verify_password(mqtt["password"], row.mqtt_password_hash)


def test_station_ids_are_generated_from_the_area_and_listed(client: TestClient) -> None:
    first = register(client)["station"]["id"]
    second = register(client)["station"]["id"]
    assert (first, second) == (f"st-{COMMUNE_A}-001", f"st-{COMMUNE_A}-002")
    listed = client.get("/api/v1/stations").json()
    assert [s["id"] for s in listed] == [first, second]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"area_code": "99999"}, 422, "area_code '99999' is not a known area"),
        ({"id": "Bad Id!"}, 422, "id 'Bad Id!' must be"),
        ({"latitude": 123}, 422, "latitude"),
        ({"name": ""}, 422, "name"),
    ],
)
def test_bad_registrations_name_the_field(
    client: TestClient, body: dict[str, Any], status: int, needle: str
) -> None:
    base = {"name": "Cụm loa", "area_code": COMMUNE_A, "latitude": 22.6, "longitude": 106.2}
    response = client.post("/api/v1/stations", json={**base, **body})
    assert response.status_code == status
    assert needle in response.json()["detail"]


def test_duplicate_station_and_unknown_station(client: TestClient) -> None:
    register(client, id="cb-st-001")
    response = client.post(
        "/api/v1/stations",
        json={
            "id": "cb-st-001",
            "name": "x",
            "area_code": COMMUNE_A,
            "latitude": 0,
            "longitude": 0,
        },
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "station 'cb-st-001' already exists"}
    missing = client.get("/api/v1/stations/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "station 'nope' does not exist"}


def test_cao_bang_is_seeded_with_its_56_communes_and_wards(client: TestClient) -> None:
    communes = client.get("/api/v1/areas", params={"parent_code": PROVINCE}).json()
    assert len(communes) == 56
    assert {a["level"] for a in communes} == {"commune"}
    assert client.get(f"/api/v1/areas/{PROVINCE}").json()["name"] == "Cao Bằng"


# ------------------------------------------------------------------ audio


def test_upload_wav_and_mp3_normalises_and_repeats_are_recognised(client: TestClient) -> None:
    wav = make_audio("wav", 2.0)
    first = upload(client, wav, "ban-tin.wav")
    assert first["created"] is True
    assert first["duration_ms"] == pytest.approx(2000, abs=60)
    assert -20 < first["lufs_after"] <= -15  # aims at -16 LUFS; the pipeline decides exactly
    assert first["true_peak_after_dbtp"] <= -0.9
    assert first["lufs_before"] is not None and first["true_peak_before_dbtp"] < 0
    assert len(first["sha256"]) == 64

    again = upload(client, wav, "same-again.wav", expect=200)
    assert (again["id"], again["created"]) == (first["id"], False)

    mp3 = upload(client, make_audio("mp3", 1.5), "ban-tin.mp3")
    assert mp3["id"] != first["id"]
    assert mp3["duration_ms"] == pytest.approx(1500, abs=80)

    meta = client.get(f"/api/v1/audio/{first['id']}").json()
    assert meta["sha256"] == first["sha256"]
    assert meta["original_filename"] == "ban-tin.wav"
    stored = context_of(client).store.path(first["sha256"])
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == first["sha256"]


@pytest.mark.parametrize(
    ("data", "filename", "needle"),
    [
        (b"", "empty.wav", "empty"),
        (b"ID3" + os.urandom(4000), "hong.mp3", "hong.mp3"),
        (make_audio("wav", 1.0)[:30], "truncated.wav", "truncated.wav"),
        ("Thông báo của UBND xã".encode(), "thong-bao.txt", "thong-bao.txt"),
    ],
    ids=["empty", "corrupt-mp3", "truncated-wav", "text-file"],
)
def test_bad_uploads_are_refused_clearly_and_store_nothing(
    client: TestClient, data: bytes, filename: str, needle: str
) -> None:
    response = client.post("/api/v1/audio", files={"file": (filename, data)})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert needle in detail and "Traceback" not in detail
    assert stored_files(client) == []
    assert uploaded_assets(context_of(client).engine) == []


def test_oversized_uploads_get_413_whether_or_not_length_is_declared(
    tmp_path: Path, bus: RecordingBus
) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=20_000)
    with TestClient(create_app(settings, bus=bus)) as client:
        authenticate(client)
        big = make_audio("wav", 1.0)  # ~88 kB
        declared = client.post("/api/v1/audio", files={"file": ("big.wav", big)})
        assert declared.status_code == 413
        assert "20000 bytes" in declared.json()["detail"]
        assert "max_upload_bytes" in declared.json()["detail"]

        # Chunked, no Content-Length: refused once the body passes the limit.
        boundary = "loaxa-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()

        def body() -> Iterator[bytes]:
            yield head
            for _ in range(20):
                yield b"\0" * 16_384
            yield f"\r\n--{boundary}--\r\n".encode()

        chunked = client.post(
            "/api/v1/audio",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert chunked.status_code == 413
        assert "max_upload_bytes" in chunked.json()["detail"]
        small = upload(client, make_audio("wav", 0.2, rate=8000), "small.wav")  # still accepted
        assert small["created"]
        assert len(stored_files(client)) == 1


def test_audio_content_needs_a_valid_unexpired_signature_and_supports_range(
    client: TestClient,
) -> None:
    asset = upload(client, make_audio("wav", 1.0), "ban-tin.wav")
    context = context_of(client)
    now = datetime.now(UTC)
    url = context.keys.urls.sign_url(asset["id"], timedelta(hours=1), now)
    path = url.removeprefix("http://testserver")

    full = client.get(path)
    assert full.status_code == 200
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["etag"] == f'"{asset["sha256"]}"'
    assert hashlib.sha256(full.content).hexdigest() == asset["sha256"]
    size = asset["size_bytes"]

    part = client.get(path, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 0-99/{size}"
    assert part.content == full.content[:100]
    resumed = client.get(path, headers={"Range": "bytes=100-"})
    assert resumed.status_code == 206
    assert part.content + resumed.content == full.content
    beyond = client.get(path, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"

    query = dict(p.split("=") for p in urlsplit(url).query.split("&"))
    base = f"/api/v1/audio/{asset['id']}/content"
    unsigned = client.get(base)
    assert unsigned.status_code == 403 and "signed URL" in unsigned.json()["detail"]
    forged = client.get(base, params={"exp": query["exp"], "sig": "0" * 64})
    assert forged.status_code == 403 and "bad signature" in forged.json()["detail"]
    other_audio = client.get(f"/api/v1/audio/{asset['id'] + 1}/content", params=query)
    assert other_audio.status_code == 403  # a signature is bound to one audio id
    stale = context.keys.urls.sign_url(asset["id"], timedelta(hours=1), now - timedelta(hours=2))
    expired = client.get(stale.removeprefix("http://testserver"))
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]


# ------------------------------------------------------------- broadcasts


@pytest.fixture
def scheduled(client: TestClient) -> dict[str, Any]:
    """Two stations in two communes of Cao Bằng and one uploaded bulletin."""
    a = register(client, COMMUNE_A, id="cb-st-001")
    b = register(client, COMMUNE_B, id="cb-st-002")
    audio = upload(client, make_audio("wav", 1.0), "ban-tin.wav")
    return {"a": a, "b": b, "audio": audio}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"start_at": "2030-07-01T05:00:00"}, "start_at must include a timezone offset"),
        ({"start_at": "2020-07-01T05:00:00+07:00"}, "is in the past"),
        ({"start_at": "tomorrow"}, "start_at"),
        ({"station_ids": ["cb-st-001", "ghost-1"]}, "unknown station(s) 'ghost-1'"),
        ({"station_ids": [], "area_codes": ["77777"]}, "unknown area(s) '77777'"),
        (
            {"station_ids": [], "area_codes": ["01288"]},
            "no station is registered in area(s) '01288'",
        ),
        ({"station_ids": []}, "no target"),
        ({"audio_id": 999}, "audio_id 999 does not exist"),
        ({"priority": "urgent"}, "priority"),
    ],
)
def test_bad_broadcasts_are_422_naming_the_problem(
    client: TestClient,
    scheduled: dict[str, Any],
    bus: RecordingBus,
    change: dict[str, Any],
    needle: str,
) -> None:
    before = len(bus.published)
    body = {
        "audio_id": scheduled["audio"]["id"],
        "start_at": in_future(),
        "station_ids": ["cb-st-001"],
        "title": "Bản tin sáng",
        **change,
    }
    response = client.post("/api/v1/broadcasts", json=body)
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]
    assert len(bus.published) == before
    assert client.get("/api/v1/broadcasts").json() == []


def open_plan(raw: bytes, registered: dict[str, Any]) -> Plan:
    keyring = Keyring()
    for key in registered["trusted_keys"]:
        keyring.add(key["kid"], key["public_key"], set(key["purposes"]))
    station_id = registered["station"]["id"]
    opened = open_envelope(raw, keyring, datetime.now(UTC), {station_id})
    assert isinstance(opened, Verified), opened
    assert isinstance(opened.message, Plan)
    return opened.message


def test_a_broadcast_publishes_a_signed_plan_to_every_targeted_station(
    client: TestClient, scheduled: dict[str, Any], bus: RecordingBus
) -> None:
    a, b, audio = scheduled["a"], scheduled["b"], scheduled["audio"]
    bus.published.clear()
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    response = client.post(
        "/api/v1/broadcasts",
        json={
            "audio_id": audio["id"],
            "start_at": start.astimezone(datetime.now().astimezone().tzinfo).isoformat(),
            "area_codes": [PROVINCE],  # the whole province: both communes
            "priority": "priority",
            "title": "Thông báo lịch tiêm chủng",
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert datetime.fromisoformat(created["start_at"]) == start
    assert [t["station_id"] for t in created["targets"]] == ["cb-st-001", "cb-st-002"]
    assert created["counts"]["planned"] == 2

    assert {(t, q, r) for t, _p, q, r in bus.published} == {
        (topics.plan("cb-st-001"), 1, True),
        (topics.plan("cb-st-002"), 1, True),
    }
    plan = open_plan(bus.on(topics.plan("cb-st-001"))[-1], a)
    (item,) = plan.items
    assert item.item_id == f"b-{created['id']}"
    assert item.start_at == start
    assert item.priority == "priority"
    assert item.title == "Thông báo lịch tiêm chủng"
    assert (item.audio.sha256, item.audio.size_bytes) == (audio["sha256"], audio["size_bytes"])
    assert item.audio.duration_ms == audio["duration_ms"]
    # The plan's URL is the station's way to the bytes.
    got = client.get(
        item.audio.url.removeprefix("http://testserver"), headers={"Range": "bytes=0-9"}
    )
    assert got.status_code == 206 and len(got.content) == 10

    # A plan for B does not open as A's (misaddressed), and A's next plan has both items.
    plan_b_raw = bus.on(topics.plan("cb-st-002"))[-1]
    assert open_plan(plan_b_raw, b).station_id == "cb-st-002"
    later = client.post(
        "/api/v1/broadcasts",
        json={"audio_id": audio["id"], "start_at": in_future(60), "station_ids": ["cb-st-001"]},
    ).json()
    second = open_plan(bus.on(topics.plan("cb-st-001"))[-1], a)
    assert [i.item_id for i in second.items] == [f"b-{later['id']}", f"b-{created['id']}"]
    assert second.seq > plan.seq
    assert len(bus.on(topics.plan("cb-st-002"))) == 1  # B was not affected


def test_station_events_show_up_in_the_broadcast_view_and_event_log(
    client: TestClient, scheduled: dict[str, Any]
) -> None:
    from loaxa_protocol import Event, EventKind

    created = client.post(
        "/api/v1/broadcasts",
        json={
            "audio_id": scheduled["audio"]["id"],
            "start_at": in_future(1),
            "station_ids": ["cb-st-001", "cb-st-002"],
        },
    ).json()
    item = f"b-{created['id']}"
    started = datetime.now(UTC) + timedelta(minutes=1)
    finished = started + timedelta(seconds=1)

    def report(station_id: str, kind: EventKind, **fields: Any) -> tuple[str, bytes]:
        message = Event(station_id=station_id, kind=kind, at=datetime.now(UTC), **fields)
        return topics.event(station_id), message.model_dump_json().encode()

    context_of(client).ingestor.handle(
        [
            report("cb-st-001", EventKind.PLAN_ACCEPTED, item_id=item),
            report(
                "cb-st-001",
                EventKind.PLAYED,
                item_id=item,
                started_at=started,
                finished_at=finished,
            ),
            report(
                "cb-st-002", EventKind.AUDIO_FAILED, item_id=item, reason="fetch", detail="HTTP 403"
            ),
            report("cb-st-002", EventKind.REJECTED, reason="bad_signature", detail="forged"),
        ]
    )
    view = client.get(f"/api/v1/broadcasts/{created['id']}").json()
    by_station = {t["station_id"]: t for t in view["targets"]}
    a, b = by_station["cb-st-001"], by_station["cb-st-002"]
    assert a["state"] == "played"
    assert datetime.fromisoformat(a["started_at"]) == started
    assert datetime.fromisoformat(a["finished_at"]).utcoffset() == timedelta(0)
    assert a["delivered_at"] is not None
    assert (b["state"], b["reason"], b["detail"]) == ("failed", "fetch", "HTTP 403")
    assert view["counts"] == {
        "planned": 0,
        "delivered": 0,
        "fetched": 0,
        "playing": 0,
        "played": 1,
        "failed": 1,
        "interrupted": 0,
    }

    log = client.get("/api/v1/stations/cb-st-002/events").json()
    assert [(e["kind"], e["reason"]) for e in log] == [
        ("rejected", "bad_signature"),
        ("audio_failed", "fetch"),
    ]
    assert client.get("/api/v1/stations/ghost/events").status_code == 404

    page = client.get(f"/broadcasts/{created['id']}")
    assert page.status_code == 200
    assert '<meta charset="utf-8">' in page.text
    assert "Đã phát xong" in page.text and "cb-st-002" in page.text
    index = client.get("/")
    assert index.status_code == 200 and "Cụm loa" in index.text


def test_start_up_republishes_every_plan(tmp_path: Path) -> None:
    """Retained plans must be fresh after a restart (broker may have lost them)."""
    settings = make_settings(tmp_path)
    first_bus = RecordingBus()
    with TestClient(create_app(settings, bus=first_bus)) as client:
        register(authenticate(client), id="cb-st-001")
    second_bus = RecordingBus()
    with TestClient(create_app(settings, bus=second_bus)):
        pass
    assert [t for t, *_ in second_bus.published] == [topics.plan("cb-st-001")]


def test_errors_are_json_without_stack_traces(client: TestClient) -> None:
    bad_json = client.post(
        "/api/v1/broadcasts", content=b"{", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422
    assert isinstance(bad_json.json()["detail"], str)
    missing = client.get("/api/v1/broadcasts/12345")
    assert missing.json() == {"detail": "broadcast 12345 does not exist"}
