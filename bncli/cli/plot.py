"""``bn stats --plot``: per-channel min..max and mean ± std bands, the mean, and the flagged
channels, as PNG, SVG or PDF; with quantiles also the p0.01-p99.99 and p1-p99 bands around
the median, and the histograms of the first flagged channels.

Needs matplotlib (``pip install 'bncli[plot]'``); imported only when a plot is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bncli.core.statistics import Statistics
from bncli.io.sinks import AtomicFile

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from bncli.core.findings import Finding

# Above this many channels, per-channel steps and markers would merge into a smear: bands
# and the mean are drawn as lines through the channels.
STEP_LIMIT = 128
# The y range holds the channels' extremes out to Tukey-style fences: ROBUST_REACH times
# the interquartile range of the channels' maxima beyond their upper quartile (and of the
# minima below their lower quartile). Channels beyond are drawn to the edge and marked
# there, so that one outlier does not flatten the others.
ROBUST_QUANTILES = (0.25, 0.75)
ROBUST_REACH = 5.0
FORMATS = ("png", "svg", "pdf")
# Percentile bands drawn with quantiles: outer, inner, and the median.
BAND_LEVELS = (0.0001, 0.01, 0.5, 0.99, 0.9999)
# Flagged channels whose histograms are drawn under the bands, at most, and their bins.
HISTOGRAM_PANELS = 6
HISTOGRAM_BINS = 40


def plot_format(path: str) -> str | None:
    """``png``, ``svg`` or ``pdf`` from a file name, or None."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return suffix if suffix in FORMATS else None


def _y_range(low: np.ndarray, high: np.ndarray) -> tuple:
    """A y range that holds every channel's extremes but those far beyond the others'."""
    finite_low, finite_high = low[np.isfinite(low)], high[np.isfinite(high)]
    if not finite_low.size or not finite_high.size:
        return -1.0, 1.0
    low_q1, low_q3 = np.quantile(finite_low, ROBUST_QUANTILES)
    high_q1, high_q3 = np.quantile(finite_high, ROBUST_QUANTILES)
    bottom = max(float(finite_low.min()), low_q1 - ROBUST_REACH * (low_q3 - low_q1))
    top = min(float(finite_high.max()), high_q3 + ROBUST_REACH * (high_q3 - high_q1))
    span = top - bottom
    pad = 0.06 * span if span > 0 else max(abs(top), 1.0) * 0.1
    return bottom - pad, top + pad


# One figure, its panels drawn in the order they stand: longer than 80 lines, kept whole.
def plot_statistics(statistics: Statistics, found: Sequence[Finding], path: str, *,
                    force: bool = False) -> None:
    """Draw the statistics of every channel into an image file, written atomically.

    Parameters
    ----------
    statistics : Statistics
    found : sequence of Finding
        Dead channels are marked with crosses, mean outliers and non-finite channels with
        circles at their mean, std outliers with squares at the top of their band.
    path : str
        A ``.png``, ``.svg`` or ``.pdf`` path.
    force : bool
        Replace an existing file.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    values = {key: array.reshape(-1) for key, array in statistics.values().items()
              if key != "quantiles"}
    count = values["mean"].size
    channels = np.arange(count)
    mean, std = values["mean"].astype(np.float64), values["std"].astype(np.float64)
    low, high = values["min"].astype(np.float64), values["max"].astype(np.float64)
    bands = None
    if statistics.histogram is not None:
        bands = statistics.quantiles(BAND_LEVELS).reshape(count, len(BAND_LEVELS)).T
    shown = _histogram_channels(statistics, found) if bands is not None else []
    figure = pyplot.figure(figsize=(11, 4.2 + 2.2 * bool(shown)), dpi=100, layout="constrained")
    grid = figure.add_gridspec(2 if shown else 1, max(len(shown), 1),
                               height_ratios=[4.2, 2.2] if shown else [1])
    axes = figure.add_subplot(grid[0, :])
    try:
        bottom, top = _y_range(low, high)

        def clip(array):
            return np.clip(array, bottom, top)

        if count <= STEP_LIMIT:  # one step per channel, ends included
            edges = np.arange(count + 1) - 0.5
            axes.stairs(clip(high), edges, baseline=clip(low), fill=True, color="0.88",
                        label="min .. max")
            if bands is not None:  # percentiles in the left half, mean ± std in the right
                halves = np.arange(2 * count + 1) / 2 - 0.5
                gap = np.full(count, np.nan)

                def left(values):
                    return np.column_stack([clip(values), gap]).ravel()

                def right(values):
                    return np.column_stack([gap, clip(values)]).ravel()

                axes.stairs(left(bands[4]), halves, baseline=left(bands[0]), fill=True,
                            color="tab:orange", alpha=0.25, label="p0.01 .. p99.99")
                axes.stairs(left(bands[3]), halves, baseline=left(bands[1]), fill=True,
                            color="tab:orange", alpha=0.55, label="p1 .. p99")
                axes.stairs(left(bands[2]), halves, color="tab:red", linewidth=1.5,
                            label="median")
                axes.stairs(right(mean + std), halves, baseline=right(mean - std), fill=True,
                            color="tab:blue", alpha=0.3, label="mean ± std")
                axes.plot(channels + 0.25, clip(mean), color="tab:blue", marker="o",
                          markersize=3, linewidth=0, label="mean")
            else:
                axes.stairs(clip(mean + std), edges, baseline=clip(mean - std), fill=True,
                            color="tab:blue", alpha=0.3, label="mean ± std")
                axes.plot(channels, clip(mean), color="tab:blue", marker="o", markersize=3,
                          linewidth=1, label="mean")
        else:
            axes.fill_between(channels, clip(low), clip(high), color="0.88",
                              label="min .. max", linewidth=0)
            if bands is not None:  # the percentile bands (mean ± std lines would smear)
                axes.fill_between(channels, clip(bands[0]), clip(bands[4]), color="tab:orange",
                                  alpha=0.25, label="p0.01 .. p99.99", linewidth=0)
                axes.fill_between(channels, clip(bands[1]), clip(bands[3]), color="tab:orange",
                                  alpha=0.55, label="p1 .. p99", linewidth=0)
                axes.plot(channels, clip(bands[2]), color="tab:red", linewidth=0.5,
                          label="median")
            else:
                axes.fill_between(channels, clip(mean - std), clip(mean + std),
                                  color="tab:blue", alpha=0.3, label="mean ± std",
                                  linewidth=0)
            axes.plot(channels, clip(mean), color="tab:blue", linewidth=0.6, label="mean")
        beyond_top = channels[np.isfinite(high) & (high > top)]
        beyond_bottom = channels[np.isfinite(low) & (low < bottom)]
        for index, y, shape, where in ((beyond_top, top, "^", "above"),
                                       (beyond_bottom, bottom, "v", "below")):
            if index.size:
                axes.scatter(index, np.full(index.size, y), marker=shape, s=30, color="0.35",
                             clip_on=False, zorder=4,
                             label=f"reaches {where} the range ({index.size})")
        styles = {"dead": ("x", "0.3", "dead", "mean"),
                  "nan": ("o", "red", "NaN", "mean"), "inf": ("o", "red", "Inf", "mean"),
                  "overflow": ("o", "red", "overflow", "mean"),
                  "outlier_mean": ("o", "tab:purple", "mean outlier", "mean"),
                  "outlier_std": ("s", "tab:orange", "std outlier", "band"),
                  "sparse": ("v", "tab:brown", "sparse", "mean"),
                  "saturated": ("D", "tab:cyan", "saturated", "max"),
                  "wide_range": ("*", "tab:pink", "wide range", "max")}
        for finding in found:
            if finding.kind not in styles:
                continue
            shape, color, label, at = styles[finding.kind]
            index = np.asarray(finding.channels)
            y = high[index] if at == "max" else mean[index] + (
                std[index] if at == "band" else 0.0)
            y = np.where(np.isfinite(y), y, (bottom + top) / 2)
            colors: dict[str, Any] = {"color": color} if shape == "x" else {"facecolors": "none",
                                                             "edgecolors": color}
            axes.scatter(index, clip(y), marker=shape, s=40, linewidths=1.5, zorder=3,
                         clip_on=False, label=f"{label} ({index.size})", **colors)
        names = ", ".join(entry["path"] for entry in statistics.inputs[:2])
        axes.set_title(f"{names}: {count} channels, axes {list(statistics.axes)}",
                       fontsize=10)
        axes.set_xlabel("channel" + (" (flattened)" if len(statistics.channel_shape) > 1
                                     else ""))
        axes.set_ylabel("value")
        axes.set_xlim(-0.5, count - 0.5)
        axes.set_ylim(bottom, top)
        if count <= 16:
            axes.set_xticks(channels)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8,
                    frameon=False)
        for column, (flat, kinds) in enumerate(shown):
            assert bands is not None  # channels are shown only with quantiles
            _draw_histogram(figure.add_subplot(grid[1, column]), statistics, flat, kinds,
                            bands[0][flat], bands[4][flat])
        with AtomicFile(path, force=force) as output:
            figure.savefig(output.temp_path, format=plot_format(path) or "png")
    finally:
        pyplot.close(figure)


def _histogram_channels(statistics: Statistics, found: Sequence[Finding]) -> list:
    """``(flat channel, finding names)`` of the first flagged channels, for histograms."""
    kinds: dict = {}
    for finding in found:
        for index in finding.channels:
            kinds.setdefault(index, []).append(finding.kind)
    return sorted(kinds.items())[:HISTOGRAM_PANELS]


def _draw_histogram(axes: Axes, statistics: Statistics, flat: int, kinds: list, low: float,
                    high: float) -> None:
    """One channel's histogram in equal bins over its p0.01..p99.99 range, `low` to `high`
    (widened to the buckets holding them, so that values pinned at a bound show), each
    bucket's count spread evenly over its width; the zero bucket's share and the values
    beyond in the title."""
    from bncli.cli.report import channel_label

    parts, zeros = statistics.histogram.channel_density(flat)
    parts = [(edges, counts) for edges, counts in parts if counts.size]
    total = sum(int(counts.sum()) for _, counts in parts) + zeros
    inside = 0.0
    binned = np.zeros(HISTOGRAM_BINS)
    if parts and np.isfinite(low) and np.isfinite(high):
        every = np.concatenate([edges for edges, _ in parts])
        # widen to the edges of the buckets that hold the two quantiles
        below, above = every[every <= low], every[every > high]
        low = below.max() if low != 0 and below.size else low
        high = above.min() if high != 0 and above.size else high
        if high <= low:
            low, high = low - 1, high + 1
        bins = np.linspace(low, high, HISTOGRAM_BINS + 1)
        for edges, counts in parts:
            cumulative = np.concatenate([[0.0], np.cumsum(counts, dtype=np.float64)])
            binned += np.diff(np.interp(bins, edges, cumulative))
        inside = binned.sum()
        axes.stairs(binned, bins, fill=True, color="tab:orange", alpha=0.8)
    beyond = int(round(total - zeros - inside))
    notes = [f"{zeros / max(total, 1):.1%} zeros" if zeros else "",
             f"{beyond} beyond p0.01..p99.99" if beyond else ""]
    label = channel_label(statistics.channel_shape, flat)
    axes.set_title(f"channel {label}: {' '.join(kinds)}\n"
                   + ", ".join(note for note in notes if note), fontsize=8)
    axes.tick_params(labelsize=7)
    axes.set_yticks([])
