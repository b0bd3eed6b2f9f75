"""Per-channel mergeable histograms on one fixed global grid, and quantiles from them.

The grid is DDSketch's (Masson, Rim & Lee, "DDSketch: a fast and fully-mergeable quantile
sketch with relative-error guarantees", VLDB 2019) with its *linearly interpolated* index
mapping: the buckets of ``|x|`` are the powers of two, each cut into ``2**m`` equal parts.
A bucket is then simply the top ``m`` mantissa bits and the exponent of the float64 value,
``bits(|x|) >> (52 - m)``, so the grid is the same on every machine (no ``log`` whose last
bit could differ between CPUs) and costs a few integer operations per value. A bucket
``[L, U)`` has ``U / L <= 1 + 2**-m``; its representative ``2 L U / (L + U)`` is within
``2**-m / (2 + 2**-m)`` of every value in it, relatively: ``m = 6`` (64 buckets per
octave) gives 0.78%, under the default accuracy of 1%. Per sign, a histogram holds counts
of the buckets between the smallest and the largest magnitude that occur; values below the
smallest normal float32 (1.18e-38), exact zeros included, share one zero bucket (the
nonzero ones among them are counted as ``tiny``), and infinities and NaN are counted apart.

Counts are integers on a fixed grid, so merging is adding, exact and the same in any order:
the histogram of a file is bit-identical whatever the chunking, threads, file split or
cluster.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from bncli.core.buffers import LazyBlock
from bncli.core.kernel import COMPILED, type_code
from bncli.core.moments import count_along
from bncli.core.partials import Partial, Reduction, register
from bncli.errors import InputError, StatsFileError

if TYPE_CHECKING:
    from typing import Any

    from numpy.typing import ArrayLike

    from bncli.core.partials import Index

DEFAULT_ACCURACY = 0.01
DEFAULT_LEVELS = (0.0001, 0.001, 0.01, 0.5, 0.99, 0.999, 0.9999)
MAX_MANTISSA_BITS = 13  # 8192 buckets per octave, relative accuracy 6.1e-5
# Values a piece holds at once (its masks and keys stay in cache), and the fewest rows of a
# piece where the data has them (see _rows_histogram).
PIECE_ITEMS = 2**18
MIN_TILE_ROWS = 4096
# Bytes of cumulative counts that quantiles are found in at once.
QUANTILE_BYTES = 2**24
# Special counts per channel, in this order.
SPECIAL = ("zero", "tiny", "pos_inf", "neg_inf", "nan")
# Bucket keys are of float64 values: exponent and top mantissa bits. The float32 grid is
# the same grid, offset by the difference of the exponent biases.
_FLOAT32_OFFSET = 1023 - 127
# Histograms larger than this (all channels, both signs) are refused before allocating.
MAX_HISTOGRAM_BYTES = 2**31
# A statistics file's histograms (each channel's window of buckets, stored one after another)
# are put on one window shared by all its channels; that may take at most this many times
# the bytes of the counts the file stores, or FILE_HISTOGRAM_FLOOR, whichever is more.
FILE_EXPANSION = 64
FILE_HISTOGRAM_FLOOR = 2**26


def mantissa_bits(accuracy: float) -> int:
    """The fewest mantissa bits whose buckets keep the relative `accuracy`.

    Raises ValueError for an accuracy outside ``[6.1e-5, 1)``.
    """
    if not 0 < accuracy < 1 or math.isnan(accuracy):
        raise ValueError(f"accuracy {accuracy!r} is not between 0 and 1")
    for bits in range(MAX_MANTISSA_BITS + 1):
        if bucket_accuracy(bits) <= accuracy:
            return bits
    finest = bucket_accuracy(MAX_MANTISSA_BITS)
    raise ValueError(f"accuracy {accuracy!r} is finer than {finest:.2g}, the finest the "
                     "histograms keep")


def bucket_accuracy(bits: int) -> float:
    """The relative accuracy of the grid with `bits` mantissa bits: ``2**-m / (2 + 2**-m)``."""
    width = 2.0 ** -bits
    return width / (2 + width)


def _decoded(keys: ArrayLike, bits: int) -> tuple:
    """Bucket keys as ``(significand, exponent)``: the bucket starts at
    ``ldexp(significand, exponent)`` and is ``2**-bits`` of the significand wide."""
    keys = np.asarray(keys, np.int64)
    return (1.0 + (keys & ((1 << bits) - 1)) / 2.0**bits,
            ((keys >> bits) - 1023).astype(np.int32))


def representatives(keys: np.ndarray, bits: int) -> np.ndarray:
    """The value that stands for each bucket key (of ``|x|``): ``2 L U / (L + U)``."""
    low, exponent = _decoded(keys, bits)
    high = low + 2.0**-bits
    with np.errstate(over="ignore"):
        return np.ldexp(2.0 * low * high / (low + high), exponent)


@register
@dataclass
class Histogram(Partial):
    """Counts per channel on the global grid of :mod:`bncli.core.histogram`.

    Attributes
    ----------
    pos, neg : ndarray of int64
        Channel shape plus one axis: counts of the magnitude buckets ``pos_low + j`` of the
        positive values (``neg_low + j`` of the negative ones).
    special : ndarray of int64
        Channel shape plus one axis of the counts named by ``SPECIAL``: the zero bucket
        (``|x|`` below the smallest normal float32, 0 included), the nonzero values among
        them, +Inf, -Inf, NaN.
    pos_low, neg_low : int
        Bucket key of the first column of `pos` and `neg` (shared by all channels).
    bits : int
        Mantissa bits of the grid (see :func:`mantissa_bits`).
    levels : tuple of float
        The quantiles :meth:`finalize` gives.
    ignore_nan : bool
        Whether a channel with NaN has quantiles (of its other values) or NaN ones.
    limit : int
        At least the largest count of any bucket: `pos` and `neg` are of the narrowest
        unsigned type that holds it (see :func:`count_dtype`), so that the histograms of
        blocks, whose buckets hold few values each, take few bytes.
    """

    pos: np.ndarray
    neg: np.ndarray
    special: np.ndarray
    pos_low: int = 0
    neg_low: int = 0
    bits: int = 6
    levels: tuple = DEFAULT_LEVELS
    ignore_nan: bool = False
    limit: int = 0

    name = "histogram"
    ARRAYS = ("pos", "neg", "special")
    EXTRA_NDIM = 1

    # ------------------------------------------------------------------ the three functions
    @classmethod
    def empty(cls, shape: Sequence[int], reduction: Reduction) -> Histogram:
        shape = tuple(shape)
        return cls(pos=np.zeros(shape + (0,), np.uint8), neg=np.zeros(shape + (0,), np.uint8),
                   special=np.zeros(shape + (len(SPECIAL),), np.int64),
                   **_settings(reduction))

    @classmethod
    def from_block(cls, block: np.ndarray | LazyBlock, reduce_axes: tuple,
                   reduction: Reduction) -> Histogram:
        """The histogram of one block (an ndarray or LazyBlock), keepdims-shaped."""
        array = block.array() if isinstance(block, LazyBlock) else np.asarray(block)
        settings = _settings(reduction)
        kept = [axis for axis in range(array.ndim) if axis not in reduce_axes]
        kept_shape = tuple(1 if axis in reduce_axes else dim
                           for axis, dim in enumerate(array.shape))
        channels = math.prod(array.shape[axis] for axis in kept)
        rows = np.moveaxis(array, kept, range(array.ndim - len(kept), array.ndim)).reshape(
            -1, channels)
        part = _rows_histogram(rows, settings["bits"])
        return replace(part, **settings).reshape(kept_shape)

    def merge(self, other: Histogram) -> Histogram:
        if self.bits != other.bits:
            raise ValueError(f"cannot merge histograms of {self.bits} and {other.bits} "
                             "mantissa bits")
        limit = self.limit + other.limit
        dtype = count_dtype(limit)
        pos_low, pos_high = bucket_union(self.pos_low, self.pos, other.pos_low, other.pos)
        neg_low, neg_high = bucket_union(self.neg_low, self.neg, other.neg_low, other.neg)
        pos = widen_buckets(self.pos, self.pos_low, pos_low, pos_high, dtype)
        _add_into(pos, other.pos, other.pos_low - pos_low)
        neg = widen_buckets(self.neg, self.neg_low, neg_low, neg_high, dtype)
        _add_into(neg, other.neg, other.neg_low - neg_low)
        return replace(self, pos=pos, neg=neg, special=self.special + other.special,
                       pos_low=pos_low, neg_low=neg_low, limit=limit)

    def finalize(self, ddof: int = 0) -> dict:
        """``quantiles``: the channel shape plus one axis of `levels` (see :func:`quantiles`)."""
        return {"quantiles": self.quantiles(self.levels)}

    # ------------------------------------------------------------ the partial's bookkeeping
    def __setitem__(self, index: Index, other: Histogram) -> None:
        # the other side may cover buckets this one does not: widen this one first
        self.limit = max(self.limit, other.limit)
        dtype = count_dtype(self.limit)
        for name in ("pos", "neg"):
            mine, low = getattr(self, name), getattr(self, f"{name}_low")
            theirs, their_low = getattr(other, name), getattr(other, f"{name}_low")
            new_low, new_high = bucket_union(low, mine, their_low, theirs)
            if (new_low, new_high) != (low, low + mine.shape[-1]) or mine.dtype != dtype:
                mine, low = widen_buckets(mine, low, new_low, new_high, dtype), new_low
                setattr(self, name, mine)
                setattr(self, f"{name}_low", low)
            mine[index] = 0
            _add_into(mine[index], theirs, their_low - low)
        self.special[index] = other.special

    def concatenate(self, other: Histogram) -> Histogram:
        limit = max(self.limit, other.limit)
        dtype = count_dtype(limit)
        pos_low, pos_high = bucket_union(self.pos_low, self.pos, other.pos_low, other.pos)
        neg_low, neg_high = bucket_union(self.neg_low, self.neg, other.neg_low, other.neg)
        return replace(
            self, pos_low=pos_low, neg_low=neg_low, limit=limit,
            pos=np.concatenate([widen_buckets(part.pos, part.pos_low, pos_low, pos_high, dtype)
                                for part in (self, other)]),
            neg=np.concatenate([widen_buckets(part.neg, part.neg_low, neg_low, neg_high, dtype)
                                for part in (self, other)]),
            special=np.concatenate([self.special, other.special]))

    def empty_like(self, shape: Sequence[int], reduction: Reduction) -> Histogram:
        return replace(self.empty(shape, reduction), bits=self.bits, levels=self.levels,
                       ignore_nan=self.ignore_nan)

    # ------------------------------------------------------------------------- quantiles
    @property
    def total(self) -> np.ndarray:
        """Values counted per channel (NaN not included)."""
        return (self.pos.sum(axis=-1, dtype=np.int64) + self.neg.sum(axis=-1, dtype=np.int64)
                + self.special[..., :1].sum(axis=-1) + self.special[..., 2:4].sum(axis=-1))

    def quantiles(self, levels: Sequence[float]) -> np.ndarray:
        """Quantiles per channel: the channel shape plus one axis of `levels`.

        For a level ``q`` of a channel of ``n`` values, the value of rank ``ceil(q n)``
        (at least 1), as ``np.quantile(..., method="inverted_cdf")``, to within the
        grid's relative accuracy: the representative of its bucket (0 for the zero
        bucket, +-Inf for infinities). NaN for a channel without values, or with NaN
        unless NaNs are left out.
        """
        shape = self.shape
        flat_pos, flat_neg, special = self._flat("pos"), self._flat("neg"), self._flat("special")
        values = np.concatenate([
            [-np.inf],
            -representatives(self.neg_low + np.arange(flat_neg.shape[1])[::-1], self.bits),
            [0.0],
            representatives(self.pos_low + np.arange(flat_pos.shape[1]), self.bits),
            [np.inf]])
        result = np.empty((len(special), len(levels)))
        # channels a few at a time: the cumulative counts of all of them at once would be
        # several times the histograms' own size
        step = max(1, QUANTILE_BYTES // (8 * len(values)))
        for start in range(0, len(special), step):
            rows = slice(start, start + step)
            # the buckets in increasing order of value: -Inf, negatives (largest magnitude
            # first), the zero bucket, positives, +Inf
            counts = np.concatenate([special[rows, 3:4], flat_neg[rows, ::-1],
                                     special[rows, 0:1], flat_pos[rows], special[rows, 2:3]],
                                    axis=1, dtype=np.int64)
            cumulative = np.cumsum(counts, axis=1, out=counts)
            total = cumulative[:, -1]
            for column, level in enumerate(levels):
                result[rows, column] = values[bucket_of_rank(cumulative,
                                                             rank_at(level, total))]
            result[rows][total == 0] = np.nan  # a view of those channels' rows
        if not self.ignore_nan:
            result[special[:, 4] > 0] = np.nan
        return result.reshape(shape + (len(levels),))

    def _flat(self, name: str) -> np.ndarray:
        array = getattr(self, name)
        return array.reshape(math.prod(self.shape), array.shape[-1])

    def channel_density(self, flat: int) -> tuple:
        """One channel's finite nonzero buckets as ``(edges, counts)`` in increasing order
        of value (edges one longer), and its zero-bucket count: for drawing it."""
        parts = []
        for name, low, sign in (("neg", self.neg_low, -1.0), ("pos", self.pos_low, 1.0)):
            counts = self._flat(name)[flat]
            edge = np.ldexp(*_decoded(low + np.arange(counts.size + 1), self.bits))
            if sign < 0:
                parts.append((-edge[::-1], counts[::-1]))
            else:
                parts.append((edge, counts))
        return parts, int(self._flat("special")[flat, 0])

    # ------------------------------------------------------------------ statistics file
    def file_meta(self) -> dict:
        """What a statistics file records of the grid and levels."""
        return {"mantissa_bits": self.bits, "accuracy": bucket_accuracy(self.bits),
                "levels": list(self.levels)}

    def file_arrays(self) -> dict:
        """The histogram as a file stores it: per sign, each channel's row trimmed to its
        first and last nonzero bucket (``*_start`` key, ``*_length``), the rows one after
        another in ``*_counts``; and the special counts."""
        arrays = {"histogram_special": np.array(self.special)}
        for sign, low in (("pos", self.pos_low), ("neg", self.neg_low)):
            rows = self._flat(sign)
            nonzero = rows != 0
            has = nonzero.any(axis=1)
            if rows.shape[1]:
                first = np.where(has, nonzero.argmax(axis=1), 0)
                last = np.where(has, rows.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0)
            else:
                first = last = np.zeros(len(rows), np.int64)
            length = last - first
            columns = np.arange(rows.shape[1])
            keep = (columns >= first[:, None]) & (columns < last[:, None])
            arrays[f"histogram_{sign}_start"] = (low + first).reshape(self.shape)
            arrays[f"histogram_{sign}_length"] = length.reshape(self.shape)
            arrays[f"histogram_{sign}_counts"] = rows[keep]
        return arrays

    FLAT = ("histogram_pos_counts", "histogram_neg_counts")

    @classmethod
    def from_file(cls, arrays: dict, shape: tuple, reduction: Reduction,
                  name: str) -> Histogram | None:
        """Rebuild from a statistics file's arrays; None if it holds no histogram."""
        if "histogram_special" not in arrays:
            return None
        settings = _settings(reduction, name)
        special = _counts(arrays["histogram_special"], name, "histogram_special")
        if special.shape != tuple(shape) + (len(SPECIAL),):
            raise StatsFileError(f"{name}: histogram_special has shape {list(special.shape)}, "
                                 f"expected {list(shape) + [len(SPECIAL)]}")
        channels = math.prod(shape)
        part: dict[str, Any] = {}  # keyword arguments: each sign's counts and first key
        for sign in ("pos", "neg"):
            keys = [f"histogram_{sign}_{field}" for field in ("start", "length", "counts")]
            for key in keys:
                if key not in arrays:
                    raise StatsFileError(f"{name}: missing field {key!r}")
            start, length = (_counts(arrays[key], name, key).reshape(-1) for key in keys[:2])
            counts = _counts(arrays[keys[2]], name, keys[2]).reshape(-1)
            if start.size != channels or length.size != channels:
                raise StatsFileError(f"{name}: {keys[0]} and {keys[1]} need one value per "
                                     "channel")
            if int(length.sum()) != counts.size:
                raise StatsFileError(f"{name}: {keys[2]} holds {counts.size} counts, but "
                                     f"{keys[1]} adds up to {int(length.sum())}")
            used = length > 0
            top = _key_limit(settings["bits"])
            if np.any(used & ((start < 0) | (start + length > top))):
                raise StatsFileError(f"{name}: {keys[0]} holds a bucket outside the grid of "
                                     f"{settings['bits']} mantissa bits")
            low = int(start[used].min()) if used.any() else 0
            high = int((start + length)[used].max()) if used.any() else 0
            _check_size(channels, high - low, name)
            _check_expansion(channels, high - low, counts.size, name, keys[0])
            rows = np.zeros((channels, high - low), np.int64)  # narrowed below
            row_of = np.repeat(np.arange(channels), length)
            offsets = np.arange(counts.size) - np.repeat(np.cumsum(length) - length, length)
            rows[row_of, np.repeat(start - low, length) + offsets] = counts
            part[sign] = rows.reshape(tuple(shape) + (high - low,))
            part[f"{sign}_low"] = low
        limit = max(int(part[sign].max(initial=0)) for sign in ("pos", "neg"))
        for sign in ("pos", "neg"):
            part[sign] = part[sign].astype(count_dtype(limit))
        return cls(special=special, **part, **settings, limit=limit)


# ------------------------------------------------------------------------------ helpers
def _settings(reduction: Reduction, name: str = "statistics") -> dict:
    """The grid, levels and NaN rule of a run, or of a file's ``histogram`` field."""
    options = reduction.options.get("histogram", {})
    bits = options.get("bits", options.get("mantissa_bits", mantissa_bits(DEFAULT_ACCURACY)))
    levels = options.get("levels", DEFAULT_LEVELS)
    if type(bits) is not int or not 0 <= bits <= MAX_MANTISSA_BITS:
        raise StatsFileError(f"{name}: histogram mantissa_bits {bits!r:.40} is not a whole "
                             f"number from 0 to {MAX_MANTISSA_BITS}")
    if not isinstance(levels, (list, tuple)) or not all(
            isinstance(level, (int, float)) and not isinstance(level, bool)
            and 0 <= level <= 1 for level in levels):
        raise StatsFileError(f"{name}: histogram levels {levels!r:.60} are not numbers from "
                             "0 to 1")
    return {"bits": bits, "levels": tuple(float(level) for level in levels),
            "ignore_nan": reduction.ignore_nan}


def _key_limit(bits: int) -> int:
    """One past the largest key of a finite value."""
    return 2047 << bits


def _check_size(channels: int, width: int, name: str, error: type = StatsFileError) -> None:
    if channels * width * 8 > MAX_HISTOGRAM_BYTES:
        raise error(f"{name}: histograms of {channels:,} channels over {width:,} buckets "
                    f"would take {channels * width * 8 / 2**30:.1f} GiB; a coarser accuracy "
                    "takes fewer buckets")


def _check_expansion(channels: int, width: int, stored: int, name: str, key: str) -> None:
    """Refuse a file's histogram whose channels' windows, put on one shared window, would
    take far more memory than the counts the file stores justify (windows at the two ends of
    the grid, a few counts each, would otherwise cost gigabytes)."""
    allowed = max(FILE_HISTOGRAM_FLOOR, FILE_EXPANSION * stored * 8)
    if channels * width * 8 > allowed:
        raise StatsFileError(
            f"{name}: {key} spreads {channels:,} channels over {width:,} buckets "
            f"({channels * width * 8 / 2**20:,.0f} MiB) for {stored:,} stored counts; "
            f"bn expands a file's histograms to at most {FILE_EXPANSION} times what they "
            f"store, or {FILE_HISTOGRAM_FLOOR // 2**20} MiB")


def _counts(array: ArrayLike, name: str, key: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise StatsFileError(f"{name}: {key} is not a list of whole numbers")
        array = array.astype(np.int64)
    if array.dtype.kind not in "iub" or np.any(array < 0):
        raise StatsFileError(f"{name}: {key} is not a list of counts")
    return array.astype(np.int64)


def rank_at(level: float | np.ndarray, total: ArrayLike) -> np.ndarray:
    """The rank of the value at quantile `level` of `total` values: ``ceil(level * total)``,
    at least 1 (the lowest value at level 0). Quantiles, drift and calibration all use it."""
    return np.clip(np.ceil(level * np.asarray(total)), 1, None)


def bucket_of_rank(cumulative: np.ndarray, rank: ArrayLike) -> np.ndarray:
    """The bucket (along the last axis of `cumulative`, the running counts in increasing order
    of value) that holds the value of `rank`: the first whose count reaches it, the last at
    most. `rank` has the shape of `cumulative` without its last axis."""
    reached = (cumulative < np.asarray(rank)[..., None]).sum(axis=-1)
    return np.minimum(reached, cumulative.shape[-1] - 1)


def bucket_union(low_a: int, a: np.ndarray, low_b: int, b: np.ndarray) -> tuple:
    """The bucket range covering both sides' columns (an empty side covers nothing)."""
    ranges = [(low, low + array.shape[-1]) for low, array in ((low_a, a), (low_b, b))
              if array.shape[-1]]
    if not ranges:
        return 0, 0
    return min(start for start, _ in ranges), max(stop for _, stop in ranges)


def count_dtype(limit: int) -> np.dtype:
    """The narrowest unsigned type that holds counts up to `limit` (int64 past 2**32)."""
    if limit < 2**8:
        return np.dtype(np.uint8)
    if limit < 2**16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32 if limit < 2**32 else np.int64)


def widen_buckets(array: np.ndarray, low: int, new_low: int, new_high: int,
                  dtype: np.dtype | None = None) -> np.ndarray:
    """`array` (columns from key `low`) as columns ``[new_low, new_high)``, zeros around,
    of `dtype` (default its own)."""
    dtype = array.dtype if dtype is None else dtype
    if low == new_low and array.shape[-1] == new_high - new_low:
        return array.astype(dtype)
    wide = np.zeros(array.shape[:-1] + (new_high - new_low,), dtype)
    _add_into(wide, array, low - new_low)
    return wide


def _add_into(target: np.ndarray, source: np.ndarray, offset: int) -> None:
    """Add `source`'s columns into `target`'s from column `offset` on."""
    if source.shape[-1]:
        target[..., offset:offset + source.shape[-1]] += source


def _float_view(rows: np.ndarray) -> tuple:
    """`rows` as native float32 (exact for float16, bool, and 8/16-bit integers) or
    float64 (the others), with the unsigned view and the float's mantissa width."""
    dtype = rows.dtype
    small = dtype.kind == "b" or (dtype.kind in "iuf" and dtype.itemsize <= 2) or (
        dtype.kind == "f" and dtype.itemsize == 4)
    target = np.dtype(np.float32 if small else np.float64)
    values = np.ascontiguousarray(rows, dtype=target)
    if target == np.float32:
        return values.view(np.uint32), 23, 8
    return values.view(np.uint64), 52, 11


def _rows_histogram(rows: np.ndarray, bits: int) -> Histogram:
    """The histogram of an ``(N, C)`` array, reduced over its rows, tile by tile into one
    accumulator (widened as new buckets appear).

    A tile's bincount has an entry per bucket, sign and channel of the tile, zeroed and
    added up whether used or not; tiles of many rows (``MIN_TILE_ROWS``, as many as the
    array has) keep that below the tile's own values even for thousands of channels over
    thousands of buckets, where full-width rows would not.
    """
    count, channels = rows.shape
    code = type_code(rows.dtype)
    # the compiled kernel's cells are of uint16 or uint32: they hold fewer than 2**32 rows
    if code is not None and rows.flags.c_contiguous and channels and count < 2**32:
        return _compiled_histogram(rows, code, bits)
    tile_rows = min(count, max(PIECE_ITEMS // max(channels, 1), MIN_TILE_ROWS)) or 1
    tile_columns = max(1, PIECE_ITEMS // tile_rows)
    total = _Accumulator(channels, bits, count)
    for start in range(0, count, tile_rows):
        for first in range(0, channels, tile_columns):
            columns = slice(first, min(first + tile_columns, channels))
            _piece_histogram(rows[start:start + tile_rows, columns], bits, total, columns)
    return total.result()


def _compiled_histogram(rows: np.ndarray, code: str, bits: int) -> Histogram:
    """:func:`_rows_histogram` by the compiled kernel: one pass finds the block's window of
    buckets (and counts the special values), a second counts into it."""
    count, channels = rows.shape
    special = np.zeros((channels, len(SPECIAL)), np.int64)
    low, high = COMPILED.histogram_window(rows, code, rows.size, channels, bits, special)
    if low > high:
        empty = np.zeros((channels, 0), np.uint8)
        return Histogram(empty, empty.copy(), special, bits=bits)
    width = high + 1 - low
    _check_size(channels, 2 * width, "data", InputError)
    # a bucket holds at most the rows: 16 bits where they fit, half the bytes to clear
    counts = np.zeros((channels, 2, width), np.uint16 if count < 2**16 else np.uint32)
    COMPILED.histogram_count(rows, code, rows.size, channels, bits, low, width, counts,
                             counts.itemsize)
    peak = int(counts.max(initial=0))
    pos, pos_low = _trimmed(counts[:, 0], low, count_dtype(peak))
    neg, neg_low = _trimmed(counts[:, 1], low, count_dtype(peak))
    return Histogram(pos, neg, special, pos_low=pos_low, neg_low=neg_low, bits=bits,
                     limit=peak)


class _Accumulator:
    """Bucket counts of a block of `rows` values per channel so far: ``(C, 2, buckets)``
    from key `low` on (positive and negative side by side, as one bincount gives them), of
    the narrowest type that holds `rows`, and the special counts."""

    def __init__(self, channels: int, bits: int, rows: int):
        self.channels, self.bits = channels, bits
        self.rows = rows
        self.counts = np.zeros((channels, 2, 0), count_dtype(rows))
        self.low = 0
        self.special = np.zeros((channels, len(SPECIAL)), np.int64)

    def add(self, counts: np.ndarray, low: int, columns: slice) -> None:
        """Add ``(c, 2, buckets)`` counts of the channels `columns` from key `low` on."""
        width = self.counts.shape[-1]
        if not width:
            self.low = low
        new_low = min(low, self.low) if width else low
        new_high = max(low + counts.shape[-1], self.low + width)
        if (new_low, new_high) != (self.low, self.low + width):
            # grow with room to spare: the pieces of a block each reach a little further
            spare = 1 << self.bits  # an octave
            new_low -= spare if new_low < self.low and width else 0
            new_high += spare if new_high > self.low + width and width else 0
            wide = np.zeros((self.channels, 2, new_high - new_low), self.counts.dtype)
            wide[..., self.low - new_low:self.low - new_low + width] = self.counts
            self.counts, self.low = wide, new_low
        target = self.counts[columns, :, low - self.low:low - self.low + counts.shape[-1]]
        np.add(target, counts, out=target, casting="unsafe")  # a block's counts fit

    def result(self) -> Histogram:
        peak = int(self.counts.max(initial=0))
        dtype = count_dtype(peak)
        pos, pos_low = _trimmed(self.counts[:, 0], self.low, dtype)
        neg, neg_low = _trimmed(self.counts[:, 1], self.low, dtype)
        return Histogram(pos, neg, self.special, pos_low=pos_low, neg_low=neg_low,
                         bits=self.bits, limit=peak)


_THREAD = threading.local()


def _workspace(items: int, channels: int) -> tuple:
    """This thread's buffers for a piece of `items` values of `channels` channels: two
    unsigned ones of each width, an intp one, a mask, and the channel of each value."""
    cached = getattr(_THREAD, "workspace", None)
    if cached is None or cached[0] < items or cached[1] != channels:
        size = max(items, PIECE_ITEMS)
        size += -size % channels
        ramp = np.tile(np.arange(channels, dtype=np.intp), size // channels)
        cached = _THREAD.workspace = (size, channels, {
            32: (np.empty(size, np.uint32), np.empty(size, np.uint32)),
            64: (np.empty(size, np.uint64), np.empty(size, np.uint64)),
        }, np.empty(size, np.intp), np.empty(size, np.bool_), ramp)
    return cached[2:]


def _piece_histogram(piece: np.ndarray, bits: int, total: _Accumulator,
                     columns: slice) -> None:
    """Add the histogram of an ``(n, c)`` piece to `total` (global keys, both signs, the
    specials). Every step writes into this thread's reused buffers: a fresh array per piece
    costs more in page faults than the arithmetic."""
    words, mantissa, exponent_bits = _float_view(piece)
    words = words.reshape(-1)
    kind = words.dtype.type
    channels = piece.shape[1]
    width = words.dtype.itemsize * 8
    shift = mantissa - bits
    unsigned, index, mask, ramp = _workspace(words.size, channels)
    magnitude, keys = (buffer[:words.size] for buffer in unsigned[width])
    index, mask, ramp = index[:words.size], mask[:words.size], ramp[:words.size]
    # magnitude key: exponent and top `bits` mantissa bits; the sign bit apart
    np.left_shift(words, kind(1), out=magnitude)
    np.right_shift(magnitude, kind(shift + 1), out=magnitude)
    # the smallest normal float32, and infinity, in this float type's keys
    tiny_key = (1 if width == 32 else 1 + _FLOAT32_OFFSET) << bits
    inf_key = ((1 << exponent_bits) - 1) << bits
    offset = (_FLOAT32_OFFSET << bits) if width == 32 else 0
    low, high = int(magnitude.min()), int(magnitude.max())
    special = total.special[columns]
    if high >= inf_key:  # infinities or NaN: counted apart, and out of the buckets
        grid = magnitude.reshape(-1, channels)
        negative = (words >> kind(width - 1)).reshape(-1, channels)
        nan = np.isnan(words.view(_float_type(width))).reshape(-1, channels)
        infinite = (grid >= inf_key) & ~nan
        special[:, 2] += _column_counts(infinite & (negative == 0))
        special[:, 3] += _column_counts(infinite & (negative == 1))
        special[:, 4] += _column_counts(nan)
        finite = magnitude[magnitude < inf_key]
        if finite.size == 0:
            return
        high = int(finite.max())
        if high >= tiny_key:  # to a bucket dropped below
            np.putmask(magnitude, magnitude >= inf_key, kind(high + 1))
    if low < tiny_key:  # zeros and values below the smallest normal float32
        below = np.less(magnitude, kind(tiny_key), out=mask)
        zero_bucket = _column_counts(below.reshape(-1, channels))
        special[:, 0] += zero_bucket
        special[:, 1] += zero_bucket - _column_counts(np.equal(piece, 0).reshape(-1, channels))
        if high < tiny_key:  # no value in a bucket
            return
        # to a bucket dropped below: max with (below * (high + 1)), branch-free
        np.multiply(below.view(np.uint8), kind(high + 1), out=keys)
        np.maximum(magnitude, keys, out=magnitude)
        low = int(magnitude.min())
    buckets = high + 2 - low  # one more: where the odd values go
    _check_size(channels, 2 * buckets, "data", InputError)
    # (channel, sign, bucket) as one flat index
    np.subtract(magnitude, kind(low), out=keys)
    np.right_shift(words, kind(width - 1), out=magnitude)
    np.multiply(magnitude, kind(buckets), out=magnitude)
    np.add(keys, magnitude, out=keys)
    np.multiply(ramp, 2 * buckets, out=index)
    np.add(index, keys, out=index, casting="unsafe")
    counts = np.bincount(index, minlength=2 * buckets * channels)
    total.add(counts.reshape(channels, 2, buckets)[..., :-1], low + offset, columns)


def _trimmed(rows: np.ndarray, low: int, dtype: np.dtype) -> tuple:
    """``(C, width)`` counts of `dtype` without empty buckets at either end, and the key of
    the first."""
    used = np.flatnonzero(rows.any(axis=0))
    if used.size == 0:
        return np.zeros((rows.shape[0], 0), dtype), 0
    return rows[:, used[0]:used[-1] + 1].astype(dtype), low + int(used[0])


def _float_type(width: int) -> type:
    """The float type of `width` bits."""
    return np.float32 if width == 32 else np.float64


def _column_counts(mask: np.ndarray) -> np.ndarray:
    """True values per column of a 2-d mask, as int64."""
    return count_along(mask, 0, mask.shape[1:])
