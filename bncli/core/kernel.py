"""Which block kernel runs: the compiled one (``bncli.core._kernel``) where it was built,
else NumPy.

The NumPy kernels in :mod:`bncli.core.moments` and :mod:`bncli.core.histogram` are the reference
and the fallback. ``BN_KERNEL=numpy`` forces them; ``bn --version`` says which is active.
The compiled kernel takes channels-last rows and (outer, channels, inner) slabs of the types
in :data:`TYPE_CODES` in native byte order; every other case goes to NumPy. Both read a bool
as NumPy does: any nonzero byte is True, whatever the byte (a file's bools may hold 2 or 255).
"""

from __future__ import annotations

import os

import numpy as np

# The compiled loops' type codes, by NumPy kind and item size: the struct characters of
# float16/32/64, int8-64, uint8-64 and bool (64-bit integers are 'q' and 'Q' whatever
# NumPy's own character for them, 'l' or 'q', is on the platform).
TYPE_CODES = {("f", 2): "e", ("f", 4): "f", ("f", 8): "d", ("i", 1): "b", ("u", 1): "B",
              ("i", 2): "h", ("u", 2): "H", ("i", 4): "i", ("u", 4): "I", ("i", 8): "q",
              ("u", 8): "Q", ("b", 1): "?"}


def _load() -> tuple:
    if os.environ.get("BN_KERNEL", "").strip().lower() == "numpy":
        return None, "numpy (BN_KERNEL=numpy)"
    try:
        # the compiled extension (_kernel.c); _kernel.pyi describes it for mypy
        from bncli.core import _kernel
    except ImportError:
        return None, "numpy (the compiled kernel is not built)"
    return _kernel, "c"


COMPILED, DESCRIPTION = _load()
NAME = "c" if COMPILED is not None else "numpy"


def type_code(dtype: np.dtype) -> str | None:
    """The compiled kernel's code for `dtype`, or None if it takes it not (or is not built)."""
    if COMPILED is None or not dtype.isnative:
        return None
    return TYPE_CODES.get((dtype.kind, dtype.itemsize))
