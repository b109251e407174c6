"""Every action the server writes to the audit log has a sentence in the catalogue.

The action codes are read from the source (each ``record_audit(…, "x.y", …)``), so a new
kind of entry without words fails here rather than showing ``x.y`` to an auditor.
"""

from __future__ import annotations

import re
from pathlib import Path

from server.auth.permissions import Action
from server.i18n import language
from server.i18n.reasons import PERMISSIONS
from server.programmes.approval import ApprovalAction
from server.updates.models import ACTIVE, RolloutState
from server.web.audit_words import ACTIONS, COMMANDS, describe

SERVER = Path(__file__).resolve().parents[2] / "server"
ACTION = re.compile(r"\"([a-z_]+\.[a-z_.]+)\"")


def recorded_actions() -> set[str]:
    """The dotted literals of each ``record_audit(`` call before its before=/after=
    (both branches of ``"a.x" if new else "a.y"`` included)."""
    found: set[str] = set()
    for source in SERVER.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        for call in re.finditer(r"record_audit\(", text):
            head = re.split(r"\b(?:before|after)=|\)\n", text[call.end() : call.end() + 400])[0]
            found |= set(ACTION.findall(head))
    return found


def test_every_recorded_action_has_words() -> None:
    actions = recorded_actions()
    assert {"programme.create", "alert.send", "user.grant"} <= actions  # the reader works
    made = {f"programme.{a.value}" for a in ApprovalAction}
    made |= {f"rollout.{s.value}" for s in RolloutState if s not in ACTIVE | {RolloutState.DONE}}
    assert sorted((actions | made) - ACTIONS.keys()) == []


def test_commands_and_refusals_read_as_sentences() -> None:
    assert {a.value for a in Action} <= PERMISSIONS.keys()
    with language("vi"):
        tone = describe("station.command.test_tone", "station", "st-1", None, '{"seq": 4}')
        denied = describe("denied:programme.approve", "programme", "3", None, '{"area": "04"}')
        state = describe(
            "programme.approve", "programme", "3", '{"state": "submitted"}',
            '{"state": "approved"}',
        )  # fmt: skip
    assert (tone.action, tone.obj) == ("Đã phát âm thử trên một trạm", "trạm st-1")
    assert denied.action == "Bị từ chối: định duyệt chương trình mà không có quyền"
    assert state.details == "trạng thái: Chờ duyệt → Đã duyệt: đang phát theo lịch"
    assert set(COMMANDS) == {"test_tone", "set_amp", "set_volume", "restart", "fetch_log"}


def test_times_are_local_and_codes_are_words() -> None:
    with language("vi"):
        words = describe(
            "alert.send", "alert", "7", None,
            '{"drill": true, "expires_at": "2026-12-07T09:43:25+00:00", "severity": "severe",'
            ' "canned": "typhoon", "title": "Bão số 3"}',
        )  # fmt: skip
    assert words.details == (
        "diễn tập: có; hết hạn: 07/12/2026 16:43; mức độ: Nghiêm trọng; "
        "bản ghi sẵn: Cảnh báo bão; tiêu đề: Bão số 3"
    )
    assert "2026-12-07T09:43" in words.raw  # the stored record stays as it was
