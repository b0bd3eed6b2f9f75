"""Which block kernel runs: the compiled one (``bncli._kernel``) where it was built, else NumPy.

The NumPy kernels in :mod:`bncli.reduction` and :mod:`bncli.histogram` are the reference
and the fallback. ``BN_KERNEL=numpy`` forces them; ``bn --version`` says which is active.
The compiled kernel takes channels-last rows and (outer, channels, inner) slabs of the types
in :data:`TYPE_CODES` in native byte order; every other case goes to NumPy.
"""

from __future__ import annotations

import os

import numpy as np

# NumPy type characters the compiled loops take (each value exact as a double).
TYPE_CODES = frozenset("efdbBhHiI?")


def _load() -> tuple:
    if os.environ.get("BN_KERNEL", "").strip().lower() == "numpy":
        return None, "numpy (BN_KERNEL=numpy)"
    try:
        from . import _kernel
    except ImportError:
        return None, "numpy (the compiled kernel is not built)"
    return _kernel, "c"


COMPILED, DESCRIPTION = _load()
NAME = "c" if COMPILED is not None else "numpy"


def type_code(dtype: np.dtype) -> str | None:
    """The compiled kernel's code for `dtype`, or None if it takes it not (or is not built)."""
    if COMPILED is None or not dtype.isnative:
        return None
    return dtype.char if dtype.char in TYPE_CODES else None
