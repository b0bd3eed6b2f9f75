"""Per-channel statistics of a dataset: the partials with the axes, inputs and options that
produced them, their finalized values, quantiles and findings, and their merge.

The file form (JSON or ``.npz``) is :mod:`bncli.io.statsfile`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from bncli.core import histogram as _histogram  # noqa: F401 - registers the histogram partial
from bncli.core import moments as _moments  # noqa: F401 - registers the moments partial
from bncli.core.findings import (
    DEFAULT_OUTLIER_THRESHOLD,
    DEFAULT_SPARSE_THRESHOLD,
    WIDE_RANGE_LEVELS,
    find,
)
from bncli.core.histogram import bucket_accuracy
from bncli.core.moments import MAX_COUNT
from bncli.core.partials import Partials
from bncli.errors import StatsFileError

_T = TypeVar("_T")


@dataclass
class Statistics:
    """Per-channel statistics of a dataset, with the axes, inputs and options that produced them.

    The numbers live in `partials` (mergeable, see :mod:`bncli.core.partials`); a statistics
    file written by another tool may instead give only `mean` and `variance`, which is
    enough to normalize with but not to merge.

    Attributes
    ----------
    inputs : list of dict
        ``path``, ``dataset``, ``shape``, ``dtype`` of each input.
    axes : tuple of int
        Reduced axes (non-negative).
    channel_shape : tuple of int
    partials : Partials or None
        Arrays of shape `channel_shape`.
    ddof : int
    keepdims : bool
        Whether arrays are written with the input's rank.
    ignore_nan : bool
    order : int
        Highest central moment computed: 2 or 4.
    outlier_threshold : float
        Robust z-score above which a channel's mean or std is a finding.
    sparse_threshold : float
        Fraction of exact zeros at or above which a channel is sparse.
    given : dict of str to ndarray
        ``mean`` and ``variance`` as a statistics file gave them; normalization uses these
        where present.
    """

    inputs: list
    axes: tuple
    channel_shape: tuple
    partials: Partials | None
    ddof: int = 0
    keepdims: bool = False
    ignore_nan: bool = False
    order: int = 2
    outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD
    sparse_threshold: float = DEFAULT_SPARSE_THRESHOLD
    given: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _cached(self, key: str, compute: Callable[[], _T]) -> _T:
        # values and findings are asked for by the report, the file and the summary alike;
        # they depend on the partials, ddof and threshold, which a new object would change
        stamp = (key, id(self.partials), self.ddof, self.outlier_threshold,
                 self.sparse_threshold)
        if stamp not in self._cache:
            self._cache[stamp] = compute()
        return self._cache[stamp]

    @property
    def moments(self):
        """The moments partial (None for a file with only mean and variance)."""
        return None if self.partials is None else self.partials.moments

    @property
    def histogram(self):
        """The histogram partial (None when the statistics have none)."""
        return None if self.partials is None else self.partials.members.get("histogram")

    def quantiles(self, levels: Sequence[float]) -> np.ndarray:
        """Quantiles per channel from the histogram: the channel shape plus one axis of
        `levels` (see :meth:`bncli.core.histogram.Histogram.quantiles`). The lowest and the
        highest rank are the exact min and max, and no quantile lies outside them."""
        histogram = self.histogram
        raw = found = histogram.quantiles(levels)
        moments = self.moments
        low = moments.min.astype(np.float64)[..., None]
        high = moments.max.astype(np.float64)[..., None]
        total = histogram.total[..., None]
        rank = np.clip(np.ceil(np.asarray(levels, np.float64) * total), 1, None)
        with np.errstate(invalid="ignore"):
            found = np.where(found < low, low, np.where(found > high, high, found))
            found = np.where(rank == 1, low, np.where(rank >= total, high, found))
        return np.where(np.isnan(raw), np.nan, found)

    @property
    def rank(self) -> int:
        """Rank of the inputs."""
        return len(self.channel_shape) + len(self.axes)

    @property
    def array_shape(self) -> tuple:
        """Shape of the arrays as written: `channel_shape`, or keepdims-shaped."""
        if not self.keepdims:
            return tuple(self.channel_shape)
        dims = iter(self.channel_shape)
        return tuple(1 if axis in self.axes else next(dims) for axis in range(self.rank))

    def values(self) -> dict:
        """The finalized statistics, channel-shaped (see :meth:`Partials.finalize`).

        Without partials (a file with only mean and variance), the counts are 0 and the
        extremes NaN.
        """
        if self.partials is not None:
            return self._cached("values", self._finalized)
        shape = tuple(self.channel_shape)
        variance = self.given["variance"]
        with np.errstate(invalid="ignore"):
            std = np.sqrt(variance)
        return {"count": np.zeros(shape, np.int64), "mean": self.given["mean"],
                "variance": variance, "std": std, "min": np.full(shape, np.nan),
                "max": np.full(shape, np.nan), "m2": np.full(shape, np.nan),
                "nan_count": np.zeros(shape, np.int64), "inf_count": np.zeros(shape, np.int64)}

    def _finalized(self) -> dict:
        assert self.partials is not None  # only values() calls it, when there are partials
        values = self.partials.finalize(self.ddof)
        if self.histogram is not None:
            values["quantiles"] = self.quantiles(self.histogram.levels)
        return values

    def normalization(self) -> tuple:
        """``(mean, variance)`` to normalize with: as given by a file, else as computed."""
        if "mean" in self.given and "variance" in self.given:
            return self.given["mean"], self.given["variance"]
        values = self.values()
        return values["mean"], values["variance"]

    def findings(self) -> list:
        """What is worth a look (see :mod:`bncli.core.findings`), a list of Finding."""
        if self.partials is None:
            return []
        return self._cached("findings", lambda: find(
            self.values(), outlier_threshold=self.outlier_threshold,
            sparse_threshold=self.sparse_threshold,
            tails=None if self.histogram is None else np.moveaxis(
                self.quantiles(WIDE_RANGE_LEVELS), -1, 0)))

    def merge(self, other: Statistics, name: str = "statistics") -> Statistics:
        """Combine with the statistics of other data of the same channels, axes and ddof."""
        mine: object  # the compared settings, then the histograms' accuracies
        theirs: object
        for label, mine, theirs in (
            ("channel shape", tuple(self.channel_shape), tuple(other.channel_shape)),
            ("axes", tuple(self.axes), tuple(other.axes)),
            ("ddof", self.ddof, other.ddof),
            ("ignore_nan", self.ignore_nan, other.ignore_nan),
            ("moments order", self.order, other.order),
        ):
            if mine != theirs:
                raise StatsFileError(f"{name}: {label} {theirs!r} does not match {mine!r}")
        for statistics, label in ((self, "statistics"), (other, name)):
            if statistics.partials is None:
                raise StatsFileError(f"{label}: holds mean and variance but no count and m2, "
                                     "so it can normalize but not be merged")
        assert self.partials is not None and other.partials is not None  # refused just above
        if set(self.partials.members) != set(other.partials.members):
            raise StatsFileError(f"{name}: holds {sorted(other.partials.members)}, but the "
                                 f"others hold {sorted(self.partials.members)}")
        if self.histogram is not None and self.histogram.bits != other.histogram.bits:
            theirs, mine = (bucket_accuracy(part.histogram.bits) for part in (other, self))
            raise StatsFileError(f"{name}: its histograms have accuracy {theirs:.4g}, the "
                                 f"others' {mine:.4g}: only histograms of one grid merge")
        merged = self.partials.merge(other.partials)
        if np.any(merged.moments.count > MAX_COUNT):  # a file bn would refuse to read
            raise StatsFileError(f"{name}: the merged count would pass 2**53, beyond what a "
                                 "statistics file holds exactly")
        return replace(self, inputs=self.inputs + other.inputs, given={}, partials=merged)
