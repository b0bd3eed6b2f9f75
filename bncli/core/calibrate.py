"""Clipping ranges for int8 and float8 quantization, from the mergeable histograms.

Every method works on the histogram of ``|x|`` (symmetric ranges), per tensor (all channels'
histograms added, which is exact: they share one grid) or per channel:

- ``minmax``: the largest ``|x|``, exact (from the moments).
- ``percentile``: the value of rank ``ceil(p n / 100)`` of ``|x|``, within the grid's
  relative accuracy, at most the largest.
- ``entropy``: TensorRT's KL-divergence method as NVIDIA's pytorch-quantization implements
  it: ``|x|`` in 2048 equal bins up to its maximum (the first bin set to the second, so that
  a spike of zeros does not decide), and for each candidate threshold ``i`` from 128 bins
  on, the reference distribution (bins below ``i``, the rest added to the last) against its
  quantization to 128 levels; the threshold of least divergence (the largest among equals).
  The log-spaced buckets are spread evenly over the linear bins they overlap.
- ``mse``: of 256 candidate ranges up to the largest ``|x|``, the one with the least
  expected squared error of symmetric round-to-nearest quantization, each bucket's values
  taken as spread evenly over it.

The scale is the range over the largest code: 127 for int8, 448 for float8 e4m3.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bncli.core.histogram import Histogram, _decoded, bucket_of_rank, rank_at, representatives
from bncli.errors import StatsFileError

METHODS = ("minmax", "percentile", "entropy", "mse")
# the largest code of each target: the range maps onto it
TARGETS = {"int8": 127.0, "fp8-e4m3": 448.0}
ENTROPY_BINS = 2048
ENTROPY_LEVELS = 128
MSE_CANDIDATES = 256
TENSORRT_HEADER = "TRT-8601-EntropyCalibration2"


@dataclass(frozen=True)
class Magnitudes:
    """The histogram of ``|x|`` of some channels.

    Attributes
    ----------
    low, high : ndarray of float64
        Edges of each bucket.
    counts : ndarray of int64
    zeros : int
        Values in the zero bucket (``|x|`` below the smallest normal float32).
    largest : float
        The largest finite ``|x|``, exact.
    infinite, nan : int
    first_key : int
        The grid's key of the first bucket.
    bits : int
        Mantissa bits of the grid.
    """

    low: np.ndarray
    high: np.ndarray
    counts: np.ndarray
    zeros: int
    largest: float
    infinite: int
    nan: int
    first_key: int
    bits: int

    @property
    def total(self) -> int:
        """Finite values counted."""
        return int(self.counts.sum()) + self.zeros


def magnitudes(histogram: Histogram, minimum: np.ndarray, maximum: np.ndarray,
               channels: Sequence[int] | np.ndarray | None = None) -> Magnitudes:
    """The ``|x|`` histogram of the flat `channels` (all by default) of `histogram`.

    Parameters
    ----------
    histogram : Histogram
    minimum, maximum : ndarray
        Per channel (the moments' exact extremes).
    channels : sequence of int, optional
    """
    flat = math.prod(histogram.shape)
    channels = np.arange(flat) if channels is None else np.asarray(channels)
    pos, neg = histogram._flat("pos")[channels], histogram._flat("neg")[channels]
    special = histogram._flat("special")[channels].sum(axis=0, dtype=np.int64)
    low = min(histogram.pos_low, histogram.neg_low)
    high = max(histogram.pos_low + pos.shape[1], histogram.neg_low + neg.shape[1])
    counts = np.zeros(max(high - low, 0), np.int64)
    for rows, start in ((pos, histogram.pos_low), (neg, histogram.neg_low)):
        if rows.shape[1]:
            counts[start - low:start - low + rows.shape[1]] += rows.sum(axis=0, dtype=np.int64)
    keys = low + np.arange(counts.size + 1)
    with np.errstate(over="ignore"):  # the top bucket's upper edge is +inf
        edges = np.ldexp(*_decoded(keys, histogram.bits))
    with np.errstate(invalid="ignore"):
        low_values = np.abs(np.asarray(minimum, np.float64).reshape(-1)[channels])
        high_values = np.abs(np.asarray(maximum, np.float64).reshape(-1)[channels])
    finite = np.concatenate([low_values, high_values])
    finite = finite[np.isfinite(finite)]
    largest = float(finite.max()) if finite.size else 0.0
    if special[2] + special[3]:  # with infinities, the largest finite value is a bucket's
        nonzero = np.nonzero(counts)[0]
        largest = float(edges[nonzero[-1] + 1]) if nonzero.size else 0.0
    return Magnitudes(edges[:-1], edges[1:], counts, int(special[0]), largest,
                      int(special[2] + special[3]), int(special[4]), low, histogram.bits)


def amax(found: Magnitudes, method: str, *, percentile: float = 99.99,
         largest_code: float = 127.0) -> float:
    """The clipping range of `method` for one ``|x|`` histogram."""
    if found.total == 0:
        return 0.0
    if method == "minmax":
        return found.largest
    if method == "percentile":
        return _percentile(found, percentile)
    if method == "entropy":
        return _entropy(found)
    if method == "mse":
        return _mse(found, largest_code)
    raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")


def _percentile(found: Magnitudes, percentile: float) -> float:
    rank = rank_at(percentile / 100, found.total)
    if rank <= found.zeros:
        return 0.0
    index = int(bucket_of_rank(found.zeros + np.cumsum(found.counts), rank))
    value = representatives(np.array([found.first_key + index]), found.bits)[0]
    return float(min(value, found.largest))


def linear_bins(found: Magnitudes, bins: int = ENTROPY_BINS) -> np.ndarray:
    """The ``|x|`` histogram in `bins` equal bins on ``[0, largest]``: each bucket's count
    spread evenly over the bins its interval overlaps; the zero bucket in the first."""
    width = found.largest / bins
    out = np.zeros(bins)
    out[0] += found.zeros
    if width == 0:
        out[0] += found.counts.sum()
        return out
    keep = found.counts > 0
    low = np.minimum(found.low[keep], found.largest) / width  # a file may say either
    high = np.minimum(found.high[keep], found.largest) / width
    counts = found.counts[keep].astype(np.float64)
    # cumulative mass at each bin edge, a piecewise-linear function of the position
    edges = np.arange(bins + 1, dtype=np.float64)
    mass = np.zeros(bins + 1)
    for start, stop, count in zip(low, np.maximum(high, low), counts):
        if stop <= start:  # a bucket starting at the largest value: its last bin
            mass[int(min(start, bins - 1)) + 1:] += count
            continue
        mass += count * np.clip((edges - start) / (stop - start), 0, 1)
    out += np.diff(mass)
    return out


def entropy_threshold(bins: np.ndarray, levels: int = ENTROPY_LEVELS) -> int:
    """The number of bins TensorRT's KL method keeps (see the module's description)."""
    bins = np.asarray(bins, np.float64).copy()
    bins[0] = bins[1]
    best, best_index = np.inf, len(bins)
    for stop in range(levels, len(bins) + 1):
        reference = bins[:stop].copy()
        reference[-1] += bins[stop:].sum()
        level = np.digitize(np.arange(stop), np.linspace(0, stop, num=levels + 1)) - 1
        occupied = bins[:stop] != 0
        sums = np.bincount(level, weights=bins[:stop], minlength=levels)
        nonzero = np.bincount(level, weights=occupied, minlength=levels)
        with np.errstate(invalid="ignore", divide="ignore"):
            quantized = np.where(occupied, sums[level] / nonzero[level], 0.0)
        divergence = _kl(reference, quantized)
        if divergence <= best:  # the largest threshold among equals
            best, best_index = divergence, stop
    return best_index


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    total_p, total_q = p.sum(), q.sum()
    if total_p == 0 or total_q == 0:
        return np.inf
    p, q = p / total_p, q / total_q
    mask = p > 0
    if np.any(q[mask] == 0):
        return np.inf
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _entropy(found: Magnitudes) -> float:
    bins = linear_bins(found)
    return float(entropy_threshold(bins) * found.largest / len(bins))


def _mse(found: Magnitudes, largest_code: float) -> float:
    keep = found.counts > 0
    low, counts = found.low[keep], found.counts[keep].astype(np.float64)
    high = np.maximum(np.minimum(found.high[keep], found.largest), low)
    candidates = found.largest * np.arange(1, MSE_CANDIDATES + 1) / MSE_CANDIDATES
    errors = [quantization_error(low, high, counts, candidate, largest_code)
              for candidate in candidates]
    return float(candidates[int(np.argmin(errors))])


def quantization_error(low: np.ndarray, high: np.ndarray, counts: np.ndarray, amax: float,
                       largest_code: float) -> float:
    """The expected squared error of symmetric round-to-nearest quantization with range
    `amax` of values spread evenly over each bucket ``[low, high)`` (a point where
    ``low == high``)."""
    step = amax / largest_code

    def sawtooth(x):  # the integral of (t - Q(t))**2 from -step/2 to x, below amax
        u = x / step + 0.5
        whole = np.floor(u)
        f = u - whole
        return step**3 * (whole / 12 + ((f - 0.5) ** 3 + 0.125) / 3)

    width = high - low
    point = width <= 0
    inner_high = np.minimum(high, amax)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        inside = np.where(low < amax, sawtooth(inner_high) - sawtooth(np.minimum(low, amax)), 0)
        outside = np.where(high > amax, ((high - amax) ** 3
                                         - (np.maximum(low, amax) - amax) ** 3) / 3, 0)
        spread = (inside + outside) / np.where(point, 1, width)
    with np.errstate(over="ignore", invalid="ignore"):  # buckets reaching past float64's max
        quantized = np.minimum(np.round(low / step), largest_code) * step
        at_point = (low - quantized) ** 2
        return float(np.sum(counts * np.where(point, at_point, spread)))


def tensorrt_cache(scales: dict, header: str = TENSORRT_HEADER) -> str:
    """A TensorRT calibration cache: the header line, then ``name: <hex>`` per tensor, the
    hex being the big-endian bits of the float32 scale."""
    lines = [header]
    for name, scale in scales.items():
        if ":" in name or "\n" in name:
            raise StatsFileError(f"tensor name {name!r} cannot be written to a TensorRT "
                                 "cache (it holds ':' or a newline)")
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"
