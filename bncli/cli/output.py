"""What several commands print: statistics as a table, json or csv, findings on stderr,
exports, and the checks of the files they will write."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from bncli.errors import BnError

if TYPE_CHECKING:

    from bncli.core.findings import Finding
    from bncli.core.statistics import Statistics


def export_statistics(statistics: str | Statistics, to: str, output: str | None, quiet: bool,
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


def input_path(text: str) -> str:
    """The file an INPUT names (``acts.h5:/x`` names ``acts.h5``)."""
    from bncli.io.registry import parse_input

    return parse_input(text).path


def echo_err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def channel_list(statistics: Statistics, finding: Finding, shown: int = 8) -> str:
    """``3 channels: 0, 4, 9`` (the first few, and how many more)."""
    from bncli.cli.report import channel_label

    count = len(finding.channels)
    labels = ", ".join(channel_label(statistics.channel_shape, index)
                       for index in finding.channels[:shown])
    more = f", ... (+{count - shown} more)" if count > shown else ""
    return f"{count} channel{'s' if count != 1 else ''}: {labels}{more}"


def hint_axes(statistics: Statistics) -> None:
    """One line on stderr when the default axes look wrong for the input's shape."""
    from bncli.core.layout import channels_first_suspect, format_shape

    for described in statistics.inputs[:1]:
        shape = tuple(described.get("shape") or ())
        layout = channels_first_suspect(shape)
        if layout:
            echo_err(f"bn: hint: {format_shape(shape)} was reduced to its last axis "
                      f"({shape[-1]} channels), but its last two axes are equal, as spatial "
                      f"axes are; if it is {layout.upper()}, use --layout {layout}")


def parse_fail_on(text):
    if text is None:
        return set()
    from bncli.core.findings import parse_fail_on

    try:
        return parse_fail_on(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fail-on") from None


def check_plot(path, force, inputs):
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


def print_statistics(statistics, fmt, found, *, elapsed=None, show_all=False, indent=None,
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
