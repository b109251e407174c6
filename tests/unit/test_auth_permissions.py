"""The role × action table, checked exhaustively, and its copy in docs/security.md.

EXPECTED is written out by hand on purpose: it is the specification, so changing a
right means changing it here, in the code and (regenerated) in the document.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from server.auth.actor import Grant
from server.auth.permissions import (
    ROLE_ACTIONS,
    Action,
    Role,
    allowed,
    allowed_somewhere,
    first_denied,
    role_table_markdown,
    scope_roots,
)

READS = {"area.read", "station.read", "audio.read", "broadcast.read"}
EXPECTED: dict[str, set[str]] = {
    "province_admin": {a.value for a in Action},
    "alert_officer": READS
    | {
        "alert.send",
        "alert.cancel",
        "alert.confirm",
        "audio.upload",
        "broadcast.create_priority",
        "live.broadcast",
    },
    "commune_operator": READS
    | {"audio.upload", "broadcast.create", "programme.edit", "live.broadcast"},
    "approver": READS | {"programme.approve"},
    "technician": READS
    | {"station.register", "station.command", "system.read", "alarm.read", "alarm.ack"},
    "viewer": READS | {"alarm.read"},
}

# 04 (province) ─┬─ D1 (district) ── 01273 (commune)
#                └─ 01279 (commune)
# 01 (another province) ── 00004 (commune)
PARENT = {"D1": "04", "01273": "D1", "01279": "04", "00004": "01"}


def ancestors_of(code: str) -> list[str]:
    chain = [code]
    while chain[-1] in PARENT:
        chain.append(PARENT[chain[-1]])
    return chain


# Where a grant sits → whether it covers each area.
COVERAGE = {
    "D1": {"D1": True, "01273": True, "04": False, "01279": False, "01": False, "00004": False},
    "04": {"D1": True, "01273": True, "04": True, "01279": True, "01": False, "00004": False},
    "01273": {"01273": True, "D1": False, "04": False, "01279": False, "00004": False},
}


def test_the_table_is_the_specification() -> None:
    assert {r.value: {a.value for a in actions} for r, actions in ROLE_ACTIONS.items()} == EXPECTED
    assert set(ROLE_ACTIONS) == set(Role)


@pytest.mark.parametrize("role", list(Role))
def test_every_role_action_and_place(role: Role) -> None:
    for action, (grant_area, places) in itertools.product(Action, COVERAGE.items()):
        grants = [Grant(role.value, grant_area)]
        for area, covered in places.items():
            expected = covered and action.value in EXPECTED[role.value]
            assert allowed(grants, action, area, ancestors_of) is expected, (
                f"{role}@{grant_area} {action} in {area}: expected {expected}"
            )
        assert allowed_somewhere(grants, action) is (action.value in EXPECTED[role.value])


def test_an_object_in_several_areas_needs_every_one() -> None:
    operator_a = [Grant("commune_operator", "01273")]
    create = Action.BROADCAST_CREATE
    assert first_denied(operator_a, create, ["01273"], ancestors_of) is None
    assert first_denied(operator_a, create, ["01273", "01279"], ancestors_of) == "01279"
    both = [*operator_a, Grant("commune_operator", "01279")]
    assert first_denied(both, create, ["01279", "01273"], ancestors_of) is None
    # Right role in one area, wrong role in the other: still refused.
    mixed = [*operator_a, Grant("viewer", "01279")]
    assert first_denied(mixed, create, ["01273", "01279"], ancestors_of) == "01279"
    with pytest.raises(ValueError, match="no area"):
        first_denied(both, create, [], ancestors_of)


def test_unknown_roles_and_no_grants_allow_nothing() -> None:
    for action in Action:
        assert not allowed([Grant("superuser", "04")], action, "04", ancestors_of)
        assert not allowed([], action, "04", ancestors_of)
        assert not allowed_somewhere([], action)


def test_scope_roots_are_the_grants_that_carry_the_action() -> None:
    grants = [Grant("viewer", "01279"), Grant("technician", "01273")]
    assert scope_roots(grants, Action.STATION_READ) == {"01279", "01273"}
    assert scope_roots(grants, Action.STATION_REGISTER) == {"01273"}
    assert scope_roots(grants, Action.USER_MANAGE) == set()


def test_security_doc_carries_exactly_the_generated_table() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
    begin, end = "<!-- role-table:begin -->\n", "<!-- role-table:end -->"
    assert begin in doc and end in doc, "docs/security.md lost its role-table markers"
    in_doc = doc.split(begin, 1)[1].split(end, 1)[0]
    assert in_doc == role_table_markdown(), (
        "docs/security.md is out of date; paste the output of\n"
        "python -c 'from server.auth.permissions import role_table_markdown as t; print(t())'"
    )
    rows = [line for line in in_doc.splitlines() if line.startswith("| `")]
    assert len(rows) == len(Action)
