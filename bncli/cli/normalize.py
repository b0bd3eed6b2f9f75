"""``bn normalize``: a batch-normalized copy of an input."""

from __future__ import annotations

import sys

import click

from bncli.cli.group import cli
from bncli.cli.options import (
    CONTEXT_SETTINGS,
    AffineType,
    AxesType,
    LoadedValues,
    axes_options,
    color_option,
    engine_options,
    progress_factory,
)
from bncli.cli.output import hint_axes


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
                   "chunks, else one block); an output may have at most 100,000 chunks.")
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
        **engine, progress=progress_factory(progress))
    if not quiet:
        from bncli.cli.report import render_normalize_summary

        render_normalize_summary(result, sys.stderr, found=result.statistics.findings())
        if (axes, channel_axis, layout, stats_path) == (None, None, None, None):
            hint_axes(result.statistics)
