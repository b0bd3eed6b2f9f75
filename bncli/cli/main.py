"""The ``bn`` command line: parse options, call :mod:`bncli.api`, render with
:mod:`bncli.cli.report`.

This is the only module that imports click. Errors raised as :class:`bncli.errors.BnError`
become one ``bn: error: ...`` line on stderr and exit status 1 (2 for usage errors);
Ctrl-C exits 130, SIGTERM 143, and a closed stdout pipe ends quietly.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

import click

from bncli._version import __version__
from bncli.errors import BnError

if TYPE_CHECKING:
    import numpy as np

    from bncli.core.findings import Finding
    from bncli.core.statistics import Statistics

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class BnCommandError(click.ClickException):
    """A :class:`BnError` carried through click, printed as ``bn: error: ...``."""

    def __init__(self, error: BnError):
        super().__init__(_with_hint(error))
        # click declares exit_code a ClassVar; an instance's own code is what main() reads
        self.exit_code = error.exit_code  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"bn: error: {self.format_message()}", err=True)


def _with_hint(error: BnError) -> str:
    """The library's message, and what to do about it on the command line."""
    hint = getattr(error, "hint", None)
    return f"{error} ({hint})" if hint else str(error)


class GuardedStdout:
    """Standard output for ``bn``: a write that fails is a one-line error naming stdout.

    A closed pipe still raises BrokenPipeError (the command then ends quietly with 141);
    a full device, a file-size limit or a closed descriptor (``>&-``) become
    :class:`OutputError`. The binary ``buffer`` is guarded alike.
    """

    def __init__(self, stream):
        self._stream = stream

    def _call(self, method: str, *args: object) -> Any:
        from bncli.errors import OutputError

        if self._stream is None:
            raise OutputError("<stdout>: standard output is closed")
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError):
                from bncli.io.sinks import output_error

                raise output_error("<stdout>", exc) from None
            raise OutputError("<stdout>: standard output is closed") from None

    def write(self, data):
        return self._call("write", data)

    def flush(self):
        return self._call("flush")

    def isatty(self) -> bool:
        try:
            return self._stream is not None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._call("fileno")

    @property
    def buffer(self):
        return GuardedStdout(None if self._stream is None else self._stream.buffer)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class StdoutClosed(Exception):
    """The reader of stdout went away; click would otherwise exit 1 on EPIPE itself."""


class BnGroup(click.Group):
    """Turns library errors into click errors with the right exit status."""

    def invoke(self, ctx):
        _load_library()
        try:
            return super().invoke(ctx)
        except BnError as error:
            raise BnCommandError(error) from None
        except BrokenPipeError:
            raise StdoutClosed() from None


def _load_library() -> None:
    """Import the library (NumPy and bn's core) before a command runs.

    Where :func:`main` has paused the garbage collector for the start-up, what the imports
    made is then frozen (tens of thousands of objects that live as long as the process, which
    every full collection, and the one at exit, would otherwise walk again) and the
    collector resumed for the command itself.
    """
    from bncli import api  # noqa: F401

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


class AxesType(click.ParamType):
    """A comma list of integers, such as ``0,1,2`` or ``-1``."""

    name = "AXES"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(part) for part in str(value).split(",") if part.strip() != "")
        except ValueError:
            self.fail(f"{value!r} is not a comma list of integers (example: 0,1,2)", param, ctx)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?b)?|(b)?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse a byte count: ``65536``, ``512K``, ``64M``, ``1GiB`` in binary units (K = 1024),
    ``64MB`` or ``1GB`` in decimal ones (MB = 10**6), as SI and IEC write them."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 65536, 512K, 64M, 1GiB, 100MB)")
    number, unit, suffix = float(match.group(1)), (match.group(2) or "").lower(), match.group(3)
    base = 1000 if suffix and suffix.lower() == "b" else 1024
    size = int(number * base ** " kmgt".index(unit or " "))
    if size < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return size


class SizeType(click.ParamType):
    """A byte count such as ``65536``, ``512K`` or ``64M``."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class LoadedValues:
    """Values read from a ``.npy`` file, with the file's path (which no output may be)."""

    def __init__(self, path: str, values: np.ndarray):
        self.path, self.values = path, values


class AffineType(click.ParamType):
    """``--scale`` / ``--offset``: a number, a comma list per channel, or a ``.npy`` file."""

    name = "VALUES"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        if value.lower().endswith(".npy"):
            return LoadedValues(value, _load_affine(value, param.opts[0]))
        try:
            values = [float(item) for item in value.split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a number, a comma list or a .npy file", param, ctx)
        return values[0] if len(values) == 1 and "," not in value else values


def _load_affine(path: str, option: str) -> np.ndarray:
    import numpy as np

    from bncli.core.dtypes import check_dtype

    try:
        values = np.load(path, allow_pickle=False)
        check_dtype(values.dtype, path)
    except FileNotFoundError:
        raise BnError(f"{path}: no such file (given to {option})") from None
    except (OSError, ValueError) as exc:
        raise BnError(f"{path}: cannot read {option} values ({exc})") from None
    return values


def _once(ctx, param, value):
    """An option that takes one value, given at most once (click keeps the last silently)."""
    if len(value) > 1:
        raise click.BadParameter("given more than once", ctx=ctx, param=param)
    return value[0] if value else None


def axes_options(func):
    """``--axes``, ``--channel-axis``, ``--layout``, shared by stats and normalize."""
    from bncli.core.layout import LAYOUTS

    func = click.option("--layout", type=click.Choice(list(LAYOUTS), case_sensitive=False),
                        default=None,
                        help="The data's layout: its channel axis is kept, every other "
                             "reduced (nchw: as --channel-axis 1).")(func)
    func = click.option("--channel-axis", type=int, default=None, metavar="K",
                        help="Reduce every axis but K (1 for NCHW). Exclusive with --axes.")(func)
    func = click.option("--axes", type=AxesType(), default=None, multiple=True,
                        callback=_once,
                        help="Axes to reduce, e.g. 0,1,2 (as tf.nn.moments); negative counts "
                             "from the end. Default: every axis but the last (axis 0 of 1-D "
                             "data).")(func)
    return func


def _set_color(ctx, param, value):
    if value is not None:
        from bncli.cli.report import set_color

        set_color(value)
    return value


def color_option(func):
    """``--color auto|always|never``."""
    return click.option("--color", type=click.Choice(["auto", "always", "never"]),
                        default=None, expose_value=False, callback=_set_color,
                        help="Colour tables: auto (a terminal; NO_COLOR and FORCE_COLOR "
                             "are honoured), always or never.")(func)


class ChannelsType(click.ParamType):
    """Flat channel indices: ``3``, ``0,5,9``, ``10-20`` or a mix."""

    name = "LIST"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        chosen = []  # ranges, not every index: 0-100000000 costs nothing until checked
        try:
            for part in (item.strip() for item in value.split(",") if item.strip()):
                start, _, stop = part.partition("-")
                chosen.append(range(int(start), int(stop or start) + 1))
        except ValueError:
            self.fail(f"{value!r} is not a list of channels (example: 0,5,10-20)", param, ctx)
        return chosen


def table_options(func):
    """``--format``; ``--all``, ``--sort``, ``--only-flagged``, ``--channels``: which rows
    the table shows. Shared by stats and merge."""
    from bncli.cli.columns import SORT_KEYS

    func = click.option("--channels", "pick", type=ChannelsType(), default=None,
                        help="Table: only these (flat) channels, e.g. 0,5,10-20.")(func)
    func = click.option("--only-flagged", is_flag=True,
                        help="Table: only the channels with findings.")(func)
    func = click.option("--sort", type=click.Choice(list(SORT_KEYS)), default=None,
                        help="Table: channels ordered by this statistic, largest first.")(func)
    func = click.option("--all", "show_all", is_flag=True,
                        help="Show every channel in the table.")(func)
    func = click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]),
                        default=None,
                        help="Output format (default: table on a terminal, else json).")(func)
    return func


def json_options(func):
    """``--indent``, ``--nan-as``: how statistics are written as JSON."""
    func = click.option("--nan-as", type=click.Choice(["string", "null"]), default="string",
                        show_default=True,
                        help='NaN in JSON: "NaN" strings (read back exactly) or null (for '
                             "jq and pandas).")(func)
    func = click.option("--indent", type=click.IntRange(min=0), default=None, metavar="N",
                        help="Pretty JSON, indented by N spaces.")(func)
    return func


# The options of how a command reads and computes, handed to the library whole as `engine`.
ENGINE_KEYS = ("chunk_bytes", "threads", "allow_sparse", "allow_external", "scheduler")


def engine_options(func):
    """``--chunk-bytes`` (16M, the engine's default), ``--threads``, ``--allow-external``,
    ``--allow-sparse``, ``--scheduler``, gathered into one ``engine`` argument (the library's
    keyword arguments); and ``--progress``."""

    command = func

    @functools.wraps(command)
    def gathered(*args, **kwargs):
        kwargs["engine"] = {key: kwargs.pop(key) for key in ENGINE_KEYS}
        return command(*args, **kwargs)

    func = gathered

    func = click.option("--scheduler", envvar="BN_SCHEDULER", default=None, metavar="ADDRESS",
                        help="Run on a dask.distributed cluster: tcp://host:port, or local "
                             "for one on this machine (needs bncli[dask]; env BN_SCHEDULER). "
                             "Input paths must be on a filesystem every worker shares.")(func)
    func = click.option("--progress/--no-progress", default=None,
                        help="Progress bar on stderr (default: when stderr is a terminal).")(func)
    func = click.option("--allow-external", is_flag=True,
                        help="Allow HDF5 external links, external storage and virtual "
                             "datasets, which read other files.")(func)
    func = click.option("--allow-sparse", is_flag=True,
                        help="Read HDF5 datasets whose unwritten chunks would give more "
                             "than 1 GiB of fill values.")(func)
    func = click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="Worker threads (default: available cores).")(func)
    func = click.option("--chunk-bytes", type=SizeType(), default="16M", show_default=True,
                        help="Memory budget of one chunk, e.g. 64M.")(func)
    return func


def _progress_factory(progress):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from bncli.cli.report import ProgressBars

    return ProgressBars(sys.stderr)


def _print_version(ctx, param, value):
    if not value or ctx.resilient_parsing:
        return
    from bncli.core.kernel import DESCRIPTION

    click.echo(f"bn {__version__} (kernel: {DESCRIPTION})")
    ctx.exit()


@click.group(cls=BnGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and the active kernel, and exit.")
def cli():
    """Per-channel moments and batch normalization of .npy and HDF5 files.

    INPUT is a .npy file, an HDF5 dataset as file.h5:/group/dataset (file.h5 alone if it
    holds one numeric dataset), or - for a .npy stream on stdin.

    \b
      bn info acts.npy
      bn stats acts.npy --axes 0,1,2
      bn normalize acts.npy -o normed.npy
      bn merge part*.json -o all.json
    """


# The commands. Click hands each option to its command as a keyword argument, so a command
# has one parameter per option (more than ten for stats, normalize, calibrate, diff and
# merge); the options the commands share come gathered where the library takes them whole
# (`engine`). Each body parses what the library does not (sizes, lists, files of values)
# and hands the rest to bncli.api.
@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default=None,
              help="Text (table) or JSON [default: table].")
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing: only check that every input can be read.")
@click.option("--indent", type=click.IntRange(min=0), default=2, show_default=True,
              metavar="N", help="JSON indent.")
@click.option("--allow-external", is_flag=True,
              help="Open HDF5 datasets that read other files.")
@color_option
def info(inputs, fmt, as_json, quiet, indent, allow_external):
    """Show shape, dtype, byte order, layout and HDF5 chunking/compression.

    \b
      bn info acts.npy
      bn info data.h5            # lists every dataset in the file
    """
    from bncli.api import info as describe

    entries = describe(inputs, allow_external=allow_external)
    if quiet:
        return
    if as_json or fmt == "json":
        click.echo(json.dumps(entries, indent=indent or None, default=str))
    else:
        from bncli.cli.report import render_info

        render_info(entries, sys.stdout)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@axes_options
@click.option("--keepdims", is_flag=True,
              help="Arrays keep the input's rank, reduced axes of size 1.")
@click.option("--ddof", type=int, default=0, show_default=True,
              help="Delta degrees of freedom of the variance.")
@click.option("--ignore-nan", is_flag=True, help="Leave NaNs out of the statistics.")
@click.option("--moments", "order", type=click.Choice(["2", "4"]), default="2",
              show_default=True,
              help="Highest central moment: 4 adds skewness and excess kurtosis.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print no statistics (with -o: only write the statistics file); "
                   "--fail-on still says on stderr what failed.")
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Also write a statistics file (.json or .npz).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--outlier-threshold", type=click.FloatRange(min=0, min_open=True),
              default=None, show_default="3.5", metavar="Z",
              help="Robust z-score above which a channel's mean or std is an outlier.")
@click.option("--fail-on", default=None, metavar="KINDS",
              help="Exit 3 when any of these findings exist: dead, nan, inf, overflow, "
                   "nonfinite (nan, inf, overflow), outlier, precision, few_values, sparse, "
                   "saturated, wide_range, any (comma list).")
@click.option("--quantiles", "quantile_levels", is_flag=False, flag_value="", default=None,
              metavar="[LIST]",
              help="Also keep a mergeable histogram per channel and give these quantiles "
                   "(default 0.0001,0.001,0.01,0.5,0.99,0.999,0.9999).")
@click.option("--accuracy", type=float, default=0.01, show_default=True, metavar="A",
              help="Relative accuracy of the quantiles (histogram buckets).")
@click.option("--sparse-threshold", type=click.FloatRange(0, 1), default=0.99,
              show_default=True, metavar="F",
              help="Fraction of exact zeros at which a channel is sparse.")
@click.option("--plot", "plot_path", default=None, metavar="FILE.png",
              help="Also draw the per-channel statistics, .png, .svg or .pdf (needs "
                   "bncli[plot]).")
@click.option("--export", "export_to", default=None,
              type=click.Choice(["torchvision", "torch-bn", "keras"]),
              help="Print the statistics in this framework's form (as bn export) instead of "
                   "the table; with --export-output, write it there.")
@click.option("--export-output", default=None, metavar="FILE",
              help="Where --export writes (.json or .py; .safetensors for torch-bn).")
@click.option("--each", is_flag=True,
              help="Every array of an HDF5, .npz or safetensors file, one row each: over all "
                   "its elements, or over --axes / but --channel-axis where it has them.")
@click.option("--allow-duplicates", is_flag=True,
              help="Take an input given twice twice (refused: its values would count twice).")
@table_options
@json_options
@color_option
@engine_options
def stats(inputs, axes, channel_axis, layout, keepdims, ddof, ignore_nan, order, fmt, show_all,
          quiet, output, force, outlier_threshold, fail_on, quantile_levels, accuracy,
          sparse_threshold, plot_path, export_to, export_output, each, allow_duplicates, sort,
          only_flagged, pick, indent,
          nan_as, engine, progress):
    """Per-channel count, mean, variance, std, min, max, NaN, Inf and zero counts, and
    with --quantiles the distribution.

    Several inputs are one dataset (same channel shape). The findings (dead, sparse,
    saturated, NaN/Inf, outlying and imprecise channels) follow the table, and are in the
    JSON and csv too.

    \b
      bn stats acts.npy                      # channels last: reduce 0,1,2 of NHWC
      bn stats acts.h5:/layer1 --layout nchw        # or --channel-axis 1
      bn stats part*.npy --format csv
      bn stats acts.npy --quantiles          # p1 / p50 / p99 columns, histograms in -o
      bn stats acts.npy --quantiles 0.001,0.999 -o stats.json
      bn stats acts.npy -o stats.json --fail-on dead,nonfinite --plot stats.png
      bn stats model.safetensors --each --fail-on nonfinite   # every tensor
    """
    from bncli import api
    from bncli.io.sinks import check_target

    if ddof < 0:
        raise click.BadParameter(f"{ddof} is negative", param_hint="--ddof")
    fail_kinds = _parse_fail_on(fail_on)
    quantiles, inputs = _parse_quantiles(quantile_levels, inputs)
    if not inputs:  # not required by click: --quantiles may have taken the first one
        raise click.UsageError("Missing argument 'INPUT...'.")
    if each:
        if output is not None or plot_path is not None or layout is not None:
            raise click.UsageError("--each reports every array of a file; it takes no -o, "
                                   "--plot or --layout (use --format json for the documents)")
        options = dict(ddof=ddof, ignore_nan=ignore_nan, moments=int(order), **engine,
                       quantiles=quantiles, accuracy=accuracy,
                       sparse_threshold=sparse_threshold, outlier_threshold=outlier_threshold)
        _stats_each(inputs, axes, channel_axis, options,
                    dict(fmt=fmt, quiet=quiet, indent=indent, nan_as=nan_as), fail_kinds)
        return
    input_paths = [api.parse_input(text).path for text in inputs]
    if output is not None:
        from bncli.io.statsfile import format_for_path

        format_for_path(output)
        check_target(output, force=force, inputs=input_paths)
    if plot_path is not None:
        _check_plot(plot_path, force, input_paths)
    started = time.perf_counter()
    statistics = api.stats(inputs, axes=axes, channel_axis=channel_axis, layout=layout,
                           ddof=ddof,
                           ignore_nan=ignore_nan, keepdims=keepdims, moments=int(order),
                           **engine, progress=_progress_factory(progress),
                           allow_duplicates=allow_duplicates,
                           quantiles=quantiles, accuracy=accuracy,
                           sparse_threshold=sparse_threshold,
                           **({} if outlier_threshold is None else
                              {"outlier_threshold": outlier_threshold}))
    elapsed = time.perf_counter() - started
    found = statistics.findings()
    if output is not None:
        api.save_statistics(statistics, output, force=force, inputs=input_paths, indent=indent,
                            nan_as=nan_as)
    if plot_path is not None:
        from bncli.cli.plot import plot_statistics

        plot_statistics(statistics, found, plot_path, force=force)
    if export_to is not None:
        _export(statistics, export_to, export_output, quiet, force)
    elif not quiet:
        _print_statistics(statistics, fmt, found, elapsed=elapsed, show_all=show_all,
                          indent=indent, nan_as=nan_as,
                          rows=dict(sort=sort, only_flagged=only_flagged, channels=pick))
        if (axes, channel_axis, layout) == (None, None, None) and (
                fmt in ("table", "csv") or sys.stdout.isatty()):
            _hint_axes(statistics)
    failing = [finding for finding in found if finding.kind in fail_kinds]
    if failing:
        for finding in failing:
            _echo_err(f"bn: --fail-on: {finding.kind} in {_channel_list(statistics, finding)}")
        raise click.exceptions.Exit(FINDINGS_EXIT_CODE)


def _stats_each(inputs: tuple, axes: tuple | None, channel_axis: int | None, options: dict,
                shown: dict, fail_kinds: set) -> None:
    """``bn stats --each``: every array of each file, reported as `shown` says."""
    from bncli import api

    if options["outlier_threshold"] is None:
        del options["outlier_threshold"]  # the library's default
    results = [result for text in inputs for result in api.stats_each(
        text, axes=axes, channel_axis=channel_axis, **options)]
    _report_each(results, shown["fmt"], shown["quiet"], shown["indent"], shown["nan_as"],
                 fail_kinds)


def _export(statistics: str | Statistics, to: str, output: str | None, quiet: bool,
            force: bool, fmt: str = "python", **options: Any) -> None:
    """Export statistics (a file, or computed; ``bn export``, ``bn stats --export``): to
    `output`, or print."""
    from bncli import api
    from bncli.core import exports

    exported = api.export(statistics, to, output, force=force, **options)
    if output is not None or quiet or exported is None:
        return
    if fmt == "json":
        sys.stdout.write(json.dumps(api.export_document(exported)) + "\n")
    else:
        sys.stdout.write((exports.torchvision_snippet if to == "torchvision"
                          else exports.keras_snippet)(exported))


def _report_each(results: list, fmt: str | None, quiet: bool, indent: int | None, nan_as: str,
                 fail_kinds: set) -> None:
    """Print what ``bn stats --each`` found; exit 3 on a finding of `fail_kinds`."""
    found = {result.name: result.statistics.findings() for result in results
             if result.statistics is not None}
    if not quiet:
        if fmt is None:
            fmt = "table" if sys.stdout.isatty() else "json"
        if fmt == "json":
            from bncli.io.statsfile import iter_json

            encode = json.JSONEncoder(allow_nan=False).encode
            sys.stdout.write("[")
            for index, result in enumerate(results):
                sys.stdout.write(("," if index else "") + "\n" + encode({
                    "tensor": result.name, "input": result.input,
                    "shape": None if result.shape is None else list(result.shape),
                    "dtype": result.dtype, "skipped": result.skipped})[:-1] + ', "statistics": ')
                if result.statistics is None:
                    sys.stdout.write("null}")
                else:
                    for part in iter_json(result.statistics, indent=indent, nan_as=nan_as):
                        sys.stdout.write(part)
                    sys.stdout.write("}")
            sys.stdout.write("\n]\n")
        elif fmt == "csv":
            from bncli.cli.report import iter_each_csv

            for part in iter_each_csv(results, found):
                sys.stdout.write(part)
        else:
            from bncli.cli.report import render_each

            render_each(results, sys.stdout, found=found)
    failing = [(result, finding) for result in results for finding in found.get(result.name, ())
               if finding.kind in fail_kinds]
    for result, finding in failing:
        _echo_err(f"bn: --fail-on: {finding.kind} in {result.input}"
                  + ("" if not result.statistics.channel_shape else
                     f" ({_channel_list(result.statistics, finding)})"))
    if failing:
        raise click.exceptions.Exit(FINDINGS_EXIT_CODE)


def _parse_quantiles(text: str | None, inputs: tuple) -> tuple:
    """The quantile levels of ``--quantiles [LIST]`` (None without it, True for the
    default list), and the inputs: ``--quantiles acts.npy`` takes the file as an input."""
    if text is None:
        return None, inputs
    if not text.strip():
        return True, inputs
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        if os.path.exists(_input_path(text)):
            return True, (text,) + tuple(inputs)
        raise click.BadParameter(f"{text!r} is not a comma list of levels from 0 to 1",
                                 param_hint="--quantiles") from None
    for level in levels:
        if not 0 <= level <= 1:
            raise click.BadParameter(f"level {level:g} is not from 0 to 1",
                                     param_hint="--quantiles")
    return levels, inputs


def _input_path(text: str) -> str:
    """The file an INPUT names (``acts.h5:/x`` names ``acts.h5``)."""
    from bncli.io.registry import parse_input

    return parse_input(text).path


def _echo_err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _channel_list(statistics: Statistics, finding: Finding, shown: int = 8) -> str:
    """``3 channels: 0, 4, 9`` (the first few, and how many more)."""
    from bncli.cli.report import channel_label

    count = len(finding.channels)
    labels = ", ".join(channel_label(statistics.channel_shape, index)
                       for index in finding.channels[:shown])
    more = f", ... (+{count - shown} more)" if count > shown else ""
    return f"{count} channel{'s' if count != 1 else ''}: {labels}{more}"


def _hint_axes(statistics: Statistics) -> None:
    """One line on stderr when the default axes look wrong for the input's shape."""
    from bncli.core.layout import channels_first_suspect, format_shape

    for described in statistics.inputs[:1]:
        shape = tuple(described.get("shape") or ())
        layout = channels_first_suspect(shape)
        if layout:
            _echo_err(f"bn: hint: {format_shape(shape)} was reduced to its last axis "
                      f"({shape[-1]} channels), but its last two axes are equal, as spatial "
                      f"axes are; if it is {layout.upper()}, use --layout {layout}")


# Exit status of `bn stats --fail-on` when such findings exist (1 and 2 are errors).
FINDINGS_EXIT_CODE = 3


def _parse_fail_on(text):
    if text is None:
        return set()
    from bncli.core.findings import parse_fail_on

    try:
        return parse_fail_on(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None


def _check_plot(path, force, inputs):
    from bncli.cli.plot import plot_format
    from bncli.io.sinks import check_target

    if plot_format(path) is None:
        raise click.BadParameter(f"{path!r} does not end in .png, .svg or .pdf",
                                 param_hint="--plot")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BnError("--plot needs matplotlib: pip install 'bncli[plot]'") from None
    check_target(path, force=force, inputs=inputs)


def _print_statistics(statistics, fmt, found, *, elapsed=None, show_all=False, indent=None,
                      nan_as="string", rows=None):
    if fmt is None:
        fmt = "table" if sys.stdout.isatty() else "json"
    if fmt == "json":
        from bncli.io.statsfile import iter_json

        for part in iter_json(statistics, indent=indent, nan_as=nan_as):
            sys.stdout.write(part)
    elif fmt == "csv":
        from bncli.cli.report import iter_csv

        for part in iter_csv(statistics, found):
            sys.stdout.write(part)
    else:
        from bncli.cli.report import render_table

        try:
            render_table(statistics, sys.stdout, found=found, elapsed=elapsed,
                         show_all=show_all, **(rows or {}))
        except ValueError as exc:  # a --channels index beyond the channels
            raise click.BadParameter(str(exc), param_hint="--channels") from None


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("input", metavar="INPUT")
@click.option("-o", "--output", default=None, metavar="PATH",
              help="out.npy, out.h5:/dataset, out.zarr, or - for stdout "
                   "(default: stdout when it is not a terminal).")
@axes_options
@click.option("--epsilon", type=float, default=None,
              help="Epsilon [default: the convention's, 1e-3 for tf].")
@click.option("--convention",
              type=click.Choice(["tf", "torch", "keras-backend", "keras-normalization"]),
              default="tf", show_default=True,
              help="Where epsilon goes: sqrt(var + eps) (tf; torch, eps 1e-5), sqrt(var) + "
                   "eps (keras-backend), max(sqrt(var), eps) (keras-normalization, 1e-7).")
@click.option("--scale", type=AffineType(), default=None, metavar="S",
              help="A number, a comma list per channel, or a .npy file.")
@click.option("--offset", type=AffineType(), default=None, metavar="B",
              help="A number, a comma list per channel, or a .npy file.")
@click.option("--stats", "stats_path", default=None, metavar="FILE",
              help="Use saved statistics (.json/.npz) instead of computing them.")
@click.option("--save-stats", default=None, metavar="FILE",
              help="Also write the statistics used (.json/.npz).")
@click.option("--dtype", type=click.Choice(["float16", "float32", "float64"]), default=None,
              help="Output dtype (default: the input's if floating, else float32).")
@click.option("--ddof", type=click.IntRange(min=0), default=0, show_default=True,
              help="Delta degrees of freedom of the variance computed here.")
@click.option("--ignore-nan", is_flag=True,
              help="Leave NaNs out of the statistics computed here.")
@click.option("--force", is_flag=True,
              help="Replace existing output files (in an HDF5 file, only the named dataset).")
@click.option("--compression", type=click.Choice(["gzip", "lzf", "none"]), default=None,
              help="HDF5 or zarr output compression [default: none for HDF5, zstd for "
                   "zarr].")
@click.option("--chunks", "hdf5_chunks", type=AxesType(), default=None, metavar="SHAPE",
              help="HDF5 or zarr output chunk shape, a comma list (default: the input's "
                   "chunks, else one block).")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@color_option
@engine_options
def normalize(input, output, axes, channel_axis, layout, epsilon, convention, scale, offset,
              stats_path, save_stats,
              dtype, ddof, ignore_nan, force, compression, hdf5_chunks, quiet, engine,
              progress):
    """Write scale * (x - mean) / sqrt(variance + epsilon) + offset, chunk by chunk.

    \b
      bn normalize acts.npy -o normed.npy
      bn normalize acts.npy --stats train.json -o normed.npy   # inference mode
      bn normalize data.h5:/x --channel-axis 1 -o out.h5:/x --dtype float16
      bn normalize run.h5:/acts -o run.h5:/normed --compression gzip   # adds one dataset
      cat acts.npy | bn normalize - | python consume.py
      bn normalize acts.npy -o normed.npy --convention torch    # eps 1e-5, as BatchNorm
    """
    from bncli import api

    if output is None:
        if sys.stdout.isatty():
            raise click.UsageError("refusing to write binary .npy to a terminal; "
                                   "give -o FILE or pipe the output")
        output = "-"
    value_files = [item.path for item in (scale, offset) if isinstance(item, LoadedValues)]
    if output != "-" and value_files:
        from bncli.io.sinks import check_target
        from bncli.io.targets import Target

        for path in value_files:  # the output may not be a file of scale or offset values
            check_target(Target.parse(output).path, force=True, inputs=[path])
    elif value_files:
        from bncli.io.sinks import stdout_stream

        stdout_stream(inputs=value_files)
    scale, offset = (item.values if isinstance(item, LoadedValues) else item
                     for item in (scale, offset))
    result = api.normalize(
        input, output, axes=axes, channel_axis=channel_axis, layout=layout, epsilon=epsilon,
        convention=convention, scale=scale,
        offset=offset, stats=stats_path, save_stats=save_stats, dtype=dtype, force=force,
        ddof=ddof, ignore_nan=ignore_nan, compression=compression, chunks=hdf5_chunks,
        **engine, progress=_progress_factory(progress))
    if not quiet:
        from bncli.cli.report import render_normalize_summary

        render_normalize_summary(result, sys.stderr, found=result.statistics.findings())
        if (axes, channel_axis, layout, stats_path) == (None, None, None, None):
            _hint_axes(result.statistics)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("statsfiles", nargs=-1, required=True, metavar="STATSFILE...")
@click.option("-o", "--output", default=None, metavar="OUT",
              help="Also write the merged statistics file (.json or .npz; - for JSON on "
                   "stdout).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing (with -o: only write the merged file).")
@click.option("--allow-duplicates", is_flag=True,
              help="Merge a file given twice, or a copy of a statistics file (their "
                   "values count twice).")
@table_options
@json_options
@color_option
def merge(statsfiles, output, force, fmt, show_all, quiet, allow_duplicates, sort, only_flagged,
          pick, indent, nan_as):
    """Combine statistics of parts of a dataset, exactly as if computed in one run.

    The merged statistics are printed as bn stats prints them; -o also writes them.

    \b
      bn stats shard0.npy -o s0.json && bn stats shard1.npy -o s1.json
      bn merge s0.json s1.json -o all.json
      bn merge s*.json --format table
    """
    from bncli import api
    from bncli.io.sinks import check_target
    from bncli.io.statsfile import format_for_path

    if output == "-":
        output, fmt = None, "json"
    if output is not None:
        format_for_path(output)
        check_target(output, force=force, inputs=statsfiles)
    merged = api.merge(statsfiles, allow_duplicates=allow_duplicates)
    found = merged.findings()
    if output is not None:
        api.save_statistics(merged, output, force=force, inputs=statsfiles, indent=indent,
                            nan_as=nan_as)
    if not quiet:
        _print_statistics(merged, fmt, found, show_all=show_all, indent=indent, nan_as=nan_as,
                          rows=dict(sort=sort, only_flagged=only_flagged, channels=pick))


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("statsfile", metavar="STATSFILE")
@click.option("--to", "to", required=True,
              type=click.Choice(["torchvision", "torch-bn", "keras", "json", "npz"]),
              help="The framework's form.")
@click.option("-o", "--output", default=None, metavar="FILE",
              help=".json or .py (torchvision, keras), .safetensors (torch-bn), a "
                   "statistics file (json, npz).")
@click.option("--no-rescale", is_flag=True,
              help="torchvision: keep statistics of integer images as they are (not / 255).")
@click.option("--prefix", default="", metavar="P",
              help="torch-bn: put P before every key (layer1.bn.).")
@click.option("--format", "fmt", type=click.Choice(["python", "json"]), default="python",
              show_default=True, help="What is printed without -o.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def export(statsfile, to, output, no_rescale, prefix, fmt, force):
    """Statistics as a framework takes them: torchvision's Normalize (integer images
    divided by 255), a torch BatchNorm state (unbiased running_var) as safetensors, a
    Keras Normalization layer (population variance).

    \b
      bn export stats.json --to torchvision
      bn export stats.json --to torch-bn -o bn.safetensors
      bn export stats.json --to keras --format json
    """

    if to == "npz" and output is None:
        raise click.UsageError("an npz export is written to a file: give -o FILE.npz")
    if to == "json" and output is None:
        from bncli.io.statsfile import iter_json, load

        for part in iter_json(load(statsfile)):
            sys.stdout.write(part)
        return
    _export(statsfile, to, output, False, force, fmt, rescale=not no_rescale, prefix=prefix)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT|STATSFILE...")
@click.option("--method", type=click.Choice(["minmax", "percentile", "entropy", "mse"]),
              default="entropy", show_default=True, help="How the range is chosen.")
@click.option("--per-channel", is_flag=True, help="One range per channel.")
@click.option("--percentile", type=click.FloatRange(0, 100, min_open=True), default=99.99,
              show_default=True, help="For --method percentile.")
@click.option("--target", type=click.Choice(["int8", "fp8-e4m3"]), default="int8",
              show_default=True, help="scale = range / 127 (int8) or / 448 (fp8-e4m3).")
@click.option("--to", "fmt", type=click.Choice(["table", "json", "csv", "tensorrt"]),
              default=None, help="Output (default: table on a terminal, else json); "
                                 "tensorrt: a calibration cache.")
@click.option("--name", default=None, help="The tensor's name (default: the input's).")
@click.option("--each", is_flag=True,
              help="Every array of an HDF5, .npz, safetensors or zarr file, each a tensor "
                   "(one TensorRT cache of all of them).")
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Write the output to FILE (atomically) instead of stdout.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@click.option("--accuracy", type=float, default=0.01, show_default=True, metavar="A",
              help="Histogram accuracy where the histograms are computed here.")
@click.option("--ignore-nan", is_flag=True,
              help="Leave NaNs out of histograms computed here (else a NaN is an error).")
@axes_options
@engine_options
def calibrate(inputs, method, per_channel, percentile, target, fmt, name, each, output,
              force, accuracy, ignore_nan, axes, channel_axis, layout, engine, progress):
    """Clipping ranges and scales for int8 (or fp8) quantization, from the histograms of
    INPUTs or of statistics files written with --quantiles (merged exactly).

    \b
      bn calibrate acts.npy --method entropy                  # TensorRT's KL method
      bn calibrate part*.json --method percentile --percentile 99.99
      bn calibrate acts.npy --per-channel --method mse --to json
      bn calibrate acts.npy --name conv1 --to tensorrt -o calib.cache
      bn calibrate activations.h5 --each --to tensorrt -o calib.cache
    """
    from bncli import api

    options = {}
    if not all(api.is_statistics_file(text) for text in inputs):
        options = dict(axes=axes, channel_axis=channel_axis, layout=layout,
                       ignore_nan=ignore_nan, **engine,
                       progress=_progress_factory(progress))
    if fmt == "tensorrt" and per_channel:
        raise click.UsageError("a TensorRT cache holds one scale per tensor; drop "
                               "--per-channel")
    if output is not None:
        from bncli.io.sinks import check_target

        check_target(output, force=force, inputs=[api.parse_input(text).path
                                                  for text in inputs])
    if each:
        if name is not None or len(inputs) != 1 or layout is not None:
            raise click.UsageError("--each takes one file, whose arrays name themselves "
                                   "(no --name, no --layout)")
        options.pop("layout", None)
        results = api.calibrate_each(inputs[0], method=method, per_channel=per_channel,
                                     percentile=percentile, target=target, accuracy=accuracy,
                                     **options)
    else:
        results = [api.calibrate(inputs, method=method, per_channel=per_channel,
                                 percentile=percentile, target=target, name=name,
                                 accuracy=accuracy, **options)]
    if fmt is None:
        fmt = "table" if output is None and sys.stdout.isatty() else "json"
    from bncli.cli.report import calibration_text

    text = calibration_text(results, fmt)
    if output is None:
        sys.stdout.write(text)
        return
    from bncli.io.sinks import AtomicFile, output_error

    with AtomicFile(output, force=force) as atomic:
        try:
            with open(atomic.temp_path, "w") as stream:
                stream.write(text)
        except OSError as exc:
            raise output_error(output, exc) from None


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("base", metavar="BASE")
@click.argument("new", metavar="NEW")
@axes_options
@click.option("--ignore-nan", is_flag=True, help="Leave NaNs out (for sides computed here).")
@click.option("--accuracy", type=float, default=None, metavar="A",
              help="Histogram accuracy of sides computed here (default: the other side's, "
                   "or 0.01).")
@click.option("--sparse-threshold", type=click.FloatRange(0, 1), default=0.99,
              show_default=True, metavar="F",
              help="Fraction of exact zeros at which a channel is sparse.")
@click.option("--max-shift", type=click.FloatRange(min=0), default=0.25, show_default=True,
              metavar="S", help="Drift: a mean moved by more than S of BASE's std.")
@click.option("--max-psi", type=click.FloatRange(min=0), default=0.2, show_default=True,
              metavar="P", help="Drift: a population stability index above P.")
@click.option("--fail-on", default=None, metavar="KINDS",
              help="Exit 3 when any channel has: drift, dead, sparse, nonfinite, saturated "
                   "(newly), any (comma list).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default=None,
              help="Output format (default: table on a terminal, else json).")
@click.option("--all", "show_all", is_flag=True, help="Show every channel in the table.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; --fail-on still reports.")
@json_options
@color_option
@engine_options
def diff(base, new, axes, channel_axis, layout, ignore_nan, accuracy, sparse_threshold,
         max_shift, max_psi, fail_on, fmt, show_all, quiet, indent, nan_as, engine,
         progress):
    """Per-channel drift of NEW from BASE: each a statistics file or an INPUT.

    Mean shift in BASE's std, std ratio, channels that became dead, sparse, non-finite or
    saturated; with histograms on both sides (bn stats --quantiles -o, or any INPUT) the
    population stability index over BASE's deciles and NEW's mass outside BASE's
    [p0.1, p99.9].

    \b
      bn diff last_month.json acts.npy
      bn diff base.json new.json --fail-on drift --max-shift 0.5     # exit 3 on drift
    """
    import numpy as np

    from bncli import api
    from bncli.core.drift import BECAME

    kinds = {part.strip() for part in (fail_on or "").split(",") if part.strip()}
    known = {"drift", "any", *BECAME}
    if kinds - known:
        raise click.BadParameter(f"unknown kind {sorted(kinds - known)[0]!r}; choose from "
                                 f"{', '.join(['drift', *BECAME, 'any'])}",
                                 param_hint="--fail-on")
    if "any" in kinds:
        kinds = {"drift", *BECAME}
    result, old, now = api.diff(
        base, new, axes=axes, channel_axis=channel_axis, layout=layout, ignore_nan=ignore_nan,
        accuracy=accuracy, sparse_threshold=sparse_threshold, max_shift=max_shift,
        max_psi=max_psi, **engine, progress=_progress_factory(progress))
    if not quiet:
        if fmt is None:
            fmt = "table" if sys.stdout.isatty() else "json"
        if fmt == "json":
            from bncli.io.statsfile import drift_document

            sys.stdout.write(json.dumps(drift_document(result, old, now, nan_as), indent=indent)
                             + "\n")
        elif fmt == "csv":
            from bncli.cli.report import iter_diff_csv

            for part in iter_diff_csv(result):
                sys.stdout.write(part)
        else:
            from bncli.cli.report import render_diff

            render_diff(result, old, now, sys.stdout, show_all=show_all)
    masks = {"drift": result.drifted, **result.became}
    failing = [(kind, np.flatnonzero(masks[kind])) for kind in sorted(kinds)
               if masks[kind].any()]
    for kind, channels in failing:
        labels = ", ".join(map(str, channels[:8].tolist()))
        more = f", ... (+{len(channels) - 8} more)" if len(channels) > 8 else ""
        _echo_err(f"bn: --fail-on: {kind} in {len(channels)} channel"
                  f"{'s' if len(channels) != 1 else ''}: {labels}{more}")
    if failing:
        raise click.exceptions.Exit(FINDINGS_EXIT_CODE)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that temporary files are removed."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _handle_signals(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if hasattr(signal, "SIGXFSZ"):
            # Past `ulimit -f` a write then fails with EFBIG, which is reported, instead of
            # the process dying with the temporary file left behind.
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _on_sigterm)
        return func(*args, **kwargs)

    return wrapper


@_handle_signals
def main(argv: Sequence[str] | None = None) -> None:
    """Run ``bn``; the console-script entry point."""
    import warnings

    gc.disable()  # for the imports: see _load_library

    # Every NaN or Inf that NumPy would warn about is counted and reported as a finding.
    warnings.simplefilter("ignore", RuntimeWarning)
    # An error raised while a library frees an object (h5py after a failed write) is not
    # the user's to read: the error that matters has been reported.
    sys.unraisablehook = _ignore_unraisable
    if sys.stderr is None:  # 2>&- : nowhere to report, but no crash either
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's lifetime
    sys.stdout = GuardedStdout(sys.stdout)
    try:
        code = cli.main(args=argv, prog_name="bn", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("bn: interrupted", err=True)
        code = 130
    except Terminated:
        code = 143
    except click.UsageError as error:
        # one line, as bn's own errors; `bn COMMAND --help` has the usage
        command = f" {error.ctx.info_name}" if error.ctx and error.ctx.parent else ""
        click.echo(f"bn: error: {error.format_message()} (see bn{command} --help)", err=True)
        code = error.exit_code
    except click.ClickException as error:
        error.show()
        code = error.exit_code
    except (BrokenPipeError, StdoutClosed):
        _silence_stdout()
        code = 141  # what a shell reports for a command ended by SIGPIPE, as cat is
    except BnError as error:
        click.echo(f"bn: error: {_with_hint(error)}", err=True)
        code = error.exit_code
    except MemoryError:
        click.echo("bn: error: out of memory (try a smaller --chunk-bytes)", err=True)
        code = 1
    except Exception as error:  # noqa: BLE001 - no traceback ever reaches a user
        if os.environ.get("BN_DEBUG"):
            raise
        click.echo(f"bn: error: unexpected {type(error).__name__}: {error} "
                   "(set BN_DEBUG=1 for a traceback)", err=True)
        code = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        code = 141
    except BnError as error:
        if not code:  # an error already reported stands for this one
            click.echo(f"bn: error: {_with_hint(error)}", err=True)
            code = error.exit_code
    if isinstance(sys.stdout, GuardedStdout):  # Python's own flush at exit needs no guard
        sys.stdout = sys.stdout._stream or open(os.devnull, "w")  # noqa: SIM115
    gc.freeze()  # nothing is left to collect: spare the interpreter's walk at exit
    gc.enable()  # as it was, for a caller that goes on after SystemExit
    sinks = sys.modules.get("bncli.io.sinks")  # not imported for --help: keep it so
    if sinks is not None and sinks.hdf5_left_broken():
        # the HDF5 library would crash in its shutdown: the error is reported, the
        # temporary file removed, so end here
        sys.stderr.flush()
        os._exit(code or 0)
    sys.exit(code or 0)


def _ignore_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    if os.environ.get("BN_DEBUG"):
        sys.__unraisablehook__(unraisable)


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that no second
    # BrokenPipeError is printed.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
