"""``bn stats --plot``: per-channel min..max and mean ± std bands, the mean, and the flagged
channels, as PNG, SVG or PDF.

Needs matplotlib (``pip install 'bncli[plot]'``); imported only when a plot is asked for.
"""

from __future__ import annotations

import numpy as np

from .sinks import AtomicFile
from .statsfile import Statistics

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


def plot_statistics(statistics: Statistics, found, path: str, *, force: bool = False) -> None:
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

    values = {key: array.reshape(-1) for key, array in statistics.values().items()}
    count = values["mean"].size
    channels = np.arange(count)
    mean, std = values["mean"].astype(np.float64), values["std"].astype(np.float64)
    low, high = values["min"].astype(np.float64), values["max"].astype(np.float64)
    figure, axes = pyplot.subplots(figsize=(11, 4.2), dpi=100, layout="constrained")
    try:
        bottom, top = _y_range(low, high)

        def clip(array):
            return np.clip(array, bottom, top)

        if count <= STEP_LIMIT:  # one full-width step per channel, ends included
            edges = np.arange(count + 1) - 0.5
            axes.stairs(clip(high), edges, baseline=clip(low), fill=True, color="0.88",
                        label="min .. max")
            axes.stairs(clip(mean + std), edges, baseline=clip(mean - std), fill=True,
                        color="tab:blue", alpha=0.3, label="mean ± std")
            axes.plot(channels, clip(mean), color="tab:blue", marker="o", markersize=3,
                      linewidth=1, label="mean")
        else:
            axes.fill_between(channels, clip(low), clip(high), color="0.88",
                              label="min .. max", linewidth=0)
            axes.fill_between(channels, clip(mean - std), clip(mean + std), color="tab:blue",
                              alpha=0.3, label="mean ± std", linewidth=0)
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
                  "outlier_std": ("s", "tab:orange", "std outlier", "band")}
        for finding in found:
            if finding.kind not in styles:
                continue
            shape, color, label, at = styles[finding.kind]
            index = np.asarray(finding.channels)
            y = mean[index] + (std[index] if at == "band" else 0.0)
            y = np.where(np.isfinite(y), y, (bottom + top) / 2)
            colors = {"color": color} if shape == "x" else {"facecolors": "none",
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
        with AtomicFile(path, force=force) as output:
            figure.savefig(output.temp_path, format=plot_format(path) or "png")
    finally:
        pyplot.close(figure)
