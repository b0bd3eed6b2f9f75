"""The passes on a dask.distributed cluster (the optional extra ``bncli[dask]``).

Workers open the input files themselves (so every path must be on a filesystem all of them
share), compute the partials of one block each with the same :class:`Reduction` as the
local engine, and the partials are combined with the same associative merge of tree
nodes (:class:`bncli.core.partials.Node`), as a tree of tasks on the cluster. For ``normalize``
to a ``.npy`` file each worker writes its blocks at their offsets in the temporary output
beside the target, which is renamed into place once every block is written, as on one
machine.

A task is a pure function of its block, so a worker lost in the middle of a run is survived:
the scheduler runs its tasks again elsewhere, and the numbers do not change.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from bncli.core.layout import (
    Region,
    channel_region,
    keepdims_shape,
    region_shape,
    region_start,
    storage_axes,
)
from bncli.core.normalize import Coefficients, normalize_block
from bncli.core.partials import Node, Partials, Reduction, pairwise_levels, region_box
from bncli.errors import BnError, UsageError
from bncli.exec.engine import (
    ProgressCallback,
    coefficients_for,
    normalize_budget,
    source_partials,
    storage_coefficients,
)
from bncli.io.registry import open_source, parse_input
from bncli.io.sinks import as_bytes, pwrite_all
from bncli.io.source import OpenOptions, Source

if TYPE_CHECKING:
    from distributed import Client

# Seconds to wait for a scheduler to answer before giving up with a clear error; the
# environment variable BN_SCHEDULER_TIMEOUT overrides it.
CONNECT_TIMEOUT = 10


def require_dask():
    """Import distributed, or explain how to install it."""
    try:
        import distributed
    except ImportError:
        raise UsageError("running on a cluster needs the dask extra: "
                         "pip install 'bncli[dask]'") from None
    return distributed


@contextmanager
def connect(address: str, *, timeout: float | None = None) -> Iterator[Client]:
    """Yield a ``distributed.Client`` for `address`, or for a new LocalCluster (``local``).

    Parameters
    ----------
    address : str
        ``tcp://host:port`` of a running scheduler, or ``local``.
    timeout : float, optional
        Seconds to wait for the scheduler (default ``BN_SCHEDULER_TIMEOUT`` or 10).
    """
    distributed = require_dask()
    if timeout is None:
        try:
            timeout = float(os.environ.get("BN_SCHEDULER_TIMEOUT", CONNECT_TIMEOUT))
        except ValueError:
            raise UsageError("BN_SCHEDULER_TIMEOUT is not a number of seconds") from None
    logging.getLogger("distributed").setLevel(logging.ERROR)
    cluster = None
    try:
        if address == "local":
            from bncli.exec.engine import default_threads

            cluster = distributed.LocalCluster(
                n_workers=default_threads(), threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR)
            client = distributed.Client(cluster, timeout=timeout)
        else:
            client = distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise BnError(f"{address}: cannot reach the dask scheduler within {timeout:g} s "
                      f"({type(exc).__name__}: {exc})") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# Sources opened by this worker thread, by (spec, allow_external), with the identity of
# the file they opened: a file replaced since (same path, new inode or mtime) is reopened.
# Each task thread of a worker keeps its own, so closing one never pulls a file from under
# a task that another thread is running.
_OPENED = threading.local()
# Open files kept per worker thread; the oldest is closed beyond this.
_MAX_OPENED = 16


def _worker_source(spec: str, allow_external: bool) -> Source:
    stat = os.stat(parse_input(spec).path)
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    key = (spec, allow_external)
    opened = getattr(_OPENED, "sources", None)
    if opened is None:
        opened = _OPENED.sources = {}
    if key in opened and opened[key][0] != identity:
        opened.pop(key)[1].close()
    if key not in opened:
        if len(opened) >= _MAX_OPENED:
            opened.pop(next(iter(opened)))[1].close()
        # sparse datasets were checked (and allowed) where the run began
        opened[key] = (identity, open_source(spec, OpenOptions(
            allow_external=allow_external, allow_sparse=True)))
    return opened[key][1]


def _block_task(spec: str, allow_external: bool, region: Region, axes: tuple[int, ...],
                reduction: Reduction) -> Node:
    """The partials of one block, as a node of the merge tree over the block's channels."""
    source = _worker_source(spec, allow_external)
    return Node(region_box(channel_region(region, axes)),
                reduction.from_block(source.read(region), axes), reduction)


def _merge_task(left: Node, right: Node) -> Node:
    """One node of the combining tree."""
    return left.merge(right)


def shared_spec(source: Source) -> str:
    """The input as workers open it: an absolute path (and dataset)."""
    path = os.path.abspath(source.path)
    return f"{path}:{source.dataset}" if source.dataset else path


class ClusterPartials:
    """A ``partials_of`` for :func:`bncli.exec.engine.compute_statistics` that uses a cluster.

    Parameters
    ----------
    client : distributed.Client
    allow_external : bool
        Passed to the workers' :func:`open_source`.
    """

    def __init__(self, client: Client, *, allow_external: bool = False):
        self.client = client
        self.allow_external = allow_external

    def __call__(self, source: Source, reduce_axes: Sequence[int], reduction: Reduction, *,
                 chunk_bytes: int, threads: int = 1,
                 progress: ProgressCallback = None) -> Partials:
        if not source.is_file:  # a stream stays on this machine
            return source_partials(source, reduce_axes, reduction, chunk_bytes=chunk_bytes,
                                   threads=threads, progress=progress)
        from distributed import as_completed

        ndim = len(source.shape)
        axes = storage_axes(ndim, reduce_axes, source.fortran_order)
        shape = keepdims_shape(source.storage_shape, axes)
        regions = list(source.regions(chunk_bytes, axes))
        spec = shared_spec(source)
        leaves = [self.client.submit(_block_task, spec, self.allow_external, region, axes,
                                     reduction, pure=False, retries=2)
                  for region in regions]
        sizes = {leaf.key: int(np.prod(region_shape(region))) * source.dtype.itemsize
                 for leaf, region in zip(leaves, regions)}
        # the tree of the local engine's TreeAccumulator, node for node: the same bits
        root = pairwise_levels(leaves, lambda left, right: self.client.submit(
            _merge_task, left, right, pure=False, retries=2))
        if progress is not None:
            for done in as_completed(leaves):
                progress(sizes[done.key])
        result = _gather(root, source.name).spread(shape)
        if source.fortran_order:
            result = result.transpose(tuple(reversed(range(ndim))))
        return result


def _gather(future, name):
    try:
        return future.result()
    except BnError:
        raise
    except Exception as exc:  # noqa: BLE001 - a worker's failure, reported in one line
        raise BnError(f"{name}: the cluster failed to compute it "
                      f"({type(exc).__name__}: {exc})") from None


def _normalize_task(spec, allow_external, region, coefficients, out_dtype, target):
    """Normalize one block and write it into the shared output: at its offset in a ``.npy``
    file (``("npy", path, offset)``), or as whole chunks of a zarr array
    (``("zarr", path, fortran_order)``)."""
    source = _worker_source(spec, allow_external)
    block = source.read(region)
    out = normalize_block(block, coefficients, np.empty(block.shape, out_dtype))
    if target[0] == "zarr":
        import zarr

        _, path, fortran_order = target
        array = zarr.open_array(zarr.storage.LocalStore(path), mode="r+")
        if fortran_order:
            region, out = tuple(reversed(region)), out.T
        array[region] = out
        return out.nbytes
    _, path, offset = target
    descriptor = os.open(path, os.O_WRONLY)
    try:
        pwrite_all(descriptor, as_bytes(out), offset)
    finally:
        os.close(descriptor)
    return out.nbytes


def whole_chunks(regions: Iterable[Region], shape: tuple, chunks: tuple) -> bool:
    """Whether every region is made of whole chunks (or reaches the array's end), so that
    workers writing regions at once never write the same chunk."""
    return all(part.start % size == 0 and (part.stop % size == 0 or part.stop == dim)
               for region in regions for part, size, dim in zip(region, chunks, shape))


def cluster_normalize(client: Client, source: Source, target: tuple, coefficients: Coefficients,
                      out_dtype: np.dtype, *, chunk_bytes: int, allow_external: bool = False,
                      progress: ProgressCallback = None) -> None:
    """Normalize a file source on the cluster into a shared output the workers write.

    Parameters
    ----------
    client : distributed.Client
    source : Source
        A file on a shared filesystem.
    target : tuple
        ``("npy", path, data_offset)``: a ``.npy`` file sized to hold every block, its header
        written; or ``("zarr", path, fortran_order)``: a zarr store whose array exists and
        whose chunks the blocks are made of (see :func:`whole_chunks`). On a shared
        filesystem either way.
    coefficients : Coefficients
        Keepdims-shaped in logical axis order.
    out_dtype : numpy.dtype
    chunk_bytes, allow_external, progress :
        As for the local engine.
    """
    from distributed import as_completed

    coefficients = storage_coefficients(source, coefficients)
    spec = shared_spec(source)
    kind, path, detail = target
    path = os.path.abspath(path)
    futures = []
    for region in source.regions(normalize_budget(source, out_dtype, chunk_bytes)):
        place = (kind, path, detail + region_start(region, source.storage_shape)
                 * out_dtype.itemsize) if kind == "npy" else (kind, path, detail)
        futures.append(client.submit(
            _normalize_task, spec, allow_external, region, coefficients_for(coefficients, region),
            out_dtype, place, pure=False, retries=2))
    for done in as_completed(futures):
        written = _gather(done, source.name)
        if progress is not None:
            progress(written * source.dtype.itemsize // out_dtype.itemsize)
