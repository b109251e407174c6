"""Players on real files and the real clock: timing, stop, failure."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node_firmware.config import PlayerConfig
from node_firmware.drivers.alsa_pcm import why_unusable
from node_firmware.drivers.player import (
    AlsaPlayer,
    SimulatedPlayer,
    decode_command,
    find_ffmpeg,
    open_player,
)


class Calls:
    """Collects one item's callbacks from the player thread."""

    def __init__(self) -> None:
        self.started: list[datetime] = []
        self.finished: list[datetime] = []
        self.failed: list[str] = []
        self.started_event = threading.Event()
        self.done = threading.Event()

    def on_started(self, item_id: str, at: datetime) -> None:
        self.started.append(at)
        self.started_event.set()

    def on_finished(self, item_id: str, at: datetime) -> None:
        self.finished.append(at)
        self.done.set()

    def on_failed(self, item_id: str, reason: str) -> None:
        self.failed.append(reason)
        self.done.set()


def make_opus(path: Path, seconds: float) -> Path:
    subprocess.run(
        [find_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", f"sine=d={seconds}", "-c:a", "libopus",
         str(path)],
        check=True,
        timeout=30,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def short_opus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_opus(tmp_path_factory.mktemp("player") / "short.ogg", 0.2)


@pytest.fixture(scope="module")
def long_opus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_opus(tmp_path_factory.mktemp("player") / "long.ogg", 1.5)


def wait_for(condition: Callable[[], bool], timeout_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def play(player: SimulatedPlayer | AlsaPlayer, item_id: str, path: Path, at: datetime) -> Calls:
    calls = Calls()
    player.start(item_id, path, at, 60_000, calls.on_started, calls.on_finished, calls.on_failed)
    return calls


def test_players_sharing_a_clock_start_on_the_same_millisecond(short_opus: Path) -> None:
    players = [SimulatedPlayer() for _ in range(3)]
    start_at = soon(0.3)
    calls = [play(p, "b-1", short_opus, start_at) for p in players]
    for c in calls:
        assert c.done.wait(2)
    for p in players:
        p.close()

    starts = [c.started[0] for c in calls]
    late_ms = [(s - start_at).total_seconds() * 1000 for s in starts]
    skew_ms = (max(starts) - min(starts)).total_seconds() * 1000
    print(f"late by ms: {[round(x, 3) for x in late_ms]}; skew between players: {skew_ms:.3f} ms")
    assert all(0 <= x < 5 for x in late_ms)
    assert skew_ms < 5


def test_play_length_comes_from_the_file_not_the_plan(short_opus: Path) -> None:
    player = SimulatedPlayer()
    calls = play(player, "b-2", short_opus, soon(0.01))  # the plan claims 60 s
    assert calls.done.wait(2)
    player.close()

    [record] = player.records
    assert record.item_id == "b-2" and record.audio == "short.ogg"
    assert abs(record.duration_ms - 200) <= 5 and not record.interrupted
    assert calls.finished == [record.finished_at]
    played_ms = (record.finished_at - record.started_at).total_seconds() * 1000
    assert 195 <= played_ms < 300


def test_stop_interrupts_and_silences_the_callbacks(long_opus: Path) -> None:
    player = SimulatedPlayer()
    calls = play(player, "b-3", long_opus, soon(0.01))
    assert calls.started_event.wait(1)
    player.stop("b-3")
    wait_for(lambda: bool(player.records))
    player.close()

    [record] = player.records
    assert record.interrupted
    assert (record.finished_at - record.started_at) < timedelta(milliseconds=500)
    assert calls.finished == [] and calls.failed == []


def test_stop_before_the_instant_unschedules(short_opus: Path) -> None:
    player = SimulatedPlayer()
    calls = play(player, "b-4", short_opus, soon(0.2))
    player.stop("b-4")
    player.stop("never-started")  # ignored
    player.close()
    assert not calls.started_event.is_set() and player.records == []


def test_missing_file_fails_at_once(tmp_path: Path) -> None:
    player = SimulatedPlayer()
    calls = play(player, "b-5", tmp_path / "gone.ogg", soon(30))
    assert calls.done.wait(1)  # long before the instant
    player.close()
    assert calls.started == [] and "gone.ogg" in calls.failed[0]


def test_unreadable_file_fails(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ogg"
    junk.write_bytes(b"this is not audio")
    player = SimulatedPlayer()
    calls = play(player, "b-6", junk, soon(30))
    assert calls.done.wait(1)
    player.close()
    assert "unsupported audio container" in calls.failed[0]


def test_double_booking_an_item_is_a_local_bug(short_opus: Path) -> None:
    player = SimulatedPlayer()
    play(player, "b-7", short_opus, soon(5))
    with pytest.raises(ValueError, match="already scheduled"):
        play(player, "b-7", short_opus, soon(5))
    player.close()


def test_open_player_defaults_to_the_simulator() -> None:
    player = open_player(PlayerConfig())
    assert isinstance(player, SimulatedPlayer)
    player.close()


ALSA_NULL_UNUSABLE = why_unusable("null")
"""libasound's 'null' device takes samples as fast as they come: the logic, not the timing."""


@pytest.mark.skipif(
    ALSA_NULL_UNUSABLE is not None, reason=f"ALSA null device: {ALSA_NULL_UNUSABLE}"
)
def test_alsa_player_plays_on_a_device_kept_open(short_opus: Path, long_opus: Path) -> None:
    player = AlsaPlayer("null")
    try:
        start_at = soon(1.0)  # ffmpeg starts decoding meanwhile (slow on a busy machine)
        calls = play(player, "a-1", short_opus, start_at)
        assert calls.done.wait(3), calls.failed
        assert calls.failed == []
        late_ms = (calls.started[0] - start_at).total_seconds() * 1000
        played_ms = (calls.finished[0] - calls.started[0]).total_seconds() * 1000
        print(f"alsa null: started {late_ms:.3f} ms after the instant, played {played_ms:.0f} ms")
        assert 0 <= late_ms < 5 and 195 <= played_ms < 400

        interrupted = play(player, "a-2", long_opus, soon(0.2))
        assert interrupted.started_event.wait(2)
        player.stop("a-2")
        after_stop = play(player, "a-3", short_opus, soon(0.2))  # the device was reset
        assert after_stop.done.wait(3) and after_stop.finished, after_stop.failed
        assert interrupted.finished == [] and interrupted.failed == []

        missing = play(player, "a-4", short_opus.with_name("gone.ogg"), soon(30))
        assert missing.done.wait(1) and "gone.ogg" in missing.failed[0]
    finally:
        player.close()


def test_an_items_own_volume_wins_over_the_stations(short_opus: Path) -> None:
    player = SimulatedPlayer()
    player.set_volume(60)
    own, station = Calls(), Calls()
    at = soon(0.05)
    player.start("v-1", short_opus, at, 200, own.on_started, own.on_finished, own.on_failed, 25)
    player.start("v-2", short_opus, at, 200, station.on_started, station.on_finished,
                 station.on_failed)  # fmt: skip
    assert own.done.wait(2) and station.done.wait(2)
    player.close()
    volumes = {r.item_id: r.volume_pct for r in player.records}
    assert volumes == {"v-1": 25, "v-2": 60}
    with pytest.raises(ValueError, match="not 0-100"):
        player.start("v-3", short_opus, soon(5), 200, own.on_started, own.on_finished,
                     own.on_failed, 101)  # fmt: skip


def test_software_gain_scales_the_decoded_samples(long_opus: Path, tmp_path: Path) -> None:
    """The ALSA path's per-item volume is ffmpeg's gain on the decoded PCM: measure it."""
    import numpy as np

    peaks = {}
    for volume in (100, 25):
        target = tmp_path / f"{volume}.pcm"
        subprocess.run(
            decode_command(find_ffmpeg(), long_opus, str(target), volume), check=True, timeout=30
        )
        samples = np.frombuffer(target.read_bytes(), dtype="<i2").astype(np.float64)
        peaks[volume] = float(np.sqrt(np.mean(samples**2)))
    assert peaks[25] / peaks[100] == pytest.approx(0.25, rel=0.03)


@pytest.mark.skipif(
    ALSA_NULL_UNUSABLE is not None, reason=f"ALSA null device: {ALSA_NULL_UNUSABLE}"
)
def test_alsa_player_starts_an_item_due_now_while_it_decodes(long_opus: Path) -> None:
    """An alert is cued for *now*: sound must not wait for the whole file to be decoded."""
    player = AlsaPlayer("null")
    try:
        at = datetime.now(UTC)
        calls = play(player, "alert-1", long_opus, at)
        assert calls.done.wait(5), calls.failed
    finally:
        player.close()
    assert calls.failed == []
    late_ms = (calls.started[0] - at).total_seconds() * 1000
    played_ms = (calls.finished[0] - calls.started[0]).total_seconds() * 1000
    print(f"alsa null, due now: first sample after {late_ms:.0f} ms, played {played_ms:.0f} ms")
    assert late_ms < 1000  # ffmpeg's start-up: 70-200 ms here, more on a busy machine
    assert 1450 <= played_ms < 1700


@pytest.mark.skipif(
    ALSA_NULL_UNUSABLE is not None, reason=f"ALSA null device: {ALSA_NULL_UNUSABLE}"
)
def test_alsa_player_fails_an_undecodable_file_with_ffmpegs_reason(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ogg"
    junk.write_bytes(b"this is not audio" * 100)
    player = AlsaPlayer("null")
    try:
        calls = play(player, "a-9", junk, soon(0.2))
        assert calls.done.wait(5)
    finally:
        player.close()
    assert calls.started == [] and "cannot decode junk.ogg" in calls.failed[0], calls.failed


@pytest.mark.skipif(
    ALSA_NULL_UNUSABLE is not None, reason=f"ALSA null device: {ALSA_NULL_UNUSABLE}"
)
def test_alsa_player_holds_short_files_decoded_and_plays_them_without_a_decoder(
    short_opus: Path, tmp_path: Path
) -> None:
    """The alert tone path: decoded ahead at the station's volume, no ffmpeg when it plays."""
    six_seconds = make_opus(tmp_path / "six.ogg", 6.0)
    player = AlsaPlayer("null")
    try:
        player.keep_ready([six_seconds, short_opus, tmp_path / "not-cached-yet.ogg"])
        wait_for(lambda: player.ready_files() == [short_opus], 10)  # too long, missing: left
        player.set_volume(40)
        assert player.ready_files() == []  # held at 100 %: decoded again at 40 %
        wait_for(lambda: player.ready_files() == [short_opus], 10)

        player._ffmpeg = str(tmp_path / "no-ffmpeg-here")  # no decoder can start from now
        at = datetime.now(UTC)
        ready = play(player, "alert:a#0", short_opus, at)
        other = play(player, "b-1", six_seconds, soon(0.5))
        assert ready.done.wait(3) and other.done.wait(3)
    finally:
        player.close()
    assert ready.failed == [] and ready.finished
    assert [item for item, _ in player.first_samples] == ["alert:a#0"]
    late_ms = (ready.started[0] - at).total_seconds() * 1000
    print(f"ready file due now: first sample {late_ms:.1f} ms after its cue")
    assert late_ms < 50
    assert other.started == [] and "no-ffmpeg-here" in other.failed[0]
