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
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .buffers import LazyBlock
from .layout import channel_region, collapse_axes, fold_factor, plan_blocks

# Float64 bytes per piece that is converted and reduced at once: a piece lives in L2/L3
# cache, and each NumPy call is long enough that worker threads rarely wait for the GIL
# (measured: 512 KiB pieces scaled 1.1x on two threads, 2 MiB pieces 1.5x).
PIECE_BYTES = 2 * 2**20


@dataclass
class Moments:
    """Partial moments per channel, centred on a shift; every array has the same shape.

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
    min, max : ndarray of float64
    nan_count, inf_count : ndarray of int64
    ignore_nan : bool
        Whether NaNs were left out of `count`, the means, `m2`, `min` and `max`.
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

    ARRAYS = ("count", "shift", "shifted_mean", "m2", "min", "max", "nan_count", "inf_count")

    @property
    def shape(self) -> tuple:
        """Shape of every array."""
        return self.count.shape

    @classmethod
    def empty(cls, shape: Sequence[int], ignore_nan: bool = False) -> Moments:
        """Return the moments of no data (the identity of :meth:`merge`)."""
        return cls(
            count=np.zeros(shape, np.int64),
            shift=np.zeros(shape, np.float64),
            shifted_mean=np.zeros(shape, np.float64),
            m2=np.zeros(shape, np.float64),
            min=np.full(shape, np.inf),
            max=np.full(shape, -np.inf),
            nan_count=np.zeros(shape, np.int64),
            inf_count=np.zeros(shape, np.int64),
            ignore_nan=ignore_nan,
        )

    def _map(self, func) -> Moments:
        return replace(self, **{name: func(getattr(self, name)) for name in self.ARRAYS})

    def __getitem__(self, index) -> Moments:
        return self._map(lambda array: array[index])

    def __setitem__(self, index, other: Moments) -> None:
        for name in self.ARRAYS:
            getattr(self, name)[index] = getattr(other, name)

    def reshape(self, shape: Sequence[int]) -> Moments:
        """Return the moments with every array reshaped."""
        return self._map(lambda array: array.reshape(shape))

    def transpose(self, axes: Sequence[int]) -> Moments:
        """Return the moments with every array transposed (as contiguous copies)."""
        return self._map(lambda array: np.ascontiguousarray(array.transpose(axes)))

    def merge(self, other: Moments) -> Moments:
        """Combine with the moments of other data of the same channels.

        The result keeps this side's shift (the other's where this side is empty). The
        difference of the means is taken as ``(shift_b - shift_a) + (mean_b - mean_a)``
        with shifted means: two shifts of one channel's data lie close together, so their
        difference is exact (Sterbenz), and no mean is ever rounded at the data's offset.

        Parameters
        ----------
        other : Moments
            Same shape and `ignore_nan`.

        Returns
        -------
        Moments
            The moments of both data together.
        """
        if self.ignore_nan != other.ignore_nan:
            raise ValueError("cannot merge moments computed with and without ignore_nan")
        count_a, count_b = self.count, other.count
        total = count_a + count_b
        with np.errstate(all="ignore"):
            delta = (other.shift - self.shift) + (other.shifted_mean - self.shifted_mean)
            fraction_b = count_b / total
            shifted_mean = self.shifted_mean + delta * fraction_b
            m2 = self.m2 + other.m2 + delta * delta * count_a * fraction_b
            # An infinite or NaN mean is no location to centre on: follow NumPy, whose
            # mean of [inf, 5] is inf and whose variance of it is nan.
            nonfinite = ~(np.isfinite(self.shifted_mean) & np.isfinite(other.shifted_mean))
            if nonfinite.any():
                shifted_mean = np.where(nonfinite, self.shifted_mean + other.shifted_mean,
                                        shifted_mean)
                m2 = np.where(nonfinite, np.nan, m2)
        # An empty side is the identity; the formula above would give 0/0 there.
        a_empty, b_empty = count_a == 0, count_b == 0

        def pick(mine, theirs, merged):
            return np.where(a_empty, theirs, np.where(b_empty, mine, merged))

        extreme_min, extreme_max = (
            (np.fmin, np.fmax) if self.ignore_nan else (np.minimum, np.maximum)
        )
        return Moments(
            count=total,
            shift=np.where(a_empty, other.shift, self.shift),
            shifted_mean=pick(self.shifted_mean, other.shifted_mean, shifted_mean),
            m2=pick(self.m2, other.m2, m2),
            min=extreme_min(self.min, other.min),
            max=extreme_max(self.max, other.max),
            nan_count=self.nan_count + other.nan_count,
            inf_count=self.inf_count + other.inf_count,
            ignore_nan=self.ignore_nan,
        )

    def merge_at(self, region: tuple, other: Moments) -> None:
        """Merge `other` into the channels ``self[region]``, in place."""
        self[region] = self[region].merge(other)

    def mean(self) -> np.ndarray:
        """The mean per channel, ``shift + shifted_mean`` rounded once (NaN where empty)."""
        with np.errstate(all="ignore"):
            return np.where(self.count == 0, np.nan, self.shift + self.shifted_mean)

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
            moments' shape. A channel without values (or with ``count <= ddof`` for the
            variance) gets NaN.
        """
        empty = self.count == 0
        with np.errstate(all="ignore"):
            dof = self.count - ddof
            variance = np.where(dof > 0, self.m2 / np.where(dof > 0, dof, 1), np.nan)
        return {
            "count": self.count.copy(),
            "mean": self.mean(),
            "variance": variance,
            "std": np.sqrt(variance),
            "min": np.where(empty, np.nan, self.min),
            "max": np.where(empty, np.nan, self.max),
            "m2": np.where(empty, 0.0, self.m2),
            "nan_count": self.nan_count.copy(),
            "inf_count": self.inf_count.copy(),
            "shift": np.where(empty, 0.0, self.shift),
            "shifted_mean": np.where(empty, 0.0, self.shifted_mean),
        }


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


def _piece_moments(piece: np.ndarray, reduce_axes: tuple, ignore_nan: bool) -> Moments:
    """Moments of one cache-sized piece, kept dims, centred on a shift from its data."""
    kept_shape = tuple(1 if axis in reduce_axes else dim for axis, dim in enumerate(piece.shape))
    reduce = dict(axis=reduce_axes, keepdims=True)
    extreme_min, extreme_max = (np.fmin, np.fmax) if ignore_nan else (np.minimum, np.maximum)
    with np.errstate(all="ignore"):
        minimum = extreme_min.reduce(piece, **reduce).astype(np.float64)
        maximum = extreme_max.reduce(piece, **reduce).astype(np.float64)
        shift = data_shift(_first_along(piece, reduce_axes))
        # a channel whose first value is NaN or Inf is centred on its smallest finite one
        fallback = ~np.isfinite(_first_along(piece, reduce_axes).astype(np.float64))
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
        np.multiply(deviation, deviation, out=deviation)
        m2 = np.add.reduce(deviation, **reduce)
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
        if ignore_nan:
            mean = np.where(count == 0, 0.0, mean)
            m2 = np.where(count == 0, 0.0, m2)
    return Moments(count, shift, mean, m2, minimum, maximum, nan_count, inf_count, ignore_nan)


def tree_leaf(shape: tuple, region: tuple, part: Moments) -> Moments:
    """A block's moments spread over the whole channel shape, empty outside ``region``.

    The leaves of :class:`TreeAccumulator` and of the cluster's tree are made here alike.
    """
    if part.shape == tuple(shape):
        return part
    leaf = Moments.empty(shape, part.ignore_nan)
    leaf[region] = part
    return leaf


class TreeAccumulator:
    """Merges a stream of block moments as one fixed balanced binary tree, in O(log n) memory.

    Blocks are leaves in file order; two subtrees of the same size are merged as soon as
    both exist (a binary counter), and what is left is merged from the right at the end.
    That is the tree of :func:`pairwise_levels` (neighbours paired level by level, an odd
    last one carried up), so a cluster that merges level by level gets the same bits.
    Each leaf spans the whole channel shape, empty outside its block's channels; an empty
    side merges exactly, so every channel sees the same tree restricted to its blocks.

    Parameters
    ----------
    shape : tuple of int
        Keepdims shape of the whole result.
    ignore_nan : bool
    """

    def __init__(self, shape: tuple, ignore_nan: bool = False):
        self.shape = tuple(shape)
        self.ignore_nan = ignore_nan
        self._stack: list = []  # (leaves, moments), leaf counts strictly decreasing

    def add(self, region: tuple, part: Moments) -> None:
        """Add the moments of the next block, covering the channels ``region``."""
        self._stack.append((1, tree_leaf(self.shape, region, part)))
        while len(self._stack) > 1 and self._stack[-1][0] == self._stack[-2][0]:
            (size, right), (_, left) = self._stack.pop(), self._stack.pop()
            self._stack.append((2 * size, left.merge(right)))

    def result(self) -> Moments:
        """The moments of every block added."""
        if not self._stack:
            return Moments.empty(self.shape, self.ignore_nan)
        merged = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            merged = left.merge(merged)
        return merged


def pairwise_levels(items: list, merge) -> object:
    """Merge neighbours level by level (an odd last item carried up) into one."""
    while len(items) > 1:
        items = [merge(items[index], items[index + 1]) if index + 1 < len(items)
                 else items[index] for index in range(0, len(items), 2)]
    return items[0]


def tree_merge(stack: Moments) -> Moments:
    """Merge moments stacked along axis 0 pairwise, as a balanced tree, into one."""
    while stack.shape[0] > 1:
        pairs = stack.shape[0] // 2
        merged = stack[0:2 * pairs:2].merge(stack[1:2 * pairs:2])
        if stack.shape[0] % 2:
            merged = Moments(*(np.concatenate([getattr(merged, name), getattr(stack, name)[-1:]])
                               for name in Moments.ARRAYS), ignore_nan=stack.ignore_nan)
        stack = merged
    return stack[0]




def _rows_partials(block: LazyBlock, total_rows: int, channels: int, piece_items: int,
                   shift: np.ndarray):
    """Partials of a block taken as ``(A, K)`` and reduced over axis 0: lists of (count, ...)."""
    fold = fold_factor(channels)
    rows_per_piece = max(fold, piece_items // channels // fold * fold)
    folded_rows = total_rows // fold * fold
    parts = []
    if folded_rows:
        parts.append(_folded_partials(block, 0, folded_rows // fold, rows_per_piece // fold,
                                      fold, channels, np.tile(shift, fold)))
    if folded_rows < total_rows:  # the rows left over, unfolded
        parts.append(_folded_partials(block, folded_rows * channels, total_rows - folded_rows,
                                      fold, 1, channels, shift))
    return parts


def _folded_partials(block: LazyBlock, base: int, rows: int, per_piece: int, fold: int,
                     channels: int, shift: np.ndarray):
    """Partials of `rows` rows of `fold` groups of `channels` side by side, from flat `base`.

    Each piece of `per_piece` rows is reduced over its rows in one go (long inner loops,
    over all groups at once), and then its `fold` groups, all of equal count, are combined
    by the Chan update for equal groups: the mean of the group means, and
    ``m2 = sum(m2_j) + n * sum((mean_j - mean)**2)``. The per-piece work is a handful of
    NumPy calls writing into preallocated rows; the combining is done for all pieces at once.
    Every value is centred on `shift` (one per column) first; the means are of ``x - shift``.
    """
    width = fold * channels
    starts = range(0, rows, per_piece)
    pieces = len(starts)
    counts = np.array([min(per_piece, rows - start) for start in starts], np.int64)
    total, group_mean, m2 = (np.empty((pieces, width)) for _ in range(3))
    extreme_dtype = block.dtype.newbyteorder("=")
    minimum, maximum = np.empty((pieces, width), extreme_dtype), np.empty((pieces, width),
                                                                          extreme_dtype)
    buffer = np.empty((min(per_piece, rows), width))
    for index, start in enumerate(starts):
        stop = min(start + per_piece, rows)
        piece = block.piece(base + start * width, base + stop * width).reshape(-1, width)
        _centred(piece, buffer[:piece.shape[0]], 0, shift,
                 (minimum[index], maximum[index], total[index], group_mean[index], m2[index]))
    shape = (pieces, fold, channels)
    group_mean = group_mean.reshape(shape)
    m2 = m2.reshape(shape)
    mean = np.add.reduce(group_mean, axis=1) / fold
    if fold > 1:
        spread = group_mean - mean[:, None]
        m2 = np.add.reduce(m2, axis=1) + counts[:, None] * np.einsum("pgk,pgk->pk", spread,
                                                                     spread)
    else:
        m2 = m2[:, 0]
    return (np.repeat(counts[:, None] * fold, channels, axis=1),
            np.add.reduce(total.reshape(shape), axis=1), mean, m2,
            np.minimum.reduce(minimum.reshape(shape), axis=1).astype(np.float64),
            np.maximum.reduce(maximum.reshape(shape), axis=1).astype(np.float64))


def _centred(piece: np.ndarray, values: np.ndarray, axis: int, shift: np.ndarray,
             out: tuple | None = None) -> tuple:
    """Min, max, float64 sum, mean and centred m2 of ``piece - shift`` along `axis`.

    `axis` is 0 or the piece's last; `shift` broadcasts to the piece. `values` is a float64
    buffer of the piece's shape. The extremes (of the piece itself) are taken in the input's
    own dtype: exact, and fewer bytes to go through. With `out`, five arrays of the reduced
    shape, the results are written there (and returned).
    """
    minimum, maximum, total, mean, m2 = out or (None,) * 5
    minimum = np.minimum.reduce(piece, axis=axis, out=minimum)
    maximum = np.maximum.reduce(piece, axis=axis, out=maximum)
    subtract_shift(piece, shift, values, np.expand_dims(minimum, axis),
                   np.expand_dims(maximum, axis))
    total = np.add.reduce(values, axis=axis, out=total)
    mean = np.divide(total, piece.shape[axis], out=mean)
    values -= np.expand_dims(mean, axis)
    every = list(range(piece.ndim))
    m2 = np.einsum(values, every, values, every, [dim for dim in every if dim != axis], out=m2)
    return minimum, maximum, total, mean, m2


def _slab_partials(x3: np.ndarray, piece_items: int, shift: np.ndarray):
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
    total, mean, m2, minimum, maximum = (np.empty((rows, channels)) for _ in range(5))
    buffer = np.empty(per_outer * per_channel * per_inner)
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
                for target, result in zip((minimum, maximum, total, mean, m2),
                                          _centred(piece, values, 2, shift3[:, columns])):
                    target[rows_here, columns] = result
    return [(count, total, mean, m2, minimum, maximum)]


def _fast_moments(block: LazyBlock, reduce_axes: tuple, piece_bytes: int):
    """Moments of a C-contiguous block whose layout collapses to (A, K, B), or None.

    None also when a partial sum is not finite: NaN and Inf are then counted by the
    general path. The whole block is centred on one shift per channel: its first values.
    """
    if not block.c_contiguous or block.size == 0:
        return None
    collapsed = collapse_axes(block.shape, reduce_axes)
    if collapsed is None:
        return None
    outer, channels, inner = collapsed
    piece_items = max(1, piece_bytes // 8)
    with np.errstate(all="ignore"):
        if inner == 1:
            shift = data_shift(block.piece(0, channels))
            parts = _rows_partials(block, outer, channels, piece_items, shift)
        else:
            x3 = block.array().reshape(collapsed)
            shift = data_shift(x3[0, :, 0])
            parts = _slab_partials(x3, piece_items, shift)
    count, total, mean, m2, minimum, maximum = (
        np.concatenate([part[index] for part in parts]) for index in range(6))
    if not np.isfinite(total).all():
        return None
    zeros = np.zeros(count.shape, np.int64)
    shifts = np.broadcast_to(shift, count.shape)
    stack = Moments(count, shifts, mean, m2, minimum, maximum, zeros, zeros, ignore_nan=False)
    return tree_merge(stack)


def block_moments(
    block: np.ndarray | LazyBlock,
    reduce_axes: Sequence[int],
    *,
    ignore_nan: bool = False,
    piece_bytes: int = PIECE_BYTES,
) -> Moments:
    """Compute the moments of an array over some of its axes, keeping dims.

    The block is converted to float64 piece by piece (each at most `piece_bytes` as
    float64), each piece is centred on its own mean, and the pieces' moments are merged
    pairwise, as a balanced tree where the layout allows it.

    Parameters
    ----------
    block : ndarray or LazyBlock
        Any real or bool dtype, any byte order and memory layout; a
        :class:`~bncli.buffers.LazyBlock` is read piece by piece where the layout allows.
    reduce_axes : sequence of int
        Non-negative axes of `block` to reduce over.
    ignore_nan : bool
        Leave NaNs out of the statistics.
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
        fast = _fast_moments(lazy, reduce_axes, piece_bytes)
        if fast is not None:
            return fast.reshape(kept_shape)
    block = lazy.array()
    result = None
    for region in plan_blocks(block.shape, 8, piece_bytes):
        part = _piece_moments(block[region], reduce_axes, ignore_nan)
        target = channel_region(region, reduce_axes)
        if result is None and all(
            part.shape[axis] == kept_shape[axis] for axis in range(block.ndim)
        ):
            result = part
            continue
        if result is None:
            result = Moments.empty(kept_shape, ignore_nan)
        result.merge_at(target, part)
    if result is None:
        result = Moments.empty(kept_shape, ignore_nan)
    return result
