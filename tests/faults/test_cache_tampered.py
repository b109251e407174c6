"""A cached bulletin's bytes change on the station's disk (bit rot, a bad SD card, a
meddling hand) before it is due. The station must notice before it plays, fetch the
file again and tell the server, instead of playing whatever is there and reporting
``played``."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tests.audio_samples import make_audio
from tests.faults.conftest import Installation
from tests.faults.harness import assert_played_on_time, soon, wait_until


def test_a_changed_cached_file_is_detected_refetched_and_reported_before_it_plays(
    installation: Installation,
) -> None:
    server = installation.server
    station = installation.add_station("Cụm loa thẻ nhớ hỏng")
    sid = station.station_id
    wait_until(lambda: server.station(sid)["status"] == "online", 30, "the station online")
    audio = server.api.upload(make_audio("mp3", 2.0), "ban-tin.mp3")
    start_at = soon(20)
    broadcast = server.api.broadcast(audio["id"], start_at, [sid])
    server.api.wait_for_states(broadcast["id"], {"fetched"}, timeout=30)

    cached = Path(station.config.data_dir) / "audio" / audio["sha256"]
    data = bytearray(cached.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # same size, other bytes
    station.kill()
    cached.write_bytes(bytes(data))
    requests_before = _content_requests(installation, audio["id"])
    station.start()  # the first play after this boot must be preceded by a check

    assert_played_on_time(server, broadcast, start_at, wait_s=40)
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == audio["sha256"]
    assert _content_requests(installation, audio["id"]) > requests_before  # fetched again
    reports = [
        e
        for e in server.events(sid)
        if re.search(r"hash|corrupt|mismatch", f"{e.get('reason')} {e.get('detail')}")
    ]
    assert reports, "the changed file was not reported to the server"


def _content_requests(installation: Installation, audio_id: int) -> int:
    log = "".join(p.read_text(errors="replace") for p in installation.root.glob("server-*.log"))
    return len(re.findall(rf'"GET /api/v1/audio/{audio_id}/content\S* HTTP/1.1" 20[06]', log))
