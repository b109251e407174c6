"""The server is down while items fall due: the stations play them on their own.

A technician then checks, once the server is back, that each item played on time and
that every playing/played event the stations produced meanwhile reached the server.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tests.audio_samples import make_audio
from tests.faults.conftest import Installation
from tests.faults.harness import assert_played_on_time, soon, wait_until


def test_items_due_while_the_server_is_down_play_on_time_and_all_events_arrive_after(
    installation: Installation,
) -> None:
    server = installation.server
    stations = [installation.add_station(f"Cụm loa {n}") for n in (1, 2)]
    ids = [s.station_id for s in stations]
    wait_until(
        lambda: all(server.station(i)["status"] == "online" for i in ids), 30, "stations online"
    )
    # Two bulletins of their own (a cached file never reports "fetched" again).
    audios = [server.api.upload(make_audio("mp3", s), f"ban-tin-{s}.mp3") for s in (2.0, 2.5)]
    starts = [soon(15), soon(20)]
    broadcasts = [
        server.api.broadcast(audio["id"], at, ids) for audio, at in zip(audios, starts, strict=True)
    ]
    for broadcast in broadcasts:
        server.api.wait_for_states(broadcast["id"], {"fetched"}, timeout=30)

    server.kill()  # a crash: nothing is flushed, no goodbye to the broker
    down_at = datetime.now(UTC)
    last_end = starts[-1].timestamp() + audios[-1]["duration_ms"] / 1000
    time.sleep(max(0.0, last_end - time.time()) + 3)
    server.start()
    print(f"server down for {(datetime.now(UTC) - down_at).total_seconds():.0f} s")

    for broadcast, start_at in zip(broadcasts, starts, strict=True):
        assert start_at > down_at  # it really fell due while the server was down
        assert_played_on_time(server, broadcast, start_at)
