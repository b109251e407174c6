"""``loaxa schedule``: the shipped files validate, a typo is named by line, and the commune
week applies (idempotently) to a real server and shows the right timeline.

The server is the real one on a real port (``LocalStack`` without MQTT), with real
espeak-ng speaking the Friday notice and real ffmpeg encoding the bulletins.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loaxa.cli import app
from loaxa.stack import LocalStack
from server.auth.permissions import Role
from tests.integration.auth_helpers import bearer, make_token

SCHEDULES = Path(__file__).resolve().parents[2] / "schedules"
QUANG_LAM = "01304"
runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("name", ["commune-week.yaml", "relay-only.yaml", "festival-week.yaml"])
def test_the_shipped_schedules_validate(name: str) -> None:
    code, output = run("schedule", "validate", str(SCHEDULES / name))
    assert code == 0, output
    assert f"{name}: OK" in output


BAD = """\
programmes:
  - key: sang
    title: Buổi sáng
    area: "01304"
    start: 2026-12-07 05:00
    rrule: FREQ=WEEKLY;BYDAY=MO,TU,XX
    targets:
      areas: ["01304"]
    items:
      - kind: stream
        url: http://vov/1
        windw_min: 30
      - kind: speech
        text: xin chào
      - kind: audio
        file: missing.ogg
        volume: 150
  - key: sang
    title: Buổi sáng lần hai
    area: "01304"
    start: 2026-12-07 06:00
    rrule: FREQ=SECONDLY
    targets: {areas: ["01304"]}
    items: [{kind: silence, seconds: 10}]
"""


def test_every_mistake_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "tuan.yaml"
    path.write_text(BAD, encoding="utf-8")
    code, output = run("schedule", "validate", str(path))
    assert code == 1
    lines = output.strip().splitlines()
    expected = [
        f"{path}:6: programmes[1].rrule: rrule 'FREQ=WEEKLY;BYDAY=MO,TU,XX': invalid 'BYDAY'",
        f"{path}:10: programmes[1].items[1].window_min: Field required",
        f"{path}:12: programmes[1].items[1].windw_min: Extra inputs are not permitted",
        f"{path}:13: programmes[1].items[2]: Input tag 'speech' found using 'kind'",
        f"{path}:16: programmes[1].items[3].file: file 'missing.ogg' not found next to tuan.yaml",
        f"{path}:17: programmes[1].items[3].volume: Input should be less than or equal to 100",
        f"{path}:22: programmes[2].rrule: rrule 'FREQ=SECONDLY': FREQ=SECONDLY fires",
    ]
    for start in expected:
        assert any(line.startswith(start) for line in lines), (start, output)
    assert lines[-1] == f"{path}: 7 errors"


def test_a_yaml_syntax_error_and_a_duplicate_key_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("programmes:\n  - key: a\n    key: b\n", encoding="utf-8")
    code, output = run("schedule", "validate", str(path))
    assert code == 1 and f"{path}:3: YAML: duplicate key 'key' (first on line 2)" in output
    path.write_text("programmes:\n  - key: [a\n", encoding="utf-8")
    code, output = run("schedule", "validate", str(path))
    assert code == 1 and re.search(rf"{re.escape(str(path))}:3: YAML: ", output), output


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    overrides = {"mqtt_enabled": False, "plan_refresh_min": 0, "stream_probe_timeout_s": 1}
    with LocalStack(tmp_path, "127.0.0.1", 1, settings_overrides=overrides) as running:
        with running.client() as http:
            for number in (1, 2, 3):
                body = {
                    "id": f"ql-st-0{number}",
                    "name": f"Cụm loa {number}",
                    "area_code": QUANG_LAM,
                    "latitude": 22.9,
                    "longitude": 105.9,
                }
                assert http.post("/api/v1/stations", json=body).status_code == 201
        yield running


def test_the_commune_week_applies_idempotently_and_shows_the_right_timeline(
    stack: LocalStack,
) -> None:
    server = ["--server", stack.base_url, "--token", str(stack.token)]
    week = str(SCHEDULES / "commune-week.yaml")
    code, output = run("schedule", "apply", week, *server, "--submit")
    assert code == 0, output
    assert re.search(r"programme quang-lam.vov1: created \(id \d+, submitted, 3 station", output)
    assert "programme quang-lam.thong-bao-thu-sau: created" in output
    assert "warning: items[1]: stream http://radio.caobang.gov.vn:8000/khu-vuc.mp3" in output
    again_code, again = run("schedule", "apply", week, *server)
    assert again_code == 0, again
    assert again.count(": unchanged (") == 3 and "created" not in again

    approver = bearer(make_token(stack.context.engine, "duyet", (Role.APPROVER, QUANG_LAM)))
    with stack.client() as http:
        for programme in http.get("/api/v1/programmes").json():
            approved = http.post(f"/api/v1/programmes/{programme['id']}/approve", headers=approver)
            assert approved.status_code == 200, approved.text

    code, friday = run("schedule", "show", "--station", "ql-st-01", "--date", "2026-12-11", *server)
    assert code == 0, friday
    rows = friday.strip().splitlines()
    assert rows[0] == "ql-st-01 — Fri 2026-12-11 (Asia/Ho_Chi_Minh)"
    table = [(row.split()[0].split("–")[0], row.split()[1], row.split()[2]) for row in rows[1:]]
    morning = [
        ("05:00:00", "stream", "background"),  # VOV1
        ("05:30:00", "stream", "normal"),  # regional news
        ("05:45:00", "audio", "normal"),  # the commune's bulletin, track 1
    ]
    evening = [(f"17{t[2:]}", kind, priority) for t, kind, priority in morning]
    assert table[:3] == morning and table[6:9] == evening
    assert [kind for _, kind, _ in table] == ["stream", "stream", "audio", "audio"] * 1 + [
        "audio",
        "audio",
        "stream",
        "stream",
        "audio",
        "audio",
        "audio",
        "audio",
    ]
    assert rows[1].split()[0] == "05:00:00–05:30:00" and "vol 70" in rows[1] and "VOV1" in rows[1]
    assert "Bản tin của xã" in rows[3] and "vol 90" in rows[3]
    track_2 = table[3][0]
    assert "05:45:05" <= track_2 <= "05:45:07"  # after the 5.7 s first bulletin
    speech = [row for row in rows if "Thông báo thứ Sáu" in row]
    assert [row[2:4] for row in speech] == ["06", "06", "18", "18"]
    assert "(lần 2)" in speech[1] and "[" not in friday  # approved, on air, nothing cut in

    code, sunday = run("schedule", "show", "--station", "ql-st-01", "--date", "2026-12-13", *server)
    assert code == 0 and "(nothing scheduled)" in sunday
    # New Year's Day 2027 is a Friday: only the typed notice is read.
    code, new_year = run(
        "schedule", "show", "--station", "ql-st-03", "--date", "2027-01-01", *server
    )
    assert code == 0, new_year
    assert "VOV1" not in new_year and new_year.count("Thông báo thứ Sáu") == 4


CLASH = """\
programmes:
  - key: sang
    title: Buổi sáng
    area: "01304"
    start: 2026-12-07 05:00
    rrule: FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA
    targets: {areas: ["01304"]}
    items: [{kind: silence, seconds: 1200, title: Nhạc hiệu}]
  - key: trua
    title: Buổi trưa
    area: "01304"
    start: 2026-12-07 11:00
    rrule: FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA
    targets: {areas: ["01304"]}
    items: [{kind: silence, seconds: 600}]
  - key: chen
    title: Chen ngang
    area: "01304"
    start: 2026-12-07 05:10
    rrule: FREQ=WEEKLY;BYDAY=MO
    targets: {areas: ["01304"]}
    items: [{kind: silence, seconds: 300, title: Tin chen}]
"""


def test_a_file_whose_third_programme_clashes_changes_nothing(
    stack: LocalStack, tmp_path: Path
) -> None:
    server = ["--server", stack.base_url, "--token", str(stack.token)]
    path = tmp_path / "tuan.yaml"
    path.write_text(CLASH, encoding="utf-8")
    code, output = run("schedule", "validate", str(path))
    assert code == 0, output  # a clash with another programme is the server's check
    code, output = run("schedule", "apply", str(path), *server, "--submit")
    assert code == 1, output
    assert f"{path}:16: programmes[3] (chen): overlap at normal priority" in output
    assert "'Chen ngang [chen]' item 1 'Tin chen'" in output
    assert output.strip().endswith(f"{path}: 1 error; nothing was changed")
    with stack.client() as http:
        assert http.get("/api/v1/programmes").json() == []
    # A dry run of the fixed file is accepted and still changes nothing.
    path.write_text(CLASH.replace("2026-12-07 05:10", "2026-12-07 06:10"), encoding="utf-8")
    code, output = run("schedule", "apply", str(path), *server, "--dry-run")
    assert code == 0, output
    assert "programme chen: created" in output and "nothing was changed" in output
    with stack.client() as http:
        assert http.get("/api/v1/programmes").json() == []
    code, output = run("schedule", "apply", str(path), *server)
    assert code == 0 and output.count(": created (") == 3, output
