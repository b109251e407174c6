"""Settings sources and the server's persistent secrets (keys, sequence, URL signatures)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from loaxa_protocol.errors import ConfigError
from server.keys import Sequence, ServerKeys, UrlSigner
from server.passwords import hash_password, verify_password
from server.settings import Settings

NOW = datetime(2025, 7, 1, 4, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOAXA_CONFIG_FILE", "LOAXA_MQTT_PORT", "LOAXA_URL_SECRET", "LOAXA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_derive_the_database_from_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'loaxa.db'}"
    assert settings.plan_horizon_h == 9 * 24  # a week without network (issue 11)
    assert settings.max_upload_bytes == 50 * 1024 * 1024
    assert all(field.description for field in Settings.model_fields.values())


def test_file_then_environment_then_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "loaxa.yaml"
    config.write_text(f"data_dir: {tmp_path}\nmqtt_host: broker.example\nmqtt_port: 1884\n")
    from_file = Settings(config_file=config)
    assert (from_file.mqtt_host, from_file.mqtt_port) == ("broker.example", 1884)

    monkeypatch.setenv("LOAXA_MQTT_PORT", "8883")
    assert Settings(config_file=config).mqtt_port == 8883
    assert Settings(config_file=config, mqtt_port=1885).mqtt_port == 1885

    toml = tmp_path / "loaxa.toml"
    toml.write_text('mqtt_host = "toml.example"\n')
    monkeypatch.setenv("LOAXA_CONFIG_FILE", str(toml))
    assert Settings().mqtt_host == "toml.example"


def test_a_typo_in_the_file_is_an_error_not_a_default(tmp_path: Path) -> None:
    config = tmp_path / "loaxa.yaml"
    config.write_text("mqtt_hots: broker.example\n")
    with pytest.raises(ValidationError, match="mqtt_hots"):
        Settings(config_file=config)
    with pytest.raises(ConfigError, match="not found"):
        Settings(config_file=tmp_path / "missing.yaml")


@pytest.mark.parametrize("secret", ["changeme", "SECRET", "password", "short-but-real"])
def test_placeholder_or_short_url_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="url_secret"):
        Settings(url_secret=secret)


def test_keys_are_generated_once_private_and_reloaded(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = ServerKeys.load(settings)
    second = ServerKeys.load(settings)
    assert first.signing_key.kid == second.signing_key.kid
    assert first.signing_key.purposes == frozenset(
        {"plan", "command", "trust", "live_start", "live_stop"}
    )
    assert first.urls.secret == second.urls.secret
    for path in settings.keys_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_sequence_never_repeats_even_when_the_clock_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "sequence.json"
    sequence = Sequence(path, lease=100)
    assert sequence.next(now_ms=1_000) == 1_000
    assert sequence.next(now_ms=1_000) == 1_001  # same millisecond
    assert sequence.next(now_ms=500) == 1_002  # clock stepped back (NTP)
    assert sequence.next(now_ms=2_000) == 2_000  # clock ahead again
    restarted = Sequence(path, lease=100)
    assert restarted.next(now_ms=10) > 2_000  # resumes above the persisted lease


def test_signed_urls_are_bound_to_audio_and_expiry() -> None:
    signer = UrlSigner(b"k" * 32, "http://server")
    url = signer.sign_url(7, timedelta(hours=1), NOW)
    query = dict(p.split("=") for p in url.split("?")[1].split("&"))
    exp, sig = int(query["exp"]), query["sig"]
    assert url.startswith("http://server/api/v1/audio/7/content?")
    assert signer.check_url(7, exp, sig, NOW)
    assert not signer.check_url(8, exp, sig, NOW)
    assert not signer.check_url(7, exp + 1, sig, NOW)
    assert not signer.check_url(7, exp, sig, NOW + timedelta(hours=1))
    assert not UrlSigner(b"o" * 32, "http://server").check_url(7, exp, sig, NOW)


def test_password_hashes_use_mosquittos_format() -> None:
    stored = hash_password("mật-khẩu", iterations=1000)
    assert stored.startswith("$7$1000$")
    assert verify_password("mật-khẩu", stored)
    assert not verify_password("mat-khau", stored)
    assert not verify_password("x", "garbage")
