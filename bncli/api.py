"""The library behind ``bn``: statistics and normalization of files, in bounded memory.

Every function takes Python and NumPy values (paths as ``str`` or ``os.PathLike``, axes as
ints, scale and offset as numbers, sequences or arrays, sizes as ints), checks everything
that can be checked before any data is read, raises :class:`bncli.errors.BnError` on bad
input with a message that names the file and the problem, and never prints. Progress is
reported through an optional ``progress(label, total_bytes)`` factory returning an object
with ``advance(nbytes)`` and ``close()``.

::

    from bncli import api

    statistics = api.stats(["acts.npy"], axes=[0, 1, 2])
    statistics.values()["mean"]           # ndarray of the channel shape
    api.normalize("acts.npy", "normed.npy", scale=2.0, offset=[0.5, 0.0, 0.0])
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np

from bncli.core.drift import DEFAULT_MAX_PSI, DEFAULT_MAX_SHIFT
from bncli.core.drift import drift as drift_of
from bncli.core.findings import DEFAULT_OUTLIER_THRESHOLD, DEFAULT_SPARSE_THRESHOLD
from bncli.core.histogram import DEFAULT_ACCURACY, DEFAULT_LEVELS, bucket_accuracy, mantissa_bits
from bncli.core.layout import (
    AxesSpec,
    channel_shape,
    format_shape,
    keepdims_shape,
)
from bncli.core.normalize import Coefficients, NormalizeSpec, output_dtype
from bncli.core.partials import Reduction
from bncli.core.statistics import Statistics
from bncli.errors import InputError, OutputError, StatsFileError, UsageError
from bncli.exec.engine import (
    DEFAULT_CHUNK_BYTES,
    EngineOptions,
    check_ddof,
    check_reducible,
    compute_statistics,
    normalize_budget,
    normalize_source,
)
from bncli.io import interrupts, statsfile
from bncli.io.registry import list_entries, open_source, parse_input
from bncli.io.sinks import (
    AtomicFile,
    Hdf5Writer,
    NpyFileWriter,
    NpyWriter,
    ZarrWriter,
    check_hdf5_target,
    check_target,
    output_chunks,
    output_error,
    spool_stdin,
    stdout_stream,
)
from bncli.io.source import ArraySource, InputSpec, OpenOptions, Source

if TYPE_CHECKING:
    from distributed import Client

    from bncli.exec.cluster import ClusterPartials
    from bncli.io.targets import Target

Path = str | os.PathLike[str]
Affine = float | Sequence | np.ndarray | None
Progress = Callable | None



class _NoProgress:
    def advance(self, nbytes: int) -> None:
        pass

    def close(self) -> None:
        pass


def _no_progress(label: str, total: int) -> _NoProgress:
    return _NoProgress()


@contextlib.contextmanager
def _progress_bar(progress: Progress, label: str,
                  total: int) -> Iterator[Callable[[int], None]]:
    bar = (progress or _no_progress)(label, total)
    try:
        yield bar.advance
    finally:
        bar.close()


def _paths(paths: Path | Sequence[Path]) -> list[str]:
    """One path, or a sequence of them, as a list of str."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    return [os.fspath(path) for path in paths]


@contextlib.contextmanager
def open_sources(specs: Path | Sequence[Path],
                 options: OpenOptions | None = None) -> Iterator[list[Source]]:
    """Open every input (checking all headers first) and close them all at the end."""
    specs = _paths(specs)
    if sum(1 for spec in specs if spec == "-") > 1:
        raise UsageError("standard input '-' can be given only once")
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_source(spec, options)) for spec in specs]
        yield sources


def _check_moments_order(order: int) -> None:
    if order not in (2, 4):
        raise UsageError(f"the moments order must be 2 or 4, not {order!r}")


def stats(inputs: Path | Sequence[Path], *, axes: Sequence[int] | int | None = None,
          channel_axis: int | None = None, layout: str | None = None, ddof: int = 0,
          ignore_nan: bool = False,
          keepdims: bool = False, moments: int = 2, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
          threads: int | None = None, allow_external: bool = False, allow_sparse: bool = False,
          progress: Progress = None, scheduler: str | None = None,
          outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD,
          allow_duplicates: bool = False,
          quantiles: Sequence[float] | bool | None = None,
          accuracy: float = DEFAULT_ACCURACY,
          sparse_threshold: float = DEFAULT_SPARSE_THRESHOLD) -> Statistics:
    """Compute per-channel statistics of one dataset stored in one or more inputs.

    Parameters
    ----------
    inputs : str, os.PathLike, or a sequence of them
        ``file.npy``, ``file.h5[:/dataset]`` or ``-`` (a .npy stream on stdin).
    axes : sequence of int, optional
        Axes to reduce (default every axis but the last); negative values count from the end.
    channel_axis : int, optional
        Reduce every axis but this one.
    layout : str, optional
        ``nhwc``, ``nchw``, ``ndhwc``, ``ncdhw`` (or ``nc``, ``nwc``, ``ncw``): reduce every
        axis but that layout's channel axis, for inputs of its rank.
    ddof : int
        Delta degrees of freedom of the variance.
    ignore_nan : bool
        Leave NaNs out of the statistics.
    keepdims : bool
        Arrays of a written statistics file keep the input's rank.
    moments : int
        2 (mean, variance) or 4 (also skewness and excess kurtosis).
    chunk_bytes : int
        Memory budget of one block, in bytes.
    threads : int, optional
        Worker threads (default: the available cores).
    allow_external : bool
        Allow HDF5 files to read other files.
    allow_sparse : bool
        Read HDF5 datasets whose unwritten chunks hold more than a GiB of fill values.
    progress : callable, optional
    scheduler : str, optional
        Run on a dask.distributed cluster: ``tcp://host:port``, or ``local``.
    outlier_threshold : float
        Robust z-score above which a channel's mean or std is a finding.
    allow_duplicates : bool
        Take an input given twice twice (refused by default).
    quantiles : sequence of float, or bool, optional
        Also compute a mergeable histogram per channel, and from it these quantiles
        (levels from 0 to 1; True: ``0.0001, 0.001, 0.01, 0.5, 0.99, 0.999, 0.9999``).
    accuracy : float
        Relative accuracy of the quantiles (see :mod:`bncli.core.histogram`).
    sparse_threshold : float
        Fraction of exact zeros at or above which a channel is reported sparse.

    Returns
    -------
    Statistics
    """
    _check_moments_order(moments)
    engine = EngineOptions.checked(chunk_bytes, threads, allow_external=allow_external,
                                   allow_sparse=allow_sparse, scheduler=scheduler)
    _check_fraction(sparse_threshold, "the sparse threshold")
    reduction = _reduction(ignore_nan, moments, quantiles, accuracy)
    if not allow_duplicates:
        seen: dict = {}
        for spec in _paths(inputs):
            parsed = parse_input(spec)
            if parsed.path != "-":
                _refuse_duplicate(parsed.display, (_file_identity(parsed.path), parsed.dataset),
                                  seen, "is given twice")
    with open_sources(inputs, engine.open_options()) as sources, \
            _cluster(engine.scheduler, engine.allow_external) as partials_of:
        total = sum(source.nbytes for source in sources)
        with _progress_bar(progress, "stats", total) as advance:
            statistics = compute_statistics(
                sources, axes=AxesSpec(_axes(axes), channel_axis, layout), ddof=ddof,
                reduction=reduction, keepdims=keepdims, chunk_bytes=engine.chunk_bytes,
                threads=engine.threads, progress=advance, partials_of=partials_of)
    statistics.outlier_threshold = outlier_threshold
    statistics.sparse_threshold = sparse_threshold
    return statistics


@dataclass
class TensorStatistics:
    """The statistics of one array of a file, from :func:`stats_each`.

    Attributes
    ----------
    name : str
        The array's name in its file (dataset path, member or tensor name).
    input : str
        ``FILE:name``, as it is given to :func:`stats`.
    shape : tuple of int or None
    dtype : str or None
    statistics : Statistics or None
        None where the array was skipped.
    skipped : str or None
        Why it was skipped (not numeric, a scalar, no elements).
    """

    name: str
    input: str
    shape: tuple | None
    dtype: str | None
    statistics: Statistics | None = None
    skipped: str | None = None


def stats_each(input: Path, *, axes: Sequence[int] | int | None = None,
               channel_axis: int | None = None, **options: Any) -> list[TensorStatistics]:
    """Compute the statistics of every array of an HDF5, ``.npz`` or safetensors file.

    Each array is reduced over all of its elements (one channel; a 0-d array is one value),
    or over `axes` (or every axis but `channel_axis`) where it has those axes. Arrays that
    cannot be reduced (not numeric, empty) are listed with the reason.

    Parameters
    ----------
    input : str or os.PathLike
        The file.
    axes, channel_axis
        As for :func:`stats`, applied to each array that has them.
    **options
        Passed to :func:`stats` (``quantiles``, ``ddof``, ``ignore_nan``, ...).

    Returns
    -------
    list of TensorStatistics
        In the file's order.
    """
    text = os.fspath(input)
    spec = parse_input(text)
    if spec.path == "-" or spec.dataset is not None:
        raise UsageError(f"{spec.display}: each array of a file is read from a file named "
                         "alone (not stdin, not FILE:NAME)")
    listing = _listing(spec)
    if listing is None:
        raise UsageError(f"{spec.display}: is a single array, not an HDF5, .npz or "
                         "safetensors file of several; give it without the option for "
                         "each array")
    axes = _axes(axes)
    results: list[TensorStatistics] = []
    for row in listing:
        name, shape = row["dataset"], row["shape"]
        entry = TensorStatistics(name, f"{spec.path}:{name}", None if shape is None
                                 else tuple(shape), row["dtype"])
        results.append(entry)
        if not row["usable"]:
            entry.skipped = row["problem"]
        elif shape is None:
            entry.skipped = "an empty dataset (no shape)"
        elif 0 in shape:
            entry.skipped = "no elements"
        elif not shape:  # a 0-d array: its one value
            entry.statistics = _scalar_statistics(entry.input, **options)
        if entry.skipped or entry.statistics is not None:
            continue
        ndim = len(shape)
        if axes is not None and all(-ndim <= axis < ndim for axis in axes):
            chosen: dict[str, Any] = {"axes": axes}
        elif channel_axis is not None and -ndim <= channel_axis < ndim and ndim > 1:
            chosen = {"channel_axis": channel_axis}
        else:
            chosen = {"axes": tuple(range(ndim))}
        try:
            entry.statistics = stats([entry.input], **chosen, **options)
        except InputError as exc:  # an entry the listing could not tell is unreadable
            message = str(exc)
            entry.skipped = message.split(": ", 1)[1] if message.startswith(
                entry.input + ": ") else message
    return results


def _reduction(ignore_nan: bool, moments: int, quantiles: Sequence[float] | bool | None,
               accuracy: float) -> Reduction:
    """What a statistics run computes: the moments, and the histograms with `quantiles`."""
    if quantiles is None or quantiles is False:
        return Reduction(ignore_nan=ignore_nan, order=moments)
    return Reduction(kinds=("moments", "histogram"), ignore_nan=ignore_nan, order=moments,
                     options={"histogram": _histogram_options(quantiles, accuracy)})


def _scalar_statistics(text: str, *, ddof: int = 0, ignore_nan: bool = False,
                       moments: int = 2, quantiles: Sequence[float] | bool | None = None,
                       accuracy: float = DEFAULT_ACCURACY,
                       outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD,
                       sparse_threshold: float = DEFAULT_SPARSE_THRESHOLD,
                       allow_external: bool = False, **_engine: Any) -> Statistics:
    """The statistics of a 0-d array's one value, as of an array of one element."""
    with open_source(text, OpenOptions(allow_external=allow_external)) as source:
        value = ArraySource(source.read_scalar().reshape(1), source)
    statistics = compute_statistics([value], axes=AxesSpec((0,)), ddof=ddof,
                                    reduction=_reduction(ignore_nan, moments, quantiles,
                                                         accuracy))
    statistics.outlier_threshold = outlier_threshold
    statistics.sparse_threshold = sparse_threshold
    return statistics


def _histogram_options(quantiles: Sequence[float] | Literal[True], accuracy: float) -> dict:
    """The histogram's grid and levels, checked."""
    levels = DEFAULT_LEVELS if quantiles is True else quantiles
    try:
        levels = tuple(float(level) for level in levels)
    except (TypeError, ValueError):
        raise UsageError(f"quantile levels {quantiles!r} are not a sequence of numbers") from None
    for level in levels:
        _check_fraction(level, "a quantile level")
    if not levels:
        raise UsageError("no quantile levels given")
    try:
        bits = mantissa_bits(float(accuracy))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return {"bits": bits, "levels": levels}


def _check_fraction(value: float, label: str) -> None:
    if not isinstance(value, (int, float, np.number)) or not 0 <= value <= 1:
        raise UsageError(f"{label} must be a number from 0 to 1, not {value!r}")


def _axes(axes: Sequence[int] | int | None) -> tuple | None:
    if axes is None:
        return None
    if isinstance(axes, (int, np.integer)):
        return (int(axes),)
    try:
        return tuple(int(axis) for axis in axes)
    except (TypeError, ValueError):
        raise UsageError(f"axes {axes!r} are not a sequence of integers") from None


@contextlib.contextmanager
def _cluster(scheduler: str | None,
             allow_external: bool) -> Iterator[ClusterPartials | None]:
    """Yield a cluster ``partials_of`` for `scheduler`, or None to compute here."""
    if not scheduler:
        yield None
        return
    from bncli.exec.cluster import ClusterPartials, connect

    with connect(scheduler) as client:
        yield ClusterPartials(client, allow_external=allow_external)


def save_statistics(statistics: Statistics, path: Path, *, force: bool = False,
                    inputs: Sequence[Path] = (), indent: int | None = None,
                    nan_as: str = "string") -> None:
    """Write a ``.json`` or ``.npz`` statistics file atomically.

    Parameters
    ----------
    statistics : Statistics
    path : str or os.PathLike
        Ends in ``.json`` or ``.npz``.
    force : bool
        Replace an existing file.
    inputs : sequence of str or os.PathLike
        Files the statistics were computed from, which may not be overwritten.
    indent : int, optional
        JSON: indent by this many spaces (default: one line).
    nan_as : str
        JSON: NaN written as ``string`` (``"NaN"``, the default) or ``null``.
    """
    path = os.fspath(path)
    fmt = statsfile.format_for_path(path)
    check_target(path, force=force, inputs=[os.fspath(item) for item in inputs])
    with AtomicFile(path, force=force) as output:
        _write_statistics(statistics, output, fmt, indent=indent, nan_as=nan_as)


def _write_statistics(statistics: Statistics, output: AtomicFile, fmt: str | None = None,
                      **options: Any) -> None:
    """Write a statistics file into the temporary file of `output`."""
    fmt = fmt or statsfile.format_for_path(output.path)
    try:
        with open(output.temp_path, "wb") as stream:  # closing flushes: inside the try
            statsfile.write(statistics, stream, fmt=fmt, **options)
    except OSError as exc:
        raise output_error(output.path, exc) from None


def export(statistics: Path | Statistics, to: str, output: Path | None = None, *,
           rescale: bool = True, prefix: str = "", force: bool = False) -> dict | None:
    """Put statistics into the form a framework takes (see :mod:`bncli.core.exports`).

    Parameters
    ----------
    statistics : str, os.PathLike or Statistics
        A statistics file, or computed statistics.
    to : str
        ``torchvision``, ``torch-bn``, ``keras``, ``json`` or ``npz``.
    output : str or os.PathLike, optional
        Write it here, atomically: ``.json`` (or ``.py``, the snippet) for torchvision and
        keras, ``.safetensors`` for torch-bn (required), a statistics file for json/npz.
    rescale : bool
        torchvision: divide statistics of integer images by the type's maximum.
    prefix : str
        torch-bn: put before every key (``layer1.bn.``).
    force : bool
        Replace an existing output.

    Returns
    -------
    dict or None
        What torchvision and keras take (mean, std, ...); the state dict of torch-bn; None
        for json and npz.
    """
    from bncli.core import exports

    if to not in exports.FORMATS:
        raise UsageError(f"export format {to!r} is not one of {', '.join(exports.FORMATS)}")
    name = "statistics"
    if not isinstance(statistics, Statistics):
        name = os.fspath(statistics)
        statistics = statsfile.load(name)
    inputs = [] if name == "statistics" else [name]
    output = None if output is None else os.fspath(output)
    if to in ("json", "npz"):
        if output is not None:
            if statsfile.format_for_path(output) != to:
                raise UsageError(f"{output}: an {to} export is written to a .{to} file")
            save_statistics(statistics, output, force=force, inputs=inputs)
        return None
    exported = {"torchvision": lambda: exports.torchvision(statistics, rescale=rescale,
                                                           name=name),
                "torch-bn": lambda: exports.torch_batchnorm(statistics, prefix=prefix,
                                                            name=name),
                "keras": lambda: exports.keras(statistics, name=name)}[to]()
    if to == "torch-bn":
        if output is None or not output.lower().endswith(".safetensors"):
            raise UsageError("a torch-bn export is written to a .safetensors file; name one")
    elif output is not None and not output.lower().endswith((".json", ".py")):
        raise UsageError(f"{output}: a {to} export is written to a .json or .py file")
    if output is not None:
        check_target(output, force=force, inputs=inputs)
        with AtomicFile(output, force=force) as atomic:
            _write_export(to, exported, output, atomic.temp_path)
    return exported


def _write_export(to: str, exported: dict, output: str, temp_path: str) -> None:
    from bncli.core import exports
    from bncli.io.safetensors import write

    try:
        if to == "torch-bn":
            write(temp_path, exported, {"format": "pt", "producer": "bncli"})
        elif output.lower().endswith(".py"):
            snippet = (exports.torchvision_snippet if to == "torchvision"
                       else exports.keras_snippet)(exported)
            with open(temp_path, "w") as stream:
                stream.write(snippet)
        else:
            with open(temp_path, "w") as stream:
                json.dump(export_document(exported), stream, indent=2)
                stream.write("\n")
    except OSError as exc:
        raise output_error(output, exc) from None


def export_document(exported: dict) -> dict:
    """An export as strict JSON values (NaN as ``"NaN"``)."""
    return {key: statsfile.json_array(np.asarray(value)) if isinstance(value, list) else value
            for key, value in exported.items()}


@dataclass
class CalibrationResult:
    """What :func:`calibrate` found.

    Attributes
    ----------
    name : str
        The tensor's name (for a TensorRT cache).
    method : str
    target : str
        ``int8`` or ``fp8-e4m3``.
    channels : list or None
        Channel labels of per-channel ranges (None for one range of the whole tensor).
    amax : ndarray of float64
        The clipping range ``[-amax, amax]``: one, or one per channel.
    scale : ndarray of float64
        ``amax`` over the target's largest code (127, 448).
    statistics : Statistics
        The statistics (with histograms) it came from.
    """

    name: str
    method: str
    target: str
    channels: list | None
    amax: np.ndarray
    scale: np.ndarray
    statistics: Statistics


def calibrate(inputs: Path | Sequence[Path], *, method: str = "entropy",
              per_channel: bool = False, percentile: float = 99.99, target: str = "int8",
              name: str | None = None, accuracy: float = DEFAULT_ACCURACY,
              **options: Any) -> CalibrationResult:
    """Clipping ranges for quantization from the histograms (see :mod:`bncli.core.calibrate`).

    Parameters
    ----------
    inputs : str, os.PathLike, or a sequence of them
        Statistics files with histograms (``bn stats --quantiles -o``), merged exactly; or
        INPUTs, whose histograms are computed here (at `accuracy`).
    method : str
        ``minmax``, ``percentile``, ``entropy`` or ``mse``.
    per_channel : bool
        One range per channel (else one for all channels).
    percentile : float
        For ``percentile``: between 0 and 100.
    target : str
        ``int8`` (scale = amax / 127) or ``fp8-e4m3`` (amax / 448).
    name : str, optional
        The tensor's name (default: the first input's dataset or file name).
    accuracy : float
        Of histograms computed here.
    **options
        Passed to :func:`stats` for INPUTs (``axes``, ``channel_axis``, ``scheduler``...).

    Returns
    -------
    CalibrationResult
    """
    _check_calibration(method, target, percentile)
    paths = _paths(inputs)
    if paths and all(is_statistics_file(path) for path in paths):
        statistics = merge(paths)
        source = paths[0]
    else:
        statistics = stats(paths, quantiles=True, accuracy=accuracy, **options)
        source = statistics.inputs[0]["dataset"] or os.path.basename(paths[0])
    if statistics.histogram is None:
        raise StatsFileError(f"{paths[0]}: has no histograms; compute them with bn stats "
                             "--quantiles -o FILE")
    if name is None:
        entry = statistics.inputs[0] if statistics.inputs else {}
        name = (entry.get("dataset") or os.path.splitext(os.path.basename(
            entry.get("path") or source))[0]).strip("/").replace("/", ".")
    return _calibrated(statistics, name, method, per_channel, percentile, target)


def calibrate_each(input: Path, *, method: str = "entropy", per_channel: bool = False,
                   percentile: float = 99.99, target: str = "int8",
                   accuracy: float = DEFAULT_ACCURACY,
                   **options: Any) -> list[CalibrationResult]:
    """:func:`calibrate` every array of an HDF5, ``.npz``, safetensors or zarr file (as
    :func:`stats_each` reduces them), for one TensorRT cache of all its tensors.

    Returns
    -------
    list of CalibrationResult
        One per array that could be reduced, named as in the file.
    """
    _check_calibration(method, target, percentile)
    return [_calibrated(tensor.statistics, tensor.name.strip("/"), method, per_channel,
                        percentile, target)
            for tensor in stats_each(input, quantiles=True, accuracy=accuracy, **options)
            if tensor.statistics is not None]


def _check_calibration(method: str, target: str, percentile: float) -> None:
    from bncli.core import calibrate as calibration

    if method not in calibration.METHODS:
        raise UsageError(f"method {method!r} is not one of {', '.join(calibration.METHODS)}")
    if target not in calibration.TARGETS:
        raise UsageError(f"target {target!r} is not one of {', '.join(calibration.TARGETS)}")
    if not 0 < percentile <= 100:
        raise UsageError(f"percentile {percentile!r} is not in (0, 100]")


def _calibrated(statistics: Statistics, name: str, method: str, per_channel: bool,
                percentile: float, target: str) -> CalibrationResult:
    from bncli.core import calibrate as calibration

    moments = statistics.moments
    nan = int(statistics.histogram.special[..., 4].sum())
    if nan and not statistics.ignore_nan:
        raise StatsFileError(f"{name}: holds {nan} NaN value{'s' * (nan != 1)}, which no "
                             "range covers", hint="leave them out with --ignore-nan")
    channels = math.prod(statistics.channel_shape)
    groups = [[index] for index in range(channels)] if per_channel else [None]
    largest_code = calibration.TARGETS[target]
    amax = np.array([calibration.amax(
        calibration.magnitudes(statistics.histogram, moments.min, moments.max, group),
        method, percentile=percentile, largest_code=largest_code) for group in groups])
    labels = None
    if per_channel:
        labels = [list(index) if len(index) != 1 else index[0] for index in np.ndindex(
            *statistics.channel_shape)] if statistics.channel_shape else [0]
    return CalibrationResult(name, method, target, labels, amax, amax / largest_code,
                             statistics)


def load_statistics(path: Path) -> Statistics:
    """Read a ``.json`` or ``.npz`` statistics file."""
    return statsfile.load(os.fspath(path))


def merge(paths: Sequence[Path], *, allow_duplicates: bool = False) -> Statistics:
    """Combine statistics files of the same channel shape, axes and ddof, exactly.

    Parameters
    ----------
    paths : sequence of str or os.PathLike
    allow_duplicates : bool
        Merge a file given twice, or two files of the same statistics of the same inputs
        (a copy), whose values would then count twice (refused by default).
    """
    merged = None
    seen_files: dict = {}
    seen_inputs: dict = {}
    for path in _paths(paths):
        if not allow_duplicates:
            _refuse_duplicate(path, _file_identity(path), seen_files, "is given twice")
        part = statsfile.load(path)
        if not allow_duplicates and part.partials is not None:
            # a copy of a shard's file: the same inputs with the same numbers (two shards
            # that only share a file name differ in their numbers)
            moments = part.partials.moments
            key = (json.dumps(part.inputs, sort_keys=True, default=str),
                   moments.count.tobytes(), moments.m2.tobytes(),
                   np.asarray(moments.shift + moments.shifted_mean).tobytes())
            _refuse_duplicate(path, key, seen_inputs,
                              "holds the same statistics of the same inputs as {other}")
        merged = part if merged is None else merged.merge(part, path)
    if merged is None:
        raise UsageError("no statistics files given")
    return merged


def diff(base: Path, new: Path, *, axes: Sequence[int] | int | None = None,
         channel_axis: int | None = None, layout: str | None = None,
         ignore_nan: bool = False, accuracy: float | None = None,
         sparse_threshold: float = DEFAULT_SPARSE_THRESHOLD,
         max_shift: float = DEFAULT_MAX_SHIFT, max_psi: float = DEFAULT_MAX_PSI,
         **engine: Any) -> tuple:
    """Per-channel drift of NEW from BASE (see :mod:`bncli.core.drift`).

    Parameters
    ----------
    base, new : str or os.PathLike
        A statistics file (``.json``, ``.npz``) or an INPUT, whose statistics are computed
        (with histograms on the grid of the other side's, or the default one).
    axes, channel_axis, layout, ignore_nan :
        For the sides that are computed, as in :func:`stats`.
    accuracy : float, optional
        Histogram accuracy of computed sides (default: the other side's, or 0.01).
    sparse_threshold, max_shift, max_psi : float
        What counts as sparse, and as drift.
    **engine :
        ``chunk_bytes``, ``threads``, ``allow_external``, ``allow_sparse``, ``scheduler``.

    Returns
    -------
    tuple of (Drift, Statistics, Statistics)
        The drift, and the statistics of BASE and NEW.
    """
    for value, label in ((max_shift, "the largest mean shift"), (max_psi, "the largest PSI")):
        if not isinstance(value, (int, float)) or not value >= 0:
            raise UsageError(f"{label} must be a number at least 0, not {value!r}")
    sides = [os.fspath(path) for path in (base, new)]
    loaded = {path: load_statistics(path) for path in sides if is_statistics_file(path)}
    if accuracy is None:
        grids = [side.histogram.bits for side in loaded.values() if side.histogram is not None]
        accuracy = bucket_accuracy(grids[0]) if grids else DEFAULT_ACCURACY
    with_histograms = not loaded or any(side.histogram is not None for side in loaded.values())
    statistics = []
    for path in sides:
        if path in loaded:
            statistics.append(loaded[path])
            continue
        statistics.append(stats(path, axes=axes, channel_axis=channel_axis, layout=layout,
                                ignore_nan=ignore_nan, accuracy=accuracy,
                                quantiles=True if with_histograms else None,
                                allow_duplicates=True, **engine))
    old, now = statistics
    for statistics_of in (old, now):
        statistics_of.sparse_threshold = sparse_threshold
    if tuple(old.channel_shape) != tuple(now.channel_shape):
        raise UsageError(f"{sides[1]}: channel shape {format_shape(now.channel_shape)} does "
                         f"not match {sides[0]}'s {format_shape(old.channel_shape)}")
    if tuple(old.axes) != tuple(now.axes):
        raise UsageError(f"{sides[1]}: reduced over axes {list(now.axes)}, but {sides[0]} "
                         f"over {list(old.axes)}")
    if old.partials is None or now.partials is None:
        side = sides[0] if old.partials is None else sides[1]
        raise StatsFileError(f"{side}: holds mean and variance but no count and m2 to compare")
    if old.histogram is not None and now.histogram is not None and (
            old.histogram.bits != now.histogram.bits):
        raise StatsFileError(f"{sides[1]}: its histograms are on another grid than "
                             f"{sides[0]}'s (accuracy {bucket_accuracy(now.histogram.bits):.4g}"
                             f" and {bucket_accuracy(old.histogram.bits):.4g})")
    return drift_of(old, now, max_shift=max_shift, max_psi=max_psi), old, now


def is_statistics_file(path: str) -> bool:
    """Whether `path` names a statistics file rather than an INPUT.

    A ``.json`` path is one. So is an ``.npz`` path, unless it is a readable archive without
    the ``meta`` member that ``bn stats -o FILE.npz`` writes: that is an archive of arrays,
    an INPUT (one array of it is named ``FILE.npz:member``).
    """
    lowered = path.lower()
    if lowered.endswith(".json"):
        return True
    if not lowered.endswith(".npz"):
        return False
    from bncli.io import npz

    try:
        members = npz.directory(path, path)
    except InputError:
        return True  # unreadable, or no regular file: the statistics file's loader says why
    return "meta" in members


def _file_identity(path: str) -> str | tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return path
    return info.st_dev, info.st_ino


def _refuse_duplicate(name: str, key: Hashable, seen: dict, what: str) -> None:
    """Refuse `key` seen before (as `seen[key]`): its values would count twice."""
    if key in seen:
        raise UsageError(f"{name}: {what.format(other=seen[key])}: its values would count "
                         "twice", hint="use --allow-duplicates if that is meant")
    seen[key] = name


def affine_values(values: Affine, channels: tuple, label: str) -> np.ndarray | None:
    """Check a scale or offset against the channel shape.

    Parameters
    ----------
    values : float, sequence, ndarray or None
        One number for every channel, or one value per channel: flat, of the channel
        shape, or of it with axes of size 1.
    channels : tuple of int
        The channel shape.
    label : str
        ``scale`` or ``offset``, for messages.

    Returns
    -------
    ndarray of float64 or None
        A 0-d array for one number, else of shape `channels`.
    """
    if values is None:
        return None
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise UsageError(f"{label} {values!r:.60} is not a number or a list of numbers") \
            from None
    if array.ndim == 0:
        return array
    count = int(np.prod(channels))
    fits = array.size == count and (array.ndim == 1 or tuple(
        dim for dim in array.shape if dim != 1) == tuple(dim for dim in channels if dim != 1))
    if not fits:
        raise UsageError(
            f"{label} has {array.size} values of shape {format_shape(array.shape)}, but there "
            f"are {count} channels (channel shape {format_shape(channels)})")
    return array.reshape(channels)


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


def _saved_statistics(source: Source, saved: Statistics, name: str,
                      axes: AxesSpec) -> Statistics:
    """Check that saved statistics fit a source (over their own axes unless `axes` are
    given); they are used as they are."""
    reduce_axes = (axes if axes.given else AxesSpec(tuple(saved.axes))).resolve(
        source.shape, source.name)
    channels = channel_shape(source.shape, reduce_axes)
    if tuple(saved.channel_shape) != channels:
        raise StatsFileError(
            f"{name}: channel shape {format_shape(saved.channel_shape)} does not match "
            f"{source.name}, whose shape {format_shape(source.shape)} over axes "
            f"{list(reduce_axes)} has channel shape {format_shape(channels)}")
    if tuple(saved.axes) != reduce_axes:
        raise StatsFileError(
            f"{name}: computed over axes {list(saved.axes)}, but {source.name} is "
            f"normalized over axes {list(reduce_axes)}")
    return saved


def normalize(input: Path, output: Path, *, axes: Sequence[int] | None = None,
              channel_axis: int | None = None, layout: str | None = None,
              epsilon: float | None = None, convention: str = "tf",
              scale: Affine = None, offset: Affine = None,
              stats: Path | Statistics | None = None, save_stats: Path | None = None,
              dtype: str | np.dtype | None = None, force: bool = False, ddof: int = 0,
              ignore_nan: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
              threads: int | None = None, allow_external: bool = False,
              allow_sparse: bool = False, compression: str | None = None,
              chunks: Sequence[int] | None = None, progress: Progress = None,
              scheduler: str | None = None) -> NormalizeResult:
    """Write a batch-normalized copy of an input.

    ``y = scale * (x - mean) / sqrt(variance + epsilon) + offset`` per channel, computed
    in float64 and rounded once to the output dtype. Everything that can be checked before
    the data is read is checked first: epsilon, ddof, the output targets, and scale and
    offset against the channel shape.

    Parameters
    ----------
    input : str or os.PathLike
        ``file.npy``, ``file.h5[:/dataset]`` or ``-``.
    output : str or os.PathLike
        ``out.npy``, ``out.h5[:/dataset]`` or ``-`` (stdout).
    axes, channel_axis, layout :
        Axes of the statistics, as for :func:`stats`; with `stats` they default to the
        saved statistics' axes.
    epsilon : float, optional
        Finite and >= 0; default the convention's (1e-3 for ``tf``).
    convention : str
        Where epsilon goes (see :data:`bncli.core.normalize.CONVENTIONS`): ``tf`` and ``torch``
        divide by ``sqrt(variance + epsilon)`` (torch's default epsilon is 1e-5, and it
        normalizes with the population variance), ``keras-backend`` by
        ``sqrt(variance) + epsilon``, ``keras-normalization`` by
        ``max(sqrt(variance), epsilon)`` (default 1e-7).
    scale, offset : float, sequence of float or ndarray, optional
        One number, or one value per channel (flat or of the channel shape); default 1 and 0.
    stats : str, os.PathLike or Statistics, optional
        Use these statistics (a statistics file, or computed ones) instead of computing
        them. A file needs only ``mean`` and ``variance`` (with the schema, axes and
        channel shape).
    save_stats : str or os.PathLike, optional
        Also write the statistics used.
    dtype : str or numpy.dtype, optional
        ``float16``, ``float32`` or ``float64``; default the input's if floating, else float32.
    force : bool
        Replace existing outputs.
    ddof : int
        For the variance used when the statistics are computed here.
    ignore_nan : bool
        Leave NaNs out of the statistics computed here (they stay NaN in the output).
    compression : str, optional
        HDF5 outputs: ``gzip``, ``lzf`` or ``none`` (the default).
    chunks : sequence of int, optional
        HDF5 outputs: the chunk shape (default: the input's chunks, else about 1 MiB).
    chunk_bytes, threads, allow_external, allow_sparse, progress, scheduler :
        As :func:`stats`. On a cluster, a ``.npy`` output is written by the workers, each
        its own blocks; HDF5 and stdout outputs by this process, one writer.

    Returns
    -------
    NormalizeResult
    """
    input = os.fspath(input)
    engine = EngineOptions.checked(chunk_bytes, threads, allow_external=allow_external,
                                   allow_sparse=allow_sparse, scheduler=scheduler)
    spec = NormalizeSpec.checked(convention, epsilon, dtype, ddof)
    outputs = _NormalizeOutputs.checked(input, os.fspath(output), stats, save_stats, force,
                                        compression, chunks)
    saved, saved_name = _given_statistics(stats)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open_source(input, engine.open_options()))
        check_reducible(source, "normalize")
        outputs = outputs.for_input(source)
        given_axes = AxesSpec(_axes(axes), channel_axis, layout)
        if saved is None:
            reduce_axes = given_axes.resolve(source.shape, source.name)
            check_ddof(ddof, math.prod(source.shape) // math.prod(
                channel_shape(source.shape, reduce_axes)), ignore_nan, source.name)
        else:
            reduce_axes = _saved_statistics(source, saved, saved_name, given_axes).axes
        channels = channel_shape(source.shape, reduce_axes)
        affine = (affine_values(scale, channels, "scale"),
                  affine_values(offset, channels, "offset"))
        if not source.is_file and saved is None:  # stdin, a FIFO: read it twice
            source, spool_path = spool_stdin(source, chunk_bytes=engine.chunk_bytes)
            stack.callback(os.unlink, spool_path)
            stack.enter_context(source)
        partials_of = stack.enter_context(_cluster(engine.scheduler, engine.allow_external))
        if saved is None:
            with _progress_bar(progress, "stats", source.nbytes) as advance:
                statistics = compute_statistics(
                    [source], axes=AxesSpec(reduce_axes), ddof=ddof,
                    reduction=Reduction(ignore_nan=ignore_nan), chunk_bytes=engine.chunk_bytes,
                    threads=engine.threads, progress=advance, partials_of=partials_of)
        else:
            statistics = saved
        run = _NormalizeRun(source, statistics, _coefficients(source, statistics, spec, *affine),
                            output_dtype(source.dtype, spec.dtype), spec, engine, partials_of)
        with _progress_bar(progress, "normalize", source.nbytes) as advance:
            _write_normalized(run, outputs, advance)
    return NormalizeResult(statistics=statistics, output=os.fspath(output), dtype=run.out_dtype,
                           shape=source.shape)


@dataclass(frozen=True)
class _NormalizeOutputs:
    """The outputs of one normalize, checked before the input is read.

    `inputs` are the files never written over (the input and a statistics file); `chunks`
    is as given until :meth:`for_input` cuts it to the input's shape.
    """

    target: Target
    inputs: tuple
    into_existing: bool
    force: bool
    save_stats: str | None
    compression: str | None
    chunks: tuple | None
    stream: BinaryIO | None = None

    @classmethod
    def checked(cls, input: str, output: str, stats: Path | Statistics | None,
                save_stats: Path | None, force: bool, compression: str | None,
                chunks: Sequence[int] | None) -> _NormalizeOutputs:
        from bncli.io.hdf5 import has_hdf5_signature
        from bncli.io.targets import Target

        target = Target.parse(output)
        inputs = [] if input == "-" else [parse_input(input).path]
        if stats is not None and not isinstance(stats, Statistics):
            inputs.append(os.fspath(stats))  # never written over either
        into_existing = target.hdf5 and has_hdf5_signature(target.path)
        stream = None
        if target.stdout:
            stream = stdout_stream(inputs=inputs)
        elif not into_existing:  # one added to an existing file: checked once the input is open
            check_target(target.path, force=force, inputs=inputs,
                         directory_output=target.zarr)
        target.check_encoding(compression, chunks)
        save_path = None if save_stats is None else os.fspath(save_stats)
        if save_path is not None:
            statsfile.format_for_path(save_path)
            check_target(save_path, force=force, inputs=inputs)
            if os.path.abspath(save_path) == os.path.abspath(target.path):
                raise UsageError(f"{save_path}: given both as the output and for the statistics")
        return cls(target, tuple(inputs), into_existing, force, save_path, compression,
                   None if chunks is None else tuple(chunks), stream)

    def for_input(self, source: Source) -> _NormalizeOutputs:
        """The outputs checked against the opened input: the dataset an existing HDF5 file
        gains (the input's own refused), and the chunk shape."""
        from bncli.io.targets import chunk_shape, same_file

        if self.into_existing:
            written = self.target.dataset_for(source.dataset)
            others = list(self.inputs)
            if source.dataset is not None and same_file(source.path, self.target.path):
                if source.dataset == written:
                    raise OutputError(f"{self.target.path}:{written}: is the input dataset; "
                                      "refused")
                # another dataset of the file being read: the input is read from the file,
                # the output written to a copy of it that replaces it at the end
                others = [path for path in others if not same_file(path, self.target.path)]
            check_hdf5_target(self.target.path, written, force=self.force, inputs=others)
        if self.chunks is None:
            return self
        return replace(self, chunks=chunk_shape(self.chunks, source.shape))


def _given_statistics(stats: Path | Statistics | None) -> tuple[Statistics | None, str]:
    """Statistics to normalize with, given or loaded, and their name for messages."""
    if isinstance(stats, Statistics):
        return stats, "the statistics"
    if stats is None:
        return None, ""
    return statsfile.load(os.fspath(stats)), os.fspath(stats)


def _coefficients(source: Source, statistics: Statistics, spec: NormalizeSpec,
                  scale: np.ndarray | None, offset: np.ndarray | None) -> Coefficients:
    """The per-channel coefficients of `statistics`, broadcast to the input's rank."""
    keep_shape = keepdims_shape(source.shape, statistics.axes)
    mean, variance = statistics.normalization()
    if (spec.convention == "torch" and statistics.ddof != 0
            and statistics.moments is not None):
        variance = statistics.values()["m2"] / statistics.values()["count"]

    def keepdims(values):  # one number broadcasts as it is
        return values if values is None or values.ndim == 0 else values.reshape(keep_shape)

    coefficients = Coefficients.from_statistics(
        mean.reshape(keep_shape), variance.reshape(keep_shape), scale=keepdims(scale),
        offset=keepdims(offset), epsilon=spec.epsilon, convention=spec.convention)
    return Coefficients(*(np.broadcast_to(array, keep_shape) for array in (
        coefficients.mean, coefficients.factor, coefficients.offset)))


@dataclass(frozen=True)
class _NormalizeRun:
    """What the normalize pass writes: an input, its statistics and coefficients."""

    source: Source
    statistics: Statistics
    coefficients: Coefficients
    out_dtype: np.dtype
    spec: NormalizeSpec
    engine: EngineOptions
    partials_of: ClusterPartials | None = None  # None: computed in this process


def _write_normalized(run: _NormalizeRun, outputs: _NormalizeOutputs,
                      advance: Callable[[int], None]) -> None:
    """Write the normalized input, and the statistics file if one is asked for."""
    source, engine = run.source, run.engine
    if outputs.target.stdout:
        assert outputs.stream is not None  # opened by _NormalizeOutputs.checked for stdout
        writer = NpyWriter(outputs.stream, "<stdout>", source.shape, run.out_dtype,
                           source.fortran_order)
        normalize_source(source, writer, run.coefficients, run.out_dtype,
                         chunk_bytes=engine.chunk_bytes, threads=engine.threads,
                         progress=advance)
        if outputs.save_stats is not None:
            save_statistics(run.statistics, outputs.save_stats, force=outputs.force,
                            inputs=list(outputs.inputs))
        return
    # The statistics file is written before the output is put in place, and put in place
    # after it: a failure of either leaves neither. A signal stops the run at a checkpoint
    # of the writing, not while a file is being put in place or removed.
    target = outputs.target
    with interrupts.section() as section, contextlib.ExitStack() as stack:
        saved_stats = None if outputs.save_stats is None else stack.enter_context(
            AtomicFile(outputs.save_stats, force=outputs.force))
        # an existing HDF5 file is changed where it is: through a symlink, its target
        with AtomicFile(os.path.realpath(target.path) if outputs.into_existing
                        else target.path, force=outputs.force, copy=outputs.into_existing,
                        directory=target.zarr) as atomic:
            _write_output(run, outputs, atomic.temp_path, advance)
            if saved_stats is not None:
                _write_statistics(run.statistics, saved_stats)
            interrupts.checkpoint()  # the last moment the run may stop: next, in place
            section.hold()


def _write_output(run: _NormalizeRun, outputs: _NormalizeOutputs, temp_path: str,
                  advance: Callable[[int], None]) -> None:
    """Write the normalized input into the temporary file (or store) of the output: by the
    cluster's workers where they can write it themselves, else by this process."""
    source, target, engine = run.source, outputs.target, run.engine
    writer: NpyFileWriter | Hdf5Writer | ZarrWriter | None = None
    if run.partials_of is not None and target.zarr and source.is_file:
        writer = _open_writer(run, outputs, temp_path)
    if run.partials_of is not None and source.is_file and (
            (not target.hdf5 and not target.zarr)
            or _chunk_aligned(writer, source, run.out_dtype, engine.chunk_bytes)):
        _cluster_normalize(run.partials_of.client, source, temp_path, target, run.out_dtype,
                           run.coefficients, chunk_bytes=engine.chunk_bytes,
                           allow_external=engine.allow_external, progress=advance)
        return
    writer = writer or _open_writer(run, outputs, temp_path)
    try:
        normalize_source(source, writer, run.coefficients, run.out_dtype,
                         chunk_bytes=engine.chunk_bytes, threads=engine.threads,
                         progress=advance)
    finally:
        writer.close()


def _cluster_normalize(client: Client, source: Source, temp_path: str, target: Target,
                       out_dtype: np.dtype, coefficients: Coefficients,
                       **options: Any) -> None:
    from bncli.exec.cluster import cluster_normalize

    if target.zarr:  # the array made here; the workers write its chunks
        place: tuple = ("zarr", temp_path, source.fortran_order)
    else:  # the header written and the file preallocated here; the workers write the blocks
        writer = NpyFileWriter(temp_path, target.path, source.shape, out_dtype,
                               source.fortran_order)
        writer.close()
        place = ("npy", temp_path, writer.data_offset)
    cluster_normalize(client, source, place, coefficients, out_dtype, **options)


def _chunk_aligned(writer: NpyFileWriter | Hdf5Writer | ZarrWriter | None, source: Source,
                   out_dtype: np.dtype, chunk_bytes: int) -> bool:
    """Whether the blocks of a normalization are whole chunks of a zarr writer's array."""
    from bncli.exec.cluster import whole_chunks

    if writer is None:
        return False
    assert isinstance(writer, ZarrWriter)  # _write_output opens one early for zarr only
    chunks = tuple(writer.array.chunks)
    if source.fortran_order:
        chunks = tuple(reversed(chunks))
    return whole_chunks(source.regions(normalize_budget(source, out_dtype, chunk_bytes)),
                        source.storage_shape, chunks)


def _open_writer(run: _NormalizeRun, outputs: _NormalizeOutputs,
                 temp_path: str) -> NpyFileWriter | Hdf5Writer | ZarrWriter:
    """The writer of the output into `temp_path`: an attribute records the statistics,
    epsilon and convention in HDF5 and zarr outputs."""
    source, target, out_dtype = run.source, outputs.target, run.out_dtype
    chunks: tuple | None = outputs.chunks
    if not target.hdf5 and not target.zarr:
        return NpyFileWriter(temp_path, target.path, source.shape, out_dtype,
                             source.fortran_order)
    mean, variance = run.statistics.normalization()
    if chunks is None:  # like the input's, or the engine's first block (zarr)
        chunks = source.chunks if source.chunks and not source.fortran_order else \
            output_chunks(source.shape, out_dtype.itemsize, source.fortran_order,
                          *((run.engine.chunk_bytes,) if target.zarr else ()))
    if target.zarr:
        # None only for an input without elements, which check_reducible refused
        assert chunks is not None
        return ZarrWriter(temp_path, target.path, source.shape, out_dtype,
                          source.fortran_order, chunks, attrs={
                              "mean": statsfile.json_array(mean),
                              "variance": statsfile.json_array(variance),
                              "epsilon": run.spec.epsilon, "convention": run.spec.convention,
                              "axes": list(run.statistics.axes)},
                          compression=outputs.compression)
    dataset = target.dataset_for(source.dataset)
    return Hdf5Writer(
        temp_path, f"{target.path}:{dataset}", dataset, source.shape, out_dtype,
        source.fortran_order, chunks,
        attrs={"mean": mean, "variance": variance, "epsilon": run.spec.epsilon,
               "convention": run.spec.convention,
               "axes": np.asarray(run.statistics.axes, np.int64)},
        compression=None if outputs.compression in (None, "none") else outputs.compression,
        existing=outputs.into_existing)


def info(inputs: Sequence[Path], *, allow_external: bool = False) -> list:
    """Describe inputs: shape, dtype, byte order, layout, and HDF5 storage.

    Returns
    -------
    list of dict
        One per input; an HDF5 file given without a dataset lists all its datasets.
    """
    described = []
    for text in _paths(inputs):
        spec = parse_input(text)
        entry: dict[str, object] = {"input": spec.display}
        listing = _listing(spec)
        opened: InputSpec | str = text
        if listing is not None:
            entry["datasets"] = listing
            usable = [row["dataset"] for row in listing if row["usable"]]
            if len(usable) != 1:
                described.append(entry)  # the listing says it all; there is no one array
                continue
            opened = InputSpec(spec.path, usable[0])  # the one array beside refused ones
        with open_source(opened, OpenOptions(allow_external=allow_external,
                                             require_data=False)) as source:
            entry.update(_describe(source))
        described.append(entry)
    return described


def _listing(spec: InputSpec) -> list | None:
    """Every array of an HDF5, ``.npz``, safetensors or zarr file given without a name."""
    entries = list_entries(spec)
    return None if entries is None else [entry.as_info() for entry in entries]


def _describe(source: Source) -> dict:
    byteorder = {"<": "little", ">": "big", "|": "n/a", "=": "native"}[source.dtype.byteorder]
    if byteorder == "native":
        byteorder = "little" if np.little_endian else "big"
    described = {
        "path": source.path,
        "dataset": source.dataset,
        "shape": list(source.shape),
        "dtype": source.dtype_name,
        "byte_order": byteorder,
        "order": "F" if source.fortran_order else "C",
        "nbytes": source.nbytes,
        **source.details,
    }
    written = source.written_chunks()
    if written is not None:
        described["chunks_written"] = written
    return described
