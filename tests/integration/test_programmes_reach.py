"""Live targets: a programme for a commune reaches the station registered there tomorrow.

Real app and SQLite, a recording bus, the fixed Sunday evening of test_programmes_api.
A station taken in by two programmes that would clash keeps the earlier-approved one;
the other is held there and says so, until the slot frees.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from loaxa_protocol import topics
from server.auth.permissions import Role
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import context_of
from tests.integration.test_programmes_api import (
    API,
    COMMUNE_A,
    COMMUNE_B,
    approve,
    bus,  # noqa: F401  (fixture)
    client,  # noqa: F401  (fixture)
    latest_plan,
    programme,
    token_for,
)
from tests.integration.test_server_api import RecordingBus, register, upload

PROVINCE = "04"


def morning(key: str, audio_id: int, **overrides: Any) -> dict[str, Any]:
    """A daily 05:00 bulletin (normal priority)."""
    return programme(
        key, rrule="FREQ=DAILY", items=[{"kind": "audio", "audio_id": audio_id}], **overrides
    )


def programme_ids(plan_items: list[Any]) -> set[str]:
    return {i.item_id.split(".")[0] for i in plan_items if i.item_id.startswith("p")}


def test_a_station_registered_later_is_reached_and_a_clash_holds_the_later_approved(
    client: TestClient,  # noqa: F811
    bus: RecordingBus,  # noqa: F811
) -> None:
    register(client, COMMUNE_B, id="cb-st-002")
    audio = upload(client, make_audio("wav", 2.0), "ban-tin.wav")["id"]
    # The commune has no station yet: saved with a warning, not refused.
    commune = client.post(f"{API}/programmes", json=morning("xa", audio))
    assert commune.status_code == 201, commune.text
    assert commune.json()["stations"] == []
    assert "no registered station is reached yet" in commune.json()["warnings"][0]
    # The province's bulletin at the same hour reaches the other commune's station.
    province = client.post(
        f"{API}/programmes",
        json=morning("tinh", audio, area=PROVINCE, targets={"areas": [PROVINCE]}),
    )
    assert province.status_code == 201, province.text
    assert province.json()["stations"] == ["cb-st-002"]
    approve(client, commune.json()["id"])  # approved first: it keeps the slot
    pid = province.json()["id"]
    assert client.post(f"{API}/programmes/{pid}/submit").status_code == 200
    approver = token_for(client, "duyet-tinh", Role.APPROVER, PROVINCE)
    assert client.post(f"{API}/programmes/{pid}/approve", headers=approver).status_code == 200

    register(client, COMMUNE_A, id="cb-st-003")
    plan = latest_plan(client, bus, "cb-st-003")  # published at registration
    assert programme_ids(plan.items) == {f"p{commune.json()['id']}"}
    first = client.get(f"{API}/programmes/{commune.json()['id']}").json()
    assert first["stations"] == ["cb-st-003"] and first["held"] == []
    held = client.get(f"{API}/programmes/{province.json()['id']}").json()
    assert held["stations"] == ["cb-st-002"]
    assert [h["station_id"] for h in held["held"]] == ["cb-st-003"]
    reason = held["held"][0]["reason"]
    assert "overlap at normal priority on station cb-st-003" in reason and "[xa]" in reason
    # The other station was not republished for this.
    published_b = len(bus.on(topics.plan("cb-st-002")))

    # The commune's programme is archived: the slot is free, the province's takes it.
    archived = client.post(f"{API}/programmes/{commune.json()['id']}/archive")
    assert archived.status_code == 200, archived.text
    now_held = client.get(f"{API}/programmes/{province.json()['id']}").json()
    assert now_held["stations"] == ["cb-st-002", "cb-st-003"] and now_held["held"] == []
    plan = latest_plan(client, bus, "cb-st-003")
    assert programme_ids(plan.items) == {f"p{province.json()['id']}"}
    assert len(bus.on(topics.plan("cb-st-002"))) == published_b


def test_a_group_change_reaches_new_members_and_lets_removed_ones_go(
    client: TestClient,  # noqa: F811
    bus: RecordingBus,  # noqa: F811
) -> None:
    for station in ("cb-st-001", "cb-st-004"):
        register(client, COMMUNE_A, id=station)
    audio = upload(client, make_audio("wav", 2.0), "ban-tin.wav")["id"]
    group = client.post(
        f"{API}/station-groups",
        json={"name": "cho", "area_code": COMMUNE_A, "station_ids": ["cb-st-001"]},
    ).json()
    pid = client.post(
        f"{API}/programmes", json=morning("cho-sang", audio, targets={"groups": ["cho"]})
    ).json()["id"]
    approve(client, pid)
    assert programme_ids(latest_plan(client, bus, "cb-st-004").items) == set()

    moved = client.put(f"{API}/station-groups/{group['id']}", json={"station_ids": ["cb-st-004"]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["station_ids"] == ["cb-st-004"]
    assert client.get(f"{API}/programmes/{pid}").json()["stations"] == ["cb-st-004"]
    assert programme_ids(latest_plan(client, bus, "cb-st-004").items) == {f"p{pid}"}
    assert programme_ids(latest_plan(client, bus, "cb-st-001").items) == set()

    # A group a live programme names cannot vanish under it.
    refused = client.delete(f"{API}/station-groups/{group['id']}")
    assert refused.status_code == 409
    assert "'cho-sang'" in refused.json()["detail"]
    assert context_of(client).planner is not None
