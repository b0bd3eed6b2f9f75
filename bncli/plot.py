"""``bn stats --plot``: per-channel mean, std band, min/max, and flagged channels, as PNG.

Needs matplotlib (``pip install 'bncli[plot]'``); imported only when a plot is asked for.
"""

from __future__ import annotations

import numpy as np

from .sinks import AtomicFile
from .statsfile import Statistics

# Above this many channels markers would merge into a smear: draw lines only.
MARKER_LIMIT = 128
# When the largest value is this many times the typical channel's scale, the y axis turns
# logarithmic beyond that scale.
SYMLOG_SPREAD = 100


def plot_statistics(statistics: Statistics, found, path: str, *, force: bool = False) -> None:
    """Draw the statistics of every channel into a PNG file, written atomically.

    Parameters
    ----------
    statistics : Statistics
    found : sequence of Finding
        Dead channels are marked with crosses, outliers and non-finite ones with circles.
    path : str
        A ``.png`` path.
    force : bool
        Replace an existing file.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    values = {key: array.reshape(-1) for key, array in statistics.values().items()}
    channels = np.arange(values["mean"].size)
    mean, std = values["mean"], values["std"]
    figure, axes = pyplot.subplots(figsize=(11, 4.2), dpi=100, layout="constrained")
    try:
        marker = "o" if channels.size <= MARKER_LIMIT else None
        axes.fill_between(channels, values["min"], values["max"], step="mid" if marker else None,
                          color="0.88", label="min .. max", linewidth=0)
        axes.fill_between(channels, mean - std, mean + std, step="mid" if marker else None,
                          color="tab:blue", alpha=0.3, label="mean ± std", linewidth=0)
        axes.plot(channels, mean, color="tab:blue", marker=marker, markersize=3,
                  linewidth=1 if marker else 0.6, label="mean")
        styles = {"dead": ("x", "0.3", "dead"), "nan": ("o", "red", "NaN"),
                  "inf": ("o", "red", "Inf"), "outlier_mean": ("o", "tab:purple", "mean outlier"),
                  "outlier_std": ("s", "tab:orange", "std outlier")}
        for finding in found:
            if finding.kind not in styles:
                continue
            shape, color, label = styles[finding.kind]
            index = np.asarray(finding.channels)
            y = np.nan_to_num(mean[index], nan=0.0, posinf=0.0, neginf=0.0)
            colors = {"color": color} if shape == "x" else {"facecolors": "none",
                                                             "edgecolors": color}
            axes.scatter(index, y, marker=shape, s=40, linewidths=1.5, zorder=3,
                         label=f"{label} ({index.size})", **colors)
        names = ", ".join(entry["path"] for entry in statistics.inputs[:2])
        axes.set_title(f"{names}: {channels.size} channels, axes {list(statistics.axes)}",
                       fontsize=10)
        axes.set_xlabel("channel" + (" (flattened)" if len(statistics.channel_shape) > 1
                                     else ""))
        axes.set_ylabel("value")
        finite = np.isfinite(mean) & np.isfinite(std)
        if finite.any():
            typical = np.median(np.abs(mean[finite])) + np.median(std[finite])
            largest = np.max(np.abs(np.concatenate([values["min"], values["max"]])[
                np.isfinite(np.concatenate([values["min"], values["max"]]))]), initial=0.0)
            if typical > 0 and largest > SYMLOG_SPREAD * typical:
                # a few channels far larger than the rest: keep the rest readable
                axes.set_yscale("symlog", linthresh=typical)
                axes.set_ylabel(f"value (linear within ±{typical:.3g}, log beyond)")
        axes.set_xlim(-0.5, channels.size - 0.5)
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8, ncols=3)
        with AtomicFile(path, force=force) as output:
            figure.savefig(output.temp_path, format="png")
    finally:
        pyplot.close(figure)
