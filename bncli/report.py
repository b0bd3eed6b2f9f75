"""Rendering for people and scripts: tables, csv, info listings, progress, summaries.

This is the only module that imports rich. Every function takes the stream to write to;
nothing here computes statistics.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from .layout import format_shape
from .statsfile import Statistics

# Channels shown by the table without --all: the first and last few.
EDGE_ROWS = 16
CSV_FIELDS = ("count", "mean", "variance", "std", "min", "max", "nan_count", "inf_count")


# Width of text written to files and pipes, where no terminal sets one: wide enough that
# a table of 17-digit numbers is never folded.
PLAIN_WIDTH = 200


def console_for(stream) -> Console:
    """Return a rich console on `stream`, plain text when it is not a terminal."""
    is_terminal = hasattr(stream, "isatty") and stream.isatty()
    return Console(file=stream, highlight=False, soft_wrap=False,
                   width=None if is_terminal else PLAIN_WIDTH)


def number(value: float) -> str:
    """Six significant digits, the way people read statistics."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if np.isnan(value):
        return "nan"
    return f"{value:.6g}"


def _channel_indices(channel_shape: Sequence[int]):
    return list(itertools.product(*(range(dim) for dim in channel_shape)))


def _index_label(index: tuple) -> str:
    return ",".join(map(str, index)) if index else "-"


def human_bytes(count: float) -> str:
    """``1.07 GB`` style sizes."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    return f"{count} B"  # pragma: no cover


def render_table(statistics: Statistics, stream, *, elapsed: float | None = None,
                 show_all: bool = False) -> None:
    """Print the per-channel table with a header line about the data."""
    console = console_for(stream)
    values = statistics.values()
    inputs = statistics.inputs
    names = ", ".join(
        entry["path"] + (f":{entry['dataset']}" if entry.get("dataset") else "")
        for entry in inputs[:3]) + (f" (+{len(inputs) - 3} more)" if len(inputs) > 3 else "")
    dtypes = sorted({entry["dtype"] for entry in inputs})
    total_bytes = sum(int(np.prod(entry["shape"])) * np.dtype(entry["dtype"]).itemsize
                      for entry in inputs)
    elements = sum(int(np.prod(entry["shape"])) for entry in inputs)
    header = [
        f"[bold]{names}[/bold]",
        f"shape {' + '.join(format_shape(entry['shape']) for entry in inputs[:3])}"
        f"{' + ...' if len(inputs) > 3 else ''}  dtype {','.join(dtypes)}  "
        f"axes {list(statistics.axes)}  channels {format_shape(statistics.channel_shape)}  "
        f"elements {elements:,}" + (f"  ddof {statistics.ddof}" if statistics.ddof else ""),
    ]
    if elapsed is not None and elapsed > 0:
        header.append(f"time {elapsed:.3g} s  ({human_bytes(total_bytes / elapsed)}/s)")
    for line in header:
        console.print(line)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("channel", justify="right")
    for label in ("count", "mean", "std", "min", "max", "nan", "inf"):
        table.add_column(label, justify="right")
    indices = _channel_indices(statistics.channel_shape)
    shown = range(len(indices))
    if not show_all and len(indices) > 2 * EDGE_ROWS:
        shown = list(range(EDGE_ROWS)) + [None] + list(range(len(indices) - EDGE_ROWS,
                                                             len(indices)))
    flat = {key: array.reshape(-1) for key, array in values.items()}
    for row in shown:
        if row is None:
            table.add_row("...", *[""] * 7)
            continue
        table.add_row(
            _index_label(indices[row]),
            *(number(flat[key][row]) for key in ("count", "mean", "std", "min", "max",
                                                  "nan_count", "inf_count")))
    console.print(table)
    if not show_all and len(indices) > 2 * EDGE_ROWS:
        console.print(f"{len(indices) - 2 * EDGE_ROWS} channels not shown (use --all)")


def render_csv(statistics: Statistics) -> str:
    """Return one csv row per channel; the channel index is ``i`` or ``i;j`` for tuples."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("channel",) + CSV_FIELDS)
    values = {key: array.reshape(-1) for key, array in statistics.values().items()}
    for row, index in enumerate(_channel_indices(statistics.channel_shape)):
        writer.writerow([";".join(map(str, index))] + [
            int(values[key][row]) if key in ("count", "nan_count", "inf_count")
            else repr(float(values[key][row])) for key in CSV_FIELDS])
    return buffer.getvalue()


def render_info(entries: list, stream) -> None:
    """Print what ``bn info`` found, one block per input."""
    console = console_for(stream)
    for entry in entries:
        console.print(f"[bold]{entry['input']}[/bold]")
        for row in entry.get("datasets", []):
            status = "" if row["usable"] else f"  (not usable: {row['problem']})"
            shape = "empty" if row["shape"] is None else format_shape(row["shape"])
            console.print(f"  dataset  {row['dataset']}  {shape} {row['dtype']}{status}")
        lines = [
            ("format", entry.get("format")),
            ("dataset", entry.get("dataset")),
            ("shape", format_shape(entry["shape"])),
            ("dtype", entry["dtype"]),
            ("byte order", entry["byte_order"]),
            ("order", entry["order"] + (" (Fortran)" if entry["order"] == "F" else "")),
            ("size", f"{entry['nbytes']:,} bytes ({human_bytes(entry['nbytes'])})"),
        ]
        if entry.get("format") == "hdf5":
            lines += [
                ("layout", entry["layout"]),
                ("chunks", format_shape(entry["chunks"]) if entry["chunks"] else "none"),
                ("compression", (f"{entry['compression']}"
                                 + (f" ({entry['compression_opts']})"
                                    if entry["compression_opts"] is not None else ""))
                 if entry["compression"] else "none"),
                ("filters", ", ".join(entry["filters"]) or "none"),
                ("stored", f"{entry['storage_bytes']:,} bytes"),
            ]
        for label, value in lines:
            if value is not None:
                console.print(f"  {label:<12} {value}")


def render_normalize_summary(result, stream) -> None:
    """Print the statistics a normalization used, compactly."""
    console = console_for(stream)
    statistics = result.statistics
    values = statistics.values()
    mean, std = values["mean"], values["std"]
    console.print(
        f"bn: normalized {format_shape(result.shape)} over axes {list(statistics.axes)} "
        f"-> {result.output} ({result.dtype.name}); {mean.size} channels, "
        f"mean {number(np.nanmin(mean)) if mean.size else '-'}..{number(np.nanmax(mean))}"
        f", std {number(np.nanmin(std))}..{number(np.nanmax(std))}",
        markup=False, soft_wrap=True)


class ProgressBars:
    """A factory of rich progress bars on a stream, as :mod:`bncli.api` expects."""

    def __init__(self, stream):
        self.console = Console(file=stream)

    def __call__(self, label: str, total: int):
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
            transient=True)
        task = progress.add_task(label, total=total)
        progress.start()

        class _Bar:
            @staticmethod
            def advance(nbytes: int) -> None:
                progress.update(task, advance=nbytes)

            @staticmethod
            def close() -> None:
                progress.stop()

        return _Bar()
