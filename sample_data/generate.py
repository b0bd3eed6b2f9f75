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
- ``layers.npz``: two layers' activations (``conv1`` 32x8x8x4, ``conv2`` 32x4x4x8 ReLU),
  deflate-compressed, as ``np.savez_compressed`` writes them.
- ``checkpoint.safetensors``: a small model's tensors: float32 weights, a zero bias, a
  running variance with a NaN, an int64 step counter and a bfloat16 embedding.
"""

from __future__ import annotations

import json
import struct
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

    # two layers' activations in one compressed archive, as np.savez_compressed writes them
    np.savez_compressed(directory / "layers.npz",
                        conv1=rng.standard_normal((32, 8, 8, 4)).astype(np.float32) * 2 + 1,
                        conv2=np.maximum(rng.standard_normal((32, 4, 4, 8)), 0)
                        .astype(np.float32))

    # a small checkpoint: float32 weights, a zero bias, a running variance gone NaN, a step
    # counter, and a bfloat16 embedding
    running_var = np.abs(rng.normal(1, 0.2, size=8))
    running_var[5] = np.nan
    write_safetensors(directory / "checkpoint.safetensors", {
        "conv.weight": ("F32", rng.normal(0, 0.2, size=(8, 3, 3, 3))),
        "conv.bias": ("F32", np.zeros(8)),
        "bn.running_mean": ("F32", rng.normal(0, 0.1, size=8)),
        "bn.running_var": ("F32", running_var),
        "bn.num_batches_tracked": ("I64", np.array(1200)),
        "embed.weight": ("BF16", rng.normal(0, 1, size=(64, 16))),
    })


def to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of `values`, rounded to nearest even."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")


def write_safetensors(path: Path, tensors: dict) -> None:
    """A safetensors file (8-byte header length, JSON header, raw little-endian data)."""
    header, data, offset = {}, [], 0
    for name, (code, values) in tensors.items():
        raw = to_bfloat16_bits(values) if code == "BF16" else np.asarray(
            values, {"F32": "<f4", "I64": "<i8"}[code])
        header[name] = {"dtype": code, "shape": list(raw.shape),
                        "data_offsets": [offset, offset + raw.nbytes]}
        data.append(raw.tobytes())
        offset += raw.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(data))


if __name__ == "__main__":
    main()
