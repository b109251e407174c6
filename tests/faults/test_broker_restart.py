"""The broker goes down and comes back: items still play, stations come back quickly.

The outage spans an item's start, so the station plays it with no broker at all and
reports it once connected again. How fast each station reconnects is read from the
broker's own log, which is what a technician looks at.
"""

from __future__ import annotations

import time

from tests.audio_samples import make_audio
from tests.faults.conftest import Installation
from tests.faults.harness import assert_played_on_time, soon, wait_until

OUTAGE_S = 10.0
RECONNECT_S = 65.0
"""Back-off with full jitter (issue 11): each wait is drawn uniformly below a window that
doubles from about a second to a cap of about a minute, so after an outage of this
length a station may wait up to a full window before its next attempt; every station
must be back within the cap plus a few seconds. How the whole fleet spreads is measured
by ``loaxa bench reconnect`` (docs/reliability.md)."""


def test_broker_restart_items_play_and_stations_reconnect_quickly(
    installation: Installation,
) -> None:
    server, broker = installation.server, installation.broker
    stations = [installation.add_station(f"Cụm loa {n}") for n in (1, 2, 3)]
    ids = [s.station_id for s in stations]
    wait_until(
        lambda: all(server.station(i)["status"] == "online" for i in ids), 30, "stations online"
    )
    audio = server.api.upload(make_audio("mp3", 2.0), "ban-tin.mp3")
    start_at = soon(12)
    broadcast = server.api.broadcast(audio["id"], start_at, ids)
    server.api.wait_for_states(broadcast["id"], {"fetched"}, timeout=30)

    broker.stop()
    time.sleep(max(0.0, start_at.timestamp() - time.time()) + 1)  # the item starts offline
    time.sleep(max(0.0, OUTAGE_S - 7))
    offset = broker.log_size()
    broker.start()
    back = time.monotonic()

    node_ids = {f"loaxa-node-{i}" for i in ids}
    seen: dict[str, float] = {}

    def all_back() -> bool:
        for client in broker.clients_connected_since(offset) & node_ids:
            seen.setdefault(client, time.monotonic() - back)
        return len(seen) == len(node_ids)

    wait_until(all_back, RECONNECT_S, f"every station to reconnect (back so far: {seen})")
    print("reconnect after the broker returned:", {k: f"{v:.1f} s" for k, v in seen.items()})

    assert_played_on_time(server, broadcast, start_at)
