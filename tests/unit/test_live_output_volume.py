"""Live audio plays at the station's volume: the live output scales the decoded PCM.

Real Opus frames of a loud tone go through the real live output (decoder, jitter
buffer, timing thread) into the simulated sink, which records each frame's peak.
"""

from __future__ import annotations

import math
import time
from array import array

from loaxa_protocol.live import Frame
from node_firmware.drivers.live_output import LiveOutput, SimulatedLiveSink, scale_pcm
from node_firmware.drivers.opus import OpusEncoder

SESSION = "0123456789abcdef"
SAMPLES = 2880  # 60 ms at 48 kHz
FRAMES = 10


def tone_frames() -> list[Frame]:
    """60 ms frames of a 440 Hz tone at about half full scale."""
    encoder = OpusEncoder(bitrate=32_000)
    frames = []
    for seq in range(FRAMES):
        start = seq * SAMPLES
        pcm = array("h", [
            int(16_000 * math.sin(2 * math.pi * 440 * (start + i) / 48_000)) for i in range(SAMPLES)
        ]).tobytes()  # fmt: skip
        frames.append(Frame(SESSION, seq, 0, SAMPLES, encoder.encode(pcm)))
    return frames


def played_peaks(volume_pct: int, *, change_to: int | None = None) -> dict[int, int]:
    """Peak per sequence number of the frames that sounded, pushed at the frame rate.

    ``change_to``: the station's volume changes once frame 2 has sounded.
    """
    sink = SimulatedLiveSink()
    output = LiveOutput(sink)
    output.start(SESSION, None, 0, volume_pct)
    for frame in tone_frames():
        if change_to is not None and frame.seq == FRAMES // 2:
            until = time.monotonic() + 5  # once frame 2 has sounded (the others buffered)
            while time.monotonic() < until and not any(s.seq == 2 for s in sink.sounds):
                time.sleep(0.005)
            output.set_volume(change_to)
        output.push(SESSION, frame)
        time.sleep(SAMPLES / 48_000)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(s.seq == FRAMES - 1 for s in sink.sounds):
        time.sleep(0.02)
    output.close()
    peaks = {s.seq: s.peak for s in sink.sounds if s.seq is not None}
    assert len(peaks) >= FRAMES - 2, peaks  # a starved thread may skip a frame, no more
    return peaks


def test_scale_pcm_is_a_linear_gain() -> None:
    pcm = array("h", [0, 1000, -1000, 32767, -32768]).tobytes()
    assert scale_pcm(pcm, 100) == pcm
    assert array("h", scale_pcm(pcm, 50)).tolist() == [0, 500, -500, 16383, -16384]
    assert array("h", scale_pcm(pcm, 0)).tolist() == [0] * 5


def test_live_audio_sounds_at_the_station_volume() -> None:
    full = played_peaks(100)
    quarter = played_peaks(25)
    both = [seq for seq in full if seq in quarter and seq >= 3]  # the decoder has settled
    assert len(both) >= 3
    for seq in both:
        loud, soft = full[seq], quarter[seq]
        assert loud > 10_000  # the tone really is loud at full volume
        assert abs(soft - loud * 0.25) <= loud * 0.02, (seq, loud, soft)


def test_a_volume_change_applies_to_the_session_that_plays() -> None:
    peaks = played_peaks(100, change_to=30)
    assert [p for seq, p in peaks.items() if 1 <= seq <= 2] and all(
        p > 10_000 for seq, p in peaks.items() if 1 <= seq <= 2
    )  # the first frames at full volume (before the change)
    last = [p for seq, p in peaks.items() if seq >= FRAMES - 3]
    assert last and max(last) < 16_000 * 0.3 * 1.2  # the last frames at the new volume
