"""The commands as functions: open inputs, run the passes, write outputs atomically.

These are the streaming entry points behind ``bn``; they take plain values, raise
:class:`bncli.errors.BnError` on bad input, and never print. Progress is reported through
an optional ``progress(label, total_bytes)`` factory returning an object with
``advance(nbytes)`` and ``close()``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import statsfile
from .engine import (
    DEFAULT_CHUNK_BYTES,
    check_ddof,
    check_reducible,
    compute_statistics,
    default_threads,
    normalize_source,
    spool_stdin,
)
from .errors import InputError, OutputError, StatsFileError, UsageError
from .layout import channel_shape, format_shape, keepdims_shape, resolve_axes
from .normalize import DEFAULT_EPSILON, Coefficients, output_dtype
from .sinks import (
    AtomicFile,
    Hdf5Writer,
    NpyFileWriter,
    NpyWriter,
    check_target,
    stdout_stream,
)
from .sources import HDF5_SUFFIX, InputSpec, Source, is_hdf5_file, open_source
from .statsfile import Statistics

DEFAULT_OUTPUT_DATASET = "/data"


class _NoProgress:
    def advance(self, nbytes: int) -> None:
        pass

    def close(self) -> None:
        pass


def _no_progress(label: str, total: int) -> _NoProgress:
    return _NoProgress()


@contextlib.contextmanager
def _progress_bar(progress, label: str, total: int):
    bar = (progress or _no_progress)(label, total)
    try:
        yield bar.advance
    finally:
        bar.close()


@contextlib.contextmanager
def open_sources(specs: Sequence[str], *, allow_external: bool = False,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES):
    """Open every input (checking all headers first) and close them all at the end."""
    if sum(1 for spec in specs if spec == "-") > 1:
        raise UsageError("standard input '-' can be given only once")
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_source(spec, allow_external=allow_external,
                                                   chunk_cache_bytes=2 * chunk_bytes))
                   for spec in specs]
        yield sources


def stats(inputs: Sequence[str], *, axes=None, channel_axis=None, ddof: int = 0,
          ignore_nan: bool = False, keepdims: bool = False,
          chunk_bytes: int = DEFAULT_CHUNK_BYTES, threads: int | None = None,
          allow_external: bool = False, progress=None, scheduler: str | None = None
          ) -> Statistics:
    """Compute per-channel statistics of one dataset stored in one or more inputs.

    Parameters
    ----------
    inputs : sequence of str
        ``file.npy``, ``file.h5[:/dataset]`` or ``-``.
    axes : sequence of int, optional
        Axes to reduce (default every axis but the last).
    channel_axis : int, optional
        Reduce every axis but this one.
    ddof : int
    ignore_nan, keepdims : bool
    chunk_bytes : int
        Memory budget of one block.
    threads : int, optional
        Worker threads (default: the available cores).
    allow_external : bool
        Allow HDF5 files to read other files.
    progress : callable, optional
    scheduler : str, optional
        Run on a dask.distributed cluster: ``tcp://host:port``, or ``local``.

    Returns
    -------
    Statistics
    """
    threads = threads or default_threads()
    with open_sources(inputs, allow_external=allow_external, chunk_bytes=chunk_bytes) as sources, \
            _cluster(scheduler, allow_external) as moments_of:
        total = sum(source.nbytes for source in sources)
        with _progress_bar(progress, "stats", total) as advance:
            return compute_statistics(
                sources, axes=axes, channel_axis=channel_axis, ddof=ddof,
                ignore_nan=ignore_nan, keepdims=keepdims, chunk_bytes=chunk_bytes,
                threads=threads, progress=advance, moments_of=moments_of)


@contextlib.contextmanager
def _cluster(scheduler, allow_external: bool):
    """Yield a cluster ``moments_of`` for `scheduler`, or None to compute here."""
    if not scheduler:
        yield None
        return
    from .distributed import ClusterMoments, connect

    with connect(scheduler) as client:
        yield ClusterMoments(client, allow_external=allow_external)


def save_statistics(statistics: Statistics, path: str, *, force: bool = False,
                    inputs: Sequence[str] = ()) -> None:
    """Write a ``.json`` or ``.npz`` statistics file atomically."""
    fmt = statsfile.format_for_path(path)
    check_target(path, force=force, inputs=inputs)
    with AtomicFile(path, force=force) as output, open(output.temp_path, "wb") as stream:
        try:
            statsfile.write(statistics, stream, fmt=fmt)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None


def merge(paths: Sequence[str]) -> Statistics:
    """Combine statistics files of the same channel shape, axes and ddof, exactly."""
    merged = None
    for path in paths:
        part = statsfile.load(path)
        merged = part if merged is None else merged.merge(part, path)
    if merged is None:
        raise UsageError("no statistics files given")
    return merged


def parse_affine(text, channels: tuple, option: str) -> np.ndarray:
    """Parse ``--scale`` / ``--offset``: a number, a comma list per channel, or a ``.npy`` file.

    Parameters
    ----------
    text : str or None
    channels : tuple of int
        The channel shape.
    option : str
        Option name for messages.

    Returns
    -------
    ndarray of float64, of shape `channels` (or a 0-d array for a number)
    """
    if text is None:
        return None
    if text.lower().endswith(".npy"):
        try:
            from .npyformat import check_dtype

            values = np.load(text, allow_pickle=False)
            check_dtype(values.dtype, text)
        except FileNotFoundError:
            raise InputError(f"{text}: no such file (given to {option})") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{text}: cannot read {option} values ({exc})") from None
        if values.size != int(np.prod(channels)) or values.squeeze().shape != tuple(
                dim for dim in channels if dim != 1):
            raise InputError(
                f"{text}: {option} has shape {format_shape(values.shape)}, expected the channel "
                f"shape {format_shape(channels)}")
        return values.astype(np.float64).reshape(channels)
    try:
        values = np.array([float(item) for item in text.split(",")], np.float64)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a number, a comma list or a .npy file") \
            from None
    if values.size == 1 and "," not in text:
        return values.reshape(())
    count = int(np.prod(channels))
    if values.size != count:
        raise UsageError(
            f"{option} has {values.size} values but there are {count} channels "
            f"(channel shape {format_shape(channels)})")
    return values.reshape(channels)


@dataclass
class OutputSpec:
    """Where ``normalize`` writes: a ``.npy`` path, an HDF5 dataset, or stdout (``-``)."""

    path: str
    dataset: str | None = None
    hdf5: bool = False

    @classmethod
    def parse(cls, text: str) -> OutputSpec:
        """Parse ``-``, ``out.npy``, ``out.h5`` or ``out.h5:/dataset``."""
        match = HDF5_SUFFIX.match(text)
        if text != "-" and match:
            return cls(match.group("path"), match.group("dataset") or None, hdf5=True)
        if text != "-" and not text.lower().endswith(".npy"):
            raise UsageError(f"-o {text}: the output must be a .npy file, an HDF5 file "
                             "(out.h5 or out.h5:/dataset), or - for stdout")
        return cls(text)


@dataclass
class NormalizeResult:
    """What :func:`normalize` did.

    Attributes
    ----------
    statistics : Statistics
        The statistics used.
    output : str
    dtype : numpy.dtype
    shape : tuple of int
    """

    statistics: Statistics
    output: str
    dtype: np.dtype
    shape: tuple


def _statistics_for(source: Source, *, stats_path, axes, channel_axis, ddof, ignore_nan,
                    chunk_bytes, threads, progress, moments_of=None) -> Statistics:
    if stats_path is None:
        with _progress_bar(progress, "stats", source.nbytes) as advance:
            return compute_statistics([source], axes=axes, channel_axis=channel_axis, ddof=ddof,
                                      ignore_nan=ignore_nan, chunk_bytes=chunk_bytes,
                                      threads=threads, progress=advance, moments_of=moments_of)
    saved = statsfile.load(stats_path)
    if axes is None and channel_axis is None:
        axes = saved.axes
    reduce_axes = resolve_axes(source.shape, axes, channel_axis, source.name)
    channels = channel_shape(source.shape, reduce_axes)
    if tuple(saved.channel_shape) != channels:
        raise StatsFileError(
            f"{stats_path}: channel shape {format_shape(saved.channel_shape)} does not match "
            f"{source.name}, whose shape {format_shape(source.shape)} over axes "
            f"{list(reduce_axes)} has channel shape {format_shape(channels)}")
    if tuple(saved.axes) != reduce_axes:
        raise StatsFileError(
            f"{stats_path}: computed over axes {list(saved.axes)}, but {source.name} is "
            f"normalized over axes {list(reduce_axes)}")
    return saved


def normalize(input: str, output: str | None, *, axes=None, channel_axis=None,
              epsilon: float = DEFAULT_EPSILON, scale=None, offset=None,
              stats_path: str | None = None, save_stats: str | None = None,
              dtype=None, force: bool = False, ddof: int = 0, ignore_nan: bool = False,
              chunk_bytes: int = DEFAULT_CHUNK_BYTES, threads: int | None = None,
              allow_external: bool = False, progress=None,
              scheduler: str | None = None) -> NormalizeResult:
    """Write a batch-normalized copy of an input.

    Parameters
    ----------
    input : str
        ``file.npy``, ``file.h5[:/dataset]`` or ``-``.
    output : str
        ``out.npy``, ``out.h5[:/dataset]`` or ``-`` (stdout, refused on a terminal).
    axes, channel_axis :
        Axes of the statistics, as for :func:`stats`; with `stats_path` they default to
        the file's.
    epsilon : float
    scale, offset : str, optional
        A number, a comma list with one value per channel, or a ``.npy`` file.
    stats_path : str, optional
        Use these saved statistics instead of computing them.
    save_stats : str, optional
        Also write the statistics used.
    dtype : str, optional
        ``float16``, ``float32`` or ``float64``.
    force : bool
        Replace existing outputs.
    ddof : int
        For the variance used when the statistics are computed here.
    ignore_nan : bool
        Leave NaNs out of the statistics computed here (they stay NaN in the output).
    chunk_bytes, threads, allow_external, progress, scheduler :
        As :func:`stats`. On a cluster, a ``.npy`` output is written by the workers, each
        its own blocks; HDF5 and stdout outputs by this process, one writer.

    Returns
    -------
    NormalizeResult
    """
    threads = threads or default_threads()
    if not np.isfinite(epsilon) or epsilon < 0:
        raise UsageError(f"--epsilon {epsilon!r} must be a finite number >= 0")
    target = OutputSpec.parse(output)
    input_paths = [] if input == "-" else [InputSpec.parse(input).path]
    if target.path == "-":
        stream = stdout_stream()
    else:
        check_target(target.path, force=force, inputs=input_paths)
    if save_stats is not None:
        statsfile.format_for_path(save_stats)
        check_target(save_stats, force=force, inputs=input_paths)
        if os.path.abspath(save_stats) == os.path.abspath(target.path):
            raise UsageError(f"{save_stats}: given both as output and as --save-stats")
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(
            input, allow_external=allow_external, chunk_cache_bytes=2 * chunk_bytes))
        check_reducible(source, "normalize")
        if stats_path is None:
            reduce_axes = resolve_axes(source.shape, axes, channel_axis, source.name)
            check_ddof(ddof, math.prod(source.shape) // math.prod(
                channel_shape(source.shape, reduce_axes)), ignore_nan, source.name)
        if source.path == "-" and stats_path is None:
            source, spool_path = spool_stdin(source, chunk_bytes=chunk_bytes)
            stack.callback(os.unlink, spool_path)
            stack.enter_context(source)
        moments_of = stack.enter_context(_cluster(scheduler, allow_external))
        statistics = _statistics_for(
            source, stats_path=stats_path, axes=axes, channel_axis=channel_axis, ddof=ddof,
            ignore_nan=ignore_nan, chunk_bytes=chunk_bytes, threads=threads, progress=progress,
            moments_of=moments_of)
        channels = tuple(statistics.channel_shape)
        values = statistics.values()
        keep_shape = keepdims_shape(source.shape, statistics.axes)
        scale_values = parse_affine(scale, channels, "--scale")
        offset_values = parse_affine(offset, channels, "--offset")
        coefficients = Coefficients.from_statistics(
            values["mean"].reshape(keep_shape), values["variance"].reshape(keep_shape),
            scale=None if scale_values is None else (
                scale_values if scale_values.ndim == 0 else scale_values.reshape(keep_shape)),
            offset=None if offset_values is None else (
                offset_values if offset_values.ndim == 0 else offset_values.reshape(keep_shape)),
            epsilon=epsilon)
        coefficients = Coefficients(*(np.broadcast_to(array, keep_shape) for array in (
            coefficients.mean, coefficients.factor, coefficients.offset)))
        out_dtype = output_dtype(source.dtype, dtype)
        with _progress_bar(progress, "normalize", source.nbytes) as advance:
            if target.path == "-":
                writer = NpyWriter(stream, "<stdout>", source.shape, out_dtype,
                                   source.fortran_order)
                normalize_source(source, writer, coefficients, out_dtype,
                                 chunk_bytes=chunk_bytes, threads=threads, progress=advance)
            elif moments_of is not None and not target.hdf5 and source.path != "-":
                with AtomicFile(target.path, force=force) as atomic:
                    _cluster_normalize(moments_of.client, source, atomic.temp_path, target.path,
                                       out_dtype, coefficients, chunk_bytes=chunk_bytes,
                                       allow_external=allow_external, progress=advance)
            else:
                with AtomicFile(target.path, force=force) as atomic:
                    writer = _open_writer(target, atomic.temp_path, source, out_dtype,
                                          statistics, epsilon)
                    try:
                        normalize_source(source, writer, coefficients, out_dtype,
                                         chunk_bytes=chunk_bytes, threads=threads,
                                         progress=advance)
                    finally:
                        writer.close()
    if save_stats is not None:
        save_statistics(statistics, save_stats, force=force, inputs=input_paths)
    return NormalizeResult(statistics=statistics, output=output, dtype=out_dtype,
                           shape=source.shape)


def _cluster_normalize(client, source: Source, temp_path: str, name: str, out_dtype: np.dtype,
                       coefficients: Coefficients, **options) -> None:
    from .distributed import cluster_normalize

    # the header written and the file preallocated here; the workers write the blocks
    writer = NpyFileWriter(temp_path, name, source.shape, out_dtype, source.fortran_order)
    writer.close()
    cluster_normalize(client, source, temp_path, writer.data_offset, coefficients, out_dtype,
                      **options)


def _open_writer(target: OutputSpec, temp_path: str, source: Source, out_dtype: np.dtype,
                 statistics: Statistics, epsilon: float):
    if not target.hdf5:
        return NpyFileWriter(temp_path, target.path, source.shape, out_dtype,
                              source.fortran_order)
    values = statistics.values()
    dataset = target.dataset or source.dataset or DEFAULT_OUTPUT_DATASET
    chunks = source.chunks if source.chunks and not source.fortran_order else None
    return Hdf5Writer(
        temp_path, f"{target.path}:{dataset}", dataset, source.shape, out_dtype,
        source.fortran_order, chunks,
        attrs={"mean": values["mean"], "variance": values["variance"], "epsilon": epsilon,
               "axes": np.asarray(statistics.axes, np.int64)})


def info(inputs: Sequence[str], *, allow_external: bool = False) -> list:
    """Describe inputs: shape, dtype, byte order, layout, and HDF5 storage.

    Returns
    -------
    list of dict
        One per input; an HDF5 file given without a dataset lists all its datasets.
    """
    described = []
    for text in inputs:
        spec = InputSpec.parse(text)
        entry = {"input": spec.display}
        if spec.path != "-" and spec.dataset is None and is_hdf5_file(spec.path, spec.display):
            from .hdf5 import list_datasets

            entry["datasets"] = [
                {"dataset": path, "shape": None if shape is None else list(shape),
                 "dtype": str(dtype), "usable": problem is None, "problem": problem}
                for path, shape, dtype, problem in list_datasets(spec.path, spec.display)]
            if sum(row["usable"] for row in entry["datasets"]) != 1:
                described.append(entry)  # the listing says it all; there is no one dataset
                continue
        with open_source(text, allow_external=allow_external) as source:
            entry.update(_describe(source))
        described.append(entry)
    return described


def _describe(source: Source) -> dict:
    byteorder = {"<": "little", ">": "big", "|": "n/a", "=": "native"}[source.dtype.byteorder]
    if byteorder == "native":
        byteorder = "little" if np.little_endian else "big"
    return {
        "path": source.path,
        "dataset": source.dataset,
        "shape": list(source.shape),
        "dtype": source.dtype.name,
        "byte_order": byteorder,
        "order": "F" if source.fortran_order else "C",
        "nbytes": source.nbytes,
        **source.details,
    }


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse a byte count such as ``65536``, ``512K``, ``64M``, ``1GiB`` (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 65536, 512K, 64M, 1G)")
    number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * 1024 ** " kmgt".index(unit or " "))
    if size < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return size
