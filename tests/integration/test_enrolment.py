"""Zero-touch enrolment on real parts.

The real server on a real HTTP port (uvicorn), a real Mosquitto, real ffmpeg, and a real
``loaxa node --enrol … --claim …`` process that starts with nothing but the address, the
claim code and a file naming its hardware. A technician approves it through the API; the
station writes its own config, connects and plays a bulletin.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from loaxa.stack import LocalStack
from loaxa_protocol.enrolment import key_fingerprint, new_station_key, public_key_text
from server.broker_accounts import STAMP_FILE
from tests.audio_samples import make_audio
from tests.integration.test_broker_security import wait_until

COMMUNE, LATITUDE, LONGITUDE = "01273", 22.666, 106.257
PROVINCE = "04"


@pytest.fixture
def stack(tmp_path: Path, production_mosquitto: Any) -> Iterator[LocalStack]:
    with LocalStack.on_broker(tmp_path / "stack", production_mosquitto) as running:
        yield running


def claim_codes(stack: LocalStack, count: int, area: str = PROVINCE, days: float = 30) -> list[str]:
    issued = stack.api(
        "POST",
        "/api/v1/enrolment/claim-codes",
        json={"area_code": area, "count": count, "valid_days": days},
    )
    return list(issued["codes"])


def audit(stack: LocalStack, action: str) -> list[dict[str, Any]]:
    return list(stack.api("GET", "/api/v1/audit", params={"action": action, "limit": 500}))


def station_ask(
    stack: LocalStack, code: str, key: str, path: str = "requests", ip: str = "127.0.0.1"
) -> httpx.Response:
    """An anonymous station's call, from ``ip`` (uvicorn on loopback accepts 127.0.0.0/8)."""
    transport = httpx.HTTPTransport(local_address=ip)
    with httpx.Client(base_url=stack.base_url, transport=transport, timeout=10) as http:
        return http.post(
            f"/api/v1/enrolment/{path}",
            json={"claim_code": code, "public_key": key, "hostname": "loa-test"},
        )


def fresh_key() -> str:
    return public_key_text(new_station_key())


@pytest.fixture
def broker_sync(stack: LocalStack, production_mosquitto: Any, tmp_path: Path) -> Iterator[Path]:
    """``loaxa broker sync --watch`` beside the broker, as its systemd service runs it.

    It rewrites the broker's passwd and acl when the server marks a new account and
    SIGHUPs Mosquitto through its pid file; yields the sync's log file.
    """
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{production_mosquitto.pid}\n")
    settings = stack.context.settings
    log_path = tmp_path / "broker-sync.log"
    with log_path.open("wb") as log_file:
        sync = subprocess.Popen(
            [sys.executable, "-m", "loaxa", "broker", "sync", "--watch",
             "--out", str(production_mosquitto.workdir),
             "--database-url", settings.db_url,
             "--pid-file", str(pid_file), "--stamp", str(settings.data_dir / STAMP_FILE)],
            stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield log_path
    finally:
        sync.terminate()
        sync.wait(10)


def test_a_new_station_enrols_itself_and_plays_a_bulletin(
    stack: LocalStack, tmp_path: Path, broker_sync: Path, production_mosquitto: Any
) -> None:
    (code,) = claim_codes(stack, 1)
    config_path = tmp_path / "pi" / "station.yaml"
    config_path.parent.mkdir()
    node_data = tmp_path / "pi" / "data"
    # What the box was built with: its hardware, nothing secret and no identity.
    config_path.write_text(yaml.safe_dump({"data_dir": str(node_data), "relay": {"driver": "sim"}}))
    log_path = tmp_path / "node.log"
    with log_path.open("wb") as log_file:
        node = subprocess.Popen(
            [sys.executable, "-m", "loaxa", "node", "--enrol", stack.base_url,
             "--claim", code.lower().replace("-", " "), "--config", str(config_path)],
            stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ},
        )  # fmt: skip
    try:
        pending = wait_until(
            lambda: stack.api("GET", "/api/v1/enrolment/requests"), 30, "the station's request"
        )
        assert len(pending) == 1 and pending[0]["area_code"] == PROVINCE
        key_file = config_path.with_name("station.yaml.enrol-key")
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert "station_id" not in yaml.safe_load(config_path.read_text())  # still waiting

        request_id = pending[0]["id"]
        stack.api(
            "POST",
            f"/api/v1/enrolment/requests/{request_id}/approve",
            json={
                "name": "Cụm loa thôn Nà Rị",
                "area_code": COMMUNE,
                "latitude": LATITUDE,
                "longitude": LONGITUDE,
            },
        )
        assert stack.api("GET", "/api/v1/enrolment/requests") == []
        # Nobody touches the broker: the sync service adds the account and reloads it.

        def enrolled() -> dict[str, Any] | None:
            data = yaml.safe_load(config_path.read_text())
            return data if "station_id" in data else None

        config = wait_until(enrolled, 30, "the station to write its config")
        assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
        # The key is removed just after the config is written: wait for that step too.
        wait_until(lambda: not key_file.exists(), 10, "the station to drop its enrolment key")
        station_id = config["station_id"]
        assert config["mqtt"]["password"] and config["mqtt"]["username"] == station_id
        assert config["trusted_keys"] and config["areas"][0] == COMMUNE
        assert config["data_dir"] == str(node_data) and config["relay"]["driver"] == "sim"

        station = stack.api("GET", f"/api/v1/stations/{station_id}")
        assert (station["area_code"], station["latitude"], station["longitude"]) == (
            COMMUNE,
            LATITUDE,
            LONGITUDE,
        )
        registered = audit(stack, "station.register")
        assert [e["object_id"] for e in registered] == [station_id]  # the normal path, once
        assert [e["action"] for e in reversed(audit(stack, "enrolment."))] == [
            "enrolment.claim_codes_created",
            "enrolment.requested",
            "enrolment.approved",
            "enrolment.collected",
        ]

        wait_until(
            lambda: stack.api("GET", f"/api/v1/stations/{station_id}")["status"] == "online",
            30,
            "the enrolled station to come online on the broker",
        )
        assert "mosquitto (pid" in broker_sync.read_text()  # the sync reloaded it
        assert "Reloading config" in production_mosquitto.log_text()
        audio = stack.upload(make_audio("mp3", 1.0), "ban-tin.mp3")
        start_at = datetime.now(UTC) + timedelta(seconds=4)
        broadcast = stack.broadcast(audio["id"], start_at, [station_id])
        view = stack.wait_for_states(broadcast["id"], {"played", "failed"}, timeout=40)
        assert [t["state"] for t in view["targets"]] == ["played"], view["targets"]

        # The sticker was photographed: a second device presents the same code.
        thief = station_ask(stack, code, fresh_key(), ip="127.0.0.5")
        assert thief.status_code == 409
        events = stack.api("GET", f"/api/v1/stations/{station_id}/events")
        (intrusion,) = [e for e in events if e["kind"] == "intrusion"]
        assert intrusion["reason"] == "enrolment_replayed" and "127.0.0.5" in intrusion["detail"]
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=15)
        finally:
            if node.poll() is None:
                node.kill()
            print(log_path.read_text(errors="replace")[-4000:])


def test_unknown_replayed_and_expired_codes_are_refused_and_audited(stack: LocalStack) -> None:
    good, short_lived = claim_codes(stack, 1)[0], claim_codes(stack, 1, days=0.00002)[0]
    key, thief = fresh_key(), fresh_key()

    first = station_ask(stack, good, key)
    assert first.status_code == 202 and first.json()["state"] == "pending"
    again = station_ask(stack, good, key)  # the same box asking again after a lost answer
    assert again.status_code == 202 and again.json()["request_id"] == first.json()["request_id"]

    replayed = station_ask(stack, good, thief, ip="127.0.0.2")
    assert replayed.status_code == 409
    assert replayed.json()["detail"]["reason"] == "replayed"
    stolen_poll = station_ask(stack, good, thief, path="poll", ip="127.0.0.2")
    assert stolen_poll.status_code == 409 and "sealed" not in stolen_poll.text

    unknown = station_ask(stack, "AAAA-BBBB-CCCC-DDDD", fresh_key(), ip="127.0.0.3")
    assert unknown.status_code == 403 and unknown.json()["detail"]["reason"] == "unknown"
    malformed = station_ask(stack, "12345", fresh_key(), ip="127.0.0.3")
    assert malformed.status_code == 422
    low_order_key = station_ask(stack, claim_codes(stack, 1)[0], "A" * 43, ip="127.0.0.3")
    assert low_order_key.status_code == 422  # nothing could ever be sealed to it

    time.sleep(2.0)  # 0.00002 days is 1.7 s
    expired = station_ask(stack, short_lived, fresh_key(), ip="127.0.0.4")
    assert expired.status_code == 410 and expired.json()["detail"]["reason"] == "expired"

    refusals = audit(stack, "enrolment.refused")
    assert sorted(e["after"]["reason"] for e in refusals) == [
        "expired",
        "malformed",
        "malformed",
        "replayed",
        "replayed",
        "unknown",
    ]
    assert {e["source_ip"] for e in refusals} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    thief_entry = next(e for e in refusals if e["source_ip"] == "127.0.0.2")
    assert thief_entry["after"]["key"] == key_fingerprint(thief)
    assert thief_entry["object_id"] == f"claim …{good[-4:]}"
    # The rightful station is untouched by the attempts.
    assert station_ask(stack, good, key, path="poll").status_code == 202


def test_an_address_that_keeps_failing_is_rate_limited(stack: LocalStack) -> None:
    (good,) = claim_codes(stack, 1)
    for _ in range(5):
        refused = station_ask(stack, "ZZZZ-ZZZZ-ZZZZ-ZZZZ", fresh_key(), ip="127.0.0.9")
        assert refused.status_code == 403
    limited = station_ask(stack, good, fresh_key(), ip="127.0.0.9")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    # Another address is not punished for it.
    assert station_ask(stack, good, fresh_key(), ip="127.0.0.10").status_code == 202
    assert len(audit(stack, "enrolment.refused")) == 5  # the limited call was never judged


def test_a_rejected_station_is_told_and_approval_stays_inside_the_claims_area(
    stack: LocalStack,
) -> None:
    commune_code, other_code = claim_codes(stack, 1, area=COMMUNE)[0], claim_codes(stack, 1)[0]
    key, other_key = fresh_key(), fresh_key()
    request_id = station_ask(stack, commune_code, key).json()["request_id"]
    other_id = station_ask(stack, other_code, other_key).json()["request_id"]

    with stack.client() as http:
        outside = http.post(
            f"/api/v1/enrolment/requests/{request_id}/approve",
            json={"name": "x", "area_code": "01279", "latitude": 22.6, "longitude": 106.2},
        )
    assert outside.status_code == 409 and "outside" in outside.json()["detail"]

    stack.api("POST", f"/api/v1/enrolment/requests/{other_id}/reject")
    refused = station_ask(stack, other_code, other_key, path="poll")
    assert refused.status_code == 403 and refused.json()["detail"]["reason"] == "rejected"
    assert [p["id"] for p in stack.api("GET", "/api/v1/enrolment/requests")] == [request_id]


def test_only_technicians_of_the_area_issue_codes_and_see_requests(stack: LocalStack) -> None:
    stack.create_user("xem", "mat-khau-rat-dai-1", [("viewer", PROVINCE)])
    stack.create_user("kythuat", "mat-khau-rat-dai-2", [("technician", COMMUNE)])
    with stack.sign_in("xem", "mat-khau-rat-dai-1") as viewer:
        denied = viewer.post(
            "/api/v1/enrolment/claim-codes", json={"area_code": PROVINCE, "count": 1}
        )
        assert denied.status_code == 403
    with stack.sign_in("kythuat", "mat-khau-rat-dai-2") as technician:
        wider = technician.post(
            "/api/v1/enrolment/claim-codes", json={"area_code": PROVINCE, "count": 1}
        )
        assert wider.status_code == 403
        own = technician.post(
            "/api/v1/enrolment/claim-codes", json={"area_code": COMMUNE, "count": 2}
        )
        assert own.status_code == 201 and len(own.json()["codes"]) == 2


def test_claim_codes_from_the_command_line_work_at_the_door(
    stack: LocalStack, tmp_path: Path
) -> None:
    settings_env = {
        **os.environ,
        "LOAXA_DATA_DIR": str(stack.context.settings.data_dir),
    }
    command = [sys.executable, "-m", "loaxa", "station", "claim-codes"]
    made = subprocess.run(
        [*command, "--count", "2", "--area", COMMUNE],
        capture_output=True, text=True, env=settings_env, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    codes = made.stdout.split()
    assert len(codes) == 2 and len(set(codes)) == 2
    assert station_ask(stack, codes[0], fresh_key()).status_code == 202

    wrong = subprocess.run(
        [*command, "--count", "1", "--area", "zz"],
        capture_output=True, text=True, env=settings_env, timeout=120, check=False,
    )  # fmt: skip
    assert wrong.returncode == 2 and "area 'zz' is not a known area" in wrong.stderr


def test_a_technician_approves_from_the_waiting_stations_page(stack: LocalStack) -> None:
    stack.create_user("kythuat", "mat-khau-rat-dai-2", [("technician", PROVINCE)])
    (code,) = claim_codes(stack, 1)
    key = fresh_key()
    request_id = station_ask(stack, code, key).json()["request_id"]
    station_ask(stack, "AAAA-BBBB-CCCC-DDDD", fresh_key(), ip="127.0.0.7")
    with stack.sign_in("kythuat", "mat-khau-rat-dai-2") as browser:
        page = browser.get("/enrolment")
        refused = page.text.split('id="refused"')[1].split("</section>")[0]
        assert "mã không có trong hệ thống" in refused and "127.0.0.7" in refused
        assert page.status_code == 200
        html = page.text
        assert "Trạm chờ duyệt" in html and "Dấu vân tay khóa" in html
        assert key_fingerprint(key) in html and "loa-test" in html
        assert 'href="/enrolment"' in html  # in the technician's menu
        assert "<script>" not in html and "style=" not in html  # the strict CSP allows neither

        browser.cookies.set("loaxa_lang", "en")
        assert "Waiting stations" in browser.get("/enrolment").text

        refused = browser.post(
            f"/enrolment/{request_id}/approve",
            data={"name": "Cụm loa Nà Rị", "area_code": COMMUNE, "latitude": "x", "longitude": ""},
        )
        assert refused.status_code == 422 and "latitude and longitude" in refused.text
        approved = browser.post(
            f"/enrolment/{request_id}/approve",
            data={
                "name": "Cụm loa Nà Rị",
                "area_code": COMMUNE,
                "latitude": "22,666",
                "longitude": "106.257",
            },
        )
        assert approved.status_code == 303
        assert "No station is waiting." in browser.get("/enrolment").text

        made = browser.post("/enrolment/claim-codes", data={"area_code": COMMUNE, "count": "3"})
        assert made.status_code == 200
        shown = made.text.split('<pre id="claim-codes">')[1].split("</pre>")[0].split()
        assert len(shown) == 3
    answer = station_ask(stack, code, key, path="poll")
    assert answer.status_code == 200 and answer.json()["station_id"].startswith("st-01273-")
    station = stack.api("GET", f"/api/v1/stations/{answer.json()['station_id']}")
    assert (station["name"], station["latitude"]) == ("Cụm loa Nà Rị", 22.666)
    assert station_ask(stack, shown[0], fresh_key()).status_code == 202
