"""``bn info``, ``bn merge`` and ``bn export``: what files hold, statistics files merged, and
statistics in a framework's form."""

from __future__ import annotations

import json
import sys

import click

from bncli.cli.group import cli
from bncli.cli.options import CONTEXT_SETTINGS, color_option, json_options, table_options
from bncli.cli.output import export_statistics, print_statistics


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
        print_statistics(merged, fmt, found, show_all=show_all, indent=indent, nan_as=nan_as,
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
    export_statistics(statsfile, to, output, False, force, fmt, rescale=not no_rescale,
                      prefix=prefix)
