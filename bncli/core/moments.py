"""Partial per-channel moments: computed on a block, merged in any grouping, finalized once.

Every sum is accumulated in float64, whatever the input dtype: float32 accumulators lose
about seven digits when ``|mean| / std`` is near 1e4, which is common for raw activations.
Before any sum, every channel is centred on a *shift*, a value of its own data (the first
one of the block); 64-bit integers are shifted in their own type, so values near 2**62 keep
their low bits. Each piece is then centred on its own mean (a two-pass sum within the piece,
which sits in cache), and partials are combined with the pairwise update of Chan, Golub &
LeVeque (1979), "Updating formulae and a pairwise algorithm for computing sample
variances", on the shifted means::

    n = na + nb,  d = (sb - sa) + (mb - ma),  mean = ma + d * nb / n,
    m2 = m2a + m2b + d**2 * na * nb / n

Two shifts of one channel lie close together, so ``sb - sa`` is exact, and no partial mean
is ever rounded at the data's offset: the variance is shift-invariant, to 1e-13 relative at
``|mean| / std`` of 1e8. The merge is associative (up to rounding), so chunks, files, shards
and workers all combine through :meth:`Moments.merge`. ``E[x**2] - E[x]**2`` is never used.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bncli.core.buffers import BufferRing, LazyBlock
from bncli.core.kernel import COMPILED, type_code
from bncli.core.layout import FOLD_WIDTH, channel_region, collapse_axes, fold_factor, plan_blocks
from bncli.core.partials import Partial, Reduction, register, tree_merge
from bncli.errors import InputError, StatsFileError

if TYPE_CHECKING:
    from typing import Literal, TypedDict

    class _Reduce(TypedDict):
        """The keyword arguments of a reduction over a piece's reduced axes, kept dims."""

        axis: tuple
        keepdims: Literal[True]

# Float64 bytes per piece that is converted and reduced at once: a piece lives in L2/L3
# cache, and each NumPy call is long enough that worker threads rarely wait for the GIL
# (measured: 512 KiB pieces scaled 1.1x on two threads, 2 MiB pieces 1.5x).
PIECE_BYTES = 2 * 2**20
# Rows of channels-last data a piece should hold; rows wider than a piece's share are
# reduced in ranges of columns over every row instead (one partial per channel).
MIN_PIECE_ROWS = 64
# A reduced last axis at most this long is folded column by column (a few long vector
# operations) instead of by NumPy's reductions, which pay a per-row cost on short rows.
SHORT_AXIS = 32
# Channels the compiled kernel reduces in pieces of whole rows (it keeps a dozen float64 a
# channel for each piece); wider rows, and rows too wide for a piece to hold
# MIN_PIECE_ROWS of them, it reduces in ranges of columns over every row.
MAX_COMPILED_CHANNELS = 2**16
# Values of a run of (outer, channels, inner) slabs the compiled kernel takes: it counts a
# run's values in 8 lanes of int32.
MAX_COMPILED_RUN = 8 * 2**31


@register
@dataclass
class Moments(Partial):
    """Partial central moments per channel, centred on a shift; every array has one shape.

    Attributes
    ----------
    count : ndarray of int64
        Values that entered the sums (NaNs excluded when `ignore_nan`).
    shift : ndarray of float64
        A value of the channel's own data (0 where none is finite) that every value is
        centred on before any sum; for integer inputs it is a value of the input's type.
    shifted_mean : ndarray of float64
        Mean of ``x - shift``. The mean is ``shift + shifted_mean``, rounded once.
    m2 : ndarray of float64
        Sum of squared deviations from the mean.
    min, max : ndarray
        Extremes, exact: int64 for integer inputs (uint64 for uint64 ones), float64 for
        the others; an empty channel holds the identity of min/max (inf, or the integer
        type's far end).
    nan_count, inf_count : ndarray of int64
    ignore_nan : bool
        Whether NaNs were left out of `count`, the means, `m2`, `min` and `max`.
    m3, m4 : ndarray of float64, optional
        Sums of cubed and fourth-power deviations (order 4 only; None for order 2).
    zero_count, min_count, max_count : ndarray of int64, optional
        Values equal to 0, to `min` and to `max` (none equal a NaN extreme). None in the
        partials of pieces inside one block, and in files written without them.
    """

    count: np.ndarray
    shift: np.ndarray
    shifted_mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan_count: np.ndarray
    inf_count: np.ndarray
    ignore_nan: bool = False
    m3: np.ndarray | None = None
    m4: np.ndarray | None = None
    zero_count: np.ndarray | None = None
    min_count: np.ndarray | None = None
    max_count: np.ndarray | None = None

    name = "moments"
    ARRAYS = ("count", "shift", "shifted_mean", "m2", "min", "max", "nan_count", "inf_count")
    HIGHER = ("m3", "m4")
    COUNTS = ("zero_count", "min_count", "max_count")

    def array_names(self) -> tuple:
        return (self.ARRAYS + (self.HIGHER if self.m3 is not None else ())
                + (self.COUNTS if self.zero_count is not None else ()))

    @property
    def order(self) -> int:
        """The highest central moment held: 2 or 4."""
        return 2 if self.m3 is None else 4

    @classmethod
    def empty(cls, shape: Sequence[int], reduction: Reduction | None = None,
              ignore_nan: bool = False, order: int = 2,
              extremes: np.dtype | type = np.float64, counts: bool = True) -> Moments:
        """Return the moments of no data (the identity of :meth:`merge`), its extremes of
        dtype `extremes`, with the value counts unless not `counts`."""
        if reduction is not None:
            ignore_nan, order = reduction.ignore_nan, reduction.order
        shape = tuple(shape)
        low, high = _extreme_identities(np.dtype(extremes))
        return cls(
            count=np.zeros(shape, np.int64),
            shift=np.zeros(shape, np.float64),
            shifted_mean=np.zeros(shape, np.float64),
            m2=np.zeros(shape, np.float64),
            min=np.full(shape, low, extremes),
            max=np.full(shape, high, extremes),
            nan_count=np.zeros(shape, np.int64),
            inf_count=np.zeros(shape, np.int64),
            ignore_nan=ignore_nan,
            m3=np.zeros(shape, np.float64) if order == 4 else None,
            m4=np.zeros(shape, np.float64) if order == 4 else None,
            **{key: np.zeros(shape, np.int64) if counts else None for key in cls.COUNTS},
        )

    def empty_like(self, shape: Sequence[int], reduction: Reduction) -> Moments:
        """The moments of no data over channel `shape`, extremes of this one's dtype."""
        return self.empty(shape, reduction, extremes=self.min.dtype,
                          counts=self.zero_count is not None)

    @classmethod
    def from_block(cls, block: np.ndarray | LazyBlock, reduce_axes: tuple,
                   reduction: Reduction) -> Moments:
        """See :func:`block_moments`."""
        return block_moments(block, reduce_axes, ignore_nan=reduction.ignore_nan,
                             order=reduction.order)

    # The Chan / Pebay update of every array in one place, where it can be read against the
    # papers: longer than 80 lines, kept whole.
    def merge(self, other: Moments) -> Moments:
        """Combine with the moments of other data of the same channels.

        The result keeps this side's shift (the other's where this side is empty). The
        difference of the means is taken as ``(shift_b - shift_a) + (mean_b - mean_a)``
        with shifted means: two shifts of one channel's data lie close together, so their
        difference is exact (Sterbenz), and no mean is ever rounded at the data's offset.
        The third and fourth moments follow the pairwise formulas of Pébay (2008),
        "Formulas for robust, one-pass parallel computation of covariances and
        arbitrary-order statistical moments", SAND2008-6212.

        Parameters
        ----------
        other : Moments
            Same shape, `ignore_nan` and order.

        Returns
        -------
        Moments
            The moments of both data together.
        """
        if self.ignore_nan != other.ignore_nan:
            raise ValueError("cannot merge moments computed with and without ignore_nan")
        if self.order != other.order:
            raise ValueError("cannot merge moments of order 2 with moments of order 4")
        count_a, count_b = self.count, other.count
        total = count_a + count_b
        higher = {}
        with np.errstate(all="ignore"):
            delta = (other.shift - self.shift) + (other.shifted_mean - self.shifted_mean)
            fraction_a, fraction_b = count_a / total, count_b / total
            shifted_mean = self.shifted_mean + delta * fraction_b
            m2 = self.m2 + other.m2 + delta * delta * count_a * fraction_b
            if self.m3 is not None:
                assert self.m4 is not None  # order 4: m3 and m4 are set together
                delta2 = delta * delta
                higher["m3"] = (self.m3 + other.m3
                                + delta2 * delta * count_a * fraction_b * (fraction_a - fraction_b)
                                + 3.0 * delta * (fraction_a * other.m2 - fraction_b * self.m2))
                higher["m4"] = (self.m4 + other.m4
                                + delta2 * delta2 * count_a * fraction_b
                                * (fraction_a * fraction_a - fraction_a * fraction_b
                                   + fraction_b * fraction_b)
                                + 6.0 * delta2 * (fraction_a * fraction_a * other.m2
                                                  + fraction_b * fraction_b * self.m2)
                                + 4.0 * delta * (fraction_a * other.m3 - fraction_b * self.m3))
            # An infinite or NaN mean is no location to centre on: follow NumPy, whose
            # mean of [inf, 5] is inf and whose variance of it is nan.
            nonfinite = ~(np.isfinite(self.shifted_mean) & np.isfinite(other.shifted_mean))
            if nonfinite.any():
                shifted_mean = np.where(nonfinite, self.shifted_mean + other.shifted_mean,
                                        shifted_mean)
                m2 = np.where(nonfinite, np.nan, m2)
                higher = {key: np.where(nonfinite, np.nan, value)
                          for key, value in higher.items()}
        # An empty side is the identity; the formulas above would give 0/0 there.
        a_empty, b_empty = count_a == 0, count_b == 0

        def pick(mine, theirs, merged):
            return np.where(a_empty, theirs, np.where(b_empty, mine, merged))

        extreme_min, extreme_max = (
            (np.fmin, np.fmax) if self.ignore_nan else (np.minimum, np.maximum)
        )
        minimum = _merge_extremes(extreme_min, True, self.min, other.min, a_empty, b_empty)
        maximum = _merge_extremes(extreme_max, False, self.max, other.max, a_empty, b_empty)
        counts = {}
        if self.zero_count is not None and other.zero_count is not None:
            counts["zero_count"] = self.zero_count + other.zero_count
            for key, merged, mine, theirs in (("min_count", minimum, self.min, other.min),
                                              ("max_count", maximum, self.max, other.max)):
                # the ties of each side that are ties of the whole: an empty side's
                # identity, or a NaN, equals no merged extreme of values
                counts[key] = (np.where(mine == merged, getattr(self, key), 0)
                               + np.where(theirs == merged, getattr(other, key), 0))
        return Moments(
            count=total,
            shift=np.where(a_empty, other.shift, self.shift),
            shifted_mean=pick(self.shifted_mean, other.shifted_mean, shifted_mean),
            m2=pick(self.m2, other.m2, m2),
            min=minimum,
            max=maximum,
            nan_count=self.nan_count + other.nan_count,
            inf_count=self.inf_count + other.inf_count,
            ignore_nan=self.ignore_nan,
            **{key: pick(getattr(self, key), getattr(other, key), value)
               for key, value in higher.items()},
            **counts,
        )

    def mean(self) -> np.ndarray:
        """The mean per channel, ``shift + shifted_mean`` rounded once (NaN where empty)."""
        with np.errstate(all="ignore"):
            return np.where(self.count == 0, np.nan, self.shift + self.shifted_mean)

    def overflow(self) -> np.ndarray:
        """Channels of finite values whose centred sums are not finite: they passed the
        float64 range."""
        finite_data = (self.inf_count == 0) & ((self.nan_count == 0) | self.ignore_nan)
        with np.errstate(all="ignore"):
            return (self.count > 0) & finite_data & ~(np.isfinite(self.m2) & np.isfinite(
                self.shifted_mean))

    def finalize(self, ddof: int = 0) -> dict:
        """Return the statistics per channel.

        Parameters
        ----------
        ddof : int
            Delta degrees of freedom: the variance is ``m2 / (count - ddof)``.

        Returns
        -------
        dict of str to ndarray
            ``count``, ``mean``, ``variance``, ``std``, ``min``, ``max``, ``m2``,
            ``nan_count``, ``inf_count``, ``shift``, ``shifted_mean``, each of this
            moments' shape; for order 4 also ``skewness`` (``sqrt(n) * m3 / m2**1.5``) and
            ``kurtosis`` (excess, ``n * m4 / m2**2 - 3``), the population (biased) values
            that ``scipy.stats.skew`` and ``kurtosis`` give by default. A channel without
            values (or with ``count <= ddof`` for the variance, or no spread for the
            shape statistics) gets NaN.
        """
        stored = self.file_arrays()  # what an empty channel holds, settled there once
        with np.errstate(all="ignore"):
            dof = self.count - ddof
            variance = np.where(dof > 0, self.m2 / np.where(dof > 0, dof, 1), np.nan)
        # Finite data whose sums passed the float64 range (values near 1e308, or a spread
        # whose square does): what overflowed is NaN, not a wrong-signed inf
        overflow = self.overflow()
        mean = self.mean()
        if overflow.any():
            mean = np.where(overflow & ~np.isfinite(mean), np.nan, mean)
            variance = np.where(overflow, np.nan, variance)
        values = {
            "count": stored["count"],
            "mean": mean,
            "variance": variance,
            "std": np.sqrt(variance),
            **{key: stored[key] for key in ("min", "max", "m2", "nan_count", "inf_count",
                                            "shift", "shifted_mean")},
            **{key: stored[key] for key in self.COUNTS if key in stored},
        }
        if self.m3 is not None:
            with np.errstate(all="ignore"):
                spread = (self.m2 > 0) & (self.count > 0)
                safe_m2 = np.where(spread, self.m2, 1.0)
                values["m3"], values["m4"] = stored["m3"], stored["m4"]
                values["skewness"] = np.where(
                    spread, np.sqrt(self.count) * self.m3 / safe_m2 ** 1.5, np.nan)
                values["kurtosis"] = np.where(
                    spread, self.count * self.m4 / (safe_m2 * safe_m2) - 3.0, np.nan)
        return values

    @classmethod
    def from_file(cls, arrays: dict, shape: tuple, reduction: Reduction,
                  name: str) -> Moments | None:
        """Rebuild the moments of a statistics file; None if it holds no count and m2.

        Files without ``shift`` (schema 1, or written by hand) are taken as centred on their
        mean.
        """
        if "count" not in arrays and "m2" not in arrays:
            return None
        loaded = {}
        keys = ("count", "mean", "m2", "min", "max", "nan_count", "inf_count")
        shifted = "shift" in arrays and "shifted_mean" in arrays
        higher = "m3" in arrays and "m4" in arrays
        counted = all(key in arrays for key in cls.COUNTS)
        for key in keys + (("shift", "shifted_mean") if shifted else ()) + (
                cls.HIGHER if higher else ()) + (cls.COUNTS if counted else ()):
            if key not in arrays:
                raise StatsFileError(f"{name}: missing field {key!r}")
            array = arrays[key]
            if array.shape != tuple(shape):
                raise StatsFileError(f"{name}: {key} has shape {list(array.shape)}, expected "
                                     f"channel_shape {list(shape)}")
            if key in ("count", "nan_count", "inf_count") + cls.COUNTS:
                if not np.all(np.isfinite(array)) or np.any(array != np.round(array)) or np.any(
                        array < 0) or np.any(array > MAX_COUNT):
                    raise StatsFileError(f"{name}: {key} is not a list of counts (whole "
                                         f"numbers from 0 to 2**53)")
                array = array.astype(np.int64)
            if key == "m2" and np.any(array < 0):
                raise StatsFileError(f"{name}: m2 holds a negative value; a sum of squares "
                                     "cannot be")
            loaded[key] = array
        mean = loaded.pop("mean")
        if not shifted:  # centred on the mean as written
            finite = np.isfinite(mean)
            loaded["shift"] = np.where(finite, mean, 0.0)
            loaded["shifted_mean"] = np.where(finite, 0.0, mean)
        elif np.any(~np.isfinite(loaded["shift"])):
            raise StatsFileError(f"{name}: shift holds a value that is not finite")
        return cls(ignore_nan=reduction.ignore_nan, **loaded)

    def file_arrays(self) -> dict:
        """The stored arrays, copied; an empty channel holds 0 sums and NaN extremes."""
        empty = self.count == 0
        arrays = {key: np.array(getattr(self, key)) for key in self.array_names()}
        for key in ("shift", "shifted_mean", "m2") + (self.HIGHER if self.m3 is not None else ()):
            arrays[key] = np.where(empty, 0.0, arrays[key])
        if empty.any():
            for key in ("min", "max"):
                arrays[key] = np.where(empty, np.nan, arrays[key].astype(np.float64))
        return arrays


def extreme_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the extremes of data of `dtype` are kept in, exactly: int64 for integers,
    uint64 for uint64, float64 for floats and bools."""
    dtype = np.dtype(dtype)
    if dtype.kind == "u" and dtype.itemsize == 8:
        return np.dtype(np.uint64)
    return np.dtype(np.int64 if dtype.kind in "iu" else np.float64)


def _integers_as(array: np.ndarray, empty: np.ndarray, dtype: np.dtype,
                 minimum: bool) -> np.ndarray | None:
    """Integer extremes in another integer `dtype` (empty channels its identity), or None
    if a value does not fit."""
    if array.dtype == dtype:
        return array
    values = array[~empty]
    info = np.iinfo(dtype)
    if values.size and (int(values.min()) < info.min or int(values.max()) > info.max):
        return None
    moved = np.full(array.shape, _extreme_identities(dtype)[0 if minimum else 1], dtype)
    moved[~empty] = values.astype(dtype)
    return moved


def _extreme_identities(dtype: np.dtype) -> tuple:
    """The identities of min and max in `dtype`."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.max, info.min
    return np.inf, -np.inf


def _merge_extremes(function: np.ufunc, minimum: bool, mine: np.ndarray, theirs: np.ndarray,
                    mine_empty: np.ndarray, theirs_empty: np.ndarray) -> np.ndarray:
    """Min (`minimum`) or max of two sides' extremes by `function`, in their dtype when they
    share it (each side's empty channels hold the identity); in float64 when they do not."""
    if mine.dtype != theirs.dtype and mine.dtype.kind in "iu" and theirs.dtype.kind in "iu":
        # int64 and uint64 (a JSON file's non-negative integers read as int64): one type
        # holds both when no value falls outside it
        for dtype in (np.dtype(np.int64), np.dtype(np.uint64)):
            moved = [_integers_as(array, empty, dtype, minimum)
                     for array, empty in ((mine, mine_empty), (theirs, theirs_empty))]
            if moved[0] is not None and moved[1] is not None:
                mine, theirs = moved[0], moved[1]
                break
    if mine.dtype == theirs.dtype:
        return function(mine, theirs)
    if mine_empty.all():
        return np.array(theirs)
    if theirs_empty.all():
        return np.array(mine)
    mine, theirs = mine.astype(np.float64), theirs.astype(np.float64)
    return np.where(mine_empty, theirs, np.where(theirs_empty, mine, function(mine, theirs)))


# Counts read from a statistics file: beyond 2**53 a float64 (JSON number) is not exact.
MAX_COUNT = 2**53

# The largest float64 values inside the 64-bit integer ranges: a shift must be a value of
# the input's type, and float64(2**63 - 1) rounds up to 2**63, past int64's range.
_SHIFT_LIMITS = {
    np.dtype(np.int64): (-(2.0**63), np.nextafter(2.0**63, 0.0)),
    np.dtype(np.uint64): (0.0, np.nextafter(2.0**64, 0.0)),
}
# A shifted 64-bit integer is computed in the integer type, which wraps past 2**63; data
# that spread that far are converted to float64 first (their variance is then still exact
# to ~1e-16 relative, as their spread dwarfs any rounding).
_WRAP_LIMIT = 2.0**62


def data_shift(values: np.ndarray) -> np.ndarray:
    """The float64 shift to centre on, from data values (one per channel).

    A value of the data, exact in float64 and in the input's type; 0 where it is not finite.
    """
    shift = np.array(values, dtype=np.float64)
    limits = _SHIFT_LIMITS.get(values.dtype.newbyteorder("="))
    if limits is not None:
        np.clip(shift, *limits, out=shift)
    shift[~np.isfinite(shift)] = 0.0
    return shift


def subtract_shift(piece: np.ndarray, shift: np.ndarray, out: np.ndarray,
                   minimum: np.ndarray, maximum: np.ndarray) -> np.ndarray:
    """``out = piece - shift`` in float64, exact for integers whose spread fits 2**53.

    64-bit integers are subtracted in their own type (a float64 copy of values near 2**62
    would lose their low bits first), unless `minimum`/`maximum` (the piece's extremes,
    broadcastable to `shift`) show the difference could wrap.
    """
    dtype = piece.dtype
    if dtype.kind in "iu" and dtype.itemsize == 8:
        with np.errstate(all="ignore"):
            spread = np.maximum(np.abs(np.asarray(maximum, np.float64) - shift),
                                np.abs(np.asarray(minimum, np.float64) - shift))
        if np.all(spread < _WRAP_LIMIT):
            native = dtype.newbyteorder("=")
            difference = np.subtract(piece, shift.astype(native), dtype=native)
            np.copyto(out, difference.view(np.int64), casting="unsafe")
            return out
    np.subtract(piece, shift, out=out)
    return out


def _first_along(piece: np.ndarray, reduce_axes: tuple) -> np.ndarray:
    """The first value of every channel of `piece`: index 0 on each reduced axis, kept dims."""
    return piece[tuple(slice(0, 1) if axis in reduce_axes else slice(None)
                       for axis in range(piece.ndim))]


def tie_counts(piece: np.ndarray, minimum: np.ndarray, maximum: np.ndarray,
               axis: int | tuple) -> tuple:
    """Values equal to 0, to `minimum` and to `maximum` along `axis`, per channel (int64).

    `minimum` and `maximum` are the piece's own extremes, broadcastable against it (kept
    dims); the counts have their shape. Usually each channel's min and max occur once and
    no zero occurs but as one of them: one pass of three comparisons finds that, and the
    counts follow from the extremes. Otherwise each count is a reduction of its own (a
    channel whose min is 0, as after a ReLU, counts its zeros once).
    """
    native = piece.dtype.newbyteorder("=")
    low, high = (extreme.astype(native) if extreme.dtype.kind == native.kind else extreme
                 for extreme in (minimum, maximum))
    shape = np.shape(minimum)
    # masks in reused buffers: a fresh array of this size is a fresh mapping to fault in
    buffers = _mask_buffers()
    at_min, other = (buffers.array(piece.shape, np.bool_) for _ in range(2))
    with np.errstate(invalid="ignore"):
        np.equal(piece, low, out=at_min)
        if np.all(low < high):
            ties = np.equal(piece, high, out=other)
            ties |= at_min
            if np.any((low <= 0) & (high >= 0)):
                ties |= np.equal(piece, 0, out=buffers.array(piece.shape, np.bool_))
            if np.count_nonzero(ties) == 2 * math.prod(shape):
                ones = np.ones(shape, np.int64)
                return (low == 0).astype(np.int64) + (high == 0), ones, ones
        min_count = count_along(at_min, axis, shape)
        max_count = count_along(np.equal(piece, high, out=other), axis, shape)
        zero_count = np.where(low == 0, min_count, np.where(high == 0, max_count, 0))
        # a NaN extreme (a channel holding NaN) says nothing of where 0 lies: count them
        inside = ((low < 0) & (high > 0)) | np.isnan(low) | np.isnan(high)
        if inside.any():
            zero_count = zero_count + count_along(np.equal(piece, 0, out=other), axis,
                                                   shape) * inside
    return zero_count, min_count, max_count


def count_along(mask: np.ndarray, axis: int | tuple, shape: tuple) -> np.ndarray:
    """The True values of `mask` along `axis`, as int64 of `shape`: summed as bytes into
    the narrowest integer that holds the count (several times faster than int64)."""
    length = mask.size // max(math.prod(shape), 1)
    dtype = np.uint16 if length < 2**16 else np.uint32 if length < 2**32 else np.int64
    counts = np.add.reduce(mask.view(np.uint8), axis=axis, dtype=dtype, keepdims=True)
    return counts.reshape(shape).astype(np.int64)


_THREAD = threading.local()


def _mask_buffers() -> BufferRing:
    """This thread's ring of three mask buffers for :func:`tie_counts`."""
    ring = getattr(_THREAD, "masks", None)
    if ring is None:
        ring = _THREAD.masks = BufferRing(3)
    return ring


def _piece_moments(piece: np.ndarray, reduce_axes: tuple, ignore_nan: bool,
                   order: int = 2) -> Moments:
    """Moments of one cache-sized piece, kept dims, centred on a shift from its data."""
    kept_shape = tuple(1 if axis in reduce_axes else dim for axis, dim in enumerate(piece.shape))
    reduce: _Reduce = dict(axis=reduce_axes, keepdims=True)
    extreme_min, extreme_max = (np.fmin, np.fmax) if ignore_nan else (np.minimum, np.maximum)
    higher = {}
    with np.errstate(all="ignore"):
        extremes = extreme_dtype(piece.dtype)
        minimum = extreme_min.reduce(piece, **reduce).astype(extremes)
        maximum = extreme_max.reduce(piece, **reduce).astype(extremes)
        first = _first_along(piece, reduce_axes)
        shift = data_shift(first)
        # a channel whose first value is NaN or Inf is centred on its smallest finite one
        fallback = ~np.isfinite(first.astype(np.float64))
        if fallback.any():
            shift = np.where(fallback & np.isfinite(minimum), data_shift(
                extreme_min.reduce(piece, **reduce)), shift)
        values = subtract_shift(piece, shift, np.empty(piece.shape), minimum, maximum)
        if ignore_nan:
            nan_mask = np.isnan(values)
            count = np.add.reduce(~nan_mask, dtype=np.int64, **reduce)
            np.copyto(values, 0.0, where=nan_mask)
            total = np.add.reduce(values, **reduce)
            mean = total / count
            deviation = values - mean
            np.copyto(deviation, 0.0, where=nan_mask)
            nan_count = np.add.reduce(nan_mask, dtype=np.int64, **reduce)
        else:
            count = np.full(kept_shape, math.prod(piece.shape) // max(math.prod(kept_shape), 1),
                            dtype=np.int64)
            total = np.add.reduce(values, **reduce)
            mean = total / count
            deviation = values - mean
            nan_count = None
        squared = deviation * deviation
        m2 = np.add.reduce(squared, **reduce)
        if order == 4:
            higher["m3"] = np.add.reduce(squared * deviation, **reduce)
            higher["m4"] = np.add.reduce(squared * squared, **reduce)
        finite = np.isfinite(total)
        if finite.all():
            inf_count = np.zeros(kept_shape, np.int64)
            if nan_count is None:
                nan_count = np.zeros(kept_shape, np.int64)
        else:
            # Only a block whose sum is not finite can hold NaN or Inf: count them then.
            inf_count = np.add.reduce(np.isinf(piece), dtype=np.int64, **reduce)
            if nan_count is None:
                nan_count = np.add.reduce(np.isnan(piece), dtype=np.int64, **reduce)
            m2 = np.where(np.isfinite(mean), m2, np.nan)
            higher = {key: np.where(np.isfinite(mean), value, np.nan)
                      for key, value in higher.items()}
        if ignore_nan:
            mean = np.where(count == 0, 0.0, mean)
            m2 = np.where(count == 0, 0.0, m2)
            higher = {key: np.where(count == 0, 0.0, value) for key, value in higher.items()}
    zero_count, min_count, max_count = tie_counts(piece, minimum, maximum, reduce_axes)
    return Moments(count, shift, mean, m2, minimum, maximum, nan_count, inf_count, ignore_nan,
                   **higher, zero_count=zero_count, min_count=min_count, max_count=max_count)


def _rows_partials(block: LazyBlock, total_rows: int, channels: int, piece_items: int,
                   shift: np.ndarray, order: int) -> list:
    """Partials of a block taken as ``(A, K)`` and reduced over axis 0: lists of (count, ...)."""
    if _reduced_by_columns(total_rows, channels, piece_items):
        return _column_partials(block.array().reshape(total_rows, channels), piece_items,
                                shift, order)
    fold = fold_factor(channels)
    rows_per_piece = max(fold, piece_items // channels // fold * fold)
    folded_rows = total_rows // fold * fold
    parts = []
    if folded_rows:
        parts.append(_folded_partials(block, 0, folded_rows // fold, rows_per_piece // fold,
                                      fold, channels, np.tile(shift, fold), order))
    if folded_rows < total_rows:  # the rows left over, unfolded
        parts.append(_folded_partials(block, folded_rows * channels, total_rows - folded_rows,
                                      fold, 1, channels, shift, order))
    return parts


def _reduced_by_columns(rows: int, channels: int, piece_items: int) -> bool:
    """Whether ``(rows, channels)`` data is reduced in ranges of columns over every row: rows
    too wide for a piece to hold ``MIN_PIECE_ROWS`` of them."""
    return channels >= FOLD_WIDTH and channels * MIN_PIECE_ROWS > piece_items and rows > 1


def _column_partials(x2: np.ndarray, piece_items: int, shift: np.ndarray,
                     order: int) -> list:
    """Partials of a block of rows too wide for a piece to hold many of them: the pieces
    are ranges of columns over every row, so each channel is reduced in one piece."""
    rows, channels = x2.shape
    width = max(1, piece_items // rows)
    sums = [np.empty((1, channels), extreme_dtype(x2.dtype)) for _ in range(2)] + [
        np.empty((1, channels)) for _ in range(3 + (order == 4) * 2)] + [
        np.empty((1, channels), np.int64) for _ in range(3)]
    buffer = np.empty((rows, min(width, channels)))
    squares = np.empty_like(buffer) if order == 4 else None
    for start in range(0, channels, width):
        columns = slice(start, min(start + width, channels))
        piece = x2[:, columns]
        used = piece.shape[1]
        results = _centred(piece, buffer[:, :used], 0, shift[columns], None,
                           None if squares is None else squares[:, :used])
        for target, result in zip(sums, results):
            target[0, columns] = result
    minimum, maximum, total, mean, m2, *rest = sums
    return [(np.full((1, channels), rows, np.int64), total, mean, m2, minimum, maximum,
             *rest)]


def _folded_partials(block: LazyBlock, base: int, rows: int, per_piece: int, fold: int,
                     channels: int, shift: np.ndarray, order: int) -> tuple:
    """Partials of `rows` rows of `fold` groups of `channels` side by side, from flat `base`.

    Each piece of `per_piece` rows is reduced over its rows in one go (long inner loops,
    over all groups at once), and then its `fold` groups, all of count ``n``, are combined
    by the update for equal groups (``d_j`` a group mean less the mean of the group means)::

        m2 = sum(m2_j) + n * sum(d_j**2)
        m3 = sum(m3_j) + 3 * sum(d_j * m2_j) + n * sum(d_j**3)
        m4 = sum(m4_j) + 4 * sum(d_j * m3_j) + 6 * sum(d_j**2 * m2_j) + n * sum(d_j**4)

    The per-piece work is a handful of NumPy calls writing into preallocated rows; the
    combining is done for all pieces at once. Every value is centred on `shift` (one per
    column) first; the means are of ``x - shift``.
    """
    width = fold * channels
    starts = range(0, rows, per_piece)
    pieces = len(starts)
    counts = np.array([min(per_piece, rows - start) for start in starts], np.int64)
    sums: list[np.ndarray] = [np.empty((pieces, width)) for _ in range(3 + (order == 4) * 2)]
    total, group_mean, m2, *higher = sums
    extremes = block.dtype.newbyteorder("=")
    minimum, maximum = np.empty((pieces, width), extremes), np.empty((pieces, width), extremes)
    ties = [np.empty((pieces, width), np.int64) for _ in range(3)]
    buffer = np.empty((min(per_piece, rows), width))
    squares = np.empty_like(buffer) if order == 4 else None
    for index, start in enumerate(starts):
        stop = min(start + per_piece, rows)
        piece = block.piece(base + start * width, base + stop * width).reshape(-1, width)
        _centred(piece, buffer[:piece.shape[0]], 0, shift,
                 (minimum[index], maximum[index], total[index], group_mean[index], m2[index],
                  *(array[index] for array in higher + ties)),
                 None if squares is None else squares[:piece.shape[0]])
    shape = (pieces, fold, channels)
    minimum, maximum = minimum.reshape(shape), maximum.reshape(shape)
    zero_count, min_count, max_count = (array.reshape(shape) for array in ties)
    low, high = np.minimum.reduce(minimum, axis=1), np.maximum.reduce(maximum, axis=1)
    # a group's ties count where its extreme is the extreme of all the groups
    min_count = np.add.reduce(np.where(minimum == low[:, None], min_count, 0), axis=1)
    max_count = np.add.reduce(np.where(maximum == high[:, None], max_count, 0), axis=1)
    group_mean, m2 = group_mean.reshape(shape), m2.reshape(shape)
    higher = [array.reshape(shape) for array in higher]
    mean = np.add.reduce(group_mean, axis=1) / fold
    n = counts[:, None]
    if fold > 1:
        spread = group_mean - mean[:, None]
        spread2 = spread * spread
        m2_sum = np.add.reduce(m2, axis=1) + n * np.add.reduce(spread2, axis=1)
        if higher:
            m3, m4 = higher
            higher = [
                np.add.reduce(m3 + 3.0 * spread * m2, axis=1)
                + n * np.add.reduce(spread2 * spread, axis=1),
                np.add.reduce(m4 + 4.0 * spread * m3 + 6.0 * spread2 * m2, axis=1)
                + n * np.add.reduce(spread2 * spread2, axis=1),
            ]
        m2 = m2_sum
    else:
        m2 = m2[:, 0]
        higher = [array[:, 0] for array in higher]
    return (np.repeat(n * fold, channels, axis=1),
            np.add.reduce(total.reshape(shape), axis=1), mean, m2,
            low.astype(extreme_dtype(extremes)), high.astype(extreme_dtype(extremes)),
            *higher, np.add.reduce(zero_count, axis=1), min_count, max_count)


def _centred(piece: np.ndarray, values: np.ndarray, axis: int, shift: np.ndarray,
             out: tuple | None = None, squares: np.ndarray | None = None) -> tuple:
    """Min, max, float64 sum, mean and centred sums of powers of ``piece - shift``, and the
    counts of values equal to 0, to the min and to the max (see :func:`tie_counts`).

    `axis` is 0 or the piece's last; `shift` broadcasts to the piece. `values` is a float64
    buffer of the piece's shape; with `squares`, another, the third and fourth central sums
    are computed too. The extremes (of the piece itself) are taken in the input's own dtype:
    exact, and fewer bytes to go through. With `out` (eight arrays of the reduced shape, ten
    with `squares`, in the order returned) the results are written there; they are returned
    either way: ``(min, max, total, mean, m2, [m3, m4,] zero_count, min_count, max_count)``.
    """
    if axis == piece.ndim - 1 and piece.shape[axis] <= SHORT_AXIS:
        return _centred_short(piece, values, shift, out, squares)
    minimum, maximum, total, mean, m2, *rest = out or (None,) * (8 + 2 * (squares is not None))
    higher, counts = rest[:-3], rest[-3:]
    minimum = np.minimum.reduce(piece, axis=axis, out=minimum)
    maximum = np.maximum.reduce(piece, axis=axis, out=maximum)
    low, high = np.expand_dims(minimum, axis), np.expand_dims(maximum, axis)
    tied = tie_counts(piece, low, high, axis)
    # (the None of np.copyto `or` the target it filled: mypy flags the use of that None)
    tied = tuple(np.copyto(target, count.reshape(target.shape))  # type: ignore[func-returns-value]
                 or target if target is not None
                 else count.reshape(minimum.shape) for target, count in zip(counts, tied))
    subtract_shift(piece, shift, values, low, high)
    total = np.add.reduce(values, axis=axis, out=total)
    mean = np.divide(total, piece.shape[axis], out=mean)
    values -= np.expand_dims(mean, axis)
    every = list(range(piece.ndim))
    kept = [dim for dim in every if dim != axis]
    if squares is None:
        m2 = np.einsum(values, every, values, every, kept, out=m2)
        return minimum, maximum, total, mean, m2, *tied
    np.multiply(values, values, out=squares)
    m2 = np.add.reduce(squares, axis=axis, out=m2)
    m3 = np.einsum(squares, every, values, every, kept, out=higher[0] if higher else None)
    m4 = np.einsum(squares, every, squares, every, kept, out=higher[1] if higher else None)
    return minimum, maximum, total, mean, m2, m3, m4, *tied


def _centred_short(piece, values, shift, out, squares):
    """:func:`_centred` along a short last axis. NumPy's reductions over a few values at a
    time spend their time in per-row overhead, so the piece is first transposed (one copy
    in its own dtype) and then reduced along its first axis, over long contiguous rows."""
    rows = math.prod(piece.shape[:-1])
    short = piece.shape[-1]
    transposed = np.ascontiguousarray(piece.reshape(rows, short).T)
    flat_out = None if out is None else tuple(array.reshape(rows) for array in out)
    results = _centred(transposed, values.reshape(short, rows), 0,
                       np.broadcast_to(shift, piece.shape[:-1] + (1,)).reshape(rows),
                       flat_out, None if squares is None else squares.reshape(short, rows))
    return tuple(result.reshape(piece.shape[:-1]) for result in results)


def _slab_partials(x3: np.ndarray, piece_items: int, shift: np.ndarray, order: int) -> list:
    """Partials of an ``(A, K, B)`` array reduced over axes 0 and 2, B > 1, about `shift`."""
    outer, channels, inner = x3.shape
    if inner >= piece_items:
        per_outer, per_channel, per_inner = 1, 1, piece_items
    elif channels * inner >= piece_items:
        per_outer, per_channel, per_inner = 1, piece_items // inner, inner
    else:
        per_outer, per_channel, per_inner = piece_items // (channels * inner), channels, inner
    inner_chunks = -(-inner // per_inner)
    rows = outer * inner_chunks
    count = np.empty((rows, channels), np.int64)
    sums = [np.empty((rows, channels), extreme_dtype(x3.dtype)) for _ in range(2)] + [
        np.empty((rows, channels)) for _ in range(3 + (order == 4) * 2)] + [
        np.empty((rows, channels), np.int64) for _ in range(3)]
    buffer = np.empty(per_outer * per_channel * per_inner)
    squares = np.empty_like(buffer) if order == 4 else None
    shift3 = shift.reshape(1, channels, 1)
    for a0 in range(0, outer, per_outer):
        for k0 in range(0, channels, per_channel):
            for chunk, b0 in enumerate(range(0, inner, per_inner)):
                piece = x3[a0:a0 + per_outer, k0:k0 + per_channel, b0:b0 + per_inner]
                values = buffer[:piece.size].reshape(piece.shape)
                rows_here = slice(a0 * inner_chunks + chunk, (a0 + piece.shape[0]) * inner_chunks,
                                  inner_chunks)
                columns = slice(k0, k0 + piece.shape[1])
                count[rows_here, columns] = piece.shape[2]
                results = _centred(piece, values, 2, shift3[:, columns], None,
                                   None if squares is None else
                                   squares[:piece.size].reshape(piece.shape))
                for target, result in zip(sums, results):
                    target[rows_here, columns] = result
    minimum, maximum, total, mean, m2, *rest = sums
    return [(count, total, mean, m2, minimum, maximum, *rest)]


def _kernel_outputs(rows: int, channels: int, code: str, extremes: np.dtype,
                    order: int) -> tuple:
    """Output arrays of ``rows`` x `channels` for the kernel's moments: total, mean, m2, the
    list of m3 and m4 (empty below order 4), minimum, maximum (64-bit integers' in their
    own type, the others' float64, as the kernel writes them) and the three tie counts."""
    total, mean, m2, *higher = (np.empty((rows, channels)) for _ in range(3 + 2 * (order == 4)))
    minimum, maximum = (np.empty((rows, channels), extremes if code in "qQ" else np.float64)
                        for _ in range(2))
    ties = [np.empty((rows, channels), np.int64) for _ in range(3)]
    return total, mean, m2, higher, minimum, maximum, ties


def _rows_per_piece(piece_items: int, channels: int) -> int:
    """Rows of a piece of the compiled rows kernel."""
    return max(MIN_PIECE_ROWS, piece_items // channels)


def _compiled_rows(block: LazyBlock, code: str, rows: int, channels: int, piece_items: int,
                   shift: np.ndarray, order: int) -> list:
    """:func:`_rows_partials` by the compiled kernel: partials of pieces of at least
    ``MIN_PIECE_ROWS`` rows (see :mod:`bncli.core.kernel`).

    A block in memory, or one the kernel reads from its file itself, is reduced in one call
    without the GIL, and (to order 2) its pieces merged there too, into one row, unless a
    piece holds NaN or Inf; a block read through Python is reduced piece by piece as it is
    read, one row a piece.
    """
    per_piece = _rows_per_piece(piece_items, channels)
    pieces = -(-rows // per_piece)
    extremes = extreme_dtype(block.dtype)
    total, mean, m2, higher, minimum, maximum, ties = _kernel_outputs(pieces, channels, code,
                                                                      extremes, order)
    count = np.empty((pieces, channels), np.int64)
    count[:] = per_piece
    count[-1] = rows - (pieces - 1) * per_piece
    parts = [total, mean, m2, minimum, maximum, *higher, *ties]
    if block.span is not None or block.in_memory:
        fd, offset, name = block.span or (-1, 0, None)
        data = (block.piece_buffer(min(rows, per_piece) * channels) if block.span else
                block.array().reshape(-1))
        merge = order == 2
        got, merged = COMPILED.rows_moments(data, code, rows, channels, per_piece, shift, total,
                                            mean, m2, *higher if higher else (None, None),
                                            minimum, maximum, *ties, fd, offset, merge)
        if name is not None and got < rows * channels * block.dtype.itemsize:
            raise InputError(f"{name}: file ends at byte {offset + got}, inside the data its "
                             "header declares")
        if merged:  # copies: views would keep every piece's row alive with the result
            parts = [part[:1].copy() for part in parts]
            count = np.full((1, channels), rows, np.int64)
    else:
        for index, start in enumerate(range(0, rows, per_piece)):
            stop = min(start + per_piece, rows)
            piece = block.piece(start * channels, stop * channels)
            COMPILED.rows_moments(piece, code, stop - start, channels, stop - start, shift,
                                  *(part[index] for part in parts[:3]),
                                  *(array[index] for array in higher) if higher else
                                  (None, None), minimum[index], maximum[index],
                                  *(tie[index] for tie in ties))
    total, mean, m2, minimum, maximum, *rest = parts
    return [(count, total, mean, m2, minimum.astype(extremes), maximum.astype(extremes),
             *rest)]


def _compiled_columns(block: LazyBlock, code: str, rows: int, channels: int,
                      piece_items: int, shift: np.ndarray, order: int) -> list:
    """:func:`_column_partials` by the compiled kernel: ranges of columns over every row of
    the block, each channel reduced in one piece, one row of partials."""
    extremes = extreme_dtype(block.dtype)
    total, mean, m2, higher, minimum, maximum, ties = _kernel_outputs(1, channels, code,
                                                                      extremes, order)
    COMPILED.columns_moments(block.array().reshape(-1), code, rows, channels,
                             max(1, piece_items // rows), shift, total, mean, m2,
                             *higher if higher else (None, None), minimum, maximum, *ties)
    return [(np.full((1, channels), rows, np.int64), total, mean, m2, minimum.astype(extremes),
             maximum.astype(extremes), *higher, *ties)]


def _compiled_slabs(x3: np.ndarray, code: str, shift: np.ndarray, order: int) -> list:
    """:func:`_slab_partials` by the compiled kernel: one row of partials per outer index,
    each channel's run of inner values reduced at once."""
    outer, channels, inner = x3.shape
    out = np.empty((outer, channels, 10))
    COMPILED.slab_moments(x3, code, outer, channels, inner, shift, order == 4, out)
    extremes = extreme_dtype(x3.dtype)
    higher = [out[..., 5], out[..., 6]] if order == 4 else []
    if code in "qQ":  # stored as the bits of their type
        low, high = (out[..., index].copy().view(extremes) for index in (3, 4))
    else:
        low, high = (out[..., index].astype(extremes) for index in (3, 4))
    return [(np.full((outer, channels), inner, np.int64), out[..., 0], out[..., 1],
             out[..., 2], low, high, *higher,
             *(out[..., index].astype(np.int64) for index in (7, 8, 9)))]


def _fast_moments(block: LazyBlock, reduce_axes: tuple, piece_bytes: int,
                  order: int) -> Moments | None:
    """Moments of a C-contiguous block whose layout collapses to (A, K, B), or None.

    None also when a partial sum is not finite (NaN and Inf are then counted by the general
    path), except on the compiled kernel's rows: there only the pieces that hold them are
    reduced again (see :func:`_rerun_pieces`), and the block is not read twice. The whole
    block is centred on one shift per channel: its first values.
    """
    if not block.c_contiguous or block.size == 0:
        return None
    collapsed = collapse_axes(block.shape, reduce_axes)
    if collapsed is None:
        return None
    outer, channels, inner = collapsed
    piece_items = max(1, piece_bytes // 8)
    piece_rows = None  # rows of each output row's piece, where the rows are pieces of rows
    with np.errstate(all="ignore"):
        if inner == 1:
            shift = data_shift(block.piece(0, channels))
            code = type_code(block.dtype)
            wide = _reduced_by_columns(outer, channels, piece_items)
            if code is not None and (wide or channels > MAX_COMPILED_CHANNELS) and outer < 2**31:
                parts = _compiled_columns(block, code, outer, channels, piece_items, shift,
                                          order)
            elif code is not None:
                parts = _compiled_rows(block, code, outer, channels, piece_items, shift, order)
                per_piece = _rows_per_piece(piece_items, channels)
                if len(parts[0][0]) == -(-outer // per_piece):  # a row a piece: not merged
                    piece_rows = per_piece
            else:
                parts = _rows_partials(block, outer, channels, piece_items, shift, order)
        else:
            x3 = block.array().reshape(collapsed)
            shift = data_shift(x3[0, :, 0])
            code = type_code(block.dtype)
            if code is not None and inner < MAX_COMPILED_RUN:
                parts = _compiled_slabs(x3, code, shift, order)
            else:
                parts = _slab_partials(x3, piece_items, shift, order)
    count, total, mean, m2, minimum, maximum, *rest = (
        parts[0] if len(parts) == 1 else
        [np.concatenate([part[index] for part in parts]) for index in range(len(parts[0]))])
    finite = np.isfinite(total).all(axis=-1)
    if not finite.all() and piece_rows is None:
        return None
    higher, (zero_count, min_count, max_count) = rest[:-3], rest[-3:]
    zeros = np.zeros(count.shape, np.int64)
    shifts = np.broadcast_to(shift, count.shape)
    # (mypy lets *higher, which holds m3 and m4 or nothing, reach the counts named after it)
    stack = Moments(count, shifts, mean, m2, minimum, maximum, zeros, zeros,  # type: ignore[misc]
                    False, *higher, zero_count=zero_count, min_count=min_count,
                    max_count=max_count)
    if not finite.all():
        assert piece_rows is not None  # else None was returned above
        stack = _rerun_pieces(stack, block, np.flatnonzero(~finite), piece_rows, outer,
                              channels, order)
    return tree_merge(stack)


def _rerun_pieces(stack: Moments, block: LazyBlock, indices: np.ndarray, piece_rows: int,
                  rows: int, channels: int, order: int) -> Moments:
    """`stack` (one row a piece of `piece_rows` rows) with the pieces at `indices`, which
    hold NaN or Inf, reduced again by :func:`_piece_moments`, which counts them: only those
    pieces are read again, not the block."""
    stack = Moments(**{name: np.array(getattr(stack, name)) for name in stack.array_names()},
                    ignore_nan=False)
    for index in indices:
        start, stop = index * piece_rows, min(index * piece_rows + piece_rows, rows)
        piece = block.piece(start * channels, stop * channels).reshape(stop - start, channels)
        with np.errstate(all="ignore"):
            stack[index:index + 1] = _piece_moments(piece, (0,), False, order)
    return stack


def block_moments(
    block: np.ndarray | LazyBlock,
    reduce_axes: Sequence[int],
    *,
    ignore_nan: bool = False,
    order: int = 2,
    piece_bytes: int = PIECE_BYTES,
) -> Moments:
    """Compute the moments of an array over some of its axes, keeping dims.

    The block is converted to float64 piece by piece (each at most `piece_bytes` as
    float64), each piece is centred on a shift from its data and then on its own mean, and
    the pieces' moments are merged pairwise, as a balanced tree where the layout allows it.

    Parameters
    ----------
    block : ndarray or LazyBlock
        Any real or bool dtype, any byte order and memory layout; a
        :class:`~bncli.core.buffers.LazyBlock` is read piece by piece where the layout allows.
    reduce_axes : sequence of int
        Non-negative axes of `block` to reduce over.
    ignore_nan : bool
        Leave NaNs out of the statistics.
    order : int
        2, or 4 for the third and fourth central moments too.
    piece_bytes : int
        Float64 bytes converted at once.

    Returns
    -------
    Moments
        Arrays of shape ``block.shape`` with the reduced axes set to 1.
    """
    reduce_axes = tuple(reduce_axes)
    kept_shape = tuple(
        1 if axis in reduce_axes else dim for axis, dim in enumerate(block.shape)
    )
    lazy = LazyBlock.of(block)
    if not ignore_nan:
        fast = _fast_moments(lazy, reduce_axes, piece_bytes, order)
        if fast is not None:
            return fast.reshape(kept_shape)
    block = lazy.array()
    result = None
    for region in plan_blocks(block.shape, 8, piece_bytes):
        part = _piece_moments(block[region], reduce_axes, ignore_nan, order)
        target = channel_region(region, reduce_axes)
        if result is None and all(
            part.shape[axis] == kept_shape[axis] for axis in range(block.ndim)
        ):
            result = part
            continue
        if result is None:
            result = Moments.empty(kept_shape, ignore_nan=ignore_nan, order=order,
                                   extremes=extreme_dtype(block.dtype))
        result.merge_at(target, part)
    if result is None:
        result = Moments.empty(kept_shape, ignore_nan=ignore_nan, order=order,
                               extremes=extreme_dtype(block.dtype))
    return result
