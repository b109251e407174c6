"""The broker's accounts follow the database: passwd and acl only, reload only on a change."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from loaxa import broker_sync
from loaxa.broker_config import (
    ACL_FILE,
    CONF_FILE,
    PASSWD_FILE,
    BrokerOptions,
    StationAccount,
    sync_accounts,
    write_broker_dir,
)
from loaxa_protocol.errors import ConfigError
from server.broker_accounts import accounts_changed, stamp_path

HASH_A = "$7$101$c2FsdA==$aGFzaEE="
HASH_B = "$7$101$c2FsdA==$aGFzaEI="
A = StationAccount("cb-st-001", "cb-st-001", HASH_A, ("01273", "04"))
B = StationAccount("cb-st-002", "cb-st-002", HASH_B, ("01279", "04"))


@pytest.fixture
def broker_dir(tmp_path: Path) -> Path:
    out = tmp_path / "broker"
    write_broker_dir(out, [A], BrokerOptions(port=1883, tls_port=8883))
    return out


def test_a_new_account_rewrites_passwd_and_acl_and_nothing_else(broker_dir: Path) -> None:
    conf = (broker_dir / CONF_FILE).read_bytes()
    assert sync_accounts(broker_dir, [A]) is False  # as written: no reload needed
    assert sync_accounts(broker_dir, [A, B]) is True
    assert "cb-st-002:" in (broker_dir / PASSWD_FILE).read_text()
    assert "user cb-st-002" in (broker_dir / ACL_FILE).read_text()
    assert "loaxa-server:" in (broker_dir / PASSWD_FILE).read_text()  # the server's kept
    assert "loaxa-ingest:" in (broker_dir / PASSWD_FILE).read_text()  # and the workers'
    assert "user loaxa-ingest" in (broker_dir / ACL_FILE).read_text()
    assert (broker_dir / CONF_FILE).read_bytes() == conf
    assert sync_accounts(broker_dir, [A, B]) is False


def test_a_directory_never_configured_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loaxa broker config"):
        sync_accounts(tmp_path, [A])


def test_the_watch_syncs_when_the_server_stamps_and_reloads_the_broker(
    broker_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = [A]
    monkeypatch.setattr(broker_sync, "load_station_accounts", lambda url: list(accounts))
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(broker_sync.os, "kill", lambda pid, sig: signals.append((pid, sig)))
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text("4242\n")
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    stop = threading.Event()
    watcher = threading.Thread(
        target=broker_sync.watch,
        args=(broker_dir, "sqlite://", pid_file, stamp_path(server_dir), stop, 0.02),
    )
    watcher.start()
    try:
        stop.wait(0.2)
        assert signals == []  # nothing new at start: no reload
        accounts.append(B)
        accounts_changed(server_dir)  # what registration does
        for _ in range(250):
            if signals:
                break
            time.sleep(0.02)
    finally:
        stop.set()
        watcher.join(5)
    assert signals == [(4242, signal.SIGHUP)]
    assert "user cb-st-002" in (broker_dir / ACL_FILE).read_text()
