"""bncli: per-channel moments and batch normalization of tensor files, streamed.

In memory, with the signatures of the TensorFlow functions they mirror::

    mean, variance = bncli.moments(x, axes=[0, 1, 2])
    y = bncli.batch_normalization(x, mean, variance, offset, scale, 1e-3)

On files of any size, in bounded memory: :func:`bncli.api.stats`,
:func:`bncli.api.normalize`, :func:`bncli.api.merge` (the library behind ``bn``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bncli._version import __version__
from bncli.errors import BnError, InputError, OutputError, StatsFileError, UsageError

__all__ = [
    "__version__", "BnError", "InputError", "OutputError", "StatsFileError", "UsageError",
    "batch_normalization", "moments", "normalize_file", "stats_files", "merge_files",
    "load_stats",
]

if TYPE_CHECKING:
    import os

    import numpy as np
    from numpy.typing import ArrayLike

    from bncli.api import NormalizeResult, Path
    from bncli.core.statistics import Statistics


def load_stats(path: str | os.PathLike[str]) -> dict:
    """Read a statistics file (``.json`` or ``.npz``) as NumPy arrays.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict of str to ndarray
        ``count``, ``mean``, ``variance``, ``std``, ``min``, ``max``, ``nan_count``,
        ``inf_count`` (and the stored sums) of the channel shape, NaN as float NaN; the
        file's ``axes`` and ``channel_shape`` as tuples.
    """
    import os

    from bncli.api import load_statistics

    statistics = load_statistics(os.fspath(path))
    values = {key: value for key, value in statistics.values().items()}
    values["axes"] = tuple(statistics.axes)
    values["channel_shape"] = tuple(statistics.channel_shape)
    return values


def moments(x: ArrayLike, axes: Sequence[int] | int, keepdims: bool = False,
            ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of `x` over `axes`, as ``tf.nn.moments``, accumulated in float64.

    Parameters
    ----------
    x : array_like
        Bool, integer or real floating data.
    axes : int or sequence of int
        Axes to reduce; negative values count from the end.
    keepdims : bool
        Keep the reduced axes with size 1.
    ddof : int
        Delta degrees of freedom of the variance (0: population variance).

    Returns
    -------
    mean, variance : ndarray of float64
        Of the channel shape (``x.shape`` without `axes`), or keepdims-shaped.
    """
    import numpy as np

    from bncli.core.layout import channel_shape, resolve_axes
    from bncli.core.moments import block_moments

    x = np.asarray(x)
    reduce_axes = resolve_axes(x.shape, [axes] if isinstance(axes, (int, np.integer))
                               else list(axes), name="x")
    result = block_moments(x, reduce_axes).finalize(ddof)
    shape = result["mean"].shape if keepdims else channel_shape(x.shape, reduce_axes)
    return result["mean"].reshape(shape), result["variance"].reshape(shape)


def batch_normalization(x: ArrayLike, mean: ArrayLike, variance: ArrayLike,
                        offset: ArrayLike | None, scale: ArrayLike | None,
                        variance_epsilon: float, dtype: str | None = None) -> np.ndarray:
    """``scale * (x - mean) / sqrt(variance + variance_epsilon) + offset``, as TensorFlow's.

    Computed in float64 and rounded once to the output dtype: in float64 each element is
    within ``5.5 * 2**-53 * (|t| + |offset|)`` of the exact result, ``t`` the scaled term;
    float32 and float16 outputs add half an ulp of their own.

    Parameters
    ----------
    x : array_like
    mean, variance : array_like
        Broadcastable to `x` (keepdims-shaped, or channels-last channel-shaped).
    offset, scale : array_like or None
        Broadcastable to `x`; None means 0 and 1.
    variance_epsilon : float
    dtype : str, optional
        Output dtype; default the input's if floating, else float32.

    Returns
    -------
    ndarray of the shape of `x`
    """
    import numpy as np

    from bncli.core.normalize import Coefficients, normalize_block, output_dtype

    x = np.asarray(x)
    coefficients = Coefficients.from_statistics(mean, variance, offset=offset, scale=scale,
                                                epsilon=variance_epsilon)
    try:
        shape = np.broadcast_shapes(x.shape, coefficients.mean.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"statistics of shape {coefficients.mean.shape} do not broadcast "
                         f"to x of shape {x.shape}")
    full = (1,) * (x.ndim - coefficients.mean.ndim)
    coefficients = Coefficients(*(array.reshape(full + array.shape) for array in (
        coefficients.mean, coefficients.factor, coefficients.offset)))
    out = np.empty(x.shape, output_dtype(x.dtype, dtype))
    return normalize_block(x, coefficients, out)


def stats_files(inputs: Path | Sequence[Path], **options: Any) -> Statistics:
    """Statistics of files (see :func:`bncli.api.stats`)."""
    from bncli.api import stats

    return stats(inputs, **options)


def normalize_file(input: str, output: str, **options: Any) -> NormalizeResult:
    """Normalize a file into another (see :func:`bncli.api.normalize`)."""
    from bncli.api import normalize

    return normalize(input, output, **options)


def merge_files(paths: Sequence[Path]) -> Statistics:
    """Merge statistics files (see :func:`bncli.api.merge`)."""
    from bncli.api import merge

    return merge(paths)
