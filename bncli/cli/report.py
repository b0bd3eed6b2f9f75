"""Rendering for people and scripts: tables, csv, info listings, progress, summaries.

This is the only module that imports rich. Every function takes the stream to write to;
nothing here computes statistics.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from bncli.cli.columns import SORT_KEYS, TABLE_COLUMNS
from bncli.core.layout import format_shape
from bncli.core.statistics import Statistics

if TYPE_CHECKING:
    from typing import Protocol

    from bncli.api import NormalizeResult
    from bncli.core.drift import Drift

    class _ProgressBar(Protocol):
        """What :class:`ProgressBars` makes: one bar."""

        def advance(self, nbytes: int) -> None: ...

        def close(self) -> None: ...

# Channels shown by the table without --all: the first and last few.
EDGE_ROWS = 16
# Flagged channels shown in the table at most (the findings list every count); --all shows all.
MAX_FLAGGED_ROWS = 200
CSV_FIELDS = ("count", "mean", "variance", "std", "min", "max", "nan_count", "inf_count")
HIGHER_FIELDS = ("skewness", "kurtosis")  # with --moments 4
COUNT_FIELDS = ("zero_count", "min_count", "max_count")  # absent from older files
# The quantiles a table shows when more than three were computed, those that are.
TABLE_LEVELS = (0.01, 0.5, 0.99)


def quantile_label(level: float) -> str:
    """``p1``, ``p50``, ``p99.99``: a quantile level as a percentile."""
    return f"p{level * 100:.6g}"


def table_levels(levels: Sequence[float]) -> list:
    """The quantile levels a table has columns for: all of up to three; else p1, p50 and
    p99 where computed (else the first, middle and last)."""
    levels = list(levels)
    if len(levels) <= 3:
        return levels
    chosen = [level for level in TABLE_LEVELS if level in levels]
    return chosen or [levels[0], levels[len(levels) // 2], levels[-1]]


def _quantile_columns(statistics: Statistics, levels: Sequence[float]) -> dict:
    """``{label: flat values}`` of the quantiles at `levels` (empty without a histogram)."""
    histogram = statistics.histogram
    if histogram is None:
        return {}
    values = statistics.values()["quantiles"]
    return {quantile_label(level): values[..., histogram.levels.index(level)].reshape(-1)
            for level in levels}


# Width of text written to files and pipes, where no terminal sets one: wide enough that
# a table of 17-digit numbers is never folded.
PLAIN_WIDTH = 200


class _PlainText(io.StringIO):
    """Collects what a console prints for a file or pipe; written without trailing blanks."""

    def __init__(self, stream: TextIO):
        super().__init__()
        self.stream = stream

    def flush(self) -> None:
        text = self.getvalue()
        if text:
            self.stream.write("".join(line.rstrip() + "\n" for line in text.splitlines()))
            self.seek(0)
            self.truncate()
        self.stream.flush()


class _Console(Console):
    """A rich console that lets a closed pipe be a BrokenPipeError (rich would exit 1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError()


# Colour: "auto" (a terminal, unless NO_COLOR is set; FORCE_COLOR forces it), "always", or
# "never", as the command line sets it.
COLOR = {"mode": "auto"}


def set_color(mode: str) -> None:
    """Choose when tables are coloured: ``auto``, ``always`` or ``never``."""
    COLOR["mode"] = mode


def _wants_color(stream: TextIO) -> bool:
    mode = COLOR["mode"]
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return bool(hasattr(stream, "isatty") and stream.isatty())


def console_for(stream: TextIO) -> Console:
    """Return a rich console on `stream`: coloured as :func:`set_color` says, and plain text
    at a fixed width when not a terminal."""
    color = _wants_color(stream)
    if hasattr(stream, "isatty") and stream.isatty():
        if color:
            return _Console(file=stream, highlight=False, soft_wrap=False, force_terminal=True)
        return _Console(file=stream, highlight=False, soft_wrap=False, color_system=None)
    return _Console(file=_PlainText(stream), highlight=False, soft_wrap=False,
                    width=PLAIN_WIDTH, no_color=not color, force_terminal=color,
                    color_system="standard" if color else None)


def number(value: float) -> str:
    """Six significant digits, the way people read statistics."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if np.isnan(value):
        return "nan"
    return f"{value:.6g}"


class _ChannelIndices:
    """The multi-index of each flat channel, computed when asked (not a list of millions)."""

    def __init__(self, channel_shape: Sequence[int]):
        self.shape = tuple(channel_shape)
        self.size = int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, flat: int) -> tuple:
        if not self.shape:
            return ()
        return tuple(int(i) for i in np.unravel_index(int(flat), self.shape))


def channel_label(channel_shape: Sequence[int], flat: int) -> str:
    """The label of flat channel `flat`: ``3``, or ``(0,0,3)`` for several channel axes."""
    return _index_label(_ChannelIndices(channel_shape)[flat])


def _index_label(index: tuple) -> str:
    """``3`` for one channel axis, ``(0,0,3)`` for several, ``-`` for none."""
    if not index:
        return "-"
    return str(index[0]) if len(index) == 1 else "(" + ",".join(map(str, index)) + ")"


def human_bytes(count: float) -> str:
    """``1.07 GB`` style sizes."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.3g} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1000
    return f"{count} B"  # pragma: no cover


def _itemsize(name: str) -> int:
    """Bytes per value of a stored type, NumPy's or one that is widened as read."""
    from bncli.io.safetensors import ITEMSIZES

    try:
        return np.dtype(name).itemsize
    except TypeError:
        return ITEMSIZES.get(name, 0)


def _header_lines(statistics: Statistics, elapsed: float | None) -> list:
    inputs = statistics.inputs
    names = ", ".join(
        entry["path"] + (f":{entry['dataset']}" if entry.get("dataset") else "")
        for entry in inputs[:3]) + (f" (+{len(inputs) - 3} more)" if len(inputs) > 3 else "")
    dtypes = sorted({entry["dtype"] for entry in inputs})
    total_bytes = sum(int(np.prod(entry["shape"])) * _itemsize(entry["dtype"])
                      for entry in inputs)
    elements = sum(int(np.prod(entry["shape"])) for entry in inputs)
    lines = [
        f"[bold]{escape(names)}[/bold]",
        f"shape {' + '.join(format_shape(entry['shape']) for entry in inputs[:3])}"
        f"{' + ...' if len(inputs) > 3 else ''}  dtype {','.join(dtypes)}  "
        f"axes {list(statistics.axes)}  channels {format_shape(statistics.channel_shape)}  "
        f"elements {elements:,}" + (f"  ddof {statistics.ddof}" if statistics.ddof else ""),
    ]
    if elapsed is not None and elapsed > 0:
        lines.append(f"time {elapsed:.3g} s  ({human_bytes(total_bytes / elapsed)}/s)")
    return lines


# The styles of the findings in the table's flags column, which shows their names.
FLAG_STYLES = {"dead": "yellow", "nan": "red", "inf": "red", "overflow": "red",
               "outlier_mean": "magenta", "outlier_std": "magenta", "precision": "cyan",
               "few_values": "red", "sparse": "yellow", "saturated": "cyan",
               "wide_range": "magenta"}


def _render_stacked(console: Console, labels: list, cells: list, rows: list,
                    flagged: dict) -> None:
    """One line per statistic, a block per channel: for terminals too narrow for a table."""
    for row, cell in zip(rows, cells):
        if row < 0:
            console.print("...")
            continue
        style = "bold" if flagged.get(row) else ""
        console.print(f"[{style}]channel {cell[0]}[/{style}]" if style else f"channel {cell[0]}")
        for label, text in zip(labels[1:], cell[1:]):
            if text:
                console.print(f"  {label:<6} {escape(text)}")


def _render_findings(console: Console, found: list, indices: _ChannelIndices,
                     show_all: bool = False) -> None:
    if not found:
        console.print("findings: none")
        return
    console.print("[bold]findings[/bold]")
    for finding in found:
        style = FLAG_STYLES[finding.kind]
        listed = finding.channels if show_all else finding.channels[:12]
        shown = ", ".join(_index_label(indices[index]) for index in listed)
        more = f", ... (+{len(finding.channels) - 12})" if len(finding.channels) > len(
            listed) else ""
        noun = "channel" if len(finding.channels) == 1 else "channels"
        console.print(f"  [{style}]{finding.kind:<12}[/{style}] {len(finding.channels)} {noun}: "
                      f"{shown}{more}")
        console.print(f"  {'':<12} {escape(finding.message)}")


# The order the table's columns (columns.TABLE_COLUMNS) are dropped in when a terminal is
# too narrow for all of them (numbers are never cut; with too few left, rows are stacked).
DROP_ORDER = (("inf", "nan"), ("count",), ("min", "max"))


def select_rows(statistics: Statistics, found: Sequence, *, show_all: bool = False,
                sort: str | None = None, only_flagged: bool = False,
                channels: Sequence | None = None) -> list:
    """The flat channels a table shows, in order; -1 marks rows left out between two.

    `channels` holds flat indices or ``range`` objects.

    By default: the first and last few channels and the flagged ones (at most
    ``MAX_FLAGGED_ROWS``). `channels` and `only_flagged` narrow the candidates; `sort` (a
    column label) orders them by that statistic, largest first, NaN last, and then the first
    ``2 * EDGE_ROWS`` are shown; `show_all` shows every candidate.
    """
    total = int(np.prod(statistics.channel_shape))
    flagged = np.unique(np.concatenate(
        [np.asarray(finding.channels, np.int64) for finding in found] or [np.zeros(0, int)]))
    candidates = np.arange(total)
    if channels is not None:
        ranges = [part if isinstance(part, range) else range(int(part), int(part) + 1)
                  for part in channels]
        for part in ranges:
            for index in (part.start, part.stop - 1):
                if part and not 0 <= index < total:
                    raise ValueError(f"channel {index} is not among the {total} channels")
        candidates = np.concatenate([np.arange(part.start, part.stop, dtype=np.int64)
                                     for part in ranges] or [np.zeros(0, np.int64)])
    if only_flagged:
        candidates = candidates[np.isin(candidates, flagged)]
    rows: np.ndarray | list  # the sorted candidates, or the rows shown with their gaps
    if sort is not None:
        values = statistics.values()[SORT_KEYS[sort]].reshape(-1)[candidates].astype(np.float64)
        order = np.lexsort((candidates, -np.where(np.isnan(values), -np.inf, values)))
        rows = candidates[order]
        if not show_all and rows.size > 2 * EDGE_ROWS:
            return rows[:2 * EDGE_ROWS].tolist() + [-1]
        return rows.tolist()
    if show_all or channels is not None or only_flagged or total <= 2 * EDGE_ROWS:
        shown = candidates if (show_all or candidates.size <= MAX_FLAGGED_ROWS) else \
            candidates[:MAX_FLAGGED_ROWS]
    else:
        edges = np.concatenate([np.arange(EDGE_ROWS), np.arange(total - EDGE_ROWS, total)])
        shown = np.union1d(edges, flagged[:MAX_FLAGGED_ROWS])
    rows = []
    previous = -1
    gaps = channels is None and not only_flagged  # "..." where channels are left out
    for row in shown.tolist():
        if gaps and row != previous + 1:
            rows.append(-1)
        rows.append(row)
        previous = row
    if (gaps and rows and rows[-1] != total - 1) or len(shown) < len(candidates):
        rows.append(-1)
    return rows


def render_table(statistics: Statistics, stream: TextIO, *, found: Sequence = (),
                 elapsed: float | None = None, show_all: bool = False, sort: str | None = None,
                 only_flagged: bool = False, channels: Sequence[int] | None = None) -> None:
    """Print the header, one row per channel (flagged and edge rows), and the findings.

    Parameters
    ----------
    statistics : Statistics
    stream : text stream
    found : sequence of Finding
        From :func:`bncli.core.findings.find`.
    elapsed : float, optional
        Seconds taken, for the throughput line.
    show_all, sort, only_flagged, channels :
        Which rows, in which order: see :func:`select_rows`.
    """
    rows = select_rows(statistics, found, show_all=show_all, sort=sort,
                       only_flagged=only_flagged, channels=channels)
    console = console_for(stream)
    for line in _header_lines(statistics, elapsed):
        console.print(line)
    values = statistics.values()
    indices = _ChannelIndices(statistics.channel_shape)
    shown_set = set(rows)
    flagged: dict = {}
    for finding in found:
        for index in finding.channels:
            if index in shown_set:
                flagged.setdefault(index, []).append(finding.kind)
    flat = {key: array.reshape(-1) for key, array in values.items() if key != "quantiles"}
    quantiles = _quantile_columns(statistics, table_levels(
        statistics.histogram.levels) if statistics.histogram is not None else ())
    flat.update(quantiles)
    columns = TABLE_COLUMNS[:5] + tuple((label, label) for label in quantiles) + TABLE_COLUMNS[5:]
    labels = ["channel"] + [label for label, _ in columns] + ["flags"]
    cells = [["...", *[""] * (len(labels) - 1)] if row < 0 else [
        _index_label(indices[row]), *(number(flat[key][row]) for _, key in columns),
        " ".join(flagged.get(row, []))] for row in rows]
    widths = [max([len(label)] + [len(cell[column]) for cell in cells])
              for column, label in enumerate(labels)]
    keep = list(range(len(labels)))
    dropped = []
    drop_order = DROP_ORDER[:1] + (tuple(quantiles),) + DROP_ORDER[1:]
    for group in drop_order:  # numbers are never cut: columns go first
        if sum(widths[column] + 2 for column in keep) - 2 <= console.width:
            break
        for label in group:
            keep.remove(labels.index(label))
            dropped.append(label)
    shown_rows = sum(row >= 0 for row in rows)
    if sum(widths[column] + 2 for column in keep) - 2 > console.width:
        _render_stacked(console, labels, cells, rows, flagged)
    else:
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in keep:
            table.add_column(labels[column], justify="left" if labels[column] == "flags"
                             else "right", no_wrap=True, min_width=widths[column])
        for row, cell in zip(rows, cells):
            kinds = flagged.get(row, [])
            if kinds:
                cell = cell[:-1] + [" ".join(f"[{FLAG_STYLES[kind]}]{kind}[/]"
                                             for kind in kinds)]
            table.add_row(*(cell[column] for column in keep),
                          style="bold" if kinds else None)
        console.print(table)
        if dropped:
            console.print(f"({', '.join(dropped)} not shown at this width; --format csv "
                          "has every column)")
    if shown_rows < len(indices) and not only_flagged and channels is None:
        console.print(f"{len(indices) - shown_rows} of {len(indices)} channels not shown "
                      "(--all shows every one)")
    _render_findings(console, list(found), indices, show_all)


def _span(values: np.ndarray) -> str:
    """One number, or the range of a channel's numbers."""
    values = values.reshape(-1)
    if values.size == 1:
        return number(values[0])
    low, high = np.nanmin(values), np.nanmax(values)
    return number(low) if low == high else f"{number(low)} .. {number(high)}"


def render_each(results: Sequence, stream: TextIO, *, found: dict) -> None:
    """Print one row per array of a file (:func:`bncli.api.stats_each`).

    Parameters
    ----------
    results : sequence of TensorStatistics
    stream : text stream
    found : dict
        Array name to its findings.
    """
    import warnings

    console = console_for(stream)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for label in ("tensor", "shape", "dtype", "channels", "count", "mean", "std", "min",
                  "max", "nan", "inf", "flags"):
        table.add_column(label, justify="left" if label in ("tensor", "dtype", "flags")
                         else "right", overflow="fold")
    for result in results:
        shape = "?" if result.shape is None else format_shape(result.shape) or "scalar"
        if result.statistics is None:
            table.add_row(escape(result.name), shape, result.dtype or "", "", "", "", "", "",
                          "", "", "", f"[dim]skipped: {escape(result.skipped)}[/]")
            continue
        values = result.statistics.values()
        kinds = sorted({finding.kind for finding in found.get(result.name, ())})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
            table.add_row(
                escape(result.name), shape, result.dtype,
                f"{math.prod(result.statistics.channel_shape):,}",
                f"{int(values['count'].sum()):,}", _span(values["mean"]), _span(values["std"]),
                number(np.nanmin(values["min"])) if values["min"].size else "",
                number(np.nanmax(values["max"])) if values["max"].size else "",
                f"{int(values['nan_count'].sum()):,}", f"{int(values['inf_count'].sum()):,}",
                " ".join(f"[{FLAG_STYLES[kind]}]{kind}[/]" for kind in kinds),
                style="bold" if kinds else None)
    console.print(table)
    skipped = sum(result.statistics is None for result in results)
    flagged = sum(bool(found.get(result.name)) for result in results)
    console.print(f"{len(results)} arrays: {len(results) - skipped} reduced, {skipped} "
                  f"skipped, {flagged} with findings")


def iter_each_csv(results: Sequence, found: dict) -> Iterator[str]:
    """Yield the csv of every array of a file: its name, then :func:`iter_csv`'s columns
    (one row per channel; a skipped array has one row with the reason in ``flags``)."""
    reduced = [result for result in results if result.statistics is not None]
    if not reduced:  # the names and reasons alone
        yield "tensor,flags\n"
    header = "tensor," + next(iter_csv(reduced[0].statistics)) if reduced else "tensor,flags\n"
    if reduced:
        yield header
    for result in results:
        name = '"' + result.name.replace('"', '""') + '"'
        if result.statistics is None:
            yield f"{name}{',' * header.count(',')}skipped: {result.skipped}\n"
            continue
        parts = iter_csv(result.statistics, found.get(result.name, ()))
        next(parts)  # the header
        yield "".join(f"{name},{line}\n" for part in parts for line in part.splitlines())


def render_csv(statistics: Statistics, found: Sequence = ()) -> str:
    """Return one csv row per channel, its findings named in one ``flags`` column.

    The channel index is ``i``, or ``"(i,j)"`` (quoted) for multi-dimensional channel shapes.
    """
    return "".join(iter_csv(statistics, found))


# Rows of csv made into text at once: a few MB of strings, whatever the channel count.
CSV_ROWS_AT_ONCE = 16384


def iter_csv(statistics: Statistics, found: Sequence = ()) -> Iterator[str]:
    """Yield the csv of :func:`render_csv` in parts of ``CSV_ROWS_AT_ONCE`` rows."""
    from bncli.core.findings import KINDS

    values = {key: array.reshape(-1) for key, array in statistics.values().items()
              if key != "quantiles"}
    if statistics.histogram is not None:
        values.update(_quantile_columns(statistics, statistics.histogram.levels))
    fields = CSV_FIELDS + tuple(key for key in COUNT_FIELDS + HIGHER_FIELDS if key in values) + (
        tuple(quantile_label(level) for level in statistics.histogram.levels)
        if statistics.histogram is not None else ())
    yield ",".join(("channel",) + fields + ("flags",)) + "\n"
    channels = int(np.prod(statistics.channel_shape))
    # each channel's findings as bits; each combination that occurs is named once
    bits = np.zeros(channels, np.int64)
    for finding in found:
        bits[finding.channels] |= 1 << KINDS.index(finding.kind)
    names = {int(mask): " ".join(kind for index, kind in enumerate(KINDS) if mask >> index & 1)
             for mask in np.unique(bits).tolist()}
    shape = tuple(statistics.channel_shape)
    for start in range(0, channels, CSV_ROWS_AT_ONCE):
        rows = slice(start, min(start + CSV_ROWS_AT_ONCE, channels))
        # column by column: one repr per value, no per-cell Python work beyond it
        if len(shape) > 1:
            indices = np.unravel_index(np.arange(rows.start, rows.stop), shape)
            labels = ['"(' + ",".join(map(str, index)) + ')"'
                      for index in zip(*(axis.tolist() for axis in indices))]
        else:
            labels = list(map(str, range(rows.start, rows.stop))) if shape else [""] * (
                rows.stop - rows.start)
        columns = [labels]
        for key in fields:
            if key in ("count", "nan_count", "inf_count") or values[key].dtype.kind in "iu":
                columns.append(list(map(str, values[key][rows].tolist())))
            else:
                columns.append(list(map(repr, values[key][rows].astype(np.float64).tolist())))
        columns.append([names[mask] for mask in bits[rows].tolist()])
        yield "".join(",".join(row) + "\n" for row in zip(*columns))


DIFF_FIELDS = ("mean_shift", "std_ratio", "psi", "outside")


def _diff_columns(result: Drift) -> dict:
    return {key: getattr(result, key) for key in DIFF_FIELDS if getattr(result, key) is not None}


def _diff_flags(result: Drift) -> list:
    """Per flat channel, what it shows: ``drift`` and what it became."""
    names: list = [[] for _ in range(result.mean_shift.size)]
    for name, mask in [("drift", result.drifted)] + [
            (f"became_{kind}", mask) for kind, mask in result.became.items()]:
        for index in np.flatnonzero(mask).tolist():
            names[index].append(name)
    return names


def render_diff(result: Drift, base: Statistics, new: Statistics, stream: TextIO, *,
                show_all: bool = False) -> None:
    """Print a drift (see :mod:`bncli.core.drift`): the channels that moved or became something,
    and the first and last few."""
    console = console_for(stream)
    for label, side in (("base", base), ("new", new)):
        names = ", ".join(entry["path"] + (f":{entry['dataset']}" if entry.get("dataset")
                                           else "") for entry in side.inputs[:3])
        console.print(f"[bold]{label}[/bold] {escape(names)}  "
                      f"channels {format_shape(side.channel_shape)}")
    columns = _diff_columns(result)
    flagged = _diff_flags(result)
    total = result.mean_shift.size
    marked = [index for index in range(total) if flagged[index]]
    if show_all or total <= 2 * EDGE_ROWS:
        rows = list(range(total))
    else:
        rows = sorted(set(range(EDGE_ROWS)) | set(range(total - EDGE_ROWS, total))
                      | set(marked[:MAX_FLAGGED_ROWS]))
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("channel", justify="right", no_wrap=True)
    for key in columns:
        table.add_column(key, justify="right", no_wrap=True)
    table.add_column("flags", no_wrap=True)
    previous = -1
    for row in rows:
        if row != previous + 1:
            table.add_row("...", *[""] * (len(columns) + 1))
        previous = row
        table.add_row(channel_label(result.channel_shape, row),
                      *(number(values[row]) for values in columns.values()),
                      " ".join(flagged[row]), style="bold" if flagged[row] else None)
    if rows and rows[-1] != total - 1:
        table.add_row("...", *[""] * (len(columns) + 1))
    console.print(table)
    drifted = int(result.drifted.sum())
    console.print(f"drift: {drifted} of {total} channels (|mean_shift| > {result.max_shift:g}"
                  + (f" or psi > {result.max_psi:g})" if result.psi is not None else ")"))
    for kind, mask in result.became.items():
        if mask.any():
            count = int(mask.sum())
            console.print(f"became {kind}: {count} channel{'s' if count != 1 else ''}: "
                          + ", ".join(channel_label(result.channel_shape, index)
                                      for index in np.flatnonzero(mask)[:12].tolist()))
    if result.psi is None:
        console.print("psi, outside: need histograms on both sides (bn stats --quantiles -o)")


def iter_diff_csv(result: Drift) -> Iterator[str]:
    """Yield the csv of a drift: one row per channel, its flags in one column."""
    columns = _diff_columns(result)
    flagged = _diff_flags(result)
    yield ",".join(("channel",) + tuple(columns) + ("flags",)) + "\n"
    shape = tuple(result.channel_shape)
    for start in range(0, result.mean_shift.size, CSV_ROWS_AT_ONCE):
        rows = range(start, min(start + CSV_ROWS_AT_ONCE, result.mean_shift.size))
        lines = []
        for row in rows:
            label = channel_label(shape, row)
            label = f'"{label}"' if "," in label else label
            lines.append(",".join([label] + [repr(float(values[row])) for values in
                                             columns.values()] + [" ".join(flagged[row])]))
        yield "".join(line + "\n" for line in lines)


def render_info(entries: list, stream: TextIO) -> None:
    """Print what ``bn info`` found, one block per input."""
    console = console_for(stream)
    for entry in entries:
        console.print(f"[bold]{entry['input']}[/bold]")
        for row in entry.get("datasets", []):
            status = "" if row["usable"] else f"  (not usable: {row['problem']})"
            shape = "" if row["shape"] is None else format_shape(row["shape"])
            kind = row.get("kind", "dataset")
            if kind == "dataset":
                storage = (f"  chunks {format_shape(row['chunks'])}" if row.get("chunks")
                           else "  contiguous") + (f" {row['compression']}"
                                                   if row.get("compression") else "")
            else:
                parts = [f"chunks {format_shape(row['chunks'])}" if row.get("chunks") else None,
                         row.get("compression"),
                         f"{row['stored_bytes']:,} bytes stored"
                         if row.get("stored_bytes") is not None else None]
                storage = "  " + ", ".join(part for part in parts if part)
            declared = " ".join(part for part in (shape, row["dtype"]) if part)
            console.print(f"  {kind:<8} {escape(row['dataset'])}  {declared}"
                          f"{storage}{status}", soft_wrap=True)
        if "shape" not in entry:
            continue
        lines = [
            ("format", entry.get("format")),
            ("dataset" if entry.get("format") == "hdf5" else "name", entry.get("dataset")),
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
            if entry.get("chunks_written"):
                written, total = entry["chunks_written"]
                lines.append(("written", f"{written:,} of {total:,} chunks"))
        elif "stored_bytes" in entry:  # an array in an .npz, safetensors or zarr file
            lines += [
                ("chunks", format_shape(entry["chunks"]) if entry.get("chunks") else None),
                ("member", entry.get("archive_member")),
                ("compression", entry.get("compression") or "none"),
                ("stored", f"{entry['stored_bytes']:,} bytes"),
            ]
        for label, value in lines:
            if value is not None:
                console.print(f"  {label:<12} {value}")


def render_normalize_summary(result: NormalizeResult, stream: TextIO, *,
                             found: Sequence = ()) -> None:
    """Print to `stream` the compact summary of the statistics a normalization used."""
    console = console_for(stream)
    statistics = result.statistics
    console.print(f"bn: normalized {format_shape(result.shape)} over axes "
                  f"{list(statistics.axes)} -> {escape(str(result.output))} "
                  f"({result.dtype.name}) with these statistics:", soft_wrap=True)
    for line in _header_lines(statistics, None):
        console.print("  " + line, soft_wrap=True)
    values = statistics.values()
    mean, std = values["mean"], values["std"]
    if mean.size:
        console.print(f"  mean {number(np.nanmin(mean))} .. {number(np.nanmax(mean))}  "
                      f"std {number(np.nanmin(std))} .. {number(np.nanmax(std))}",
                      soft_wrap=True)
    _render_findings(console, list(found), _ChannelIndices(statistics.channel_shape))


class ProgressBars:
    """A factory of rich progress bars on a stream, as :mod:`bncli.api` expects."""

    def __init__(self, stream: TextIO):
        self.console = Console(file=stream) if _wants_color(stream) else Console(
            file=stream, color_system=None)

    def __call__(self, label: str, total: int) -> _ProgressBar:
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


def calibration_text(results: Sequence, fmt: str) -> str:
    """The ranges of :func:`bncli.api.calibrate` (one result per tensor) as ``table``,
    ``json`` (an object per tensor, a list for several), ``csv`` or a ``tensorrt``
    calibration cache."""
    from bncli.core.calibrate import tensorrt_cache
    from bncli.io.statsfile import json_array

    if fmt == "tensorrt":
        return tensorrt_cache({result.name: float(np.float32(result.scale[0]))
                               for result in results})
    if fmt == "json":
        import json

        documents = [{"name": result.name, "method": result.method, "target": result.target,
                      "per_channel": result.channels is not None, "channels": result.channels,
                      "amax": json_array(result.amax), "scale": json_array(result.scale)}
                     for result in results]
        return json.dumps(documents[0] if len(documents) == 1 else documents) + "\n"
    per_channel = results[0].channels is not None
    rows = [(result.name, label, amax, scale) for result in results
            for label, amax, scale in zip(
                result.channels if per_channel else [None], result.amax.tolist(),
                result.scale.tolist())]
    if fmt == "csv":
        head = "tensor,channel,amax,scale" if per_channel else "tensor,amax,scale"
        return head + "\n" + "".join(
            ",".join([_csv_label(name)] + ([_csv_label(label)] if per_channel else [])
                     + [repr(amax), repr(scale)]) + "\n" for name, label, amax, scale in rows)
    buffer = io.StringIO()
    console = console_for(buffer)
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for label in ("tensor",) + (("channel",) if per_channel else ()) + ("amax", "scale"):
        table.add_column(label, justify="left" if label == "tensor" else "right")
    for name, label, amax, scale in rows:
        table.add_row(escape(name), *([escape(str(label))] if per_channel else []),
                      number(amax), number(scale))
    console.print(f"{results[0].method} ranges for {results[0].target}")
    console.print(table)
    return buffer.getvalue()


def _csv_label(label: object) -> str:
    text = str(label).replace(" ", "")
    return f'"{text}"' if "," in text else text
