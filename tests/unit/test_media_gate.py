"""The conversion gate: N at once, a bounded queue, then "busy, retry in N s" (real threads)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from loaxa_protocol.errors import AudioError
from server.audio.gate import FIRST_GUESS_S, MediaBusy, MediaGate


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def held(gate: MediaGate) -> Iterator[threading.Event]:
    """A conversion occupying one slot in another thread until the event is set."""
    entered, release = threading.Event(), threading.Event()

    def convert() -> None:
        with gate.slot():
            entered.set()
            release.wait(10)

    worker = threading.Thread(target=convert)
    worker.start()
    assert entered.wait(5), "the conversion never got its slot"
    try:
        yield release
    finally:
        release.set()
        worker.join(5)


def test_beyond_the_slots_and_the_queue_the_answer_is_busy() -> None:
    gate = MediaGate(jobs=1, queue=1)
    finished: list[str] = []

    def queued() -> None:
        with gate.slot():
            finished.append("queued")

    with held(gate) as release:
        waiter = threading.Thread(target=queued)
        waiter.start()
        while gate.waiting == 0:
            threading.Event().wait(0.01)
        with pytest.raises(MediaBusy) as busy, gate.slot():
            pytest.fail("a third conversion must not start")
        assert finished == []  # the queued one waits while the slot is held
        release.set()
        waiter.join(5)
    assert finished == ["queued"]
    assert isinstance(busy.value, AudioError)  # every caller that handles AudioError copes
    assert busy.value.retry_after_s >= 1
    assert f"retry in {busy.value.retry_after_s} s" in str(busy.value)
    assert (gate.running, gate.waiting, gate.refused) == (0, 0, 1)


def test_a_queued_conversion_gives_up_after_the_longest_wait() -> None:
    gate = MediaGate(jobs=1, queue=5, max_wait_s=0.2)
    with held(gate), pytest.raises(MediaBusy), gate.slot():
        pytest.fail("the slot was never free")
    assert gate.waiting == 0


def test_a_failing_conversion_frees_its_slot() -> None:
    gate = MediaGate(jobs=1, queue=0)
    with pytest.raises(AudioError, match="corrupt"), gate.slot():
        raise AudioError("upload.mp3: corrupt")
    with gate.slot():
        assert gate.running == 1


def test_retry_after_follows_how_long_conversions_take() -> None:
    clock = ManualClock()
    gate = MediaGate(jobs=2, queue=0, clock=clock)
    assert gate.retry_after_s() == round(FIRST_GUESS_S / 2)  # nothing measured yet

    for _ in range(20):  # conversions of 40 s each
        with gate.slot():
            clock.now += 40
    assert gate.retry_after_s() == pytest.approx(20, abs=1)  # 40 s, two slots

    with held(gate), held(gate):
        clock.now += 100  # both running for longer than usual: the guess grows with them
        assert gate.retry_after_s() == pytest.approx(50, abs=1)
        with pytest.raises(MediaBusy) as busy, gate.slot():
            pass
    assert busy.value.retry_after_s == pytest.approx(50, abs=1)


def test_the_gate_refuses_a_nonsense_size() -> None:
    with pytest.raises(ValueError, match="jobs >= 1"):
        MediaGate(jobs=0, queue=1)
