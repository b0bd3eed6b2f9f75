"""Draw the example plots of the README (deterministic; run from the repository root)::

    python docs/make_plots.py

Three layers as users bring them: 3 RGB image channels, a 64-channel ReLU layer with a dead
channel and one of 30x the scale, and a 2048-channel GELU-like layer with one channel whose
mean is far off. Each is written as a ``.npy`` in a temporary directory and drawn by
``bn stats --plot``, the real command; ``docs/stats.png`` and ``docs/quantiles.png`` are the
tour's plots of ``sample_data/acts_nhwc.npy`` and (with ``--quantiles``)
``sample_data/relu_nhwc.npy``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent


def layers(rng: np.random.Generator) -> dict:
    images = np.clip(rng.normal([120, 110, 100], [55, 50, 60], (5000, 3)), 0, 255)
    scale = rng.lognormal(0, 0.35, 64)
    relu = np.maximum(rng.standard_normal((4000, 64)) * scale + rng.normal(0, .6, 64) * scale, 0)
    relu[:, 10] = 0.0     # a dead unit
    relu[:, 40] *= 30     # a channel 30x the scale of the rest
    scale = rng.lognormal(0, 0.35, 2048)
    wide = rng.standard_normal((1000, 2048)) * scale + rng.normal(0, .6, 2048) * scale
    wide[:, 700] += 500   # a mean far off
    return {"plot_3": images.astype(np.uint8), "plot_64": relu.astype(np.float32),
            "plot_2048": wide.astype(np.float32)}


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        for name, values in layers(np.random.default_rng(0)).items():
            np.save(Path(directory) / f"{name}.npy", values)
            subprocess.run([sys.executable, "-m", "bncli", "stats", f"{name}.npy", "-q",
                            "--plot", str(DOCS / f"{name}.png"), "--force"], check=True,
                           cwd=directory)
    # the tour's plots, of the sample data
    subprocess.run([sys.executable, "-m", "bncli", "stats", "sample_data/acts_nhwc.npy", "-q",
                    "--plot", str(DOCS / "stats.png"), "--force"], check=True, cwd=DOCS.parent)
    subprocess.run([sys.executable, "-m", "bncli", "stats", "sample_data/relu_nhwc.npy", "-q",
                    "--quantiles", "--plot", str(DOCS / "quantiles.png"), "--force"],
                   check=True, cwd=DOCS.parent)


if __name__ == "__main__":
    main()
