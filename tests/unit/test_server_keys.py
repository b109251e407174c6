"""The server's key rotation: new key in, old key honoured for its grace, then gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from loaxa_protocol import Keyring, Plan, TrustUpdate, Verified, open_envelope, seal
from server.keys import SIGNING_KEY_FILE, ServerKeys
from server.planning.trust import build_trust_update
from server.settings import Settings

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def keys_in(tmp_path: Path) -> ServerKeys:
    return ServerKeys.load(Settings(data_dir=tmp_path, mqtt_enabled=False))


def test_rotation_keeps_the_old_public_key_for_its_grace_only(tmp_path: Path) -> None:
    keys = keys_in(tmp_path)
    first = keys.signing_key
    old, new = keys.rotate_signing_key(NOW, timedelta(days=7))
    assert old == first and keys.signing_key == new and new.kid != old.kid

    entries = {e.kid: e for e in keys.trusted_entries(NOW)}
    assert set(entries) == {new.kid, old.kid, keys.alert_key.kid}
    assert entries[old.kid].valid_until == NOW + timedelta(days=7)
    assert entries[keys.alert_key.kid].purposes == ["alert", "alert_cancel"]
    assert old.kid not in {e.kid for e in keys.trusted_entries(NOW + timedelta(days=8))}

    reloaded = keys_in(tmp_path)  # a restart keeps the new key and the grace
    assert reloaded.signing_key.kid == new.kid
    assert {e.kid for e in reloaded.trusted_entries(NOW)} == set(entries)
    leftover = b"".join(p.read_bytes() for p in (tmp_path / "keys").rglob("*") if p.is_file())
    assert old.to_pem() not in leftover  # the old private key is destroyed


def test_trust_update_signed_by_the_old_key_introduces_the_new_one(tmp_path: Path) -> None:
    keys = keys_in(tmp_path)
    station_ring = Keyring.of(keys.signing_key)
    old, new = keys.rotate_signing_key(NOW, timedelta(days=7))
    update = build_trust_update("st-1", keys, keys.next_seq(), NOW)
    verdict = open_envelope(seal(update, old), station_ring, NOW, {"st-1"})
    assert isinstance(verdict, Verified) and isinstance(verdict.message, TrustUpdate)

    rotated_ring = Keyring.from_entries(verdict.message.keys)
    plan = Plan(
        sender="server",
        seq=keys.next_seq(),
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
        to="st-1",
        station_id="st-1",
        horizon_until=NOW + timedelta(hours=48),
    )
    assert isinstance(open_envelope(seal(plan, new), rotated_ring, NOW, {"st-1"}), Verified)


def test_a_replica_reads_a_peers_rotation_and_never_makes_a_key_of_its_own(
    tmp_path: Path,
) -> None:
    """Two replicas share the keys directory; the one that did not rotate reads it again."""
    rotating, other = keys_in(tmp_path), keys_in(tmp_path)
    assert other.reload() is False  # nothing changed yet
    old, new = rotating.rotate_signing_key(NOW, timedelta(hours=1))
    assert other.signing_key.kid == old.kid
    assert other.reload() is True
    assert other.signing_key.kid == new.kid
    assert old.kid in {entry.kid for entry in other.trusted_entries(NOW)}

    key_file = tmp_path / "keys" / SIGNING_KEY_FILE
    key_file.rename(tmp_path / "away.pem")  # the shared volume is briefly not there
    assert other.reload() is False
    assert other.signing_key.kid == new.kid
    assert not key_file.exists()  # no key of its own was made in its place
