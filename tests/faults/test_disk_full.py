"""The station's data disk is nearly full (a small tmpfs with little room left).

A bulletin that cannot fit must fail with a clear reported reason while the agent
stays up, and the canned alert library (the plan's keep list) is never silently
missing: each file is on disk (and a drill plays from it) or its absence is reported
(``library_failed``, shown on the station page), so a technician learns of it before
the next flood drill fails ``audio_missing``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audio_samples import make_audio
from tests.faults.conftest import Installation
from tests.faults.harness import StationProcess, cannot_run, soon, stored_plan, wait_until

DISK_BYTES = 8 * 1024**2
FREE_BYTES = 640 * 1024
"""Room for the library (~200 KB) and state, not for a 3-minute bulletin (~720 KB)."""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "station-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        cannot_run("mounting a small tmpfs needs root (CI runs the suite as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        cannot_run(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        stat = os.statvfs(mount)
        (mount / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - FREE_BYTES))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


def keep_list(station: StationProcess) -> set[str]:
    """The canned library the station's stored plan says it must keep."""
    plan = stored_plan(station.config)
    assert not isinstance(plan, str), plan
    return {ref.sha256 for ref in plan.keep}


def test_a_nearly_full_disk_is_reported_the_agent_stays_up_and_the_library_never_silently_missing(
    installation: Installation, small_disk: Path
) -> None:
    server = installation.server
    station = installation.add_station("Cụm loa đầy đĩa", data_dir=small_disk / "loaxa")
    sid = station.station_id
    # Connected and reporting; "degraded" is the technician's cue that something is wrong
    # (here: the disk).
    connected = {"online", "degraded"}
    wait_until(lambda: server.station(sid)["status"] in connected, 30, "the station online")
    big = server.api.upload(make_audio("mp3", 180.0), "dai.mp3")
    broadcast = server.api.broadcast(big["id"], soon(600), [sid])
    item = f"b-{broadcast['id']}"

    def refusal() -> dict[str, Any] | None:
        failed = [
            e
            for e in server.events(sid)
            if e["kind"] == "audio_failed" and e.get("item_id") == item
        ]
        return failed[0] if failed else None

    event = wait_until(refusal, 60, "the refused download to be reported")
    assert "disk_full" in f"{event['reason']} {event['detail']}", event
    assert station.running, station.log_text()[-2000:]
    assert server.station(sid)["status"] in connected

    library = keep_list(station)
    assert library, "the plan names no canned library"
    cached = {p.name for p in (Path(station.config.data_dir) / "audio").iterdir()}
    missing = library - cached
    reports = " ".join(
        f"{e.get('reason')} {e.get('detail')}"
        for e in server.events(sid)
        if e["kind"] == "library_failed"
    )
    silent = sorted(sha for sha in missing if sha not in reports)
    assert silent == [], f"library files missing and not reported: {silent}"
    if missing:
        # Reported, so the technician knows before the next drill; nothing to play it from.
        print(f"{len(missing)} of {len(library)} library files missing, each reported")
        return

    alert = server.api.api(
        "POST",
        "/api/v1/alerts",
        json={"title": "Diễn tập lũ", "canned": "flood", "tone": True, "repeat": 1,
              "station_ids": [sid], "drill": True},
    )  # fmt: skip
    wait_until(
        lambda: server.get(f"/api/v1/alerts/{alert['id']}")["stations"][0]["playing_at"],
        15,
        "the drill to play from the library",
    )
