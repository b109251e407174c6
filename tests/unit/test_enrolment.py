"""Enrolment logic without a server: the claim verdicts, the sealed box, the station's waits."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from loaxa_protocol.enrolment import (
    EnrolmentError,
    claim_digest,
    is_usable_public_key,
    new_claim_code,
    new_station_key,
    normalise_claim_code,
    open_box,
    public_key_text,
    seal,
)
from loaxa_protocol.errors import ConfigError
from node_firmware.enrol import Backoff, enrol, key_path_for
from server.enrolment.claims import ClaimFacts, Refusal, judge

NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)


@pytest.mark.parametrize(
    ("claim", "key", "verdict"),
    [
        (None, "k1", Refusal.UNKNOWN),
        (ClaimFacts(LATER, None), "k1", None),
        (ClaimFacts(NOW, None), "k1", Refusal.EXPIRED),
        (ClaimFacts(NOW - timedelta(days=1), "k1"), "k1", None),  # used in time, still waiting
        (ClaimFacts(LATER, "k1"), "k2", Refusal.REPLAYED),
        (ClaimFacts(LATER, "k1", rejected=True), "k1", Refusal.REJECTED),
        (ClaimFacts(LATER, "k1", rejected=True), "k2", Refusal.REPLAYED),
    ],
)
def test_claim_verdicts(claim: ClaimFacts | None, key: str, verdict: Refusal | None) -> None:
    assert judge(claim, key, NOW) == verdict


def test_claim_codes_are_readable_unique_and_stored_only_as_a_digest() -> None:
    codes = {new_claim_code() for _ in range(200)}
    assert len(codes) == 200
    code = codes.pop()
    assert len(code) == 19 and code.count("-") == 3
    assert not set(code) & set("01IO")
    typed = code.lower().replace("-", " ")
    assert normalise_claim_code(typed) == code.replace("-", "")
    assert claim_digest(typed) == claim_digest(code) and code not in claim_digest(code)
    assert normalise_claim_code("ABCD-EFGH") is None


def test_only_the_stations_key_opens_its_sealed_config() -> None:
    station, other = new_station_key(), new_station_key()
    secret = json.dumps({"mqtt": {"password": "rất-bí-mật"}}).encode()
    box = seal(public_key_text(station), secret)
    assert b"password" not in box.sealed.encode()
    assert open_box(station, box) == secret
    with pytest.raises(EnrolmentError, match="does not open"):
        open_box(other, box)
    tampered = box.model_copy(update={"sealed": box.sealed[:-2] + "AA"})
    with pytest.raises(EnrolmentError):
        open_box(station, tampered)


def test_backoff_doubles_to_a_cap_and_follows_the_servers_hint() -> None:
    backoff = Backoff(first_s=1, max_s=60)
    assert [backoff.delay(n, None, 0.999999) for n in range(8)] == pytest.approx(
        [1, 2, 4, 8, 16, 32, 60, 60], rel=1e-5
    )
    assert backoff.delay(10, 10, 0.0) == 5  # jitter draws from the upper half
    assert backoff.delay(10, 10, 0.999999) == pytest.approx(10, rel=1e-5)


def approving_server(station_key_holder: list[str], outages: int) -> httpx.MockTransport:
    """A server that fails ``outages`` times, then keeps the request pending once, then
    answers with a config sealed to the key the station sent."""
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        body = json.loads(request.content)
        station_key_holder.append(body["public_key"])
        if calls["n"] <= outages:
            return httpx.Response(503, json={"detail": "down for maintenance"})
        if request.url.path.endswith("/requests"):
            return httpx.Response(202, json={"request_id": 7, "state": "pending"})
        config = {
            "station_id": "st-01273-001",
            "trusted_keys": [],
            "data_dir": "/var/lib/loaxa-node",
            "mqtt": {"username": "st-01273-001", "password": "pw"},
        }
        box = seal(body["public_key"], json.dumps(config).encode())
        return httpx.Response(
            200, json={"request_id": 7, "state": "approved", "sealed": box.model_dump()}
        )

    return httpx.MockTransport(handle)


def test_the_station_waits_out_outages_and_keeps_its_hardware_sections(tmp_path: Path) -> None:
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump({"relay": {"driver": "gpio", "pin": 17, "active_low": True}}))
    keys: list[str] = []
    waits: list[float] = []
    config = enrol(
        "http://province.example",
        "K7QM-3XHD-9PWA-TC4N",
        path,
        hostname="loa-1",
        sleep=waits.append,
        transport=approving_server(keys, outages=2),
    )
    assert len(set(keys)) == 1, "one key pair for the whole enrolment"
    assert len(waits) == 3  # two outages, one pending answer
    assert config.station_id == "st-01273-001" and config.mqtt.password == "pw"
    assert (config.relay.driver, config.relay.pin, config.relay.active_low) == ("gpio", 17, True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text())["mqtt"]["password"] == "pw"
    assert not key_path_for(path).exists()
    # A second start finds a complete config and does not ask again.
    assert enrol("http://x", "unused", path, transport=httpx.MockTransport(_never)) == config


def _never(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"an enrolled station called {request.url}")


def test_a_refused_code_stops_with_the_servers_reason(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        message = "this claim code has already been used by another station"
        return httpx.Response(409, json={"detail": {"reason": "replayed", "message": message}})

    with pytest.raises(EnrolmentError, match=r"\(409\): this claim code has already been used"):
        enrol("http://x", "K7QM-3XHD-9PWA-TC4N", tmp_path / "s.yaml", sleep=lambda _: None,
              transport=httpx.MockTransport(refuse))  # fmt: skip
    assert key_path_for(tmp_path / "s.yaml").exists(), "the key is kept to ask again later"


def test_a_pre_enrolment_file_may_not_carry_identity_or_secrets(tmp_path: Path) -> None:
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump({"relay": {"driver": "sim"}, "mqtt": {"password": "x"}}))
    with pytest.raises(
        ConfigError, match="may only hold data_dir, modem, player, relay; found mqtt"
    ):
        enrol("http://x", "code", path, transport=httpx.MockTransport(_never))


def test_a_low_order_public_key_cannot_be_sealed_to() -> None:
    zero_point = "A" * 43  # 32 zero bytes: every exchange with it gives an all-zero secret
    assert not is_usable_public_key(zero_point)
    assert is_usable_public_key(public_key_text(new_station_key()))
    with pytest.raises(EnrolmentError, match="not a usable X25519 public key"):
        seal(zero_point, b"secret")
