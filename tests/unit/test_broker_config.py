"""The generated broker files, as text: what each account may do is decided here.

These are pure functions of the station rows, so every rule of the ACL can be checked
without a broker; tests/integration/test_broker_security.py then proves that a real
Mosquitto running these files enforces them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509

from loaxa.broker_config import (
    INGEST_ENV_FILE,
    INGEST_USERNAME,
    SERVER_USERNAME,
    BrokerOptions,
    ServerCredentials,
    StationAccount,
    acl_text,
    broker_cert_still_good,
    mosquitto_conf_text,
    new_broker_cert,
    new_ca,
    parse_server_env,
    passwd_text,
    server_env_text,
    write_broker_dir,
)
from loaxa_protocol.errors import ConfigError
from loaxa_protocol.topics import TOPICS, Direction

# Hashes are opaque to the generator; a fixed fake keeps these tests free of PBKDF2.
HASH_A = "$7$101$c2FsdA==$aGFzaEE="
HASH_B = "$7$101$c2FsdA==$aGFzaEI="
A = StationAccount("cb-st-001", "cb-st-001", HASH_A, ("01273", "04"))
B = StationAccount("cb-st-002", "cb-st-002", HASH_B, ("01279", "04"))
SERVER = ServerCredentials(SERVER_USERNAME, "pw", "$7$101$c2FsdA==$c2VydmVy")
NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def rules(acl: str) -> dict[str, list[str]]:
    """ACL lines grouped by the ``user`` block they belong to."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in acl.splitlines():
        if line.startswith("user "):
            current = blocks.setdefault(line.removeprefix("user "), [])
        elif line.startswith("topic "):
            assert current is not None, f"rule outside a user block: {line}"
            current.append(line)
        else:
            assert line == "" or line.startswith("#"), f"unexpected ACL line {line!r}"
    return blocks


def test_the_server_may_use_the_whole_tree_and_read_the_broker_drop_counter() -> None:
    assert rules(acl_text([A, B]))[SERVER_USERNAME] == [
        "topic readwrite loaxa/v1/#",
        "topic read $SYS/broker/publish/messages/dropped",
    ]


def test_a_station_reads_its_down_topics_and_its_areas_and_writes_its_up_topics_only() -> None:
    assert rules(acl_text([A, B]))["cb-st-001"] == [
        "topic read loaxa/v1/station/cb-st-001/plan",
        "topic read loaxa/v1/station/cb-st-001/cmd",
        "topic read loaxa/v1/station/cb-st-001/trust",
        "topic read loaxa/v1/station/cb-st-001/alert",
        "topic read loaxa/v1/station/cb-st-001/live",
        "topic read loaxa/v1/area/01273/alert",
        "topic read loaxa/v1/area/04/alert",
        "topic write loaxa/v1/station/cb-st-001/event",
        "topic write loaxa/v1/station/cb-st-001/health",
        "topic write loaxa/v1/station/cb-st-001/status",
        "topic write loaxa/v1/station/cb-st-001/reply",
    ]


def test_every_topic_of_the_protocol_table_is_granted_to_its_owner_with_its_direction() -> None:
    """Derived from the table: a topic added to loaxa_protocol.topics lands in the ACL."""
    expected = [
        *(f"topic read {t.of(A.station_id)}" for t in TOPICS if t.direction is Direction.DOWN),
        *(f"topic read {t.of(code)}" for code in sorted(A.area_codes) for t in TOPICS
          if t.direction is Direction.AREA),
        *(f"topic write {t.of(A.station_id)}" for t in TOPICS if t.direction is Direction.UP),
    ]  # fmt: skip
    assert rules(acl_text([A, B]))[A.username] == expected
    assert len(expected) == len(TOPICS) + len(A.area_codes) - 1  # one area topic per area


def test_no_station_rule_names_another_station_or_uses_a_wildcard_or_pattern() -> None:
    acl = acl_text([A, B])
    assert "pattern" not in acl and "%u" not in acl and "%c" not in acl
    for user, lines in rules(acl).items():
        if user == SERVER_USERNAME:
            continue
        for line in lines:
            topic = line.split()[-1]
            assert "+" not in topic
            if topic.startswith("loaxa/v1/station/"):
                assert topic.split("/")[3] == user, line
            else:
                assert topic.startswith("loaxa/v1/area/") and "#" not in topic, line
            assert not line.startswith("topic readwrite"), line


def test_the_output_is_stable_whatever_the_row_order() -> None:
    assert acl_text([A, B]) == acl_text([B, A])
    assert passwd_text([A, B], SERVER) == passwd_text([B, A], SERVER)


@pytest.mark.parametrize(
    "bad",
    [
        StationAccount("x\ntopic readwrite #", "x", HASH_A, ()),
        StationAccount("cb-st-009", "evil user", HASH_A, ()),
        StationAccount("cb-st-009", "cb-st-009", HASH_A, ("04/#",)),
        StationAccount("cb+st", "cb-st-009", HASH_A, ()),
        StationAccount("cb-st-009", "a:b", HASH_A, ()),
    ],
)
def test_a_name_that_could_rewrite_the_acl_or_password_file_is_refused(
    bad: StationAccount,
) -> None:
    with pytest.raises(ConfigError):
        acl_text([A, bad])
    with pytest.raises(ConfigError):
        passwd_text([A, bad], SERVER)


def test_a_station_cannot_take_the_servers_account_or_share_one() -> None:
    with pytest.raises(ConfigError, match="server's own"):
        acl_text([StationAccount("loaxa-server", SERVER_USERNAME, HASH_A, ())])
    with pytest.raises(ConfigError, match="share"):
        acl_text([A, StationAccount("cb-st-003", "cb-st-001", HASH_B, ())])


def test_the_password_file_carries_the_stored_hashes_verbatim() -> None:
    assert passwd_text([A, B], SERVER).splitlines() == [
        f"{SERVER_USERNAME}:{SERVER.password_hash}",
        f"cb-st-001:{HASH_A}",
        f"cb-st-002:{HASH_B}",
    ]


def test_the_conf_refuses_anonymous_clients_on_every_listener_and_persists() -> None:
    out = Path("/etc/loaxa/broker")
    conf = mosquitto_conf_text(out, BrokerOptions(port=1883, tls_port=8883))
    lines = conf.splitlines()
    for directive in (
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {out}/passwd",
        f"acl_file {out}/acl",
        "persistence true",
        f"persistence_location {out}/data/",
        "listener 1883 127.0.0.1",
        "listener 8883",
        f"cafile {out}/ca.crt",
        f"certfile {out}/broker.crt",
        f"keyfile {out}/broker.key",
    ):
        assert directive in lines, directive
    assert "allow_anonymous true" not in conf
    assert not any(line.startswith("user ") for line in lines)
    with_user = mosquitto_conf_text(out, BrokerOptions(run_as_user="mosquitto"))
    assert "user mosquitto" in with_user.splitlines()


def test_the_conf_needs_absolute_paths() -> None:
    with pytest.raises(ValueError, match="absolute"):
        mosquitto_conf_text(Path("broker"), BrokerOptions())


def test_server_env_round_trips() -> None:
    assert parse_server_env(server_env_text(SERVER)) == (SERVER_USERNAME, "pw")
    assert parse_server_env("# nothing here\n") is None


def test_the_broker_certificate_names_the_hosts_and_is_signed_by_the_ca() -> None:
    ca_key, ca_cert = new_ca(NOW)
    _key, cert = new_broker_cert(ca_key, ca_cert, ["mqtt.caobang.example"], NOW)
    cert.verify_directly_issued_by(ca_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.caobang.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert broker_cert_still_good(cert, ca_cert, ["mqtt.caobang.example"], NOW)


def test_a_broker_certificate_is_reissued_for_a_new_name_another_ca_or_near_expiry() -> None:
    ca_key, ca_cert = new_ca(NOW)
    _key, cert = new_broker_cert(ca_key, ca_cert, ["a.example"], NOW)
    assert not broker_cert_still_good(cert, ca_cert, ["a.example", "b.example"], NOW)
    _other_key, other_ca = new_ca(NOW)
    assert not broker_cert_still_good(cert, other_ca, ["a.example"], NOW)
    late = cert.not_valid_after_utc - dt.timedelta(days=1)
    assert not broker_cert_still_good(cert, ca_cert, ["a.example"], late)


def test_the_ingest_workers_may_only_read_health_and_events() -> None:
    ingest = ServerCredentials(INGEST_USERNAME, "pw", "$7$101$c2FsdA==$aW5nZXN0")
    assert rules(acl_text([A, B], SERVER_USERNAME, INGEST_USERNAME))[INGEST_USERNAME] == [
        "topic read loaxa/v1/station/+/health",
        "topic read loaxa/v1/station/+/event",
    ]
    assert f"{INGEST_USERNAME}:{ingest.password_hash}" in passwd_text([A], SERVER, ingest)
    with pytest.raises(ConfigError, match="server's own"):
        acl_text([StationAccount("x-1", INGEST_USERNAME, HASH_A, ())])


def test_the_generated_directory_carries_the_ingest_account(tmp_path: Path) -> None:
    report = write_broker_dir(tmp_path / "broker", [A], BrokerOptions(1883, 8883))
    assert INGEST_ENV_FILE in report.created
    found = parse_server_env((tmp_path / "broker" / INGEST_ENV_FILE).read_text())
    assert found is not None and found[0] == INGEST_USERNAME
    again = write_broker_dir(tmp_path / "broker", [A], BrokerOptions(1883, 8883))
    assert INGEST_ENV_FILE in again.kept  # its password survives a re-run
    assert parse_server_env((tmp_path / "broker" / INGEST_ENV_FILE).read_text()) == found
