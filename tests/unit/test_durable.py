"""The one crash-safe write (loaxa_protocol.durable): old bytes or new, never a mix."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from loaxa_protocol.durable import atomic_file, write_atomically


def test_a_write_replaces_the_file_whole_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "server_ed25519.pem"
    write_atomically(target, b"old")
    write_atomically(target, b"new secret", mode=0o600)
    assert target.read_bytes() == b"new secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary left


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    write_atomically(target, b"the stored plan")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"half a pl")
        raise RuntimeError("power cut")
    assert target.read_bytes() == b"the stored plan"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_a_full_or_missing_directory_raises_oserror_and_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomically(tmp_path / "missing" / "x", b"data")
    assert list(tmp_path.iterdir()) == []
