"""The server's live sessions with a recording bus: what goes to each station's topic,
signed and tagged for that station alone; the recording is a well-formed Ogg Opus file."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from loaxa_protocol import Keyring, LiveStart, LiveStop, open_envelope, topics
from loaxa_protocol.live import key_bytes, unpack
from node_firmware.drivers.ogg import ogg_opus_duration_ms
from node_firmware.drivers.opus import OpusEncoder
from server.auth.actor import SYSTEM
from server.db import create_tables, make_engine
from server.keys import ServerKeys
from server.live.archive import OggOpusWriter
from server.live.service import LiveError, LiveService
from server.settings import Settings

NOW = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


@dataclass
class RecordingBus:
    published: list[tuple[str, bytes, int, bool]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, payload, qos, retain))

    def flush(self, timeout_s: float) -> None:
        """Nothing waits: publish kept it already."""


@pytest.fixture
def parts(tmp_path: Path) -> tuple[LiveService, RecordingBus, ServerKeys, Session, list[int]]:
    settings = Settings(data_dir=tmp_path, mqtt_enabled=False)
    engine = make_engine(settings.db_url)
    create_tables(engine)
    keys = ServerKeys.load(settings)
    bus = RecordingBus()
    durations: list[int] = []

    def archive(path: Path, name: str, actor: object) -> int | None:
        durations.append(ogg_opus_duration_ms(path))
        return None

    service = LiveService(
        engine, keys, bus, lambda: NOW, tmp_path / "live", timedelta(minutes=30), archiver=archive
    )
    return service, bus, keys, Session(engine), durations


def test_each_station_gets_its_own_signed_start_and_frames_only_its_key_opens(parts) -> None:
    service, bus, keys, session, durations = parts
    row, token = service.create(session, SYSTEM, {"st-1", "st-2"}, {"stations": []}, "Họp")
    with pytest.raises(LiveError):
        service.open(row.id, "not-the-token")
    on_air = service.open(row.id, token)
    with pytest.raises(LiveError, match="used or expired"):
        service.open(row.id, token)
    with pytest.raises(LiveError, match="already on air"):
        service.create(session, SYSTEM, {"st-2"}, {}, "")
    ring = Keyring.from_entries(keys.trusted_entries(NOW))
    starts = {}
    for station in ("st-1", "st-2"):
        ((_topic, raw, qos, retain),) = [p for p in bus.published if p[0] == topics.live(station)]
        assert (qos, retain) == (1, True)
        verdict = open_envelope(raw, ring, NOW, {station})
        assert isinstance(verdict.message, LiveStart) and verdict.message.session_id == row.id
        starts[station] = key_bytes(verdict.message.frame_key)
    assert starts["st-1"] != starts["st-2"]
    encoder = OpusEncoder()
    for _ in range(2):
        assert service.frame(on_air, 1_000, 2880, encoder.encode(bytes(2880 * 2)))
    frames = [p for p in bus.published if p[1][:1] == b"\x01"]
    assert len(frames) == 4 and all(qos == 0 and not retain for _t, _p, qos, retain in frames)
    st1 = [raw for topic, raw, *_ in frames if topic == topics.live("st-1")]
    assert [unpack(raw, starts["st-1"]).seq for raw in st1] == [0, 1]
    with pytest.raises(ValueError, match="tag"):
        unpack(st1[0], starts["st-2"])
    bus.published.clear()
    assert service.stop(row.id, "stopped")
    stop_raw, clear = [p for p in bus.published if p[0] == topics.live("st-1")]
    stop = open_envelope(stop_raw[1], ring, NOW, {"st-1"})
    assert isinstance(stop.message, LiveStop) and stop_raw[2] == 1
    assert clear[1:] == (b"", 1, True)  # the retained start is cleared
    service.archiving[row.id].join(5)
    assert durations == [120]  # the recording: two 60 ms packets
    session.refresh(row)
    assert row.end_reason == "stopped" and row.frames == 2


def test_the_recording_is_ogg_opus(tmp_path: Path) -> None:
    writer = OggOpusWriter(tmp_path / "x.opus")
    encoder = OpusEncoder()
    for _ in range(50):
        writer.add(encoder.encode(bytes(2880 * 2)), 2880)
    writer.close()
    assert ogg_opus_duration_ms(tmp_path / "x.opus") == 3000
