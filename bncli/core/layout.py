"""Axes to reduce, channel shapes, and the cutting of an array into blocks.

Everything here works on *storage order*: the shape of an array as its bytes lie on disk, C
order. A Fortran-order array of shape ``(a, b, c)`` is handled as the C-order array of shape
``(c, b, a)`` with its axes renumbered; :func:`storage_axes` does that renumbering.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bncli.errors import UsageError

Region = tuple  # one slice per axis

# Input bytes per block: with a block being read and one being reduced on each core, the
# working set stays under 100 MiB, while blocks stay large enough that per-block costs vanish.
DEFAULT_CHUNK_BYTES = 16 * 2**20


def format_shape(shape: Sequence[int]) -> str:
    """Return a shape as ``4096x32x32x64`` (``scalar`` for a 0-d shape)."""
    return "x".join(str(dim) for dim in shape) if len(shape) else "scalar"


def format_bytes(count: float) -> str:
    """Return a size in binary units, as ``21.8 TiB`` (``512 bytes`` below a KiB)."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024:
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count:,.1f} EiB"


# Layout shorthands: the rank they describe and their channel axis.
LAYOUTS = {"nc": (2, 1), "nwc": (3, 2), "ncw": (3, 1), "nhwc": (4, 3), "nchw": (4, 1),
           "ndhwc": (5, 4), "ncdhw": (5, 1)}


def layout_channel_axis(layout: str, shape: Sequence[int], name: str = "input") -> int:
    """The channel axis of a layout shorthand (``nhwc``, ``nchw``, ...), checked against the
    input's rank."""
    key = str(layout).lower()
    if key not in LAYOUTS:
        raise UsageError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    rank, axis = LAYOUTS[key]
    if len(shape) != rank:
        raise UsageError(f"layout {key} is {rank}-D, but {name} has shape "
                         f"{format_shape(shape)} ({len(shape)} axes)")
    return axis


def channels_first_suspect(shape: Sequence[int]) -> str | None:
    """The channels-first layout (``nchw``, ``ncdhw``) that `shape` looks like, or None.

    Channels-first data reduced with the default axes (every axis but the last) gives the
    last spatial axis as channels. Its telltale is a last axis equal to the one before it
    (square images and feature maps) and different from axis 1.
    """
    if len(shape) in (4, 5) and shape[-1] == shape[-2] and shape[1] != shape[-1]:
        return "nchw" if len(shape) == 4 else "ncdhw"
    return None


@dataclass(frozen=True)
class AxesSpec:
    """The axes a reduction takes, as given once for every input: `axes`, or every axis
    but `channel_axis`, or every axis but a layout's channel axis; none of them, every axis
    but the last (see :func:`resolve_axes`). Each input's shape resolves it
    (:meth:`resolve`), where an error can name the input.
    """

    axes: tuple[int, ...] | None = None
    channel_axis: int | None = None
    layout: str | None = None

    @property
    def given(self) -> bool:
        """Whether any of the three is given."""
        return any(option is not None for option in (self.axes, self.channel_axis, self.layout))

    def resolve(self, shape: Sequence[int], name: str = "input") -> tuple[int, ...]:
        """The non-negative, sorted axes of `shape` reduced."""
        return resolve_axes(shape, self.axes, self.channel_axis, name, self.layout)


def resolve_axes(
    shape: Sequence[int],
    axes: Sequence[int] | None = None,
    channel_axis: int | None = None,
    name: str = "input",
    layout: str | None = None,
) -> tuple:
    """Return the sorted, non-negative axes to reduce over.

    Parameters
    ----------
    shape : sequence of int
        Shape of the input.
    axes : sequence of int, optional
        Axes to reduce, as in ``tf.nn.moments``; negative values count from the end.
    channel_axis : int, optional
        Reduce every axis but this one. Exclusive with `axes`.
    name : str
        Input name for error messages.
    layout : str, optional
        A shorthand of :data:`LAYOUTS` (``nhwc``, ``nchw``, ...): its channel axis, for an
        input of its rank. Exclusive with `axes` and `channel_axis`.

    Returns
    -------
    tuple of int
        Default (none given): every axis but the last; axis 0 of a 1-D input (one channel,
        as ``tf.nn.moments(x, [0])``).
    """
    ndim = len(shape)
    described = f"{name} has shape {format_shape(shape)} ({ndim} axes)"
    if sum(option is not None for option in (axes, channel_axis, layout)) > 1:
        raise UsageError("give one of axes, a channel axis and a layout")
    if layout is not None:
        channel_axis = layout_channel_axis(layout, shape, name)
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise UsageError(f"channel axis {channel_axis} is out of range: {described}")
        channel_axis %= ndim
        return tuple(axis for axis in range(ndim) if axis != channel_axis)
    if axes is None:
        return (0,) if ndim == 1 else tuple(range(ndim - 1))
    resolved = []
    for axis in axes:
        if not -ndim <= axis < ndim:
            raise UsageError(f"axis {axis} is out of range: {described}")
        if axis % ndim in resolved:
            raise UsageError(f"axis {axis} is given twice in the axes: {described}")
        resolved.append(axis % ndim)
    return tuple(sorted(resolved))


def channel_shape(shape: Sequence[int], reduce_axes: Sequence[int]) -> tuple:
    """Return the shape of the axes that are not reduced."""
    return tuple(dim for axis, dim in enumerate(shape) if axis not in reduce_axes)


def keepdims_shape(shape: Sequence[int], reduce_axes: Sequence[int]) -> tuple:
    """Return `shape` with the reduced axes set to 1."""
    return tuple(1 if axis in reduce_axes else dim for axis, dim in enumerate(shape))


def storage_axes(ndim: int, reduce_axes: Sequence[int], fortran_order: bool) -> tuple:
    """Renumber reduce axes into storage order (reversed for Fortran order)."""
    if not fortran_order:
        return tuple(reduce_axes)
    return tuple(sorted(ndim - 1 - axis for axis in reduce_axes))


def channel_region(region: Region, reduce_axes: Sequence[int]) -> Region:
    """Return the part of the keepdims-shaped statistics that a block of data touches."""
    return tuple(
        slice(0, 1) if axis in reduce_axes else part for axis, part in enumerate(region)
    )


def region_shape(region: Region) -> tuple:
    """Return the shape of a region of slices with explicit bounds."""
    return tuple(part.stop - part.start for part in region)


def region_start(region: Region, shape: Sequence[int]) -> int:
    """Return the C-order flat index, in an array of `shape`, of a region's first element.

    A block from :func:`plan_blocks` is one run of elements from there, so this times the
    itemsize is its byte offset in the data of a ``.npy`` file.
    """
    index = 0
    for part, dim in zip(region, shape):
        index = index * dim + part.start
    return index


def indices(dims: Sequence[int]) -> Iterator[tuple]:
    """Every index of an array of shape `dims`, in C order, made one at a time
    (``itertools.product`` of ranges would first hold every range whole: a 40-million-row
    chunk made a 1.6 GB tuple)."""
    if any(dim <= 0 for dim in dims):
        return
    index = [0] * len(dims)
    while True:
        yield tuple(index)
        for axis in reversed(range(len(dims))):
            index[axis] += 1
            if index[axis] < dims[axis]:
                break
            index[axis] = 0
        else:
            return


def plan_blocks(
    shape: Sequence[int],
    itemsize: int,
    budget_bytes: int,
    align: Sequence[int] | None = None,
) -> Iterator[Region]:
    """Cut a C-order array into consecutive blocks of at most `budget_bytes`.

    A block is ``x[i0, ..., i(k-1), a:b, :, ..., :]``: fixed indices on the leading axes, a
    range on axis ``k`` and whole trailing axes, so each block is one contiguous run of bytes
    and blocks come in file order. ``k`` is the outermost axis whose rows fit the budget.

    Parameters
    ----------
    shape : sequence of int
        Storage-order shape.
    itemsize : int
        Bytes per element.
    budget_bytes : int
        Largest block in bytes (at least one element is always taken).
    align : sequence of int, optional
        Preferred block extent per axis (an HDF5 chunk shape); ranges start on multiples of
        it where that fits the budget, so each stored chunk is read once.

    Yields
    ------
    tuple of slice
        One slice per axis, with explicit start and stop (full rank; fixed indices are
        slices of length 1).
    """
    ndim = len(shape)
    if ndim == 0:
        yield ()
        return
    budget_items = max(1, budget_bytes // itemsize)
    depth, aligned = ndim - 1, align is not None
    for axis in range(ndim):
        rows = min(align[axis], shape[axis]) if align is not None else 1
        if math.prod(shape[axis + 1:]) * max(rows, 1) <= budget_items:
            depth = axis
            break
        if math.prod(shape[axis + 1:]) <= budget_items:
            # a chunk larger than the budget: ranges of this axis, across its chunks, rather
            # than one block per index of it (a 40-million-row chunk made 40 million blocks)
            depth, aligned = axis, False
            break
    row_items = math.prod(shape[depth + 1:])
    step = max(1, budget_items // max(row_items, 1))
    if aligned and align is not None and align[depth] > 1:
        step = max(align[depth], step - step % align[depth])
    step = min(step, max(shape[depth], 1))
    for prefix in indices(shape[:depth]):
        for start in range(0, shape[depth], step):
            stop = min(start + step, shape[depth])
            yield (
                tuple(slice(index, index + 1) for index in prefix)
                + (slice(start, stop),)
                + tuple(slice(0, dim) for dim in shape[depth + 1:])
            )


def collapse_axes(shape: Sequence[int], reduce_axes: Sequence[int]) -> tuple | None:
    """Return ``(A, K, B)`` when an array is reduced-outer x kept x reduced-inner, else None.

    Adjacent axes of the same kind merge into one (free for a C-contiguous array) and axes
    of size 1 are dropped, which turns NHWC over (0, 1, 2) into ``(N*H*W, C, 1)``, NCHW
    over (0, 2, 3) into ``(N, C, H*W)`` and per-sample reductions into ``(1, N, H*W*C)``.
    Any other pattern (kept axes on both sides of a reduced one) gives None.
    """
    groups: list = []
    for axis, dim in enumerate(shape):
        if dim == 1:
            continue
        reduced = axis in reduce_axes
        if groups and groups[-1][0] == reduced:
            groups[-1][1] *= dim
        else:
            groups.append([reduced, dim])
    kinds = tuple(reduced for reduced, _ in groups)
    sizes = [dim for _, dim in groups]
    patterns = {
        (): (1, 1, 1),
        (True,): (sizes[0], 1, 1) if sizes else None,
        (False,): (1, sizes[0], 1) if sizes else None,
        (True, False): (sizes[0], sizes[1], 1) if len(sizes) == 2 else None,
        (False, True): (1, sizes[0], sizes[1]) if len(sizes) == 2 else None,
        (True, False, True): tuple(sizes) if len(sizes) == 3 else None,
    }
    return patterns.get(kinds)


# Channels-last data is processed as rows of about this many values: several rows are laid
# side by side so that NumPy's inner loops run long instead of over a few channels.
FOLD_WIDTH = 1024


def fold_factor(channels: int) -> int:
    """Rows of `channels` values laid side by side to make one row of ~FOLD_WIDTH."""
    return max(1, FOLD_WIDTH // max(channels, 1))


# A block should give each of its channels at least this many values: fewer, and the
# per-channel partials (several arrays of float64 per channel) cost more than the data.
MIN_VALUES_PER_CHANNEL = 256


def is_contiguous(region: Region, shape: Sequence[int]) -> bool:
    """Whether a region is one run of elements of a C-order array of `shape`: after the
    first axis with a range longer than 1, every axis is whole."""
    ranged = False
    for part, dim in zip(region, shape):
        length = part.stop - part.start
        if ranged and length != dim:
            return False
        ranged = ranged or length > 1
    return True


def _values_per_channel(region: Region, reduce_axes: Sequence[int]) -> int:
    return math.prod(part.stop - part.start for axis, part in enumerate(region)
                     if axis in reduce_axes)


def plan_regions(shape: Sequence[int], itemsize: int, budget_bytes: int,
                 reduce_axes: Sequence[int] | None = None,
                 align: Sequence[int] | None = None) -> Iterator[Region]:
    """Cut an array into blocks for a reduction over `reduce_axes`.

    Mostly the contiguous blocks of :func:`plan_blocks`. But where those would give each
    channel fewer than ``MIN_VALUES_PER_CHANNEL`` values (many channels and few values of
    each per contiguous run: a ``(16, 4M)`` array reduced over axis 0), the array is cut
    into *tiles* instead: a range of the leading reduced axes times a range of channels,
    read as several runs, so that each channel gets many values from few blocks and the
    cost of the partials follows the data, not blocks x channels.

    Parameters
    ----------
    shape : sequence of int
        Storage-order shape.
    itemsize : int
    budget_bytes : int
    reduce_axes : sequence of int, optional
        Storage-order axes reduced; without them, :func:`plan_blocks`.
    align : sequence of int, optional
        Preferred block extent per axis (an HDF5 chunk shape).

    Yields
    ------
    tuple of slice
    """
    if reduce_axes is None or not len(shape):
        yield from plan_blocks(shape, itemsize, budget_bytes, align)
        return
    reduce_axes = tuple(reduce_axes)
    kept = [axis for axis in range(len(shape)) if axis not in reduce_axes]
    first = next(plan_blocks(shape, itemsize, budget_bytes, align))
    if not kept or kept[0] == 0 or _values_per_channel(first, reduce_axes) >= min(
            MIN_VALUES_PER_CHANNEL, _values_per_channel(
                tuple(slice(0, dim) for dim in shape), reduce_axes)):
        yield from plan_blocks(shape, itemsize, budget_bytes, align)
        return
    lead_axes = kept[0]  # the leading axes, all reduced
    lead = math.prod(shape[:lead_axes])
    budget_items = max(1, budget_bytes // itemsize)
    rows = min(lead, MIN_VALUES_PER_CHANNEL)
    # the axis whose range a tile takes: the outermost from the first kept one on whose
    # trailing runs `rows` leading rows fit the budget
    for split in range(lead_axes, len(shape)):
        tail = math.prod(shape[split + 1:])
        if rows * tail <= budget_items:
            break
    else:
        yield from plan_blocks(shape, itemsize, budget_bytes, align)
        return
    extent = max(1, min(shape[split], budget_items // (rows * tail)))
    if align is not None and align[split] > 1 and extent >= align[split]:
        extent -= extent % align[split]
    run_items = extent * tail
    for lead_region in plan_blocks(shape[:lead_axes], run_items * itemsize, budget_bytes,
                                   None if align is None else align[:lead_axes]):
        for middle in indices(shape[lead_axes:split]):
            for start in range(0, shape[split], extent):
                yield (lead_region
                       + tuple(slice(index, index + 1) for index in middle)
                       + (slice(start, min(start + extent, shape[split])),)
                       + tuple(slice(0, dim) for dim in shape[split + 1:]))
