"""``loaxa broker config``: a locked-down Mosquitto configuration generated from the server DB.

The broker is the only thing standing between the internet and a station's plan topic,
so its configuration is generated, never hand-edited: one account per station with the
``$7$`` hash the server stored at registration, an ACL that confines each station to
its own topics, the server's own account, and TLS. The text of every file is built by a
pure function of its inputs (unit-tested without a disk or a broker); only
:func:`write_broker_dir` touches the file system, and it is idempotent — re-running it
after a new registration adds the station and keeps the CA, the broker certificate and
the server's password, because stations pin the CA and the server holds the password.

See docs/security.md ("The broker") for what the generated config guarantees and why.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from loaxa_protocol import topics
from loaxa_protocol.errors import ConfigError
from loaxa_protocol.topics import Direction
from server.passwords import hash_password, mosquitto_password_line, verify_password

SERVER_USERNAME = "loaxa-server"
INGEST_USERNAME = "loaxa-ingest"
"""The ingest workers' account (``loaxa worker ingest``): reads station health and events."""
INGEST_TOPICS = (topics.ALL_HEALTH, topics.ALL_EVENTS)

# Names end up verbatim in the ACL and password files, one entry per line. A newline,
# space or MQTT wildcard in a name from the database would let that row rewrite the
# ACL ("user x\ntopic readwrite #"), so anything outside this alphabet is refused.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

CA_VALIDITY = dt.timedelta(days=3650)
BROKER_CERT_VALIDITY = dt.timedelta(days=825)
RENEW_BEFORE = dt.timedelta(days=30)

# Files the generator writes, by mode. Secrets are 0600 from the first byte on.
CONF_FILE = "mosquitto.conf"
PASSWD_FILE = "passwd"
ACL_FILE = "acl"
SERVER_ENV_FILE = "server.env"
INGEST_ENV_FILE = "ingest.env"
CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
BROKER_CERT_FILE = "broker.crt"
BROKER_KEY_FILE = "broker.key"
README_FILE = "README.txt"
DATA_DIR = "data"


@dataclass(frozen=True)
class StationAccount:
    """What the broker needs to know about one station: who it is and where it sits."""

    station_id: str
    username: str
    password_hash: str
    area_codes: tuple[str, ...]
    """The station's area and every ancestor (commune, district if any, province)."""


@dataclass(frozen=True)
class BrokerOptions:
    """Where the broker listens and which user it runs as."""

    port: int = 1883
    tls_port: int = 8883
    hosts: tuple[str, ...] = ()
    """DNS names or addresses stations use to reach the broker (put in the certificate)."""
    run_as_user: str | None = None
    """``user`` directive; None keeps Mosquitto's default (drops root to ``mosquitto``)."""


@dataclass(frozen=True)
class ServerCredentials:
    username: str
    password: str
    password_hash: str


@dataclass
class WriteReport:
    """What :func:`write_broker_dir` did, for the CLI to tell the operator."""

    out_dir: Path
    stations: int
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _check_name(kind: str, value: str) -> str:
    if not _SAFE_NAME.fullmatch(value):
        raise ConfigError(
            f"{kind} {value!r} cannot go into a Mosquitto ACL or password file: use 1-64 "
            "letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def _check_accounts(accounts: Sequence[StationAccount]) -> None:
    seen: set[str] = set()
    for account in accounts:
        _check_name("station id", account.station_id)
        _check_name("username", account.username)
        for code in account.area_codes:
            _check_name("area code", code)
        if account.username in (SERVER_USERNAME, INGEST_USERNAME):
            raise ConfigError(
                f"station {account.station_id!r} uses the server's own broker user "
                f"{account.username!r}; re-register it under another name"
            )
        if account.username in seen:
            raise ConfigError(f"two stations share the broker user {account.username!r}")
        seen.add(account.username)


# ------------------------------------------------------------------- pure text


def station_rules(account: StationAccount) -> list[str]:
    """A station's ACL rules, derived from the protocol's topic table (:data:`topics.TOPICS`).

    It reads its own down-topics and the area topics of its area and every ancestor, and
    writes its own up-topics; nothing else. Deriving the rules from the table means a
    topic added to the protocol is granted here without anyone remembering to.
    """
    own, areas = account.station_id, sorted(account.area_codes)
    return [
        *(f"topic read {t.of(own)}" for t in topics.of_direction(Direction.DOWN)),
        *(f"topic read {t.of(a)}" for a in areas for t in topics.of_direction(Direction.AREA)),
        *(f"topic write {t.of(own)}" for t in topics.of_direction(Direction.UP)),
    ]


def acl_text(
    accounts: Sequence[StationAccount],
    server_username: str = SERVER_USERNAME,
    ingest_username: str | None = None,
) -> str:
    """The ACL file: the server may use the whole tree; a station only its own topics.

    Every station rule is spelled out with the station's literal id. Mosquitto's
    ``pattern`` rules (``%u``/``%c``) are avoided on purpose: ``%c`` is chosen by the
    client, and one wrong pattern line would apply to every account at once.
    """
    _check_accounts(accounts)
    _check_name("username", server_username)
    lines = [
        "# Generated by `loaxa broker config`; re-run it instead of editing this file.",
        "# Anything not granted here is denied: reads are silently not delivered,",
        "# writes are silently dropped (MQTT 3.1.1 has no way to refuse a publish).",
        "",
        f"user {server_username}",
        f"topic readwrite {topics.ROOT}/#",
        # What the broker dropped for clients too slow to read: the server reports it.
        f"topic read {topics.BROKER_DROPPED}",
    ]
    if ingest_username is not None:
        # Read-only, and only what the workers write to the database: a stolen worker
        # password can neither publish a plan nor read one (Mosquitto 2 checks a
        # ``$share/<group>/`` subscription against the topic after the prefix).
        _check_name("username", ingest_username)
        lines += ["", f"user {ingest_username}", *(f"topic read {t}" for t in INGEST_TOPICS)]
    for account in sorted(accounts, key=lambda a: a.station_id):
        lines += ["", f"user {account.username}", *station_rules(account)]
    return "\n".join(lines) + "\n"


def passwd_text(
    accounts: Sequence[StationAccount],
    server: ServerCredentials,
    ingest: ServerCredentials | None = None,
) -> str:
    """The password file: the hashes exactly as stored, so no plain password is needed."""
    _check_accounts(accounts)
    lines = [
        mosquitto_password_line(_check_name("username", server.username), server.password_hash)
    ]
    if ingest is not None:
        lines.append(
            mosquitto_password_line(_check_name("username", ingest.username), ingest.password_hash)
        )
    lines += [
        mosquitto_password_line(a.username, a.password_hash)
        for a in sorted(accounts, key=lambda a: a.username)
    ]
    return "\n".join(lines) + "\n"


def mosquitto_conf_text(out_dir: Path, options: BrokerOptions) -> str:
    """``mosquitto.conf`` with absolute paths into ``out_dir`` (must already be absolute)."""
    if not out_dir.is_absolute():
        raise ValueError(f"{out_dir} must be absolute: mosquitto resolves paths from its cwd")
    user = [f"user {options.run_as_user}"] if options.run_as_user else []
    return "\n".join(
        [
            "# Generated by `loaxa broker config`; re-run it instead of editing this file.",
            "# Start with: mosquitto -c " + str(out_dir / CONF_FILE),
            "",
            "# One set of security settings for every listener: no listener can be",
            "# accidentally left open.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {out_dir / PASSWD_FILE}",
            f"acl_file {out_dir / ACL_FILE}",
            *user,
            "",
            "# The server connects with a fixed client id and a persistent session, so the",
            "# broker queues station events (QoS 1) while the server restarts. Persistence",
            "# keeps that queue, the retained plans and the retained statuses across a",
            "# broker restart; autosave every minute bounds what a crash can lose.",
            "persistence true",
            f"persistence_location {out_dir / DATA_DIR}/",
            "autosave_interval 60",
            "# A server down for an hour with a thousand stations misses far more than",
            "# Mosquitto's default of 1000 queued messages.",
            "max_queued_messages 100000",
            "# The largest envelope the protocol allows is 1 MiB, plus topic and header.",
            "max_packet_size 1100000",
            "# Alerts are small and urgent: send each at once instead of waiting (Nagle's",
            "# algorithm) to batch it with the next; measured ~40 ms saved per hop.",
            "set_tcp_nodelay true",
            "",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "",
            "# Plain MQTT for the server and tools on this machine only.",
            f"listener {options.port} 127.0.0.1",
            "",
            "# Stations connect here, over TLS, on every interface.",
            f"listener {options.tls_port}",
            f"cafile {out_dir / CA_CERT_FILE}",
            f"certfile {out_dir / BROKER_CERT_FILE}",
            f"keyfile {out_dir / BROKER_KEY_FILE}",
            "tls_version tlsv1.2",
            "",
        ]
    )


def server_env_text(credentials: ServerCredentials) -> str:
    return (
        f"# The broker account of {credentials.username} (generated by `loaxa broker config`).\n"
        f"LOAXA_MQTT_USERNAME={credentials.username}\n"
        f"LOAXA_MQTT_PASSWORD={credentials.password}\n"
    )


def parse_server_env(text: str) -> tuple[str, str] | None:
    """(username, password) from a ``server.env`` written earlier, if it has both."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    username, password = values.get("LOAXA_MQTT_USERNAME"), values.get("LOAXA_MQTT_PASSWORD")
    return (username, password) if username and password else None


def readme_text(out_dir: Path, options: BrokerOptions) -> str:
    return f"""Loaxa broker configuration — generated by `loaxa broker config`
=================================================================

Start:    mosquitto -c {out_dir / CONF_FILE}
Server:   export the two lines of {SERVER_ENV_FILE} (LOAXA_MQTT_USERNAME, LOAXA_MQTT_PASSWORD)
          into the server's environment and point it at 127.0.0.1:{options.port}.
Workers:  `loaxa worker ingest` processes (optional, LOAXA_INGEST_WORKERS=true on the
          server) take the two lines of {INGEST_ENV_FILE} instead: an account that may
          only read station health and events.
Stations: connect to port {options.tls_port} with TLS (node config: mqtt.tls: true,
          mqtt.ca_file: a copy of {CA_CERT_FILE}). Set LOAXA_NODE_MQTT_PORT={options.tls_port},
          LOAXA_NODE_MQTT_TLS=true and LOAXA_NODE_MQTT_CA_FILE=<where stations keep the
          CA> on the server, and the node config registration returns says so.

Re-run the command after registering stations: it rewrites {PASSWD_FILE} and {ACL_FILE}
and keeps the CA, the broker certificate and the server password. Then reload the
broker (kill -HUP <pid> or `systemctl reload`) so it reads them again.

Files
  {CA_KEY_FILE}      signs broker certificates. Keep it off the broker: copy it to
              offline storage and delete it here; it is only needed to issue a new
              {BROKER_CERT_FILE} (the command then needs it back in this directory).
  {BROKER_KEY_FILE}  the broker's TLS key; readable by root and the mosquitto group only.
  {SERVER_ENV_FILE}  the server's broker password; readable by the server's user only.
  {INGEST_ENV_FILE}  the ingest workers' broker password; readable by their user only.

Using real certificates instead of the generated CA
  The generated CA suits a commune or a small province. With Let's Encrypt or a
  provincial PKI:
  1. Obtain a certificate for the broker's public name (e.g. certbot certonly
     --standalone -d mqtt.example.gov.vn, or a CSR signed by the provincial CA).
  2. Copy the full chain over {BROKER_CERT_FILE} and the key over {BROKER_KEY_FILE}
     (a certbot --deploy-hook can do it on every renewal). Re-running this command
     leaves a certificate it did not issue alone.
  3. Stations: with a public CA (Let's Encrypt) leave mqtt.ca_file empty so the
     system trust store is used; with a provincial CA ship its root as mqtt.ca_file.
  4. Restart mosquitto (2.0 does not reload certificates on SIGHUP).
  Stations always verify the broker's name, so the name they dial must be in the
  certificate.
"""


# --------------------------------------------------------------------------- TLS


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _san_entries(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def new_ca(
    now: dt.datetime, common_name: str = "Loaxa broker CA"
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed ECDSA P-256 CA: accepted by every OpenSSL a Pi or Mosquitto ships."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def new_broker_cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: Sequence[str],
    now: dt.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for ``hosts`` plus localhost and 127.0.0.1, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    common_name = hosts[0] if hosts else "localhost"
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + BROKER_CERT_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def broker_cert_still_good(
    cert: x509.Certificate, ca_cert: x509.Certificate, hosts: Sequence[str], now: dt.datetime
) -> bool:
    """Keep a certificate issued by this CA that names every host and is not about to expire."""
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(_san_entries(hosts)) <= set(san)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --------------------------------------------------------------------------- I/O


def _write(path: Path, data: bytes | str, mode: int) -> None:
    """Atomic write with ``mode`` from the first byte on (no window where a key is 0644).

    A file being replaced keeps its owner and group, so the ``chgrp mosquitto`` of the
    deployment guide survives every re-run.
    """
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # umask may have narrowed it; never widened
        if path.exists():
            previous = path.stat()
            with contextlib.suppress(PermissionError):  # only root may give files away
                os.chown(tmp, previous.st_uid, previous.st_gid)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _server_credentials(
    out_dir: Path, env_file: str = SERVER_ENV_FILE, username: str = SERVER_USERNAME
) -> tuple[ServerCredentials, bool]:
    """A process's account (the server's by default), reused from its env file (and its
    hash from ``passwd``)."""
    env_path = out_dir / env_file
    existing = parse_server_env(env_path.read_text()) if env_path.exists() else None
    if existing is None:
        password = secrets.token_urlsafe(32)
        return ServerCredentials(username, password, hash_password(password)), True
    username, password = existing
    # Reuse the stored hash when it still matches, so a re-run leaves passwd unchanged.
    passwd_path = out_dir / PASSWD_FILE
    if passwd_path.exists():
        for line in passwd_path.read_text().splitlines():
            name, _sep, stored = line.partition(":")
            if name == username and verify_password(password, stored):
                return ServerCredentials(username, password, stored), False
    return ServerCredentials(username, password, hash_password(password)), False


def _tls_material(out_dir: Path, hosts: Sequence[str], report: WriteReport) -> None:
    now = _utcnow()
    ca_cert_path, ca_key_path = out_dir / CA_CERT_FILE, out_dir / CA_KEY_FILE
    cert_path, key_path = out_dir / BROKER_CERT_FILE, out_dir / BROKER_KEY_FILE
    if ca_cert_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        report.kept.append(CA_CERT_FILE)
    else:
        ca_key, ca_cert = new_ca(now)
        _write(ca_key_path, _pem_key(ca_key), 0o600)
        _write(ca_cert_path, _pem_cert(ca_cert), 0o644)
        report.created += [CA_KEY_FILE, CA_CERT_FILE]

    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.issuer != ca_cert.subject:
            # A real certificate (Let's Encrypt, provincial PKI) put in our place.
            report.kept.append(f"{BROKER_CERT_FILE} (not issued by {CA_CERT_FILE}; left alone)")
            return
        if broker_cert_still_good(cert, ca_cert, hosts, now):
            report.kept.append(BROKER_CERT_FILE)
            return
    if not ca_key_path.exists():
        raise ConfigError(
            f"{cert_path} must be (re)issued for {list(hosts) or ['localhost']} but "
            f"{ca_key_path} is not here; copy the CA key back from offline storage"
        )
    loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{ca_key_path} is not an ECDSA key")
    key, cert = new_broker_cert(loaded, ca_cert, hosts, now)
    # Group-readable: a broker running as its own user reads it through the group.
    _write(key_path, _pem_key(key), 0o640)
    _write(cert_path, _pem_cert(cert), 0o644)
    report.created.append(BROKER_CERT_FILE)


def write_broker_dir(
    out_dir: Path, accounts: Sequence[StationAccount], options: BrokerOptions
) -> WriteReport:
    """Write (or update) a complete, runnable Mosquitto directory; see the module docstring."""
    out_dir = out_dir.expanduser().resolve()
    _check_accounts(accounts)  # before anything is written
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    (out_dir / DATA_DIR).mkdir(exist_ok=True, mode=0o700)
    report = WriteReport(out_dir=out_dir, stations=len(accounts))

    server, created = _server_credentials(out_dir)
    if created:
        _write(out_dir / SERVER_ENV_FILE, server_env_text(server), 0o600)
        report.created.append(SERVER_ENV_FILE)
    else:
        report.kept.append(SERVER_ENV_FILE)
    ingest, created = _server_credentials(out_dir, INGEST_ENV_FILE, INGEST_USERNAME)
    if created:
        _write(out_dir / INGEST_ENV_FILE, server_env_text(ingest), 0o600)
        report.created.append(INGEST_ENV_FILE)
    else:
        report.kept.append(INGEST_ENV_FILE)
    _tls_material(out_dir, options.hosts, report)
    _write(out_dir / PASSWD_FILE, passwd_text(accounts, server, ingest), 0o640)
    _write(out_dir / ACL_FILE, acl_text(accounts, server.username, ingest.username), 0o640)
    _write(out_dir / CONF_FILE, mosquitto_conf_text(out_dir, options), 0o644)
    _write(out_dir / README_FILE, readme_text(out_dir, options), 0o644)
    return report


def sync_accounts(out_dir: Path, accounts: Sequence[StationAccount]) -> bool:
    """Rewrite only ``passwd`` and ``acl`` of a directory ``write_broker_dir`` made.

    True when either changed (the broker must then reload: SIGHUP); the config, TLS
    material and the server's account are left as they are. Refuses a directory without
    ``server.env``: run ``loaxa broker config`` first.
    """
    out_dir = out_dir.expanduser().resolve()
    _check_accounts(accounts)
    if not (out_dir / SERVER_ENV_FILE).exists():
        raise ConfigError(f"{out_dir} has no {SERVER_ENV_FILE}: run `loaxa broker config` first")
    server, _ = _server_credentials(out_dir)
    # The ingest workers' account stays as `broker config` made it (absent in older dirs).
    ingest = None
    if (out_dir / INGEST_ENV_FILE).exists():
        ingest, _ = _server_credentials(out_dir, INGEST_ENV_FILE, INGEST_USERNAME)
    changed = False
    for name, text in (
        (PASSWD_FILE, passwd_text(accounts, server, ingest)),
        (ACL_FILE, acl_text(accounts, server.username, ingest.username if ingest else None)),
    ):
        path = out_dir / name
        if not path.exists() or path.read_text() != text:
            _write(path, text, 0o640)
            changed = True
    return changed


def load_station_accounts(database_url: str) -> list[StationAccount]:
    """Every registered station with its stored hash and its area ancestry."""
    from sqlalchemy import inspect, make_url
    from sqlmodel import Session, select

    from server.areas import ancestry
    from server.db import make_engine
    from server.models import Station

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        # Connecting would create an empty database and report "no stations".
        raise ConfigError(f"no Loaxa database at {url.database}; pass --database-url")
    engine = make_engine(database_url)
    try:
        if not inspect(engine).has_table("station"):
            raise ConfigError(
                f"no Loaxa database at {database_url} (no station table); run `loaxa serve` "
                "once, or pass --database-url / LOAXA_DATABASE_URL"
            )
        with Session(engine) as session:
            return [
                StationAccount(
                    station_id=station.id,
                    username=station.mqtt_username,
                    password_hash=station.mqtt_password_hash,
                    area_codes=tuple(ancestry(session, station.area_code)),
                )
                for station in session.exec(select(Station).order_by(Station.id)).all()
            ]
    finally:
        engine.dispose()
