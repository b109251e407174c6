"""``loaxa bench drivers``: what the station's real relay and player drivers cost in time.

The alert swarm (:mod:`loaxa.bench.alert_swarm`) cannot run a thousand relay boards and
sound devices, but it must not pretend they are free: its relay answers after
``relay_ms`` and its player starts an item no sooner than ``player_start_ms`` after it
was cued, so both are inside the alert benchmark's ``p99_ms``. Their defaults
(:data:`~loaxa.bench.alert_swarm.RELAY_MS`, :data:`~loaxa.bench.alert_swarm.PLAYER_START_MS`)
are medians this command measured on the real drivers:

- **relay**: :class:`~node_firmware.drivers.relay.LineRelay` (``RELAY 1 ON`` → ``OK``, the
  board that answers, hence the slower) switching a
  :class:`~node_firmware.drivers.relay_sim.SimulatedRelayBoard` behind a real
  pseudo-terminal, at 9600 baud: the full round trip through the kernel's tty layer.
- **player**: :class:`~node_firmware.drivers.player.AlsaPlayer` on ALSA's ``null`` device,
  an item cued for *now* as an alert is: the instant asked → the first sample written
  (``on_started``). Twice: a file the station keeps ready (the canned alert library,
  decoded to PCM ahead: what a canned alert pays, :data:`PLAYER_READY_START_MS`) and a
  file met for the first time (ffmpeg decodes it as it plays: a custom alert's audio,
  :data:`PLAYER_START_MS`).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node_firmware.drivers.player import AlsaPlayer, find_ffmpeg
from node_firmware.drivers.relay import LineRelay
from node_firmware.drivers.relay_sim import SimulatedRelayBoard

PLAY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DriverCosts:
    relay_rounds: int
    relay_p50_ms: float
    relay_p95_ms: float
    player_rounds: int
    player_start_p50_ms: float
    player_start_p95_ms: float
    player_ready_start_p50_ms: float
    player_ready_start_p95_ms: float
    player_device: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _p(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 2) if len(values) > 1 else values[0]


def relay_round_trips_ms(rounds: int) -> list[float]:
    """``rounds`` ON/OFF switches through the line-protocol driver and a PTY board."""
    board = SimulatedRelayBoard("line")
    relay = LineRelay(board.port)
    try:
        relay.set(False)  # opens the port: not part of a switch
        times = []
        for n in range(rounds):
            started = time.perf_counter()
            relay.set(n % 2 == 0)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        relay.close()
        board.close()


def player_starts_ms(rounds: int, device: str = "null", ready: bool = False) -> list[float]:
    """``rounds`` items cued for now on a warm AlsaPlayer: asked instant → first sample;
    with ``ready`` the file is one the player was asked to keep ready first."""
    with tempfile.TemporaryDirectory(prefix="loaxa-bench-drivers-") as tmp:
        audio = Path(tmp) / "alert.ogg"
        subprocess.run(
            [find_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", "sine=d=1.5", "-c:a", "libopus",
             str(audio)],
            check=True,
            timeout=60,
        )  # fmt: skip
        player = AlsaPlayer(device)
        try:
            if ready:
                player.keep_ready([audio])
                deadline = time.monotonic() + PLAY_TIMEOUT_S
                while audio not in player.ready_files():
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the player did not make {audio.name} ready")
                    time.sleep(0.01)
            times = []
            for n in range(rounds):
                started: list[datetime] = []
                failed: list[str] = []
                done = threading.Event()

                def on_started(_item: str, at: datetime, box: list[datetime] = started) -> None:
                    box.append(at)

                def on_finished(_item: str, _at: datetime, event: threading.Event = done) -> None:
                    event.set()

                def on_failed(
                    _item: str, why: str, box: list[str] = failed, event: threading.Event = done
                ) -> None:
                    box.append(why)
                    event.set()

                asked = datetime.now(UTC)
                player.start(f"a-{n}", audio, asked, 1500, on_started, on_finished, on_failed)
                if not done.wait(PLAY_TIMEOUT_S) or failed or not started:
                    raise RuntimeError(f"the player did not play item {n}: {failed}")
                times.append((started[0] - asked).total_seconds() * 1000)
            return times
        finally:
            player.close()


def alsa_null_available() -> bool:
    if shutil.which("aplay") is None:
        return False
    listing = subprocess.run(["aplay", "-L"], capture_output=True, text=True, timeout=10)
    return "null" in listing.stdout.split()


def measure_driver_costs(relay_rounds: int = 200, player_rounds: int = 10) -> DriverCosts:
    relay = relay_round_trips_ms(relay_rounds)
    player = player_starts_ms(player_rounds)
    ready = player_starts_ms(player_rounds, ready=True)
    return DriverCosts(
        relay_rounds=relay_rounds,
        relay_p50_ms=round(statistics.median(relay), 2),
        relay_p95_ms=_p(relay, 95),
        player_rounds=player_rounds,
        player_start_p50_ms=round(statistics.median(player), 1),
        player_start_p95_ms=_p(player, 95),
        player_ready_start_p50_ms=round(statistics.median(ready), 1),
        player_ready_start_p95_ms=_p(ready, 95),
        player_device="ALSA null through libasound; Opus decoded by ffmpeg (ahead when ready)",
    )
