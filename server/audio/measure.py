"""Loudness and true-peak meters (ITU-R BS.1770-4), for mono float PCM.

Integrated loudness is pyloudnorm's BS.1770 meter (K-weighting, 400 ms blocks,
-70 LUFS absolute and -10 LU relative gates). True peak is the Annex 2 method:
4x oversampling with the Recommendation's own 48-tap interpolation filter, run as
four 12-tap polyphase branches so a minute of audio costs four short convolutions
rather than a full resampler.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pyloudnorm
from scipy.ndimage import correlate1d, maximum_filter1d

Samples = npt.NDArray[np.float32]

# BS.1770-4 Annex 2, phase 0 and phase 1 of the order-48 interpolator. The prototype is
# symmetric, so phase 2 is phase 1 reversed and phase 3 is phase 0 reversed.
_PHASE_0 = (
    0.0017089843750, 0.0109863281250, -0.0196533203125, 0.0332031250000,
    -0.0594482421875, 0.1373291015625, 0.9721679687500, -0.1022949218750,
    0.0476074218750, -0.0266113281250, 0.0148925781250, -0.0083007812500,
)  # fmt: skip
_PHASE_1 = (
    -0.0291748046875, 0.0292968750000, -0.0517578125000, 0.0891113281250,
    -0.1665039062500, 0.4650878906250, 0.7797851562500, -0.2003173828125,
    0.1015625000000, -0.0582275390625, 0.0330810546875, -0.0189208984375,
)  # fmt: skip
TRUE_PEAK_PHASES: tuple[npt.NDArray[np.float32], ...] = tuple(
    np.asarray(phase, dtype=np.float32)
    for phase in (_PHASE_0, _PHASE_1, _PHASE_1[::-1], _PHASE_0[::-1])
)

GATE_BLOCK_S = 0.4  # BS.1770 gating block: pyloudnorm refuses anything shorter
SILENCE_DB = -200.0  # stands in for -inf so the numbers stay JSON-safe


def integrated_lufs(samples: Samples, rate: int) -> float:
    """Integrated loudness in LUFS; ``-inf`` when everything falls under the -70 LUFS gate.

    A clip shorter than one 400 ms gating block is measured as if looped to fill the
    block: that is the loudness of what exists (an ungated mean square), which is the
    honest figure for a chime or a one-word clip; padding with silence would not be.
    """
    block = math.ceil(GATE_BLOCK_S * rate)
    if samples.size < block:
        samples = np.resize(samples, block)
    meter = pyloudnorm.Meter(rate)
    # float32 in: pyloudnorm copies and filters in the input's precision, and float64
    # would double the memory of an hour-long upload for no audible accuracy.
    return float(meter.integrated_loudness(samples))


def _oversampled_peaks(samples: Samples) -> Samples:
    """|value| of the 4x-oversampled signal, maximised over the 4 phases per input sample."""
    peaks = np.zeros(samples.shape, dtype=np.float32)
    for phase in TRUE_PEAK_PHASES:
        branch = correlate1d(samples, phase, mode="constant")
        np.maximum(peaks, np.abs(branch, out=branch), out=peaks)
    return peaks


def true_peak_envelope(samples: Samples) -> Samples:
    """Per input sample, the largest oversampled |value| within one sample of it.

    The limiter needs this envelope, not just its maximum. Each interpolation phase
    lands between two input samples, so the envelope is widened by one sample each
    side to stay an upper bound whichever neighbour a phase is attributed to.
    """
    return maximum_filter1d(_oversampled_peaks(samples), size=3, mode="constant")


def to_db(linear: float) -> float:
    """Amplitude ratio to dB, with digital silence pinned at ``SILENCE_DB``."""
    return 20.0 * math.log10(linear) if linear > 0 else SILENCE_DB


def true_peak_dbtp(samples: Samples) -> float:
    """True peak in dBTP (BS.1770-4 Annex 2, 4x oversampling)."""
    if samples.size == 0:
        return SILENCE_DB
    return to_db(float(_oversampled_peaks(samples).max()))
