"""``bn diff``: per-channel drift of one dataset from another."""

from __future__ import annotations

import json
import sys

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
)
from bncli.cli.output import echo_err


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
        max_psi=max_psi, **engine, progress=progress_factory(progress))
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
        echo_err(f"bn: --fail-on: {kind} in {len(channels)} channel"
                  f"{'s' if len(channels) != 1 else ''}: {labels}{more}")
    if failing:
        raise click.exceptions.Exit(exit_codes.FINDINGS)
