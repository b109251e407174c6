"""One-time codes: accepted within a step of drift, and each only once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp

from server.auth import totp

NOW = datetime(2025, 7, 1, 5, 0, 10, tzinfo=UTC)


def test_provisioning_uri_names_loaxa_and_the_user() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "lan.nguyen")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert "lan.nguyen" in parts.path
    query = parse_qs(parts.query)
    assert query["secret"] == [secret] and query["issuer"] == ["Loaxa"]


def test_codes_are_accepted_with_one_step_of_drift_and_never_twice() -> None:
    secret = totp.new_secret()
    code = pyotp.TOTP(secret).at(NOW)
    step = totp.matching_step(secret, code, NOW, None)
    assert step == pyotp.TOTP(secret).timecode(NOW)
    assert totp.matching_step(secret, code, NOW + timedelta(seconds=30), None) == step
    assert totp.matching_step(secret, code, NOW + timedelta(seconds=90), None) is None
    assert totp.matching_step(secret, code, NOW, last_step=step) is None  # replay
    assert totp.matching_step(secret, f" {code[:3]} {code[3:]} ", NOW, None) == step


def test_wrong_and_malformed_codes_are_refused() -> None:
    secret = totp.new_secret()
    code = pyotp.TOTP(secret).at(NOW)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert totp.matching_step(secret, wrong, NOW, None) is None
    assert totp.matching_step(secret, "abcdef", NOW, None) is None
    assert totp.matching_step(secret, "", NOW, None) is None
