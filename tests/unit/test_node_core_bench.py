"""How long the core takes to handle an alert: the node's share of alert latency.

The swarm runs 1,000 cores in one process on two cores, so ``handle(AlertReceived)``
must cost little more than the one signature check a real station must make.
Run with ``pytest -m slow tests/unit/test_node_core_bench.py -s`` for the figures.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import timedelta

import pytest

from loaxa_protocol import Keyring, open_envelope
from node_firmware.core.events import AlertReceived, Boot, PlanReceived
from node_firmware.core.machine import CoreSettings, NodeCore
from tests.unit.test_node_core import KEY, T0, item, sealed
from tests.unit.test_node_core_alerts import ALERT_KEY, LIBRARY, alert, inline_audio

ROUNDS = 400


def _cores(n: int) -> list[NodeCore]:
    """Stations as the swarm has them: booted, a 20-item plan, the canned library cached."""
    plan = sealed(*[item(f"b-{k}", timedelta(minutes=10 + k)) for k in range(20)])
    cores = []
    for _ in range(n):
        core = NodeCore(CoreSettings("st-1", Keyring.of(KEY, ALERT_KEY), frozenset({"04"})))
        core.handle(Boot(None, {}, LIBRARY), T0)
        core.handle(PlanReceived(plan), T0)
        cores.append(core)
    return cores


def _measure(raws: list[bytes]) -> tuple[float, float]:
    """Median µs of ``open_envelope`` alone and of the whole ``handle``, interleaved."""
    ring = Keyring.of(KEY, ALERT_KEY)
    cores = _cores(len(raws))
    verify, handle = [], []
    at = T0 + timedelta(seconds=1)
    for core, raw in zip(cores, raws, strict=True):
        start = time.perf_counter()
        open_envelope(raw, ring, at, {"area:04"})
        middle = time.perf_counter()
        core.handle(AlertReceived(raw), at)
        verify.append(middle - start)
        handle.append(time.perf_counter() - middle)
    return statistics.median(verify) * 1e6, statistics.median(handle) * 1e6


@pytest.mark.slow
@pytest.mark.parametrize("payload", ["canned", "inline"])
def test_handling_an_alert_costs_little_beyond_its_signature_check(payload: str) -> None:
    data = os.urandom(60 * 1024)
    raws = [
        alert(f"a-{n}")
        if payload == "canned"
        else alert(f"a-{n}", inline=inline_audio(data + n.to_bytes(4, "big")), tone=None)
        for n in range(ROUNDS)
    ]
    verify_us, handle_us = _measure(raws)
    print(
        f"\n{payload}: {len(raws[0])} bytes, open_envelope {verify_us:.0f} µs, "
        f"handle {handle_us:.0f} µs (median of {ROUNDS})"
    )
    # inline audio must also be base64-decoded and hashed: about one more envelope's work
    assert handle_us < verify_us * (2.5 if payload == "inline" else 2.0) + 300


@pytest.mark.slow
def test_the_whole_alert_path_costs_little_beyond_its_signature_check() -> None:
    """Received → relay → playing, every input a swarm station feeds its core per alert.

    Each input runs the core's clock (``_advance``) over the plan, so a 20-item plan is
    walked three times per alert: the part of a station's work besides the signature.
    """
    from node_firmware.core.events import PlaybackStarted, RelaySwitched, SetRelay, StartPlayback

    raws = [alert(f"a-{n}") for n in range(ROUNDS)]
    ring = Keyring.of(KEY, ALERT_KEY)
    cores = _cores(ROUNDS)
    at = T0 + timedelta(seconds=1)
    verify, whole = [], []
    for core, raw in zip(cores, raws, strict=True):
        start = time.perf_counter()
        open_envelope(raw, ring, at, {"area:04"})
        middle = time.perf_counter()
        actions = core.handle(AlertReceived(raw), at)
        if any(isinstance(a, SetRelay) for a in actions):
            core.handle(RelaySwitched(True), at)
        started = [a for a in actions if isinstance(a, StartPlayback)]
        assert len(started) == 1
        out = core.handle(PlaybackStarted(started[0].item_id, at), at)
        whole.append(time.perf_counter() - middle)
        verify.append(middle - start)
        assert any(b'"alert_playing"' in getattr(a, "payload", b"") for a in out)
    verify_us, whole_us = statistics.median(verify) * 1e6, statistics.median(whole) * 1e6
    print(f"\nwhole alert path {whole_us:.0f} µs, open_envelope {verify_us:.0f} µs")
    assert whole_us < verify_us * 2.5 + 300
