"""``bn calibrate``: clipping ranges for int8 and fp8 from the histograms."""

from __future__ import annotations

import sys

import click

from bncli.cli.group import cli
from bncli.cli.options import CONTEXT_SETTINGS, axes_options, engine_options, progress_factory


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
                       progress=progress_factory(progress))
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
