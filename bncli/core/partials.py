"""Per-channel partial results, the reduction's extension point, and the tree that merges them.

A statistic is a :class:`Partial`: a small value type of named arrays with three functions,
as dask's ``moment_chunk`` / ``moment_combine`` / ``moment_agg``:

- ``from_block(block, reduce_axes, reduction)``: compute it on one block of data;
- ``merge(other)``: combine the partials of two parts of the data (associative);
- ``finalize(ddof)``: the per-channel statistics it stands for.

Every array of a partial has the channel shape (keepdims-shaped during a pass) followed by
``EXTRA_NDIM`` axes of its own (a histogram's bins), so indexing by a region of channels,
reshaping and transposing are written once here. A :class:`Partials` is the set of partials
one run computes, merged member by member; :class:`Reduction` says which, and with what
options. The local engine, the cluster, ``bn merge`` and the statistics file handle any
registered kind alike.

The merge tree (:class:`TreeAccumulator` locally, :func:`pairwise_levels` on a cluster)
combines *nodes*: a partial together with the box of channels it covers. Merging two nodes
touches only the union of their boxes, so the cost follows the data rather than blocks x
channels; channels outside a box are empty, and an empty side merges exactly, so every
channel sees the same tree restricted to its own blocks, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, TypeVar, overload

import numpy as np

from bncli.core.buffers import LazyBlock

if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import Field
    from typing import Any, TypeAlias

    from typing_extensions import Self

    # What selects channels of a partial: an index or a slice of the first channel axis
    # (of a stack of partials), or a region of slices, one per channel axis.
    Index: TypeAlias = int | slice | tuple[slice, ...]

_T = TypeVar("_T")
_P = TypeVar("_P", bound="Partial")


class Partial:
    """Base of the per-channel partial results (see the module docstring).

    Subclasses are dataclasses whose array fields are named by :meth:`array_names`.
    """

    if TYPE_CHECKING:  # what the subclasses' @dataclass gives them (for `replace`)
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    name: ClassVar[str] = ""
    ARRAYS: ClassVar[tuple] = ()
    EXTRA_NDIM: ClassVar[int] = 0  # trailing axes of each array beyond the channel shape
    # File arrays that are flat lists of their own length, not of the channel shape.
    FLAT: ClassVar[tuple] = ()

    def array_names(self) -> tuple:
        """Names of the array fields this partial holds."""
        return self.ARRAYS

    @property
    def shape(self) -> tuple:
        """The channel part of the arrays' shape."""
        array = getattr(self, self.array_names()[0])
        return array.shape[:array.ndim - self.EXTRA_NDIM]

    def _map(self, func: Callable[[np.ndarray], np.ndarray]) -> Self:
        return replace(self, **{name: func(getattr(self, name)) for name in self.array_names()})

    def __getitem__(self, index: Index) -> Self:
        return self._map(lambda array: array[index])

    def __setitem__(self, index: Index, other: Self) -> None:
        for name in self.array_names():
            getattr(self, name)[index] = getattr(other, name)

    def reshape(self, shape: Sequence[int]) -> Self:
        """The partial with the channel part of every array reshaped."""
        return self._map(lambda array: array.reshape(
            tuple(shape) + array.shape[array.ndim - self.EXTRA_NDIM:]))

    def transpose(self, axes: Sequence[int]) -> Self:
        """The partial with the channel axes transposed (as contiguous copies)."""
        return self._map(lambda array: np.ascontiguousarray(array.transpose(
            tuple(axes) + tuple(range(len(axes), array.ndim)))))

    def allocate(self, shape: Sequence[int]) -> Self:
        """A partial of the same kind over channel `shape`, its arrays uninitialized."""
        return self._map(lambda array: np.empty(
            tuple(shape) + array.shape[array.ndim - self.EXTRA_NDIM:], array.dtype))

    def merge_at(self, region: tuple, other: Self) -> None:
        """Merge `other` into the channels ``self[region]``, in place."""
        self[region] = self[region].merge(other)

    def concatenate(self, other: Self) -> Self:
        """This partial and `other` side by side along the first channel axis."""
        return replace(self, **{name: np.concatenate([getattr(self, name), getattr(other, name)])
                                for name in self.array_names()})

    def empty_like(self, shape: Sequence[int], reduction: Reduction) -> Self:
        """The partial of no data over channel `shape`, of this one's array dtypes."""
        return self.empty(shape, reduction)

    # The three functions of a statistic.
    @classmethod
    def empty(cls, shape: Sequence[int], reduction: Reduction) -> Self:
        """The partial of no data: the identity of :meth:`merge`."""
        raise NotImplementedError

    @classmethod
    def from_block(cls, block: np.ndarray | LazyBlock, reduce_axes: tuple,
                   reduction: Reduction) -> Self:
        """The partial of one block (an ndarray or LazyBlock), keepdims-shaped."""
        raise NotImplementedError

    def merge(self, other: Self) -> Self:
        """The partial of both parts of the data."""
        raise NotImplementedError

    def finalize(self, ddof: int = 0) -> dict:
        """The statistics per channel: a dict of arrays of the channel shape (plus extra axes)."""
        raise NotImplementedError

    # The statistics file.
    def file_arrays(self) -> dict:
        """The arrays a statistics file stores so that it can be merged again."""
        return {name: getattr(self, name) for name in self.array_names()}

    def file_meta(self) -> dict | None:
        """Settings a statistics file records under the kind's name (None: nothing)."""
        return None

    @classmethod
    def from_file(cls, arrays: dict, shape: tuple, reduction: Reduction,
                  name: str) -> Self | None:
        """Rebuild from the arrays of a statistics file (``StatsFileError`` if unusable)."""
        raise NotImplementedError


# The kinds of partial a statistics file or a run may hold, by name.
KINDS: dict = {}


def register(kind: type[_P]) -> type[_P]:
    """Make a :class:`Partial` subclass known by its ``name`` (usable as a decorator)."""
    KINDS[kind.name] = kind
    return kind


@dataclass(frozen=True)
class Reduction:
    """What one run computes: the partial kinds, and their options.

    Attributes
    ----------
    kinds : tuple of str
        Names of registered :class:`Partial` kinds; ``"moments"`` is always first.
    ignore_nan : bool
        Leave NaNs out of the statistics.
    order : int
        Highest central moment: 2 (mean, variance) or 4 (also skewness, kurtosis).
    options : dict
        Options of other kinds, by name.
    """

    kinds: tuple = ("moments",)
    ignore_nan: bool = False
    order: int = 2
    options: dict = field(default_factory=dict, compare=False, hash=False)

    def classes(self) -> list:
        """The registered classes of `kinds`."""
        return [KINDS[name] for name in self.kinds]

    def empty(self, shape: Sequence[int]) -> Partials:
        """The partials of no data."""
        return Partials({kind.name: kind.empty(tuple(shape), self) for kind in self.classes()})

    def from_block(self, block: np.ndarray | LazyBlock, reduce_axes: Sequence[int]) -> Partials:
        """The partials of one block (an ndarray or LazyBlock), keepdims-shaped.

        Every kind computes from the same bytes: a block of a file that several kinds use
        is read once, whole, before the first of them (each would read it for itself).
        """
        reduce_axes = tuple(reduce_axes)
        classes = self.classes()
        if len(classes) > 1 and isinstance(block, LazyBlock):
            block = block.array()
        return Partials({kind.name: kind.from_block(block, reduce_axes, self)
                         for kind in classes})


@dataclass
class Partials:
    """The partials of one part of the data, by kind name, merged member by member."""

    members: dict

    @overload
    def __getitem__(self, index: str) -> Partial: ...

    @overload
    def __getitem__(self, index: Index) -> Partials: ...

    def __getitem__(self, index: str | Index) -> Partial | Partials:
        if isinstance(index, str):
            return self.members[index]
        return Partials({name: part[index] for name, part in self.members.items()})

    def __setitem__(self, index: Index, other: Partials) -> None:
        for name, part in self.members.items():
            part[index] = other.members[name]

    @property
    def shape(self) -> tuple:
        """The channel shape."""
        return next(iter(self.members.values())).shape

    @property
    def moments(self):
        """The moments partial."""
        return self.members["moments"]

    def allocate(self, shape: Sequence[int]) -> Partials:
        """Partials of the same kinds over channel `shape`, uninitialized."""
        return Partials({name: part.allocate(shape) for name, part in self.members.items()})

    def empty_like(self, shape: Sequence[int], reduction: Reduction) -> Partials:
        """The partials of no data over channel `shape`, of these ones' array dtypes."""
        return Partials({name: part.empty_like(shape, reduction)
                         for name, part in self.members.items()})

    def merge(self, other: Partials) -> Partials:
        """Merge member by member."""
        return Partials({name: part.merge(other.members[name])
                         for name, part in self.members.items()})

    def merge_at(self, region: tuple, other: Partials) -> None:
        """Merge `other` into the channels ``self[region]``, in place."""
        self[region] = self[region].merge(other)

    def reshape(self, shape: Sequence[int]) -> Partials:
        """Reshape the channel part of every member."""
        return Partials({name: part.reshape(shape) for name, part in self.members.items()})

    def transpose(self, axes: Sequence[int]) -> Partials:
        """Transpose the channel axes of every member."""
        return Partials({name: part.transpose(axes) for name, part in self.members.items()})

    def finalize(self, ddof: int = 0) -> dict:
        """The statistics of every member, in one dict."""
        values: dict = {}
        for part in self.members.values():
            values.update(part.finalize(ddof))
        return values


# ---------------------------------------------------------------------------- merge tree
Box = tuple  # ((start, stop), ...) per channel axis, keepdims-shaped


def region_box(region: tuple) -> Box:
    """The box of a region of slices with explicit bounds."""
    return tuple((part.start, part.stop) for part in region)


def _box_union(left: Box, right: Box) -> Box:
    return tuple((min(a[0], b[0]), max(a[1], b[1])) for a, b in zip(left, right))


def _inside(box: Box, outer: Box) -> tuple:
    return tuple(slice(inner[0] - around[0], inner[1] - around[0])
                 for inner, around in zip(box, outer))


def _overlap(left: Box, right: Box) -> bool:
    return all(a[0] < b[1] and b[0] < a[1] for a, b in zip(left, right))


def _box_shape(box: Box) -> tuple:
    return tuple(stop - start for start, stop in box)


class Node:
    """Partials over boxes of channels: a leaf of the merge tree, or a merged subtree.

    A node is a list of pieces, ``(box, partials)`` with disjoint boxes. Two nodes whose
    bounding boxes do not meet merge by putting their pieces side by side, which copies
    nothing (a merge with an empty side is exact, so this is the same as merging); nodes
    that meet are merged over the union of their boxes, touching no other channel.

    Parameters
    ----------
    box : tuple of (start, stop)
        The channels of `part`, keepdims-shaped.
    part : Partials
    reduction : Reduction
        Makes the empty partials that pieces are merged into.
    """

    def __init__(self, box: Box, part: Partials, reduction: Reduction):
        self.pieces = [(box, part)]
        self.bounds = box
        self.reduction = reduction

    @classmethod
    def _of(cls, pieces: list, bounds: Box, reduction: Reduction) -> Node:
        node = cls.__new__(cls)
        node.pieces, node.bounds, node.reduction = pieces, bounds, reduction
        return node

    def merge(self, other: Node) -> Node:
        """The node of both."""
        bounds = _box_union(self.bounds, other.bounds)
        if not _overlap(self.bounds, other.bounds):
            return Node._of(self.pieces + other.pieces, bounds, self.reduction)
        if len(self.pieces) == len(other.pieces) == 1 and self.bounds == other.bounds:
            return Node(bounds, self.pieces[0][1].merge(other.pieces[0][1]), self.reduction)
        merged = self._materialize(bounds)
        for box, part in other.pieces:
            merged.merge_at(_inside(box, bounds), part)
        return Node(bounds, merged, self.reduction)

    def _materialize(self, bounds: Box) -> Partials:
        if len(self.pieces) == 1 and self.pieces[0][0] == bounds:
            return self.pieces[0][1]
        covered = sum(math.prod(_box_shape(box)) for box, _ in self.pieces)
        if covered == math.prod(_box_shape(bounds)):  # disjoint pieces fill the bounds
            merged = self.pieces[0][1].allocate(_box_shape(bounds))
        else:
            merged = self.pieces[0][1].empty_like(_box_shape(bounds), self.reduction)
        for box, part in self.pieces:
            merged[_inside(box, bounds)] = part  # a merge with an empty side: exact
        return merged

    def spread(self, shape: Sequence[int]) -> Partials:
        """The partials over the whole channel `shape`, empty outside the boxes."""
        return self._materialize(tuple((0, dim) for dim in shape))


class TreeAccumulator:
    """Merges a stream of block nodes as one fixed balanced binary tree, in O(log n) memory.

    Blocks are leaves in file order; two subtrees of the same size are merged as soon as
    both exist (a binary counter), and what is left is merged from the right at the end.
    That is the tree of :func:`pairwise_levels` (neighbours paired level by level, an odd
    last one carried up), so a cluster that merges level by level gets the same bits.

    Parameters
    ----------
    shape : tuple of int
        Keepdims shape of the whole result.
    reduction : Reduction
    """

    def __init__(self, shape: tuple, reduction: Reduction):
        self.shape = tuple(shape)
        self.reduction = reduction
        self._stack: list = []  # (leaves, node), leaf counts strictly decreasing

    def add(self, node: Node) -> None:
        """Add the node of the next block."""
        self._stack.append((1, node))
        while len(self._stack) > 1 and self._stack[-1][0] == self._stack[-2][0]:
            (size, right), (_, left) = self._stack.pop(), self._stack.pop()
            self._stack.append((2 * size, left.merge(right)))

    def result(self) -> Partials:
        """The partials of every block added, over the whole channel shape."""
        if not self._stack:
            return self.reduction.empty(self.shape)
        merged = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            merged = left.merge(merged)
        return merged.spread(self.shape)


def pairwise_levels(items: list[_T], merge: Callable[[_T, _T], _T]) -> _T:
    """Merge neighbours level by level (an odd last item carried up) into one."""
    while len(items) > 1:
        items = [merge(items[index], items[index + 1]) if index + 1 < len(items)
                 else items[index] for index in range(0, len(items), 2)]
    return items[0]


def tree_merge(stack: _P) -> _P:
    """Merge a partial stacked along axis 0 pairwise, as a balanced tree, into one row."""
    while stack.shape[0] > 1:
        pairs = stack.shape[0] // 2
        merged = stack[0:2 * pairs:2].merge(stack[1:2 * pairs:2])
        if stack.shape[0] % 2:
            merged = merged.concatenate(stack[-1:])
        stack = merged
    return stack[0]

