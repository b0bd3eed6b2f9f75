"""What is worth a look in per-channel statistics: dead, non-finite, outlying, imprecise.

Pure NumPy on finalized statistics; the renderers and ``--fail-on`` act on the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Iglewicz & Hoaglin's cut-off for the modified z-score 0.6745 * (x - median) / MAD.
DEFAULT_OUTLIER_THRESHOLD = 3.5
# Scales the MAD to the standard deviation of a normal distribution.
MAD_TO_SIGMA = 0.6745
# Scales the mean absolute deviation to the standard deviation, when the MAD is 0.
MEAN_AD_TO_SIGMA = 1.253314
# A channel with |mean| / std above this loses at least 3 of the ~7 significant digits of a
# float32 value to its offset: float32 statistics of it would be off from the 4th digit on.
PRECISION_RATIO = 1e3
# Smallest robust spread of log10(std) among channels: 0.1 decade, about 26%.
LOG_STD_FLOOR = 0.1
# An outlying std is also at least this many decades from the median std (20x or 1/20):
# realistic layers (ReLU, GELU, batch-normed, linear; channel scales spread log-normally,
# ReLU channels of negative pre-activation mean narrowed up to ~10x) stay below it.
LOG_STD_MIN_DEPARTURE = 1.3
# Outliers "among channels" need a few channels to compare.
MIN_CHANNELS_FOR_OUTLIERS = 3
# A channel is sparse when at least this fraction of its values are exactly 0.
DEFAULT_SPARSE_THRESHOLD = 0.99
# A channel is saturated when at least this fraction of its values equal its min or max.
SATURATED_FRACTION = 0.01
# A channel's range is wide when max - min passes this many times its p0.01-p99.99 spread.
WIDE_RANGE_FACTOR = 10.0
WIDE_RANGE_LEVELS = (0.0001, 0.9999)

KINDS = ("dead", "nan", "inf", "overflow", "outlier_mean", "outlier_std", "precision",
         "few_values", "sparse", "saturated", "wide_range")
# Names accepted by --fail-on, each a set of kinds.
GROUPS = {
    "dead": {"dead"},
    "nan": {"nan"},
    "inf": {"inf"},
    "overflow": {"overflow"},
    "nonfinite": {"nan", "inf", "overflow"},
    "outlier": {"outlier_mean", "outlier_std"},
    "outlier_mean": {"outlier_mean"},
    "outlier_std": {"outlier_std"},
    "precision": {"precision"},
    "few_values": {"few_values"},
    "sparse": {"sparse"},
    "saturated": {"saturated"},
    "wide_range": {"wide_range"},
    "any": set(KINDS),
}


@dataclass
class Finding:
    """One kind of problem and the channels (flat indices) that have it."""

    kind: str
    channels: list
    message: str


def near_constant(variance: np.ndarray, mean: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Channels whose variance is at or below scikit-learn's near-constant bound.

    The bound is that of ``StandardScaler`` (``_is_constant_feature``): the rounding error
    of a two-pass float64 variance, ``n*eps*var + (n*mean*eps)**2`` (Chan, Golub & LeVeque).
    """
    eps = np.finfo(np.float64).eps
    with np.errstate(all="ignore"):
        bound = count * eps * variance + (count * mean * eps) ** 2
        return (count > 0) & np.isfinite(variance) & (variance <= bound)


def _median(values: np.ndarray) -> float:
    """The median of a non-empty 1-d array without NaN (``np.median`` imports ``numpy.ma``,
    a fifth of the start-up time)."""
    values = np.ravel(values)
    low, high = (values.size - 1) // 2, values.size // 2
    chosen = np.partition(values, (low, high))  # linear time, not a full sort
    return float((chosen[low] + chosen[high]) / 2)


def robust_outliers(values: np.ndarray, usable: np.ndarray, threshold: float,
                    floor: float | np.ndarray = 0.0,
                    min_departure: float = 0.0) -> np.ndarray:
    """Flag values whose modified z-score (median and MAD) exceeds `threshold`.

    The scale is the MAD scaled to a standard deviation (the mean absolute deviation when
    the MAD is 0), but never below `floor` (a number, or one per value), so that nearly
    equal values do not flag their small differences; a flagged value is also at least
    `min_departure` from the median.
    """
    flagged = np.zeros(values.shape, bool)
    sample = values[usable]
    if sample.size < MIN_CHANNELS_FOR_OUTLIERS:
        return flagged
    median = _median(sample)
    deviation = np.abs(sample - median)
    mad = _median(deviation)
    scale = mad / MAD_TO_SIGMA if mad > 0 else MEAN_AD_TO_SIGMA * np.mean(deviation)
    floor = np.asarray(floor, dtype=np.float64)
    scale = np.maximum(scale, floor[usable] if floor.ndim else floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        flagged[usable] = (scale > 0) & (deviation / np.where(scale > 0, scale, 1.0)
                                         > threshold) & (deviation >= min_departure)
    return flagged


# The table of rules, one after another as the README lists them: kept in one function.
def flags(values: dict, *, outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD,
          sparse_threshold: float = DEFAULT_SPARSE_THRESHOLD,
          tails: np.ndarray | None = None) -> dict:
    """Return a boolean array per kind, of the flattened channel count.

    Parameters
    ----------
    values : dict of str to ndarray
        Finalized statistics (:meth:`bncli.core.moments.Moments.finalize`); ``sparse`` and
        ``saturated`` need ``zero_count``, ``min_count`` and ``max_count`` (files written
        without them flag neither).
    outlier_threshold : float
        Modified z-score above which a channel's mean or std is an outlier.
    sparse_threshold : float
        Fraction of exact zeros at or above which a channel that is not constant is sparse.
    tails : ndarray, optional
        The p0.01 and p99.99 quantiles, shape ``(2,) + channel shape``, for ``wide_range``
        (not flagged without them).

    Returns
    -------
    dict of str to ndarray of bool
    """
    count = values["count"].reshape(-1)
    mean = values["mean"].reshape(-1)
    std = values["std"].reshape(-1)
    population_variance = np.where(count > 0, values["m2"].reshape(-1) / np.maximum(count, 1),
                                   np.nan)
    dead = near_constant(population_variance, mean, count)
    nan = values["nan_count"].reshape(-1) > 0
    inf = values["inf_count"].reshape(-1) > 0
    # finite values whose sums passed the float64 range (their statistics are NaN)
    overflow = (count > 0) & ~nan & ~inf & ~np.isfinite(values["m2"].reshape(-1))
    finite = np.isfinite(mean) & np.isfinite(std) & ~nan & ~inf
    lively = finite & ~dead & (std > 0)
    with np.errstate(all="ignore"):
        log_std = np.log10(np.where(lively, std, 1.0))
        ratio = np.abs(mean) / std
    none = np.zeros(count.shape, bool)
    sparse = saturated = wide = none
    if "zero_count" in values:
        zeros, at_min, at_max = (values[key].reshape(-1) for key in (
            "zero_count", "min_count", "max_count"))
        low, high = values["min"].reshape(-1), values["max"].reshape(-1)
        with np.errstate(all="ignore"):
            sparse = (count > 0) & ~dead & (zeros >= sparse_threshold * count)
            # A bound of exactly 0 is a ReLU's floor: its zeros are what `sparse` counts.
            # An extreme met once is no bound (in 100 values it alone would be 1%).
            pinned = (np.where((low == 0) | (at_min < 2), 0, at_min)
                      + np.where((high == 0) | (at_max < 2), 0, at_max))
            saturated = (count > 0) & (low < high) & (pinned >= SATURATED_FRACTION * count)
    if tails is not None:
        low, high = (np.asarray(tail, np.float64).reshape(-1) for tail in tails)
        with np.errstate(all="ignore"):
            extent = (values["max"].reshape(-1).astype(np.float64)
                      - values["min"].reshape(-1).astype(np.float64))
            wide = finite & ~dead & (extent > WIDE_RANGE_FACTOR * (high - low))
    return {
        "dead": dead,
        "nan": nan,
        "inf": inf,
        "overflow": overflow,
        # A mean is far off when it is far from the spread of the other means, from the
        # typical channel's std and from its own std: means that move with their channel's
        # scale (a ReLU's) are not.
        "outlier_mean": robust_outliers(
            mean, finite, outlier_threshold,
            floor=np.maximum(_median(std[lively]) if lively.any() else 0.0,
                             np.where(np.isfinite(std), std, 0.0))),
        # Scales compare as ratios: a std outlier is far in log scale, and 20x off at least.
        "outlier_std": robust_outliers(log_std, lively, outlier_threshold,
                                       floor=LOG_STD_FLOOR,
                                       min_departure=LOG_STD_MIN_DEPARTURE),
        "precision": lively & (ratio > PRECISION_RATIO),
        # with NaNs left out, a channel can keep no more values than ddof
        "few_values": (count > 0) & np.isfinite(mean) & np.isnan(values["variance"].reshape(-1))
        & ~overflow,
        "sparse": sparse,
        "saturated": saturated,
        "wide_range": wide,
    }


_MESSAGES = {
    "dead": "variance at or below scikit-learn's near-constant bound: normalizes to the offset",
    "nan": "hold NaN: mean and variance are NaN unless NaNs are left out",
    "inf": "hold Inf: mean or variance is not finite",
    "overflow": "finite values whose sums pass the float64 range (magnitudes or spreads "
                "near 1e308, or spreads past 1e154 for the variance): the statistics that "
                "overflowed are NaN",
    "outlier_mean": "mean far from the other channels' (robust z-score above {threshold:g}, "
                    "in units of the spread of the means, the median std or its own std, "
                    "the largest)",
    "outlier_std": "std far from the other channels' in scale (robust z-score of log std "
                   "above {threshold:g}, and 20x or 1/20 of the median std at least)",
    "few_values": "no more values than ddof: the variance is undefined (NaN)",
    "precision": f"|mean| / std above {PRECISION_RATIO:g}: float32 statistics would lose "
                 "precision here (bn accumulates in float64)",
    "sparse": "at least {sparse:.4g} of the values are exactly 0 (a mostly dead unit)",
    "saturated": f"at least {SATURATED_FRACTION:.0%} of the values equal the channel's min "
                 "or max (met more than once, other than 0): pinned at a bound (clipping, a "
                 "saturated ReLU6 or tanh)",
    "wide_range": f"max - min is over {WIDE_RANGE_FACTOR:g}x the p0.01-p99.99 spread: a few "
                  "values would ruin a min/max quantization range; clip to the percentile "
                  "range instead ({ranges})",
}


def find(values: dict, *, outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD,
         sparse_threshold: float = DEFAULT_SPARSE_THRESHOLD,
         tails: np.ndarray | None = None) -> list:
    """Return the findings: one :class:`Finding` per kind that any channel has (see
    :func:`flags` for the arguments)."""
    found = []
    masks = flags(values, outlier_threshold=outlier_threshold,
                  sparse_threshold=sparse_threshold, tails=tails)
    for kind, mask in masks.items():
        channels = np.flatnonzero(mask).tolist()
        if channels:
            found.append(Finding(kind, channels, _MESSAGES[kind].format(
                threshold=outlier_threshold, sparse=sparse_threshold,
                ranges=_tail_ranges(tails, channels))))
    return found


def _tail_ranges(tails: np.ndarray | None, channels: list, shown: int = 3) -> str:
    """``channel 4: [-2.1, 3.7]; ...``: the p0.01-p99.99 range of the first few channels."""
    if tails is None:
        return ""
    low, high = (np.asarray(tail, np.float64).reshape(-1) for tail in tails)
    text = "; ".join(f"channel {index}: [{low[index]:.6g}, {high[index]:.6g}]"
                     for index in channels[:shown])
    return text + ("; ..." if len(channels) > shown else "")


def parse_fail_on(text: str) -> set:
    """Parse ``--fail-on dead,nonfinite`` into a set of kinds; ValueError if unknown."""
    kinds: set = set()
    for name in (part.strip() for part in text.split(",") if part.strip()):
        if name not in GROUPS:
            raise ValueError(f"unknown finding {name!r}; choose from {', '.join(GROUPS)}")
        kinds |= GROUPS[name]
    return kinds


def to_document(found: list, channel_shape: tuple) -> list:
    """JSON-ready findings: channel indices as ints (1-D channels) or index lists."""
    documents = []
    for finding in found:
        if len(channel_shape) == 1:
            channels = finding.channels
        else:
            channels = [list(map(int, np.unravel_index(index, channel_shape)))
                        for index in finding.channels]
        documents.append({"kind": finding.kind, "channels": channels,
                          "count": len(finding.channels), "message": finding.message})
    return documents
