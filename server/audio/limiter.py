"""A look-ahead true-peak limiter, computed on whole arrays instead of sample loops.

Why a limiter at all: speech commonly has a peak-to-loudness ratio of 15-20 dB, so
reaching -16 LUFS under a -1 dBTP ceiling by gain alone would leave most real
bulletins 2-5 LU quiet. Shaving the few plosive peaks by a few dB costs nothing
audible on a horn loudspeaker and keeps every bulletin equally loud.

How: for every sample the gain (in dB) it *needs* so that its true-peak envelope
stays under the ceiling is known up front. The applied gain is

1. the minimum of the need over the next ``L`` samples, averaged over the last
   ``L`` samples: a linear attack that starts ``L`` samples early (look-ahead) and
   is, by construction, never above the need of any sample it covers;
2. then held under a rising ramp of ``release_db_per_s`` (the release), computed
   exactly as ``min_k (s[k] + (n - k) * step)`` with a running minimum.

Both steps can only lower the gain, so the ceiling holds at every sample (up to
the one-sample widening the envelope already includes).

It runs on a stream of blocks: the attack looks ``L`` samples either way, so
:func:`server.audio.blocks.windowed` gives each block that much of its neighbours,
and the release carries its last gain from block to block. The result is the same
as on the whole programme, in memory that does not grow with its length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from server.audio.blocks import windowed
from server.audio.measure import Samples

LOOKAHEAD_S = 0.005  # 5 ms: long enough to avoid clicks, short enough to stay inaudible
RELEASE_DB_PER_S = 100.0  # 6 dB recovers in 60 ms: within a syllable, no pumping between


class Limiter:
    """Limits a stream of ``(samples, true-peak envelope)`` blocks to ``ceiling_dbtp``.

    ``reduction_db`` is the deepest gain reduction so far (>= 0), final once the
    stream has been read to its end.
    """

    def __init__(
        self,
        ceiling_dbtp: float,
        rate: int,
        *,
        lookahead_s: float = LOOKAHEAD_S,
        release_db_per_s: float = RELEASE_DB_PER_S,
    ) -> None:
        self.ceiling_dbtp = ceiling_dbtp
        self._ceiling = np.float32(10.0 ** (ceiling_dbtp / 20.0))
        self._width = max(1, round(lookahead_s * rate))
        self._step_db = release_db_per_s / rate
        self._carry_db = 0.0  # gain at the end of the previous block
        self.reduction_db = 0.0

    def run(self, blocks: Iterable[tuple[Samples, Samples]]) -> Iterator[Samples]:
        """Limited samples, block for block (each comes out once the next one is in)."""
        needs = ((samples, self._need_db(envelope)) for samples, envelope in blocks)
        for samples, attack_db in windowed(needs, 2 * self._width + 2, self._attack):
            if self._carry_db == 0.0 and not attack_db.any():
                yield samples  # nothing to shave here, and the last release has ended
                continue
            gain_db = self._release(attack_db)
            self.reduction_db = max(self.reduction_db, float(-gain_db.min()))
            limited = samples * np.power(np.float32(10.0), gain_db / np.float32(20.0))
            yield limited.astype(np.float32, copy=False)

    def _need_db(self, envelope: Samples) -> Samples:
        need_db = np.zeros(envelope.shape, dtype=np.float32)
        over = envelope > self._ceiling
        if over.any():
            need_db[over] = self.ceiling_dbtp - 20.0 * np.log10(envelope[over])
        return need_db

    def _attack(self, need_db: Samples) -> Samples:
        width = self._width
        # scipy's origin shifts the window: -(w // 2) looks at [n, n + w - 1],
        # (w - 1) // 2 at [n - w + 1, n].
        ahead = minimum_filter1d(need_db, size=width, origin=-(width // 2), mode="nearest")
        attack = uniform_filter1d(ahead, size=width, origin=(width - 1) // 2, mode="nearest")
        np.minimum(attack, need_db, out=attack)  # float rounding in the average must not win
        return attack

    def _release(self, attack_db: Samples) -> Samples:
        """g[n] = min over k <= n of (attack[k] + (n - k) * step), capped at 0 dB."""
        chunk = attack_db.astype(np.float64)
        ramp = np.arange(1, chunk.size + 1, dtype=np.float64) * self._step_db
        gain = np.minimum.accumulate(chunk - ramp) + ramp
        np.minimum(gain, self._carry_db + ramp, out=gain)
        np.minimum(gain, 0.0, out=gain)
        self._carry_db = float(gain[-1])
        return gain.astype(np.float32)


def limit(
    samples: Samples,
    envelope: Samples,
    ceiling_dbtp: float,
    rate: int,
    *,
    lookahead_s: float = LOOKAHEAD_S,
    release_db_per_s: float = RELEASE_DB_PER_S,
) -> tuple[Samples, float]:
    """Return (limited samples, deepest gain reduction in dB, >= 0) of a whole signal.

    ``envelope`` is the true-peak envelope of ``samples``
    (:func:`server.audio.measure.true_peak_envelope`).
    """
    limiter = Limiter(
        ceiling_dbtp, rate, lookahead_s=lookahead_s, release_db_per_s=release_db_per_s
    )
    limited = list(limiter.run([(samples, envelope)]))
    return (limited[0] if limited else samples), limiter.reduction_db
