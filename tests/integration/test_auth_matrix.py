"""Every role × every endpoint, inside and outside the role's area, on a real app.

Each role is granted in commune A (01273). For every endpoint the test makes one
request about commune A and, when the endpoint is about an area, one about commune B
(01279): the answer must be a success exactly when the role's actions include the
endpoint's action, and always 403 for B. The expected answer comes from ROLE_ACTIONS,
which test_auth_permissions.py pins to the specification; here the question is whether
each endpoint asks the check the right question. A route missing from CASES fails
``test_the_matrix_covers_every_route``, so a new endpoint cannot skip this.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from loaxa_protocol import SigningKey
from loaxa_protocol.enrolment import new_station_key, public_key_text
from loaxa_protocol.release import ReleaseFile, ReleaseManifest, sign_manifest
from server.app import create_app
from server.auth.models import ApiToken
from server.auth.permissions import ROLE_ACTIONS, Action, Role
from server.auth.service import find_user
from server.health.models import Alarm
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_server_api import RecordingBus, make_settings

COMMUNE_A, COMMUNE_B = "01273", "01279"
RELEASE_KEY = SigningKey.generate("release", frozenset({"release"}))


def release_upload(version: str) -> dict[str, Any]:
    """A signed release of one tiny file (the server checks signatures and hashes only)."""
    data = f"wheel {version}".encode()
    name = f"loaxa_node-{version}-py3-none-any.whl"
    manifest = ReleaseManifest(
        version=version, created_at=datetime.now(UTC),
        files=[ReleaseFile(name=name, sha256=hashlib.sha256(data).hexdigest(),
                           size_bytes=len(data))],
    )  # fmt: skip
    return {
        "data": {"manifest": sign_manifest(manifest, RELEASE_KEY)},
        "files": [("files", (name, data))],
    }


STATION = {COMMUNE_A: "cb-st-001", COMMUNE_B: "cb-st-002"}
SMALL_WAV = make_audio("wav", 0.2, rate=8000)


@dataclass
class World:
    """Objects on both sides of the line, made by a province admin."""

    audio_id: int
    broadcast: dict[str, int]  # area → a broadcast reaching only that area
    user: dict[str, int]  # area → a viewer in that area (tokens, renames, new grants)
    removable: dict[str, int]  # area → a viewer in that area whose grant a case removes
    token: dict[str, int]  # area → a token of ``user[area]``
    command: dict[str, int]  # area → a command sent to that area's station
    alarm: dict[str, int] = field(default_factory=dict)  # area → an open alarm at its station
    alert: dict[str, dict[str, int]] = field(default_factory=dict)  # area → use → alert id
    programme: dict[str, dict[str, Any]] = field(default_factory=dict)  # area → use → id / body
    enrolment: dict[str, dict[str, int]] = field(default_factory=dict)  # area → use → request
    release: int = 0  # a stored release (its upload is a case too)
    rollout: dict[str, int] = field(default_factory=dict)  # area → a running rollout there
    live: dict[str, str] = field(default_factory=dict)  # area → a live session on air there


Request = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    method: str
    route: str
    action: Action
    build: Callable[[World, str], Request]
    """(world, area) → (method, url, httpx kwargs) for an object in ``area``"""
    scoped: bool = True
    whole_system: bool = False
    """needs the action over every province: a grant in one commune never suffices"""


def in_future(minutes: float = 30) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def broadcast_body(world: World, area: str, priority: str) -> dict[str, Any]:
    return {
        "audio_id": world.audio_id,
        "start_at": in_future(),
        "station_ids": [STATION[area]],
        "priority": priority,
    }


def bulk_station(area: str) -> dict[str, Any]:
    """A new station for the bulk registration: its own id every time it is asked."""
    return {
        "id": f"bulk-{uuid.uuid4().hex[:8]}",
        "name": "Cụm loa",
        "area_code": area,
        "latitude": 22.6,
        "longitude": 106.2,
    }


def live_body(area: str) -> dict[str, Any]:
    return {"title": "Thông báo họp", "targets": {"stations": [STATION[area]]}}


def alert_body(area: str) -> dict[str, Any]:
    return {"title": "Lũ quét", "canned": "flood", "station_ids": [STATION[area]]}


def cap_xml(area: str) -> bytes:
    return f"""<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>matrix-{area}</identifier><sender>kttv@example.vn</sender>
  <sent>2026-09-01T05:00:00+07:00</sent><status>Exercise</status><msgType>Alert</msgType>
  <scope>Public</scope>
  <info><category>Met</category><event>Lũ</event><urgency>Immediate</urgency>
    <severity>Severe</severity><certainty>Observed</certainty><headline>Lũ quét</headline>
    <area><areaDesc>x</areaDesc><geocode><valueName>VN-ADMIN</valueName>
      <value>{area}</value></geocode></area></info>
</alert>""".encode()


def programme_body(area: str, key: str, hours: int) -> dict[str, Any]:
    """A one-off minute of silence on the area's station, ``hours`` apart from the others."""
    return {
        "key": key,
        "title": f"Chương trình {key}",
        "area": area,
        "start": (datetime.now(UTC) + timedelta(days=2, hours=hours)).isoformat(),
        "targets": {"stations": [STATION[area]]},
        "items": [{"kind": "silence", "seconds": 60}],
    }


def programme_case(method: str, suffix: str, action: Action, use: str, body: Any = None) -> Case:
    """A case on ``/programmes/{programme_id}<suffix>`` about the area's ``use`` programme."""
    return Case(
        method,
        f"{API}/programmes/{{programme_id}}{suffix}",
        action,
        lambda w, area: (
            method,
            f"{API}/programmes/{w.programme[area][use]}{suffix}",
            {"json": body(w, area) if callable(body) else body} if body is not None else {},
        ),
    )


def get(url: str) -> Callable[[World, str], Request]:
    return lambda _w, _area: ("GET", url, {})


API = "/api/v1"


def enrolment_case(suffix: str, body: Any = None) -> Case:
    """Approve or reject a station waiting with a claim code of the area."""
    use = suffix.rsplit("/", 1)[-1]
    return Case(
        "POST",
        f"{API}/enrolment/requests/{{request_id}}{suffix}",
        Action.STATION_REGISTER,
        lambda w, area: (
            "POST",
            f"{API}/enrolment/requests/{w.enrolment[area][use]}{suffix}",
            {"json": {**body, "area_code": area}} if body is not None else {},
        ),
    )


CASES = [
    Case("GET", f"{API}/areas", Action.AREA_READ, get(f"{API}/areas"), scoped=False),
    Case("GET", f"{API}/areas/{{code}}", Action.AREA_READ, get(f"{API}/areas/04"), scoped=False),
    Case("GET", f"{API}/stations", Action.STATION_READ, get(f"{API}/stations"), scoped=False),
    Case(
        "GET",
        f"{API}/stations/{{station_id}}",
        Action.STATION_READ,
        lambda w, area: ("GET", f"{API}/stations/{STATION[area]}", {}),
    ),
    Case(
        "GET",
        f"{API}/stations/{{station_id}}/events",
        Action.STATION_READ,
        lambda w, area: ("GET", f"{API}/stations/{STATION[area]}/events", {}),
    ),
    Case(
        "POST",
        f"{API}/stations",
        Action.STATION_REGISTER,
        lambda w, area: (
            "POST",
            f"{API}/stations",
            {"json": {"name": "Cụm loa", "area_code": area, "latitude": 22.6, "longitude": 106.2}},
        ),
    ),
    Case(
        "POST",
        f"{API}/stations/bulk",
        Action.STATION_REGISTER,
        lambda w, area: (
            "POST",
            f"{API}/stations/bulk",
            {"json": {"stations": [bulk_station(area)]}},
        ),
    ),
    Case(
        "POST",
        f"{API}/audio",
        Action.AUDIO_UPLOAD,
        lambda w, area: ("POST", f"{API}/audio", {"files": {"file": ("a.wav", SMALL_WAV)}}),
        scoped=False,
    ),
    Case(
        "POST",
        f"{API}/audio/tts",
        Action.AUDIO_UPLOAD,
        lambda w, area: ("POST", f"{API}/audio/tts", {"json": {"text": "Xin chào bà con."}}),
        scoped=False,
    ),
    Case(
        "GET",
        f"{API}/reports/as-run",
        Action.BROADCAST_READ,
        lambda w, area: ("GET", f"{API}/reports/as-run", {"params": {"area": area}}),
    ),
    Case(
        "GET",
        f"{API}/audio/{{audio_id}}",
        Action.AUDIO_READ,
        lambda w, area: ("GET", f"{API}/audio/{w.audio_id}", {}),
        scoped=False,
    ),
    Case("GET", f"{API}/broadcasts", Action.BROADCAST_READ, get(f"{API}/broadcasts"), scoped=False),
    Case(
        "GET",
        f"{API}/broadcasts/{{broadcast_id}}",
        Action.BROADCAST_READ,
        lambda w, area: ("GET", f"{API}/broadcasts/{w.broadcast[area]}", {}),
    ),
    *(
        Case(
            "POST",
            f"{API}/broadcasts",
            action,
            lambda w, area, p=priority: (
                "POST",
                f"{API}/broadcasts",
                {"json": broadcast_body(w, area, p)},
            ),
        )
        for priority, action in [
            ("normal", Action.BROADCAST_CREATE),
            ("background", Action.BROADCAST_CREATE),
            ("priority", Action.BROADCAST_CREATE_PRIORITY),
            ("live", Action.BROADCAST_CREATE_PRIORITY),
        ]
    ),
    Case("GET", f"{API}/system", Action.SYSTEM_READ, get(f"{API}/system"), scoped=False),
    Case("GET", f"{API}/users", Action.USER_MANAGE, get(f"{API}/users"), scoped=False),
    Case(
        "POST",
        f"{API}/users",
        Action.USER_MANAGE,
        lambda w, area: (
            "POST",
            f"{API}/users",
            {
                "json": {
                    "username": f"new-{area}",
                    "grants": [{"role": "viewer", "area_code": area}],
                }
            },
        ),
    ),
    Case(
        "POST",
        f"{API}/users/{{user_id}}/grants",
        Action.USER_MANAGE,
        lambda w, area: (
            "POST",
            f"{API}/users/{w.user[COMMUNE_A]}/grants",
            {"json": {"role": "approver", "area_code": area}},
        ),
    ),
    Case(
        "DELETE",
        f"{API}/users/{{user_id}}/grants",
        Action.USER_MANAGE,
        lambda w, area: (
            "DELETE",
            f"{API}/users/{w.removable[area]}/grants",
            {"params": {"role": "viewer", "area_code": area}},
        ),
    ),
    Case(
        "PATCH",
        f"{API}/users/{{user_id}}",
        Action.USER_MANAGE,
        lambda w, area: (
            "PATCH",
            f"{API}/users/{w.user[area]}",
            {"json": {"display_name": "Tên mới"}},
        ),
    ),
    Case("GET", f"{API}/tokens", Action.TOKEN_MANAGE, get(f"{API}/tokens"), scoped=False),
    Case(
        "POST",
        f"{API}/tokens",
        Action.TOKEN_MANAGE,
        lambda w, area: ("POST", f"{API}/tokens", {"json": {"name": "x", "user_id": w.user[area]}}),
    ),
    Case(
        "DELETE",
        f"{API}/tokens/{{token_id}}",
        Action.TOKEN_MANAGE,
        lambda w, area: ("DELETE", f"{API}/tokens/{w.token[area]}", {}),
    ),
    Case("GET", f"{API}/audit", Action.AUDIT_READ, get(f"{API}/audit"), scoped=False),
    Case(
        "GET", f"{API}/audit/export.csv", Action.AUDIT_READ, get(f"{API}/audit/export.csv"), False
    ),
    Case("GET", f"{API}/audit/verify", Action.AUDIT_READ, get(f"{API}/audit/verify"), False),
    Case("GET", f"{API}/keys", Action.SYSTEM_READ, get(f"{API}/keys"), scoped=False),
    Case("GET", f"{API}/alarms", Action.ALARM_READ, get(f"{API}/alarms"), scoped=False),
    Case(
        "GET",
        f"{API}/alarms/{{alarm_id}}",
        Action.ALARM_READ,
        lambda w, area: ("GET", f"{API}/alarms/{w.alarm[area]}", {}),
    ),
    Case(
        "POST",
        f"{API}/alarms/{{alarm_id}}/acknowledge",
        Action.ALARM_ACK,
        lambda w, area: (
            "POST",
            f"{API}/alarms/{w.alarm[area]}/acknowledge",
            {"json": {"note": "on my way"}},
        ),
    ),
    Case(
        "GET",
        f"{API}/stations/{{station_id}}/health",
        Action.STATION_READ,
        lambda w, area: ("GET", f"{API}/stations/{STATION[area]}/health", {}),
    ),
    Case("GET", f"{API}/fleet/summary", Action.STATION_READ, get(f"{API}/fleet/summary"), False),
    Case(
        "POST",
        f"{API}/stations/{{station_id}}/commands",
        Action.STATION_COMMAND,
        lambda w, area: (
            "POST",
            f"{API}/stations/{STATION[area]}/commands",
            {"json": {"name": "set_volume", "args": {"percent": 50}}},
        ),
    ),
    Case(
        "GET",
        f"{API}/stations/{{station_id}}/commands",
        Action.STATION_READ,
        lambda w, area: ("GET", f"{API}/stations/{STATION[area]}/commands", {}),
    ),
    Case(
        "GET",
        f"{API}/stations/{{station_id}}/commands/{{command_id}}",
        Action.STATION_READ,
        lambda w, area: ("GET", f"{API}/stations/{STATION[area]}/commands/{w.command[area]}", {}),
    ),
    Case("GET", f"{API}/alerts", Action.BROADCAST_READ, get(f"{API}/alerts"), scoped=False),
    Case("GET", f"{API}/alerts/canned", Action.AUDIO_READ, get(f"{API}/alerts/canned"), False),
    *(
        Case(
            "POST",
            f"{API}/alerts{suffix}",
            Action.ALERT_SEND,
            lambda w, area, s=suffix: ("POST", f"{API}/alerts{s}", {"json": alert_body(area)}),
        )
        for suffix in ("", "/preview")
    ),
    Case(
        "POST",
        f"{API}/alerts/cap",
        Action.ALERT_SEND,
        lambda w, area: ("POST", f"{API}/alerts/cap", {"content": cap_xml(area)}),
    ),
    *(
        Case(
            "GET",
            f"{API}/alerts/{{alert_pk}}{suffix}",
            Action.BROADCAST_READ,
            lambda w, area, s=suffix: ("GET", f"{API}/alerts/{w.alert[area]['read']}{s}", {}),
        )
        for suffix in ("", "/stream", "/report.csv")
    ),
    *(
        Case(
            "POST",
            f"{API}/alerts/{{alert_pk}}/{use}",
            action,
            lambda w, area, u=use: ("POST", f"{API}/alerts/{w.alert[area][u]}/{u}", {}),
        )
        for use, action in [("confirm", Action.ALERT_CONFIRM), ("cancel", Action.ALERT_CANCEL)]
    ),
    Case(
        "POST",
        f"{API}/programmes",
        Action.PROGRAMME_EDIT,
        lambda w, area: (
            "POST",
            f"{API}/programmes",
            {"json": programme_body(area, f"new-{area}", 20)},
        ),
    ),
    Case(
        "POST",
        f"{API}/programmes/batch",
        Action.PROGRAMME_EDIT,
        lambda w, area: (
            "POST",
            f"{API}/programmes/batch",
            {"json": {"programmes": [programme_body(area, f"batch-{area}", 21)]}},
        ),
    ),
    Case("GET", f"{API}/programmes", Action.BROADCAST_READ, get(f"{API}/programmes"), False),
    programme_case("GET", "", Action.BROADCAST_READ, "read"),
    programme_case("GET", "/occurrences", Action.BROADCAST_READ, "read"),
    programme_case("PUT", "", Action.PROGRAMME_EDIT, "read", lambda w, a: w.programme[a]["body"]),
    programme_case("POST", "/submit", Action.PROGRAMME_EDIT, "submit"),
    programme_case("POST", "/approve", Action.PROGRAMME_APPROVE, "approve"),
    programme_case("POST", "/reject", Action.PROGRAMME_APPROVE, "reject", {"reason": "sai giờ"}),
    programme_case("POST", "/archive", Action.PROGRAMME_EDIT, "archive"),
    programme_case(
        "POST", "/accept", Action.PROGRAMME_EDIT, "proposal", lambda w, a: {"area_code": a}
    ),
    Case(
        "GET",
        f"{API}/stations/{{station_id}}/timeline",
        Action.STATION_READ,
        lambda w, area: ("GET", f"{API}/stations/{STATION[area]}/timeline", {}),
    ),
    Case("GET", f"{API}/station-groups", Action.STATION_READ, get(f"{API}/station-groups"), False),
    Case(
        "POST",
        f"{API}/station-groups",
        Action.PROGRAMME_EDIT,
        lambda w, area: (
            "POST",
            f"{API}/station-groups",
            {"json": {"name": "g-new", "area_code": area, "station_ids": [STATION[area]]}},
        ),
    ),
    Case(
        "PUT",
        f"{API}/station-groups/{{group_id}}",
        Action.PROGRAMME_EDIT,
        lambda w, area: (
            "PUT",
            f"{API}/station-groups/{w.programme[area]['group']}",
            {"json": {"station_ids": [STATION[area]]}},
        ),
    ),
    Case(
        "DELETE",
        f"{API}/station-groups/{{group_id}}",
        Action.PROGRAMME_EDIT,
        lambda w, area: ("DELETE", f"{API}/station-groups/{w.programme[area]['group']}", {}),
    ),
    Case("GET", f"{API}/approval-rules", Action.AREA_READ, get(f"{API}/approval-rules"), False),
    Case(
        "PUT",
        f"{API}/approval-rules/{{area_code}}",
        Action.USER_MANAGE,
        lambda w, area: (
            "PUT",
            f"{API}/approval-rules/{area}",
            {"json": {"approver_area_code": area}},
        ),
    ),
    Case(
        "POST",
        f"{API}/keys/rotate",
        Action.KEYS_MANAGE,
        lambda w, area: ("POST", f"{API}/keys/rotate", {"json": {"grace_hours": 24}}),
        scoped=False,
        whole_system=True,
    ),
    Case(
        "POST",
        f"{API}/enrolment/claim-codes",
        Action.STATION_REGISTER,
        lambda w, area: (
            "POST",
            f"{API}/enrolment/claim-codes",
            {"json": {"area_code": area, "count": 1}},
        ),
    ),
    Case(
        "GET",
        f"{API}/enrolment/requests",
        Action.STATION_REGISTER,
        get(f"{API}/enrolment/requests"),
        scoped=False,
    ),
    enrolment_case("/approve", {"name": "Cụm loa mới", "latitude": 22.6, "longitude": 106.2}),
    enrolment_case("/reject"),
]

CASES += [
    Case("GET", f"{API}/live/sessions", Action.STATION_READ, get(f"{API}/live/sessions"),
         scoped=False),
    Case(
        "GET", f"{API}/live/sessions/{{session_id}}", Action.STATION_READ,
        lambda w, area: ("GET", f"{API}/live/sessions/{w.live[area]}", {}),
    ),
    # Stopped before the next case goes live again on the same station.
    Case(
        "POST", f"{API}/live/sessions/{{session_id}}/stop", Action.LIVE_BROADCAST,
        lambda w, area: ("POST", f"{API}/live/sessions/{w.live[area]}/stop", {}),
    ),
    Case(
        "POST", f"{API}/live/sessions", Action.LIVE_BROADCAST,
        lambda w, area: ("POST", f"{API}/live/sessions", {"json": live_body(area)}),
    ),
]  # fmt: skip

# Routes every signed-in party may use about itself, and routes with no account at all.
CASES += [
    Case("GET", f"{API}/releases", Action.STATION_READ, get(f"{API}/releases"), scoped=False),
    Case(
        "POST", f"{API}/releases", Action.STATION_UPDATE,
        lambda w, area: ("POST", f"{API}/releases", release_upload("9.0.1")), scoped=False,
    ),
    Case("GET", f"{API}/rollouts", Action.STATION_READ, get(f"{API}/rollouts"), scoped=False),
    Case(
        "GET", f"{API}/rollouts/{{rollout_id}}", Action.STATION_READ,
        lambda w, area: ("GET", f"{API}/rollouts/{w.rollout[area]}", {}),
    ),
    # Stopped before the next case starts a new one on the same stations.
    Case(
        "POST", f"{API}/rollouts/{{rollout_id}}/stop", Action.STATION_UPDATE,
        lambda w, area: ("POST", f"{API}/rollouts/{w.rollout[area]}/stop", {"json": {}}),
    ),
    Case(
        "POST", f"{API}/rollouts", Action.STATION_UPDATE,
        lambda w, area: ("POST", f"{API}/rollouts",
                         {"json": {"release_id": w.release, "area_code": area}}),
    ),
]  # fmt: skip

SELF_SERVICE = {
    ("POST", f"{API}/auth/logout"),
    ("GET", f"{API}/auth/me"),
    ("POST", f"{API}/auth/totp/enroll"),
    ("POST", f"{API}/auth/totp/confirm"),
}
PUBLIC = {
    ("POST", f"{API}/auth/login"),
    ("POST", f"{API}/enrolment/requests"),  # a new station has no credentials yet
    ("POST", f"{API}/enrolment/poll"),
    ("GET", f"{API}/audio/{{audio_id}}/content"),
    ("HEAD", f"{API}/audio/{{audio_id}}/content"),
    ("GET", f"{API}/releases/{{version}}/files/{{name}}"),  # signed software, for stations
    ("HEAD", f"{API}/releases/{{version}}/files/{{name}}"),
}


def api_routes(client: TestClient) -> set[tuple[str, str]]:
    """(method, path) of every route under /api/v1, as the app really serves them."""
    routes = iter_route_contexts(client.app.routes)  # type: ignore[attr-defined]
    return {
        (method, route.path)
        for route in routes
        if route.path.startswith(API)
        for method in route.methods or ()
    }


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, release_public_key=RELEASE_KEY.public_b64)
    with TestClient(create_app(settings, bus=RecordingBus())) as client:
        yield authenticate(client)


def make_world(admin: TestClient) -> World:
    for area, station_id in STATION.items():
        body = {
            "id": station_id,
            "name": "Cụm loa",
            "area_code": area,
            "latitude": 1,
            "longitude": 2,
        }
        assert admin.post(f"{API}/stations", json=body).status_code == 201
    audio = admin.post(f"{API}/audio", files={"file": ("ban-tin.wav", SMALL_WAV)}).json()
    world = World(audio_id=audio["id"], broadcast={}, user={}, removable={}, token={}, command={})
    for area in STATION:
        created = admin.post(f"{API}/broadcasts", json=broadcast_body(world, area, "normal")).json()
        world.broadcast[area] = created["id"]
        for kind, target in (("user", world.user), ("del", world.removable)):
            response = admin.post(
                f"{API}/users",
                json={
                    "username": f"{kind}-{area}",
                    "grants": [{"role": "viewer", "area_code": area}],
                },
            )
            assert response.status_code == 201, response.text
            target[area] = response.json()["id"]
        token = admin.post(f"{API}/tokens", json={"name": "t", "user_id": world.user[area]})
        world.token[area] = token.json()["id"]
        command = admin.post(
            f"{API}/stations/{STATION[area]}/commands", json={"name": "fetch_log", "args": {}}
        )
        world.command[area] = command.json()["id"]
    with Session(context_of(admin).engine) as session:
        for area, station_id in STATION.items():
            alarm = Alarm(
                station_id=station_id,
                kind="disk_low",
                severity="warning",
                opened_at=datetime.now(UTC),
            )
            session.add(alarm)
            session.flush()
            assert alarm.id is not None
            world.alarm[area] = alarm.id
        session.commit()
    # Alerts made by the admin: one over (to read), one held for a second officer, one to cancel.
    context_of(admin).settings.alert_confirmation = {COMMUNE_A: "always", COMMUNE_B: "always"}
    for area in STATION:
        made = {}
        for use in ("read", "confirm", "cancel"):
            response = admin.post(f"{API}/alerts", json=alert_body(area))
            assert response.status_code == 201, response.text
            made[use] = response.json()["id"]
        assert admin.post(f"{API}/alerts/{made['read']}/cancel").status_code == 200
        world.alert[area] = made
    make_programmes(admin, world)
    for area in STATION:
        on_air = admin.post(f"{API}/live/sessions", json=live_body(area))
        assert on_air.status_code == 201, on_air.text
        world.live[area] = on_air.json()["id"]
    for area in STATION:
        codes = admin.post(f"{API}/enrolment/claim-codes", json={"area_code": area, "count": 2})
        assert codes.status_code == 201, codes.text
        world.enrolment[area] = {}
        for use, code in zip(("approve", "reject"), codes.json()["codes"], strict=True):
            key = public_key_text(new_station_key())
            asked = admin.post(
                f"{API}/enrolment/requests", json={"claim_code": code, "public_key": key}
            )
            assert asked.status_code == 202, asked.text
            world.enrolment[area][use] = asked.json()["request_id"]
    if context_of(admin).keys.release_key is None:
        return world  # an app that trusts no release key (the matrix's own app does)
    made = admin.post(f"{API}/releases", **release_upload("9.0.0"))
    assert made.status_code == 201, made.text
    world.release = made.json()["id"]
    for area in STATION:
        body = {"release_id": world.release, "area_code": area}
        started = admin.post(f"{API}/rollouts", json=body)
        assert started.status_code == 201, started.text
        world.rollout[area] = started.json()["id"]
    return world


def make_programmes(admin: TestClient, world: World) -> None:
    """Per area: programmes in the state each case needs, a group, and a shared proposal."""
    proposal = {**programme_body(COMMUNE_A, "proposal", 0), "area": "04", "proposal": True}
    proposal["targets"] = {"stations": sorted(STATION.values())}
    response = admin.post(f"{API}/programmes", json=proposal)
    assert response.status_code == 201, response.text
    for area in STATION:
        made: dict[str, Any] = {"proposal": response.json()["id"]}
        for hours, use in enumerate(("read", "submit", "approve", "reject", "archive"), start=1):
            body = programme_body(area, f"{use}-{area}", hours)
            created = admin.post(f"{API}/programmes", json=body)
            assert created.status_code == 201, created.text
            made[use] = created.json()["id"]
            if use == "read":
                made["body"] = body
            if use in ("approve", "reject"):
                assert admin.post(f"{API}/programmes/{made[use]}/submit").status_code == 200
        group = admin.post(
            f"{API}/station-groups",
            json={"name": f"g-{area}", "area_code": area, "station_ids": [STATION[area]]},
        )
        assert group.status_code == 201, group.text
        made["group"] = group.json()["id"]
        world.programme[area] = made


def test_the_matrix_covers_every_route(admin: TestClient) -> None:
    covered = {(c.method, c.route) for c in CASES} | SELF_SERVICE | PUBLIC
    missing = api_routes(admin) - covered
    assert not missing, f"add these routes to CASES (role × endpoint matrix): {sorted(missing)}"
    assert not covered - api_routes(admin), "CASES names a route that no longer exists"


@pytest.mark.parametrize("role", list(Role))
def test_role_by_endpoint_inside_and_outside_its_area(admin: TestClient, role: Role) -> None:
    world = make_world(admin)
    token = make_token(context_of(admin).engine, f"matrix-{role.value}", (role, COMMUNE_A))
    wrong: list[str] = []
    for case in CASES:
        may = case.action in ROLE_ACTIONS[role]
        areas = [COMMUNE_A, COMMUNE_B] if case.scoped else [COMMUNE_A]
        for area in areas:
            method, url, kwargs = case.build(world, area)
            response = admin.request(method, url, headers=bearer(token), **kwargs)
            expected_ok = may and area == COMMUNE_A and not case.whole_system
            ok = response.status_code < 300
            if ok != expected_ok or (not ok and response.status_code != 403):
                wrong.append(
                    f"{case.action} {method} {url} in {area}: {response.status_code} "
                    f"{response.text[:120]}"
                )
            elif not ok:
                assert str(case.action) in response.json()["detail"]
    assert not wrong, f"{role} @ {COMMUNE_A}:\n" + "\n".join(wrong)


def test_a_user_without_roles_reads_nothing(admin: TestClient) -> None:
    world = make_world(admin)
    token = make_token(context_of(admin).engine, "nobody")
    for case in CASES:
        method, url, kwargs = case.build(world, COMMUNE_A)
        if method != "GET":
            continue
        response = admin.request(method, url, headers=bearer(token), **kwargs)
        assert response.status_code == 403, (url, response.text)
        assert "your roles: none active" in response.json()["detail"]
    assert admin.get(f"{API}/auth/me", headers=bearer(token)).json()["username"] == "nobody"


def test_tokens_listed_are_those_of_manageable_users(admin: TestClient) -> None:
    world = make_world(admin)
    engine = context_of(admin).engine
    token = make_token(engine, "admin-a", (Role.PROVINCE_ADMIN, COMMUNE_A))
    listed = admin.get(f"{API}/tokens", headers=bearer(token)).json()
    with Session(engine) as session:
        user_b = find_user(session, f"user-{COMMUNE_B}")
        assert user_b is not None
        b_tokens = {
            t.id for t in session.exec(select(ApiToken).where(ApiToken.user_id == user_b.id))
        }
    ids = {t["id"] for t in listed}
    assert world.token[COMMUNE_A] in ids and not ids & b_tokens
