"""The streaming passes: sources -> blocks -> moments, and sources -> blocks -> writer.

Worker threads reduce or normalize blocks (NumPy releases the GIL). From a file, each worker
reads its own blocks and writes its own output blocks at their offsets in a ``.npy`` file;
from a stream or an HDF5 dataset, the calling thread reads the blocks in order while the
workers compute on the ones before, and a stream output is written in order. Partial results
are merged in file order as a fixed tree, so the numbers do not depend on the thread count.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bncli.core.buffers import BufferRing, LazyBlock
from bncli.core.layout import (
    DEFAULT_CHUNK_BYTES,
    AxesSpec,
    channel_region,
    channel_shape,
    format_shape,
    is_contiguous,
    keepdims_shape,
    region_shape,
    storage_axes,
)
from bncli.core.normalize import Coefficients, normalize_block
from bncli.core.partials import Node, Partials, Reduction, TreeAccumulator, region_box
from bncli.core.statistics import Statistics
from bncli.errors import InputError, UsageError
from bncli.io import interrupts
from bncli.io.sinks import NpyFileWriter
from bncli.io.source import OpenOptions, Source

if TYPE_CHECKING:
    from bncli.io.sinks import Hdf5Writer, NpyWriter, ZarrWriter

ProgressCallback = Callable[[int], None] | None


@dataclass(frozen=True)
class EngineOptions:
    """How a command reads and computes, the same for each of its passes; checked once.

    Attributes
    ----------
    chunk_bytes : int
        Input bytes per block.
    threads : int
        Worker threads.
    allow_external, allow_sparse : bool
        As :class:`~bncli.io.source.OpenOptions`.
    scheduler : str or None
        A dask scheduler's address (or ``local``) to compute on, else this process.
    """

    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    threads: int = 1
    allow_external: bool = False
    allow_sparse: bool = False
    scheduler: str | None = None

    @classmethod
    def checked(cls, chunk_bytes: int, threads: int | None, *, allow_external: bool = False,
                allow_sparse: bool = False, scheduler: str | None = None) -> EngineOptions:
        """The options (threads None or 0: every core this process may use), or UsageError."""
        if not isinstance(chunk_bytes, (int, np.integer)) or chunk_bytes < 1:
            raise UsageError(f"the chunk size must be a positive number of bytes, not "
                             f"{chunk_bytes!r}")
        return cls(int(chunk_bytes), threads or default_threads(), allow_external,
                   allow_sparse, scheduler)

    def open_options(self, require_data: bool = True) -> OpenOptions:
        """How the inputs are opened: an HDF5 chunk cache that holds two blocks."""
        return OpenOptions(allow_external=self.allow_external, allow_sparse=self.allow_sparse,
                           chunk_cache_bytes=2 * self.chunk_bytes, require_data=require_data)


def default_threads() -> int:
    """Worker threads: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_NOTHING = object()


def ordered_map(func: Callable, items: Iterable, threads: int) -> Iterator:
    """Apply `func` to `items` on `threads` threads, yielding results in order.

    At most ``threads + 1`` items are in flight, so memory stays bounded however many
    items there are; the iterator `items` is advanced in the calling thread.
    """
    items = iter(items)
    if threads > 1:  # one item (a small array) is reduced here, without starting threads
        first = next(items, _NOTHING)
        if first is _NOTHING:
            return
        second = next(items, _NOTHING)
        if second is _NOTHING:
            yield func(first)
            return
        items = itertools.chain((first, second), items)
    if threads <= 1:
        for item in items:
            yield func(item)
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bn")
    pending: deque = deque()
    try:
        for item in items:
            with interrupts.quiet_threads():  # a worker it starts never takes a signal
                pending.append(pool.submit(func, item))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


def block_loader(source: Source, budget_bytes: int, threads: int,
                 reduce_axes: tuple | None = None) -> Iterator[tuple]:
    """Yield ``(region, fetch)`` as :meth:`Source.regions` cuts; ``fetch()`` returns the block.

    ``fetch`` is called on a worker thread. A file that can be read at any offset is read
    there: the block is a :class:`~bncli.core.buffers.LazyBlock` that the worker reads piece by
    piece as it computes, into buffers of its own, so that reading is spread over the
    cores and each piece is still in cache when it is used. A stream (or an HDF5 dataset,
    whose library reads one block at a time anyway) is read in order here, in the calling
    thread, while the workers compute on the blocks before it.
    """
    if source.random_access:
        local = threading.local()

        def fetch(region):
            if not hasattr(local, "buffers"):
                local.buffers, local.pieces = BufferRing(1), BufferRing(1)
            block = local.buffers.array(region_shape(region), source.dtype)
            if not is_contiguous(region, source.storage_shape) or not source.read_ranges:
                return source.read(region, block)  # a tile, or a source read whole
            span = source.file_span(region)
            return LazyBlock(block, functools.partial(source.read_part, region), local.pieces,
                             span=span and (*span, source.name))

        for region in source.regions(budget_bytes, reduce_axes):
            yield region, functools.partial(fetch, region)
        return
    # At most `threads` blocks are being worked on while the next one is read.
    for region, block in source.blocks(budget_bytes, BufferRing(threads + 2), reduce_axes):
        yield region, functools.partial(_identity, block)


def _identity(value):
    return value


def check_reducible(source: Source, verb: str = "reduce") -> None:
    """Refuse 0-d inputs and inputs without elements."""
    if len(source.shape) == 0:
        raise InputError(f"{source.name}: is a 0-d array (a scalar); there is no axis to reduce")
    if 0 in source.shape:
        raise InputError(
            f"{source.name}: has shape {format_shape(source.shape)} and no elements to "
            f"{verb}"
        )


def source_partials(source: Source, reduce_axes: Sequence[int], reduction: Reduction, *,
                    chunk_bytes: int = DEFAULT_CHUNK_BYTES, threads: int = 1,
                    progress: ProgressCallback = None) -> Partials:
    """Stream one source and return its partials, keepdims-shaped in logical axis order.

    Parameters
    ----------
    source : Source
    reduce_axes : sequence of int
        Non-negative logical axes.
    reduction : Reduction
        What to compute.
    chunk_bytes : int
        Input bytes per block.
    threads : int
    progress : callable, optional
        Called with the bytes of each block done.

    Returns
    -------
    Partials
        Arrays of shape ``keepdims_shape(source.shape, reduce_axes)``.
    """
    ndim = len(source.shape)
    axes = storage_axes(ndim, reduce_axes, source.fortran_order)
    tree = TreeAccumulator(keepdims_shape(source.storage_shape, axes), reduction)

    def reduce_block(item):
        region, fetch = item
        return region, Node(region_box(channel_region(region, axes)),
                            reduction.from_block(fetch(), axes), reduction)

    blocks = block_loader(source, chunk_bytes, threads, axes)
    for region, node in ordered_map(reduce_block, blocks, threads):
        tree.add(node)
        interrupts.checkpoint()
        if progress is not None:
            progress(int(np.prod(region_shape(region))) * source.dtype.itemsize)
    result = tree.result()
    if source.fortran_order:
        result = result.transpose(tuple(reversed(range(ndim))))
    return result


# The entry of both engines (a cluster passes its own partials_of): its keyword arguments
# are the statistics' options, more than ten.
def compute_statistics(sources: Sequence[Source], *, axes: AxesSpec | None = None,
                       ddof: int = 0, reduction: Reduction | None = None,
                       keepdims: bool = False,
                       chunk_bytes: int = DEFAULT_CHUNK_BYTES, threads: int = 1,
                       progress: ProgressCallback = None,
                       partials_of: Callable | None = None) -> Statistics:
    """Compute the statistics of several sources taken as one dataset.

    Every shape is checked (axes, channel shapes, ddof) before any data is read.

    Parameters
    ----------
    sources : sequence of Source
        Same rank and channel shape.
    axes : AxesSpec, optional
        Resolved against each source's shape (default: every axis but the last).
    ddof : int
    reduction : Reduction, optional
        What to compute (default: the moments to order 2).
    keepdims : bool
    chunk_bytes, threads, progress :
        As :func:`source_partials`.
    partials_of : callable, optional
        Computes one source's partials, with the signature of :func:`source_partials`
        (the default); :mod:`bncli.exec.cluster` passes one that uses a cluster.

    Returns
    -------
    Statistics
    """
    if not sources:
        raise UsageError("no input to compute statistics of")
    partials_of = partials_of or source_partials
    reduction = reduction or Reduction()
    plans: list[tuple[Source, tuple, tuple]] = []
    for source in sources:
        reduce_axes = (axes or AxesSpec()).resolve(source.shape, source.name)
        check_reducible(source)
        channels = channel_shape(source.shape, reduce_axes)
        if plans and (channels, reduce_axes) != plans[0][1:]:
            first, first_channels, first_axes = plans[0]
            raise InputError(
                f"{source.name}: shape {format_shape(source.shape)} gives channel shape "
                f"{format_shape(channels)} over axes {list(reduce_axes)}, but "
                f"{first.name} gives {format_shape(first_channels)} over axes "
                f"{list(first_axes)}"
            )
        plans.append((source, channels, reduce_axes))
    check_ddof(ddof, sum(math.prod(source.shape) // max(math.prod(channels), 1)
                         for source, channels, _ in plans),
               reduction.ignore_nan, ", ".join(source.name for source in sources))
    statistics: Statistics | None = None
    for source, channels, reduce_axes in plans:
        partials = partials_of(source, reduce_axes, reduction, chunk_bytes=chunk_bytes,
                               threads=threads, progress=progress)
        part = Statistics(inputs=[source.describe()], axes=reduce_axes, channel_shape=channels,
                          partials=partials.reshape(channels), ddof=ddof, keepdims=keepdims,
                          ignore_nan=reduction.ignore_nan, order=reduction.order)
        statistics = part if statistics is None else statistics.merge(part, source.name)
    assert statistics is not None  # set by the loop: there is at least one source
    return statistics


def check_ddof(ddof: int, count: int, ignore_nan: bool, name: str) -> None:
    """Refuse a `ddof` that leaves no degree of freedom, where the shape fixes the count.

    With `ignore_nan` the count of a channel is known only after reading it; a channel with
    ``count <= ddof`` then gets a NaN variance and the ``few_values`` finding.
    """
    if ddof < 0:
        raise UsageError(f"ddof {ddof} is negative")
    if not ignore_nan and ddof >= count:
        raise UsageError(f"ddof {ddof} must be less than the {count} values per channel of "
                         f"{name}: the variance would be undefined")


def normalize_source(source: Source, writer: NpyWriter | Hdf5Writer | ZarrWriter,
                     coefficients: Coefficients, out_dtype: np.dtype,
                     *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, threads: int = 1,
                     progress: ProgressCallback = None) -> None:
    """Stream one source through the normalization into a writer.

    Parameters
    ----------
    source : Source
    writer : NpyWriter or Hdf5Writer
        Receives ``(region, block)`` in storage order.
    coefficients : Coefficients
        Keepdims-shaped in logical axis order.
    out_dtype : numpy.dtype
    chunk_bytes, threads, progress :
        As :func:`source_moments`; a block is sized by the wider of input and output.
    """
    coefficients = storage_coefficients(source, coefficients)
    budget = normalize_budget(source, out_dtype, chunk_bytes)

    positional = writer.random_access  # each block written at its place by its worker
    local = threading.local()

    def normalize(item):
        region, fetch, out = item
        if out is None:  # written here, from this worker's own buffer
            if not hasattr(local, "buffers"):
                local.buffers = BufferRing(1)
            out = local.buffers.array(region_shape(region), out_dtype)
        if positional:  # each piece written as soon as it is made, still in cache
            assert isinstance(writer, NpyFileWriter)  # the one writer with random_access
            normalize_block(fetch(), coefficients_for(coefficients, region), out,
                            done=functools.partial(writer.write_part, region, out))
            return region, None
        normalize_block(fetch(), coefficients_for(coefficients, region), out)
        return region, out

    # Blocks are written by the workers at their places in a file; to a stream, in order
    # by this thread, from output buffers taken here so that the ring stays in step.
    outputs = BufferRing(threads + 2)
    work = ((region, fetch, None if positional else outputs.array(region_shape(region),
                                                                  out_dtype))
            for region, fetch in block_loader(source, budget, threads))
    for region, out in ordered_map(normalize, work, threads):
        if out is not None:
            writer.write(region, out)
        interrupts.checkpoint()  # a Ctrl-C stops between blocks
        if progress is not None:
            progress(int(np.prod(region_shape(region))) * source.dtype.itemsize)
    writer.finish()
    interrupts.checkpoint()


def storage_coefficients(source: Source, coefficients: Coefficients) -> Coefficients:
    """Coefficients in logical axis order, turned into the source's storage order."""
    if not source.fortran_order:
        return coefficients
    order = tuple(reversed(range(len(source.shape))))
    return Coefficients(*(np.ascontiguousarray(array.transpose(order)) for array in
                          (coefficients.mean, coefficients.factor, coefficients.offset)))


def coefficients_for(coefficients: Coefficients, region: tuple) -> Coefficients:
    """The coefficients of the channels one block (a storage-order region) touches."""
    reduced = coefficients.mean.shape
    return coefficients[tuple(slice(0, 1) if reduced[axis] == 1 else part
                              for axis, part in enumerate(region))]


def normalize_budget(source: Source, out_dtype: np.dtype, chunk_bytes: int) -> int:
    """Input bytes per block, so that neither input nor output block exceeds `chunk_bytes`."""
    widest = max(source.dtype.itemsize, out_dtype.itemsize)
    return max(1, chunk_bytes * source.dtype.itemsize // widest)
