"""``bn stats``: per-channel statistics of one dataset, or of every array of a file."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from bncli.cli import exit_codes
from bncli.cli.group import cli
from bncli.cli.options import (
    CONTEXT_SETTINGS,
    axes_options,
    color_option,
    engine_options,
    json_options,
    progress_factory,
    table_options,
)
from bncli.cli.output import (
    channel_list,
    check_plot,
    echo_err,
    export_statistics,
    hint_axes,
    input_path,
    parse_fail_on,
    print_statistics,
)


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
    fail_kinds = parse_fail_on(fail_on)
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
        check_plot(plot_path, force, input_paths)
    started = time.perf_counter()
    statistics = api.stats(inputs, axes=axes, channel_axis=channel_axis, layout=layout,
                           ddof=ddof,
                           ignore_nan=ignore_nan, keepdims=keepdims, moments=int(order),
                           **engine, progress=progress_factory(progress),
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
        export_statistics(statistics, export_to, export_output, quiet, force)
    elif not quiet:
        print_statistics(statistics, fmt, found, elapsed=elapsed, show_all=show_all,
                          indent=indent, nan_as=nan_as,
                          rows=dict(sort=sort, only_flagged=only_flagged, channels=pick))
        if (axes, channel_axis, layout) == (None, None, None) and (
                fmt in ("table", "csv") or sys.stdout.isatty()):
            hint_axes(statistics)
    failing = [finding for finding in found if finding.kind in fail_kinds]
    if failing:
        for finding in failing:
            echo_err(f"bn: --fail-on: {finding.kind} in {channel_list(statistics, finding)}")
        raise click.exceptions.Exit(exit_codes.FINDINGS)


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
    for result in results:
        if result.skipped:
            echo_err(f"bn: skipped {result.input}: {result.skipped}")
    if results and all(result.statistics is None for result in results):
        echo_err("bn: error: no array could be reduced")
        raise click.exceptions.Exit(exit_codes.ERROR)
    failing = [(result, finding) for result in results for finding in found.get(result.name, ())
               if finding.kind in fail_kinds]
    for result, finding in failing:
        echo_err(f"bn: --fail-on: {finding.kind} in {result.input}"
                  + ("" if not result.statistics.channel_shape else
                     f" ({channel_list(result.statistics, finding)})"))
    if failing:
        raise click.exceptions.Exit(exit_codes.FINDINGS)


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
        if os.path.exists(input_path(text)):
            return True, (text,) + tuple(inputs)
        raise click.BadParameter(f"{text!r} is not a comma list of levels from 0 to 1",
                                 param_hint="--quantiles") from None
    for level in levels:
        if not 0 <= level <= 1:
            raise click.BadParameter(f"level {level:g} is not from 0 to 1",
                                     param_hint="--quantiles")
    return levels, inputs
