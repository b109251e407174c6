"""Twenty power cuts (``kill -9``) while plans change and a slow download runs.

The station sits in its own network namespace behind a ``tbf`` rate limit, so a two-
minute bulletin takes half a minute to arrive, and every cut lands in the middle of
something: a plan being written, a download half done. After each cut the test reads
the station's disk the way the agent's next boot will, and checks what a technician
would fear: the plan it boots with is whole and genuinely signed, and every file in the
audio cache is exactly the file its name (its sha256) promises.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from pathlib import Path

import pytest

from node_firmware.config import NodeConfig
from tests.audio_samples import make_audio
from tests.faults.conftest import Installation
from tests.faults.harness import (
    StationNetwork,
    soon,
    stored_plan,
    wait_until,
)

CUTS = 20
RATE = "128kbit"
"""16 KB/s: the 2-minute bulletin (Opus 32 kbit/s, ~480 KB) needs ~30 s of link."""


def boot_disk_problems(config: NodeConfig) -> list[str]:
    """What would be wrong with the disk the next boot reads (empty when sound)."""
    plan = stored_plan(config)
    problems = [plan] if isinstance(plan, str) else []
    audio = Path(config.data_dir) / "audio"
    for path in audio.iterdir():
        if path.is_file() and re.fullmatch(r"[0-9a-f]{64}", path.name):
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != path.name:
                problems.append(f"cached {path.name[:12]} holds bytes of {actual[:12]}")
    return problems


@pytest.mark.network(index=42, rate=RATE)
def test_twenty_power_cuts_during_plan_updates_and_a_slow_download_corrupt_nothing(
    namespaced_installation: Installation, network: StationNetwork
) -> None:
    installation = namespaced_installation
    server = installation.server
    station = installation.add_namespaced_station(
        "Cụm loa mất điện",
        network,
    )
    sid = station.station_id
    wait_until(lambda: server.station(sid)["status"] == "online", 40, "the station online")
    small = server.api.upload(make_audio("mp3", 1.0), "ngan.mp3")
    big = server.api.upload(make_audio("mp3", 120.0), "dai.mp3")
    bulletin = server.api.broadcast(big["id"], soon(3600), [sid])
    partial = Path(station.config.data_dir) / "audio" / "partial" / big["sha256"]

    rng = random.Random(11)
    progress = []
    for cut in range(CUTS):
        # A plan update in flight, then the cut at a random instant of it.
        server.api.broadcast(small["id"], soon(1800 + cut * 60), [sid])
        time.sleep(rng.uniform(0.3, 2.5))
        station.kill()
        problems = boot_disk_problems(station.config)
        assert problems == [], f"after cut {cut + 1}: {problems}"
        progress.append(partial.stat().st_size if partial.exists() else None)
        station.start()
        time.sleep(rng.uniform(1.0, 2.5))  # booted: it resumes the download from disk
    print("partial download after each cut (bytes):", progress)

    view = server.api.wait_for_states(bulletin["id"], {"fetched"}, timeout=120)
    assert view["targets"][0]["fetched_at"], view
    cached = Path(station.config.data_dir) / "audio" / big["sha256"]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == big["sha256"]
    assert boot_disk_problems(station.config) == []

    # It resumed rather than started over: the server answered byte ranges (206) for it.
    log = "".join(p.read_text(errors="replace") for p in installation.root.glob("server-*.log"))
    requests = re.findall(rf'"GET /api/v1/audio/{big["id"]}/content\S* HTTP/1.1" (\d+)', log)
    assert "206" in requests, requests
    sizes = [p for p in progress if p]
    assert len(sizes) >= 2 and sizes == sorted(sizes), progress  # kept, never lost
