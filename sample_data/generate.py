"""Make the small sample files of ``sample_data/`` (deterministic; run from anywhere).

- ``acts_nhwc.npy``: float32 activations, 64x8x8x16 (NHWC), channels with different scales,
  one dead channel and a large offset on another (|mean|/std near 1e3).
- ``acts_nchw.h5``: dataset ``/layer1/acts``, float32, 32x16x8x8 (NCHW), chunked 8x16x8x8,
  gzip-compressed.
- ``images_uint8.npy``: a batch of 16 RGB images, 16x32x32x3 uint8.
- ``relu_nhwc.npy``: float32 ReLU activations, 128x10x10x8 (NHWC): channel 2 mostly dead
  (99.6% exact zeros), channel 5 a ReLU6 pinned at 6, channel 6 with one spike.
- ``relu_nhwc_next.npy``: the same layer on later data, 32x10x10x8: channel 1 moved up by
  about half a std, channel 4 became dead.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent


def main(directory: Path = HERE) -> None:
    rng = np.random.default_rng(20261126)
    scales = np.geomspace(0.01, 10.0, 16)
    acts = rng.standard_normal((64, 8, 8, 16)) * scales + np.linspace(-2, 2, 16)
    acts[..., 3] = 0.5  # a dead channel
    acts[..., 7] = 1e4 + rng.standard_normal((64, 8, 8))  # |mean| / std near 1e4
    np.save(directory / "acts_nhwc.npy", acts.astype(np.float32))

    nchw = rng.gamma(2.0, 1.5, size=(32, 16, 8, 8)) * np.arange(1, 17).reshape(1, 16, 1, 1)
    with h5py.File(directory / "acts_nchw.h5", "w") as h5file:
        h5file.create_dataset("layer1/acts", data=nchw.astype(np.float32), chunks=(8, 16, 8, 8),
                              compression="gzip", compression_opts=4, shuffle=True)

    gradient = np.linspace(-60, 60, 32)
    batch = np.stack([
        np.stack([rng.normal(loc + brightness, 30, size=(32, 32)) + gradient
                  for loc in (125, 115, 100)], axis=-1)
        for brightness in rng.uniform(-40, 40, size=16)])
    np.save(directory / "images_uint8.npy", np.clip(batch, 0, 255).round().astype(np.uint8))

    for name, shifted, samples in (("relu_nhwc.npy", False, 128),
                                   ("relu_nhwc_next.npy", True, 32)):
        bias = np.array([0.5, 0.2, -2.65, 0.0, 0.3, 2.0, 0.1, 0.4])
        if shifted:
            bias[1] += 0.6
            bias[4] = -50.0  # no value passes the ReLU any more: a dead unit
        scale = np.array([1, 1, 1, 2, 1, 4, 1, 0.5])
        pre = rng.standard_normal((samples, 10, 10, 8)) * scale + bias
        relu = np.maximum(pre, 0)
        relu[..., 5] = np.minimum(relu[..., 5], 6.0)  # ReLU6
        relu[3, 4, 4, 6] = 100.0  # one spike, 100x the channel's spread
        np.save(directory / name, relu.astype(np.float32))


if __name__ == "__main__":
    main()
