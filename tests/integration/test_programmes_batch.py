"""``POST /api/v1/programmes/batch``: a whole schedule file, all or nothing.

Real app and SQLite, the fixed Sunday evening of test_programmes_api. The question each
test asks is the operator's: after a refused file, is anything scheduled different?
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from server.auth.permissions import Role
from server.programmes.models import Programme, StationGroup
from tests.integration.auth_helpers import context_of
from tests.integration.test_programmes_api import (
    API,
    COMMUNE_A,
    bus,  # noqa: F401  (fixture)
    client,  # noqa: F401  (fixture)
    programme,
    token_for,
)
from tests.integration.test_server_api import register


def at(key: str, start: str, minutes: float = 10, **overrides: Any) -> dict[str, Any]:
    """A Monday-to-Saturday programme of ``minutes`` of silence starting at ``start``."""
    return programme(
        key,
        title=f"Chương trình {key}",
        start=f"2026-12-07T{start}:00",
        items=[{"kind": "silence", "seconds": minutes * 60, "title": key}],
        **overrides,
    )


def snapshot(app: TestClient) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """Every programme (key, state, spec) and every group name."""
    with Session(context_of(app).engine) as session:
        programmes = [
            (p.key, p.state.value, p.spec)
            for p in session.exec(select(Programme).order_by(Programme.key)).all()
        ]
        groups = sorted(g.name for g in session.exec(select(StationGroup)).all())
    return programmes, groups


def test_a_file_whose_third_programme_clashes_changes_nothing(
    client: TestClient,  # noqa: F811
) -> None:
    register(client, COMMUNE_A, id="cb-st-001")
    # Already scheduled: an approved-to-be programme the file also edits.
    existing = client.post(f"{API}/programmes", json=at("sang", "05:00"))
    assert existing.status_code == 201
    before = snapshot(client)
    batch = {
        "groups": [{"name": "cho", "area": COMMUNE_A, "stations": ["cb-st-001"]}],
        "programmes": [
            at("sang", "05:00", minutes=20),  # changed: longer
            at("trua", "11:00"),  # new
            at("chieu", "05:15"),  # new, and inside the first one's 05:00–05:20
        ],
        "submit": True,
    }
    response = client.post(f"{API}/programmes/batch", json=batch)
    assert response.status_code == 409, response.text
    body = response.json()
    assert [(e["where"], e["key"], e["code"]) for e in body["errors"]] == [
        ("programmes[3]", "chieu", "clash")
    ]
    assert "nothing was changed" in body["detail"]
    assert "'Chương trình chieu [chieu]' item 1 'chieu' (05:15–05:25)" in body["detail"]
    assert "'Chương trình sang [sang]' item 1 'sang' (05:00–05:20)" in body["detail"]
    assert snapshot(client) == before

    # Fixed, the same file applies: a group, one update, two new, all submitted.
    batch["programmes"][2] = at("chieu", "17:00")
    applied = client.post(f"{API}/programmes/batch", json=batch)
    assert applied.status_code == 200, applied.text
    result = applied.json()
    assert [(g["name"], g["action"]) for g in result["groups"]] == [("cho", "created")]
    assert [(p["key"], p["action"], p["programme"]["state"]) for p in result["programmes"]] == [
        ("sang", "updated", "submitted"),
        ("trua", "created", "submitted"),
        ("chieu", "created", "submitted"),
    ]
    # Again: nothing to do.
    again = client.post(f"{API}/programmes/batch", json={**batch, "submit": False}).json()
    assert {p["action"] for p in again["programmes"]} == {"unchanged"}
    assert again["groups"][0]["action"] == "unchanged"


def test_every_refusal_is_reported_and_a_dry_run_changes_nothing(
    client: TestClient,  # noqa: F811
) -> None:
    register(client, COMMUNE_A, id="cb-st-001")
    register(client, "01279", id="cb-st-002")
    operator = token_for(client, "xa-a", Role.COMMUNE_OPERATOR, COMMUNE_A)
    before = snapshot(client)
    batch = {
        "programmes": [
            at("mot", "05:00"),
            at("hai", "06:00", rrule="FREQ=SECONDLY"),
            at("ba", "07:00", targets={"stations": ["cb-st-002"]}),
            at("bon", "08:00", targets={"areas": ["99999"]}),
        ]
    }
    response = client.post(f"{API}/programmes/batch", json=batch, headers=operator)
    assert response.status_code == 422, response.text
    errors = {e["where"]: (e["status"], e["detail"]) for e in response.json()["errors"]}
    assert set(errors) == {"programmes[2]", "programmes[3]", "programmes[4]"}
    assert "FREQ=SECONDLY" in errors["programmes[2]"][1]
    assert errors["programmes[3]"][0] == 403
    assert "station cb-st-002 (area 01279)" in errors["programmes[3]"][1]
    assert "unknown area(s) '99999'" in errors["programmes[4]"][1]
    assert snapshot(client) == before

    dry = client.post(
        f"{API}/programmes/batch", json={"programmes": [at("mot", "05:00")], "dry_run": True}
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["applied"] is False
    assert dry.json()["programmes"][0]["action"] == "created"
    assert snapshot(client) == before


def test_two_programmes_may_swap_their_slots_in_one_file(
    client: TestClient,  # noqa: F811
) -> None:
    register(client, COMMUNE_A, id="cb-st-001")
    first = {"programmes": [at("a", "05:00"), at("b", "06:00")]}
    assert client.post(f"{API}/programmes/batch", json=first).status_code == 200
    swapped = {"programmes": [at("a", "06:00"), at("b", "05:00")]}
    response = client.post(f"{API}/programmes/batch", json=swapped)
    assert response.status_code == 200, response.text
    assert [p["action"] for p in response.json()["programmes"]] == ["updated", "updated"]
