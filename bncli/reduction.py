"""Partial per-channel moments: computed on a block, merged in any grouping, finalized once.

Every sum is accumulated in float64, whatever the input dtype: float32 accumulators lose
about seven digits when ``|mean| / std`` is near 1e4, which is common for raw activations.
Each block is centred on its own mean (a two-pass sum within the block, which sits in cache),
and blocks are combined with the pairwise update of Chan, Golub & LeVeque (1979), "Updating
formulae and a pairwise algorithm for computing sample variances"::

    n = na + nb,  d = mb - ma,  mean = ma + d * nb / n,  m2 = m2a + m2b + d**2 * na * nb / n

The merge is associative (up to rounding), so chunks, files, shards and workers all combine
through :meth:`Moments.merge`. ``E[x**2] - E[x]**2`` is never used.
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
    """Partial moments per channel; every array has the same shape.

    Attributes
    ----------
    count : ndarray of int64
        Values that entered the sums (NaNs excluded when `ignore_nan`).
    mean : ndarray of float64
    m2 : ndarray of float64
        Sum of squared deviations from `mean`.
    min, max : ndarray of float64
    nan_count, inf_count : ndarray of int64
    ignore_nan : bool
        Whether NaNs were left out of `count`, `mean`, `m2`, `min` and `max`.
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray
    nan_count: np.ndarray
    inf_count: np.ndarray
    ignore_nan: bool = False

    ARRAYS = ("count", "mean", "m2", "min", "max", "nan_count", "inf_count")

    @property
    def shape(self) -> tuple:
        """Shape of every array."""
        return self.count.shape

    @classmethod
    def empty(cls, shape: Sequence[int], ignore_nan: bool = False) -> Moments:
        """Return the moments of no data (the identity of :meth:`merge`)."""
        return cls(
            count=np.zeros(shape, np.int64),
            mean=np.zeros(shape, np.float64),
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
            delta = other.mean - self.mean
            fraction_b = count_b / total
            mean = self.mean + delta * fraction_b
            m2 = self.m2 + other.m2 + delta * delta * count_a * fraction_b
            # An infinite or NaN mean is no location to centre on: follow NumPy, whose
            # mean of [inf, 5] is inf and whose variance of it is nan.
            nonfinite = ~(np.isfinite(self.mean) & np.isfinite(other.mean))
            if nonfinite.any():
                mean = np.where(nonfinite, self.mean + other.mean, mean)
                m2 = np.where(nonfinite, np.nan, m2)
        # An empty side is the identity; the formula above would give 0/0 there.
        mean = np.where(count_a == 0, other.mean, np.where(count_b == 0, self.mean, mean))
        m2 = np.where(count_a == 0, other.m2, np.where(count_b == 0, self.m2, m2))
        extreme_min, extreme_max = (
            (np.fmin, np.fmax) if self.ignore_nan else (np.minimum, np.maximum)
        )
        return Moments(
            count=total,
            mean=mean,
            m2=m2,
            min=extreme_min(self.min, other.min),
            max=extreme_max(self.max, other.max),
            nan_count=self.nan_count + other.nan_count,
            inf_count=self.inf_count + other.inf_count,
            ignore_nan=self.ignore_nan,
        )

    def merge_at(self, region: tuple, other: Moments) -> None:
        """Merge `other` into the channels ``self[region]``, in place."""
        self[region] = self[region].merge(other)

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
            ``nan_count``, ``inf_count``, each of this moments' shape. A channel without
            values (or with ``count <= ddof`` for the variance) gets NaN.
        """
        empty = self.count == 0
        with np.errstate(all="ignore"):
            dof = self.count - ddof
            variance = np.where(dof > 0, self.m2 / np.where(dof > 0, dof, 1), np.nan)
        return {
            "count": self.count.copy(),
            "mean": np.where(empty, np.nan, self.mean),
            "variance": variance,
            "std": np.sqrt(variance),
            "min": np.where(empty, np.nan, self.min),
            "max": np.where(empty, np.nan, self.max),
            "m2": np.where(empty, 0.0, self.m2),
            "nan_count": self.nan_count.copy(),
            "inf_count": self.inf_count.copy(),
        }


def _piece_moments(piece: np.ndarray, reduce_axes: tuple, ignore_nan: bool) -> Moments:
    """Moments of one cache-sized piece, kept dims, centred on the piece's own mean."""
    values = np.array(piece, dtype=np.float64, order="C")  # the float64 accumulator copy
    kept_shape = tuple(1 if axis in reduce_axes else dim for axis, dim in enumerate(piece.shape))
    reduce = dict(axis=reduce_axes, keepdims=True)
    with np.errstate(all="ignore"):
        if ignore_nan:
            nan_mask = np.isnan(values)
            count = np.add.reduce(~nan_mask, dtype=np.int64, **reduce)
            minimum = np.fmin.reduce(values, **reduce)
            maximum = np.fmax.reduce(values, **reduce)
            np.copyto(values, 0.0, where=nan_mask)
            total = np.add.reduce(values, **reduce)
            mean = total / count
            deviation = values - mean
            np.copyto(deviation, 0.0, where=nan_mask)
            nan_count = np.add.reduce(nan_mask, dtype=np.int64, **reduce)
        else:
            count = np.full(kept_shape, math.prod(piece.shape) // max(math.prod(kept_shape), 1),
                            dtype=np.int64)
            minimum = np.minimum.reduce(values, **reduce)
            maximum = np.maximum.reduce(values, **reduce)
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
            inf_count = np.add.reduce(np.isinf(values), dtype=np.int64, **reduce)
            if nan_count is None:
                nan_count = np.add.reduce(np.isnan(values), dtype=np.int64, **reduce)
            m2 = np.where(np.isfinite(mean), m2, np.nan)
        if ignore_nan:
            mean = np.where(count == 0, 0.0, mean)
            m2 = np.where(count == 0, 0.0, m2)
    return Moments(count, mean, m2, minimum, maximum, nan_count, inf_count, ignore_nan)


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




def _rows_partials(block: LazyBlock, total_rows: int, channels: int, piece_items: int):
    """Partials of a block taken as ``(A, K)`` and reduced over axis 0: lists of (count, ...)."""
    fold = fold_factor(channels)
    rows_per_piece = max(fold, piece_items // channels // fold * fold)
    folded_rows = total_rows // fold * fold
    parts = []
    if folded_rows:
        parts.append(_folded_partials(block, 0, folded_rows // fold, rows_per_piece // fold,
                                      fold, channels))
    if folded_rows < total_rows:  # the rows left over, unfolded
        parts.append(_folded_partials(block, folded_rows * channels, total_rows - folded_rows,
                                      fold, 1, channels))
    return parts


def _folded_partials(block: LazyBlock, base: int, rows: int, per_piece: int, fold: int,
                     channels: int):
    """Partials of `rows` rows of `fold` groups of `channels` side by side, from flat `base`.

    Each piece of `per_piece` rows is reduced over its rows in one go (long inner loops,
    over all groups at once), and then its `fold` groups, all of equal count, are combined
    by the Chan update for equal groups: the mean of the group means, and
    ``m2 = sum(m2_j) + n * sum((mean_j - mean)**2)``. The per-piece work is a handful of
    NumPy calls writing into preallocated rows; the combining is done for all pieces at once.
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
        _centred(piece, buffer[:piece.shape[0]], 0,
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


def _centred(piece: np.ndarray, values: np.ndarray, axis: int, out: tuple | None = None
             ) -> tuple:
    """Min, max, float64 sum, mean and centred m2 of `piece` along `axis` (0 or its last).

    `values` is a float64 buffer of the piece's shape. The extremes are taken in the
    input's own dtype: exact, and fewer bytes to go through. With `out`, five arrays of
    the reduced shape, the results are written there (and returned).
    """
    minimum, maximum, total, mean, m2 = out or (None,) * 5
    minimum = np.minimum.reduce(piece, axis=axis, out=minimum)
    maximum = np.maximum.reduce(piece, axis=axis, out=maximum)
    np.copyto(values, piece)
    total = np.add.reduce(values, axis=axis, out=total)
    mean = np.divide(total, piece.shape[axis], out=mean)
    values -= np.expand_dims(mean, axis)
    every = list(range(piece.ndim))
    m2 = np.einsum(values, every, values, every, [dim for dim in every if dim != axis], out=m2)
    return minimum, maximum, total, mean, m2


def _slab_partials(x3: np.ndarray, piece_items: int):
    """Partials of an ``(A, K, B)`` array reduced over axes 0 and 2, B > 1."""
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
                                          _centred(piece, values, 2)):
                    target[rows_here, columns] = result
    return [(count, total, mean, m2, minimum, maximum)]


def _fast_moments(block: LazyBlock, reduce_axes: tuple, piece_bytes: int):
    """Moments of a C-contiguous block whose layout collapses to (A, K, B), or None.

    None also when a partial sum is not finite: NaN and Inf are then counted by the
    general path.
    """
    if not block.c_contiguous or block.size == 0:
        return None
    collapsed = collapse_axes(block.shape, reduce_axes)
    if collapsed is None:
        return None
    piece_items = max(1, piece_bytes // 8)
    with np.errstate(all="ignore"):
        if collapsed[2] == 1:
            parts = _rows_partials(block, collapsed[0], collapsed[1], piece_items)
        else:
            parts = _slab_partials(block.array().reshape(collapsed), piece_items)
    count, total, mean, m2, minimum, maximum = (
        np.concatenate([part[index] for part in parts]) for index in range(6))
    if not np.isfinite(total).all():
        return None
    zeros = np.zeros(count.shape, np.int64)
    stack = Moments(count, mean, m2, minimum, maximum, zeros, zeros, ignore_nan=False)
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
            return _exact_constant(fast.reshape(kept_shape))
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
    return _exact_constant(result)


def _exact_constant(moments: Moments) -> Moments:
    """A constant channel's mean is its value, exactly, and its m2 is 0.

    ``sum / count`` can be off by an ulp; with the exact mean a constant channel normalizes
    to exactly ``offset``.
    """
    constant = (moments.min == moments.max) & np.isfinite(moments.min) & (moments.count > 0)
    if constant.any():
        moments.mean = np.where(constant, moments.min, moments.mean)
        moments.m2 = np.where(constant, 0.0, moments.m2)
    return moments
