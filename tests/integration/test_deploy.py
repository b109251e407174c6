"""A server that runs unattended: the files `loaxa deploy` writes, checked by the tools
that will read them (systemd, nginx, the settings loader), and `loaxa doctor` telling
an administrator what is wrong and how to fix it."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from loaxa.deploy import Deployment, write_deployment
from loaxa.doctor import (
    Verdict,
    check_broker,
    check_database,
    check_keys,
    exit_code,
    report_lines,
    run_checks,
)
from server.app import create_app
from server.db import make_engine
from server.settings import Settings
from tests.brokers import MosquittoBroker
from tests.integration.test_server_api import RecordingBus

REPO = Path(__file__).resolve().parents[2]
HOST = "loa.caobang.gov.vn"


@pytest.fixture
def deployed(tmp_path: Path) -> tuple[Deployment, Path]:
    deployment = Deployment(
        HOST, install_dir=Path(sys.prefix), data_dir=tmp_path / "data", user="loaxa"
    )
    out = tmp_path / "deploy"
    write_deployment(deployment, out)
    return deployment, out


def test_the_settings_file_is_one_the_server_accepts(deployed: tuple[Deployment, Path]) -> None:
    _deployment, out = deployed
    settings = Settings(config_file=out / "settings.yaml")
    assert settings.public_url == f"https://{HOST}"
    assert settings.mqtt_tls and settings.mqtt_port == 8883
    assert (out / "loaxa.env").stat().st_mode & 0o077 == 0  # secrets: owner only
    assert "LOAXA_MQTT_PASSWORD=\n" in (out / "loaxa.env").read_text()


def test_an_edited_secrets_file_is_never_overwritten(deployed: tuple[Deployment, Path]) -> None:
    deployment, out = deployed
    (out / "loaxa.env").write_text("LOAXA_MQTT_PASSWORD=filled-in\n")
    write_deployment(deployment, out)
    assert (out / "loaxa.env").read_text() == "LOAXA_MQTT_PASSWORD=filled-in\n"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_every_unit(deployed: tuple[Deployment, Path]) -> None:
    _deployment, out = deployed
    units = [str(out / n) for n in ("loaxa-server.service", "loaxa-backup.service",
                                    "loaxa-backup.timer")]  # fmt: skip
    done = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def _self_signed(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True)
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                    reason="needs nginx (scripts/system-deps installs nginx-light)")  # fmt: skip
def test_nginx_accepts_the_tls_site(deployed: tuple[Deployment, Path], tmp_path: Path) -> None:
    _deployment, out = deployed
    certs = tmp_path / "certs"
    _self_signed(certs)
    site = (out / "nginx-loaxa.conf").read_text()
    site = site.replace(f"/etc/letsencrypt/live/{HOST}", str(certs))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {tmp_path}/site.conf; }}\n"
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    done = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_doctor_names_each_problem_with_its_fix(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", mqtt_host="127.0.0.1", mqtt_port=1,  # nothing listens
        public_url="http://127.0.0.1:1",
        database_url=f"sqlite:///{tmp_path / 'data' / 'loaxa.db'}",  # made legacy below
    )  # fmt: skip
    engine = make_engine(settings.db_url)
    settings.data_dir.mkdir(parents=True)
    with engine.begin() as connection:  # a database from before migrations, no revision
        connection.exec_driver_sql("CREATE TABLE account (id INTEGER PRIMARY KEY)")
    engine.dispose()
    keys = settings.keys_dir
    keys.mkdir(mode=0o755)
    for name in ("server_ed25519.pem", "province_alert_ed25519.pem"):
        (keys / name).write_text("key")
        (keys / name).chmod(0o644)

    findings = run_checks(settings)
    by_name = {f.check("en"): f for f in findings}
    assert by_name["Database"].verdict is Verdict.FAIL
    assert by_name["MQTT broker"].verdict is Verdict.FAIL
    assert by_name["Signing keys"].verdict is Verdict.FAIL
    assert by_name["Public URL"].verdict is Verdict.FAIL
    assert exit_code(findings) == 1
    vietnamese = "\n".join(report_lines(findings, "vi"))
    assert "→ Sao lưu (loaxa backup) rồi chạy: loaxa db upgrade" in vietnamese
    assert f"→ chmod -R go-rwx {keys}" in vietnamese
    assert "systemctl start mosquitto" in vietnamese
    english = "\n".join(report_lines(findings, "en"))
    assert "readable by others" in english and "Back up" in english


def test_doctor_passes_a_working_deployment(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", mqtt_host=mosquitto.host, mqtt_port=mosquitto.port,
        public_url="http://testserver",
    )  # fmt: skip
    with TestClient(create_app(settings, bus=RecordingBus())):
        pass  # a first start: migrated database, generated keys
    for check in (check_database, check_broker, check_keys):
        finding = check(settings)
        assert finding.verdict is Verdict.OK, (finding.check("en"), finding.detail("en"))


def test_loaxa_doctor_runs_from_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loaxa", "doctor", "--lang", "en"],
        env={**os.environ, "PYTHONPATH": str(REPO), "LOAXA_DATA_DIR": str(tmp_path),
             "LOAXA_MQTT_PORT": "1", "LOAXA_PUBLIC_URL": "http://127.0.0.1:1"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "✓ Database" in done.stdout and "✗ MQTT broker" in done.stdout
    assert "ffmpeg with libopus" in done.stdout
