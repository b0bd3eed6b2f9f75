"""Per-channel drift between two sets of statistics of the same channels.

Pure NumPy on two :class:`~bncli.core.statistics.Statistics`: the shift of the mean in units of
BASE's std, the ratio of the stds, the channels that became dead, sparse, non-finite or
saturated, and with histograms on both sides the population stability index and NEW's mass
outside BASE's [p0.1, p99.9].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bncli.core.findings import flags
from bncli.core.histogram import (
    SPECIAL,
    Histogram,
    bucket_of_rank,
    bucket_union,
    rank_at,
    widen_buckets,
)

if TYPE_CHECKING:
    from bncli.core.statistics import Statistics

DEFAULT_MAX_SHIFT = 0.25
DEFAULT_MAX_PSI = 0.2
# PSI compares the mass of BASE's ten deciles on both sides; a bin empty on one side counts
# as this proportion (the usual smoothing, so that the index stays finite).
PSI_BINS = 10
PSI_FLOOR = 1e-4
OUTSIDE_LEVELS = (0.001, 0.999)
# What a channel can become, and the findings that say so.
BECAME = {"dead": ("dead",), "sparse": ("sparse",), "nonfinite": ("nan", "inf", "overflow"),
          "saturated": ("saturated",)}


@dataclass
class Drift:
    """Per-channel drift of NEW from BASE (flat arrays of the channel count).

    Attributes
    ----------
    channel_shape : tuple of int
    mean_shift, std_ratio : ndarray of float64
    psi, outside : ndarray of float64 or None
        None unless both sides have histograms.
    became : dict of str to ndarray of bool
        Channels that are dead, sparse, non-finite or saturated in NEW and were not in BASE.
    max_shift, max_psi : float
        The thresholds of :attr:`drifted`.
    """

    channel_shape: tuple
    mean_shift: np.ndarray
    std_ratio: np.ndarray
    psi: np.ndarray | None
    outside: np.ndarray | None
    became: dict = field(default_factory=dict)
    max_shift: float = DEFAULT_MAX_SHIFT
    max_psi: float = DEFAULT_MAX_PSI

    @property
    def drifted(self) -> np.ndarray:
        """Channels whose mean moved more than `max_shift` BASE stds, or whose PSI passes
        `max_psi`."""
        moved = np.abs(self.mean_shift) > self.max_shift
        if self.psi is not None:
            moved |= self.psi > self.max_psi
        return moved


def drift(base: Statistics, new: Statistics, *, max_shift: float = DEFAULT_MAX_SHIFT,
          max_psi: float = DEFAULT_MAX_PSI) -> Drift:
    """Compare two :class:`~bncli.core.statistics.Statistics` of the same channel shape."""
    old, now = base.values(), new.values()
    with np.errstate(all="ignore"):
        difference = now["mean"].astype(np.float64) - old["mean"]
        std = old["std"].astype(np.float64)
        shift = np.where(difference == 0, 0.0, difference / std)
        ratio = np.where(now["std"] == old["std"], 1.0, now["std"] / std)
    before = flags(old, sparse_threshold=base.sparse_threshold)
    after = flags(now, sparse_threshold=new.sparse_threshold)
    became = {}
    for name, kinds in BECAME.items():
        was = np.logical_or.reduce([before[kind] for kind in kinds])
        became[name] = np.logical_or.reduce([after[kind] for kind in kinds]) & ~was
    psi = outside = None
    if base.histogram is not None and new.histogram is not None:
        psi, outside = _histogram_drift(base.histogram, new.histogram)
    return Drift(tuple(base.channel_shape), shift.reshape(-1), ratio.reshape(-1), psi, outside,
                 became, max_shift, max_psi)


def _ordered(histogram: Histogram, pos: tuple, neg: tuple) -> np.ndarray:
    """Counts per channel in increasing order of value over the windows `pos` and `neg`
    (``(low, high)`` keys): -Inf, negatives, the zero bucket, positives, +Inf."""
    channels = int(np.prod(histogram.shape))
    special = histogram.special.reshape(channels, len(SPECIAL))
    wide_pos = widen_buckets(histogram.pos, histogram.pos_low, *pos).reshape(channels, -1)
    wide_neg = widen_buckets(histogram.neg, histogram.neg_low, *neg).reshape(channels, -1)
    return np.concatenate([special[:, 3:4], wide_neg[:, ::-1], special[:, 0:1], wide_pos,
                           special[:, 2:3]], axis=1)


def _histogram_drift(base: Histogram, new: Histogram) -> tuple:
    """PSI over BASE's deciles, and NEW's mass outside BASE's [p0.1, p99.9], per channel."""
    pos = bucket_union(base.pos_low, base.pos, new.pos_low, new.pos)
    neg = bucket_union(base.neg_low, base.neg, new.neg_low, new.neg)
    old = np.cumsum(_ordered(base, pos, neg), axis=1)
    now = np.cumsum(_ordered(new, pos, neg), axis=1)
    old_total, new_total = old[:, -1:], now[:, -1:]

    def bucket_of(level):  # BASE's bucket of the value of rank ceil(level * n)
        return bucket_of_rank(old, rank_at(level, old_total[:, 0]))

    rows = np.arange(len(old))
    with np.errstate(all="ignore"):
        low, high = (bucket_of(level) for level in OUTSIDE_LEVELS)
        below = np.where(low > 0, now[rows, np.maximum(low - 1, 0)], 0)
        above = new_total[:, 0] - now[rows, high]
        outside = (below + above) / new_total[:, 0]
        edges = np.stack([bucket_of(k / PSI_BINS) for k in range(1, PSI_BINS)], axis=1)
        old_at = np.concatenate([np.zeros((len(old), 1)), old[rows[:, None], edges], old_total],
                                axis=1)
        now_at = np.concatenate([np.zeros((len(now), 1)), now[rows[:, None], edges], new_total],
                                axis=1)
        p = np.diff(old_at, axis=1) / old_total
        q = np.diff(now_at, axis=1) / new_total
        used = (p > 0) | (q > 0)  # deciles that share a bucket leave empty bins: skipped
        p, q = np.maximum(p, PSI_FLOOR), np.maximum(q, PSI_FLOOR)
        psi = np.where(used, (q - p) * np.log(q / p), 0.0).sum(axis=1)
    empty = (old_total[:, 0] == 0) | (new_total[:, 0] == 0)
    return np.where(empty, np.nan, psi), np.where(empty, np.nan, outside)
