"""Long audio as a stream of fixed-size blocks, so memory stays flat whatever the duration.

An hour of 48 kHz float32 PCM is 700 MB; a block is 256 KiB. Everything that needs
the whole programme (loudness, true peak, the limiter) runs block by block, and
:func:`windowed` makes filters that look a few samples either side give exactly the
answer they would give on the whole array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

import numpy as np

from server.audio.measure import Samples

BLOCK_SAMPLES = 1 << 16  # 1.4 s at 48 kHz: big enough for numpy to be fast, small in RAM
_BYTES_PER_SAMPLE = 4

Carried = TypeVar("Carried")
_EMPTY = np.zeros(0, dtype=np.float32)


def read_blocks(stream: IO[bytes], block_samples: int = BLOCK_SAMPLES) -> Iterator[Samples]:
    """float32 little-endian samples from ``stream`` in blocks of exactly ``block_samples``
    (only the last may be shorter), however the pipe or file happens to split its reads."""
    size = block_samples * _BYTES_PER_SAMPLE
    while True:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            count = stream.readinto(view[got:])  # type: ignore[attr-defined]
            if not count:
                break
            got += count
        usable = got - got % _BYTES_PER_SAMPLE
        if usable:
            yield np.frombuffer(buffer, dtype="<f4", count=usable // _BYTES_PER_SAMPLE).astype(
                np.float32, copy=False
            )
        if got < size:
            return


def write_block(stream: IO[bytes], block: Samples) -> None:
    stream.write(block.astype("<f4", copy=False).tobytes())


def windowed(
    blocks: Iterable[tuple[Carried, Samples]],
    margin: int,
    apply: Callable[[Samples], Samples],
) -> Iterator[tuple[Carried, Samples]]:
    """Yield ``(carried, apply(signal))`` per block, exactly as ``apply`` on the whole signal.

    ``apply`` must return one value per input sample, each depending only on inputs
    within ``margin`` samples of it; every block but the last must be at least
    ``margin`` long. Each block is computed with ``margin`` samples of its neighbours
    on either side, so a block comes out once the next one has arrived. ``carried``
    (e.g. the samples a gain applies to) travels alongside, unchanged.
    """
    before = _EMPTY
    pending: tuple[Carried, Samples] | None = None
    for carried, signal in blocks:
        if pending is not None:
            yield pending[0], _middle(apply, before, pending[1], signal[:margin])
            before = np.concatenate((before, pending[1]))[-margin:]
        pending = (carried, signal)
    if pending is not None:
        yield pending[0], _middle(apply, before, pending[1], _EMPTY)


def _middle(
    apply: Callable[[Samples], Samples], before: Samples, current: Samples, after: Samples
) -> Samples:
    result = apply(np.concatenate((before, current, after)))
    return result[before.size : before.size + current.size]
