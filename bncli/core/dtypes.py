"""Which element types and ranks bn reduces: bool, integers and real floats of at most 8
bytes, in arrays of at most :data:`MAX_RANK` axes."""

from __future__ import annotations

import numpy as np

from bncli.errors import InputError

# Kinds whose values we can reduce in float64: bool, signed, unsigned, floating.
NUMERIC_KINDS = "biuf"
# The most axes an input may have: NumPy 1.x's limit, so that every array bn makes from an
# input (kept dimensions, histograms with a bucket axis) stays within any NumPy's.
MAX_RANK = 32
_READS = "bn reads bool, integer and real floating data of up to 8 bytes"


def dtype_problem(dtype: np.dtype) -> str | None:
    """Why bn cannot reduce values of `dtype` (a clause that reads after a file's name),
    or None when it can.

    Parameters
    ----------
    dtype : numpy.dtype

    Returns
    -------
    str or None
    """
    if dtype.fields is not None:
        return f"its dtype is structured ({dtype.descr!r:.80}); {_READS}"
    if dtype.subdtype is not None:
        return f"its dtype is an array type ({dtype.str}); {_READS}"
    if dtype.kind == "c":
        return f"its dtype {dtype.name} is complex, which is not supported; {_READS}"
    if dtype.kind not in NUMERIC_KINDS:
        return f"its dtype {dtype.str!r} ({dtype.name}) is not numeric; {_READS}"
    if dtype.itemsize > 8:
        return f"its dtype {dtype.name} is wider than 8 bytes, which is not supported; {_READS}"
    return None


def check_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """Refuse every dtype that is not bool, integer or real floating of at most 8 bytes.

    Parameters
    ----------
    dtype : numpy.dtype
    name : str
        Input name for the error message.

    Returns
    -------
    numpy.dtype
        The same dtype.
    """
    problem = dtype_problem(dtype)
    if problem is not None:
        raise InputError(f"{name}: {problem}")
    return dtype


def rank_problem(rank: int) -> str | None:
    """Why bn cannot reduce an array of `rank` axes, or None when it can."""
    if rank > MAX_RANK:
        return f"it has {rank} axes; bn reads arrays of at most {MAX_RANK} axes"
    return None


def check_rank(shape: tuple | list, name: str) -> None:
    """Refuse a shape of more than :data:`MAX_RANK` axes, naming the input."""
    problem = rank_problem(len(shape))
    if problem is not None:
        raise InputError(f"{name}: {problem}")
