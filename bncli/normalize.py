"""Batch normalization of blocks, in float64, rounded once to the output dtype.

``y = scale * (x - mean) / sqrt(variance + epsilon) + offset`` is the formula of
``tf.nn.batch_normalization``. Per channel it is evaluated as ``(x - mean) * factor + offset``
with ``factor = scale / sqrt(variance + epsilon)`` in float64; the subtraction comes first,
so that a large ``|mean| / std`` does not cancel digits away (TensorFlow's
``x * factor + (offset - mean * factor)`` does), and the single rounding to float32 or
float16 keeps every element within one ulp of the exact result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layout import plan_blocks

# Float64 bytes of one piece of work: the float64 copy of the input stays in L2 cache.
PIECE_BYTES = 512 * 2**10
DEFAULT_EPSILON = 1e-3  # as tf.keras.layers.BatchNormalization


def output_dtype(input_dtype: np.dtype, requested=None) -> np.dtype:
    """Return the output dtype: `requested`, else the input's if floating, else float32."""
    if requested is not None:
        return np.dtype(requested).newbyteorder("=")
    if input_dtype.kind == "f":
        return input_dtype.newbyteorder("=")
    return np.dtype(np.float32)


@dataclass
class Coefficients:
    """Per-channel ``mean``, ``factor`` and ``offset`` in float64, broadcastable to the data.

    Attributes
    ----------
    mean, factor, offset : ndarray of float64
        Same shape: the data's shape with reduced axes of size 1.
    """

    mean: np.ndarray
    factor: np.ndarray
    offset: np.ndarray

    @classmethod
    def from_statistics(cls, mean, variance, *, offset=0.0, scale=1.0,
                        epsilon: float = DEFAULT_EPSILON) -> Coefficients:
        """Build the coefficients of ``tf.nn.batch_normalization``.

        Parameters
        ----------
        mean, variance : array_like
            Per-channel statistics.
        offset, scale : array_like
            Broadcastable to `mean`; ``None`` means 0 and 1.
        epsilon : float

        Returns
        -------
        Coefficients
        """
        mean = np.asarray(mean, np.float64)
        variance = np.asarray(variance, np.float64)
        scale = np.asarray(1.0 if scale is None else scale, np.float64)
        offset = np.asarray(0.0 if offset is None else offset, np.float64)
        with np.errstate(all="ignore"):
            factor = scale / np.sqrt(variance + epsilon)
        shape = np.broadcast_shapes(mean.shape, variance.shape, scale.shape, offset.shape)
        return cls(
            mean=np.ascontiguousarray(np.broadcast_to(mean, shape)),
            factor=np.ascontiguousarray(np.broadcast_to(factor, shape)),
            offset=np.ascontiguousarray(np.broadcast_to(offset, shape)),
        )

    def __getitem__(self, index) -> Coefficients:
        return Coefficients(self.mean[index], self.factor[index], self.offset[index])


def normalize_block(block: np.ndarray, coefficients: Coefficients, out: np.ndarray,
                    *, piece_bytes: int = PIECE_BYTES) -> np.ndarray:
    """Normalize `block` into `out`, piece by piece.

    Parameters
    ----------
    block : ndarray
        Input data, any real or bool dtype.
    coefficients : Coefficients
        Broadcastable to `block`, with the same rank.
    out : ndarray
        Same shape as `block`, in the output dtype.
    piece_bytes : int
        Float64 bytes computed at once.

    Returns
    -------
    ndarray
        `out`.
    """
    shape = block.shape
    for region in plan_blocks(shape, 8, piece_bytes):
        index = tuple(
            slice(0, 1) if coefficients.mean.shape[axis] == 1 else part
            for axis, part in enumerate(region)
        )
        values = np.array(block[region], dtype=np.float64)
        with np.errstate(all="ignore"):
            values -= coefficients.mean[index]
            values *= coefficients.factor[index]
            values += coefficients.offset[index]
            out[region] = values  # the one rounding; float16 overflow gives inf, as NumPy
    return out
