"""A station loses its network, plays, is power-cut and boots again, still offline.

One scenario, run once for the module; the tests read what it left behind:

1. two items are planned and their audio fetched, then the broker goes away;
2. item A falls due and plays with no network;
3. the station is killed (``kill -9``) and booted again, still without network;
4. item B falls due and must play on time from the plan stored on disk;
5. the broker returns: the server must learn about both items.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from tests.audio_samples import make_audio
from tests.faults.conftest import Installation, running_installation
from tests.faults.harness import assert_played_on_time, soon, wait_until


@dataclass
class Outcome:
    installation: Installation
    station_id: str
    items: dict[str, tuple[dict[str, Any], datetime]]
    """"A"/"B" → (broadcast, planned start)."""


@pytest.fixture(scope="module")
def rebooted_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    with running_installation(tmp_path_factory.mktemp("reboot-offline")) as installation:
        server, broker = installation.server, installation.broker
        station = installation.add_station("Cụm loa mất mạng")
        wait_until(lambda: server.station(station.station_id)["status"] == "online", 30, "online")
        audios = [server.api.upload(make_audio("mp3", s), f"{s}.mp3") for s in (1.5, 2.0)]
        starts = [soon(12), soon(24)]
        broadcasts = [
            server.api.broadcast(a["id"], at, [station.station_id])
            for a, at in zip(audios, starts, strict=True)
        ]
        for broadcast in broadcasts:
            server.api.wait_for_states(broadcast["id"], {"fetched"}, timeout=30)

        broker.stop()
        a_end = starts[0].timestamp() + audios[0]["duration_ms"] / 1000
        time.sleep(max(0.0, a_end - time.time()) + 2)  # A played, offline
        station.kill()
        station.start()  # boots with nothing but its disk
        b_end = starts[1].timestamp() + audios[1]["duration_ms"] / 1000
        time.sleep(max(0.0, b_end - time.time()) + 2)  # B played, offline, after the reboot
        broker.start()
        for broadcast in broadcasts:
            with contextlib.suppress(TimeoutError):  # the tests say what is missing
                server.api.wait_for_states(broadcast["id"], {"played", "failed"}, timeout=30)
        yield Outcome(
            installation,
            station.station_id,
            {"A": (broadcasts[0], starts[0]), "B": (broadcasts[1], starts[1])},
        )


def test_after_a_reboot_without_network_the_stored_plan_plays_the_next_item_on_time(
    rebooted_offline: Outcome,
) -> None:
    broadcast, start_at = rebooted_offline.items["B"]
    assert_played_on_time(rebooted_offline.installation.server, broadcast, start_at, wait_s=0)


def test_events_of_an_item_played_before_the_reboot_still_reach_the_server(
    rebooted_offline: Outcome,
) -> None:
    broadcast, start_at = rebooted_offline.items["A"]
    assert_played_on_time(rebooted_offline.installation.server, broadcast, start_at, wait_s=0)
