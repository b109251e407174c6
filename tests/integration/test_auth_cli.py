"""``loaxa user create``, ``loaxa user grant`` and ``loaxa token create`` as an admin runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from server.app import create_app
from tests.integration.test_server_api import RecordingBus, make_settings

PASSWORD = "cụm loa thôn Nà Rị"


def loaxa(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOAXA_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "loaxa", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_accounts_made_on_the_command_line_work_on_the_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    made = loaxa(
        data_dir,
        "user", "create", "--username", "lan", "--role", "commune_operator", "--area", "01273",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "created user lan (id 1) commune_operator@01273"
    granted = loaxa(
        data_dir, "user", "grant", "--username", "lan", "--role", "viewer", "--area", "04"
    )
    assert granted.returncode == 0 and "viewer in 04" in granted.stdout
    issued = loaxa(data_dir, "token", "create", "--user", "lan", "--name", "cap-sender")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("lxa_")

    weak = loaxa(data_dir, "user", "create", "--username", "minh", stdin="minh\n")
    assert weak.returncode == 2 and "at least 10" in weak.stderr
    nobody = loaxa(data_dir, "token", "create", "--user", "ghost", "--name", "x")
    assert nobody.returncode == 2 and "'ghost' does not exist" in nobody.stderr
    bad_role = loaxa(
        data_dir, "user", "grant", "--username", "lan", "--role", "boss", "--area", "04"
    )
    assert bad_role.returncode == 2 and "unknown role 'boss'" in bad_role.stderr

    with TestClient(create_app(make_settings(tmp_path), bus=RecordingBus())) as client:
        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert me["username"] == "lan"
        assert {(g["role"], g["area_code"]) for g in me["grants"]} == {
            ("commune_operator", "01273"),
            ("viewer", "04"),
        }
        login = client.post("/api/v1/auth/login", json={"username": "lan", "password": PASSWORD})
        assert login.status_code == 200
