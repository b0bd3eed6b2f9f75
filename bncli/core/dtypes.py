"""Which element types bn reduces: bool, integers and real floats of at most 8 bytes."""

from __future__ import annotations

import numpy as np

from bncli.errors import InputError

# Kinds whose values we can reduce in float64: bool, signed, unsigned, floating.
NUMERIC_KINDS = "biuf"


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
    if dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{name}: structured dtype {dtype.descr!r} is not supported")
    if dtype.kind == "c":
        raise InputError(f"{name}: complex dtype {dtype.name!r} is not supported")
    if dtype.kind not in NUMERIC_KINDS:
        raise InputError(
            f"{name}: dtype {dtype.str!r} ({dtype.name}) is not numeric; "
            "bn reads bool, integer and floating data"
        )
    if dtype.itemsize > 8:
        raise InputError(f"{name}: dtype {dtype.name!r} is wider than float64 and not supported")
    return dtype
