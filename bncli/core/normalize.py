"""Batch normalization of blocks, in float64, rounded once to the output dtype.

``y = scale * (x - mean) / sqrt(variance + epsilon) + offset`` is the formula of
``tf.nn.batch_normalization``. Per channel it is evaluated as ``(x - mean) * factor + offset``
with ``factor = scale / sqrt(variance + epsilon)`` in float64; the subtraction comes first,
so that a large ``|mean| / std`` does not cancel digits away (TensorFlow's
``x * factor + (offset - mean * factor)`` does), and the single rounding to float32 or
float16 keeps every element within one ulp of the exact result unless the offset cancels the
scaled term ``t``. The float64 evaluation has six roundings: its error is at most
``5.5 * 2**-53 * (|t| + |offset|)`` (the README's Numbers section).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bncli.core.buffers import LazyBlock
from bncli.core.kernel import COMPILED, type_code
from bncli.core.layout import collapse_axes, fold_factor, plan_blocks
from bncli.errors import UsageError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike

# Float64 bytes of one piece of work: the float64 copy stays in L2 cache, and each NumPy
# call is long enough that threads rarely wait for the GIL.
PIECE_BYTES = 2 * 2**20
DEFAULT_EPSILON = 1e-3  # as tf.keras.layers.BatchNormalization
# How each framework puts epsilon into the denominator, and its default epsilon:
#   tf, torch             sqrt(variance + epsilon)   (tf.nn.batch_normalization, torch BatchNorm)
#   keras-backend         sqrt(variance) + epsilon   (the Keras backend's batch_normalization)
#   keras-normalization   max(sqrt(variance), epsilon)   (keras.layers.Normalization)
CONVENTIONS = {"tf": 1e-3, "torch": 1e-5, "keras-backend": 1e-3, "keras-normalization": 1e-7}


def denominator(variance: ArrayLike, epsilon: float, convention: str = "tf") -> np.ndarray:
    """The per-channel divisor of `convention` (see :data:`CONVENTIONS`), in float64."""
    variance = np.asarray(variance, np.float64)
    with np.errstate(invalid="ignore"):
        if convention in ("tf", "torch"):
            return np.sqrt(variance + epsilon)
        if convention == "keras-backend":
            return np.sqrt(variance) + epsilon
        if convention == "keras-normalization":
            return np.maximum(np.sqrt(variance), epsilon)
    raise ValueError(f"convention {convention!r} is not one of {', '.join(CONVENTIONS)}")


def output_dtype(input_dtype: np.dtype, requested: DTypeLike | None = None) -> np.dtype:
    """Return the output dtype: `requested`, else the input's if floating, else float32."""
    if requested is not None:
        return np.dtype(requested).newbyteorder("=")
    if input_dtype.kind == "f":
        return input_dtype.newbyteorder("=")
    return np.dtype(np.float32)


@dataclass(frozen=True)
class NormalizeSpec:
    """How values are normalized, checked once before any data is read.

    Attributes
    ----------
    convention : str
        Where epsilon goes (see :data:`CONVENTIONS`).
    epsilon : float
        Finite and >= 0.
    dtype : numpy.dtype or None
        float16, float32 or float64; None for the input's if floating, else float32.
    """

    convention: str = "tf"
    epsilon: float = CONVENTIONS["tf"]
    dtype: np.dtype | None = None

    @classmethod
    def checked(cls, convention: str, epsilon: float | None, dtype: DTypeLike | None,
                ddof: int) -> NormalizeSpec:
        """The spec of these options (epsilon None: the convention's), or UsageError."""
        if convention not in CONVENTIONS:
            raise UsageError(f"convention {convention!r} is not one of "
                             f"{', '.join(CONVENTIONS)}")
        if convention == "torch" and ddof != 0:
            raise UsageError("the torch convention normalizes with the population variance "
                             "(ddof 0), as BatchNorm does")
        if epsilon is None:
            epsilon = CONVENTIONS[convention]
        try:
            epsilon = float(epsilon)
        except (TypeError, ValueError):
            raise UsageError(f"epsilon {epsilon!r} is not a number") from None
        if not np.isfinite(epsilon) or epsilon < 0:
            raise UsageError(f"epsilon {epsilon!r} must be a finite number >= 0")
        if dtype is not None and np.dtype(dtype).name not in ("float16", "float32", "float64"):
            raise UsageError(f"output dtype {np.dtype(dtype).name} is not float16, float32 or "
                             "float64")
        return cls(convention, epsilon, None if dtype is None else np.dtype(dtype))


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
    def from_statistics(cls, mean: ArrayLike, variance: ArrayLike, *,
                        offset: ArrayLike | None = 0.0, scale: ArrayLike | None = 1.0,
                        epsilon: float = DEFAULT_EPSILON,
                        convention: str = "tf") -> Coefficients:
        """Build the coefficients of ``tf.nn.batch_normalization`` (or of another
        framework's `convention`, see :func:`denominator`).

        Parameters
        ----------
        mean, variance : array_like
            Per-channel statistics.
        offset, scale : array_like
            Broadcastable to `mean`; ``None`` means 0 and 1.
        epsilon : float
        convention : str
            ``tf`` (the default), ``torch``, ``keras-backend`` or ``keras-normalization``.

        Returns
        -------
        Coefficients
        """
        mean = np.asarray(mean, np.float64)
        variance = np.asarray(variance, np.float64)
        scale = np.asarray(1.0 if scale is None else scale, np.float64)
        offset = np.asarray(0.0 if offset is None else offset, np.float64)
        divisor = denominator(variance, epsilon, convention)
        with np.errstate(all="ignore"):
            # A channel without spread (with epsilon 0 too) is all at its mean: x - mean is
            # exactly 0 there, and a factor of 0 keeps 0 * inf from making it NaN.
            factor = np.where(divisor == 0, 0.0, scale / divisor)
        shape = np.broadcast_shapes(mean.shape, variance.shape, scale.shape, offset.shape)
        return cls(
            mean=np.ascontiguousarray(np.broadcast_to(mean, shape)),
            factor=np.ascontiguousarray(np.broadcast_to(factor, shape)),
            offset=np.ascontiguousarray(np.broadcast_to(offset, shape)),
        )

    def __getitem__(self, index: tuple[slice, ...]) -> Coefficients:
        return Coefficients(self.mean[index], self.factor[index], self.offset[index])


def normalize_block(block: np.ndarray | LazyBlock, coefficients: Coefficients, out: np.ndarray,
                    *, piece_bytes: int = PIECE_BYTES,
                    done: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Normalize `block` into `out`, piece by piece.

    Parameters
    ----------
    block : ndarray or LazyBlock
        Input data, any real or bool dtype; a :class:`~bncli.core.buffers.LazyBlock` is read
        piece by piece where the layout allows.
    coefficients : Coefficients
        Broadcastable to `block`, with the same rank.
    out : ndarray
        Same shape as `block`, in the output dtype.
    piece_bytes : int
        Float64 bytes computed at once.
    done : callable, optional
        Called as ``done(start, stop)`` for each run of flat (C-order) elements of `out`
        as soon as it holds its final values, in order and covering `out` once, so that a
        writer can write each part while it is still in cache.

    Returns
    -------
    ndarray
        `out`.
    """
    lazy = LazyBlock.of(block)
    if _normalize_rows(lazy, coefficients, out, piece_bytes, done):
        return out
    block = lazy.array()
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
    if done is not None:
        done(0, out.size)
    return out


def _normalize_rows(block: LazyBlock, coefficients: Coefficients, out: np.ndarray,
                    piece_bytes: int, done: Callable[[int, int], None] | None = None) -> bool:
    """Normalize a C-contiguous block as a 2-D array with long rows; False if it cannot.

    Channels-last data ``(A, K)`` is folded into rows of about ``FOLD_WIDTH`` values with
    the coefficients tiled along them; ``(A, K, B)`` data becomes ``A*K`` rows of ``B``
    values with one coefficient per row. Either way NumPy's inner loops run long.
    """
    if not (block.c_contiguous and out.flags.c_contiguous) or block.size == 0:
        return False
    reduce_axes = tuple(axis for axis, dim in enumerate(coefficients.mean.shape) if dim == 1)
    collapsed = collapse_axes(block.shape, reduce_axes)
    if collapsed is None:
        return False
    outer, channels, inner = collapsed
    piece_items = max(1, piece_bytes // 8)
    if inner > 16 * piece_items:
        return False
    mean, factor, offset = (np.ascontiguousarray(array).reshape(channels) for array in (
        coefficients.mean, coefficients.factor, coefficients.offset))
    code = type_code(block.dtype)
    if inner == 1 and code is not None and out.dtype.isnative and out.dtype.char in "fd":
        # the compiled kernel: read, normalize and round in one pass per piece
        rows_out = out.reshape(outer, channels)
        has_offset = bool(np.any(offset))
        per_piece = max(1, piece_items // channels)
        for start in range(0, outer, per_piece):
            stop = min(start + per_piece, outer)
            COMPILED.normalize_rows(block.piece(start * channels, stop * channels), code,
                                    stop - start, channels, mean, factor, offset, has_offset,
                                    rows_out[start:stop], out.dtype.char)
            if done is not None:
                done(start * channels, stop * channels)
        return True
    spans = []  # (first flat element, rows, row width, output rows, coefficients)
    if inner == 1:
        fold = fold_factor(channels)
        folded = outer // fold * fold
        rows_out = out.reshape(outer, channels)
        if folded:
            spans.append((0, folded // fold, fold * channels,
                          rows_out[:folded].reshape(-1, fold * channels),
                          tuple(np.tile(array, fold) for array in (mean, factor, offset))))
        if folded < outer:
            spans.append((folded * channels, outer - folded, channels, rows_out[folded:],
                          (mean, factor, offset)))
    else:
        spans.append((0, outer * channels, inner, out.reshape(outer * channels, inner),
                      tuple(np.tile(array, outer)[:, None] for array in (mean, factor, offset))))
    for base, rows, width, rows_out, (row_mean, row_factor, row_offset) in spans:
        has_offset = bool(np.any(row_offset))
        per_piece = max(1, piece_items // width)
        buffer = np.empty(min(per_piece, rows) * width)
        by_row = row_mean.ndim == 2
        for start in range(0, rows, per_piece):
            stop = min(start + per_piece, rows)
            values = buffer[:(stop - start) * width].reshape(stop - start, width)
            np.copyto(values, block.piece(base + start * width, base + stop * width)
                      .reshape(stop - start, width))
            in_rows = slice(start, stop) if by_row else slice(None)
            with np.errstate(all="ignore"):
                values -= row_mean[in_rows]
                values *= row_factor[in_rows]
                if has_offset:
                    values += row_offset[in_rows]
                # computed in float64, rounded once (a separate cast is faster than a
                # ufunc writing into another dtype, which goes through a buffer)
                np.copyto(rows_out[start:stop], values, casting="same_kind")
    if done is not None:
        done(0, out.size)
    return True
