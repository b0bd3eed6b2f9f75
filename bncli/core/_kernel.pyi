"""The compiled block kernels of bncli (``_kernel.c``; see :mod:`bncli.core.kernel`).

Every function takes its arguments by position only. Data and outputs are C-contiguous
buffers (outputs writable) of native items of the type they are used as: the data's of
``code``, a kernel type code of ``bncli.core.kernel.TYPE_CODES`` (a bool item is True where
its byte is not 0, as NumPy reads it), the others' as each function says. Each function
checks its arguments before it touches memory: it raises ValueError for a size out of
range, a buffer shorter than the items used, or a buffer written that shares memory with
another; OverflowError for sizes whose product passes the address space; TypeError for a
buffer whose items are not of the type they are used as.
"""

from typing import TypeAlias

import numpy as np
from typing_extensions import Buffer

# An object with the buffer protocol. NumPy's stubs give ndarray the protocol's `__buffer__`
# only for Python 3.12 and later, so ndarray is named as well.
_Buffer: TypeAlias = Buffer | np.ndarray

def rows_moments(data: _Buffer, code: str, rows: int, channels: int, piece_rows: int,
                 shift: _Buffer, total: _Buffer, mean: _Buffer, m2: _Buffer,
                 m3: _Buffer | None, m4: _Buffer | None, minimum: _Buffer, maximum: _Buffer,
                 zero_count: _Buffer, min_count: _Buffer, max_count: _Buffer, fd: int = -1,
                 offset: int = 0, merge: bool = False, /) -> tuple[int, int]:
    """Moments of each piece of `piece_rows` rows; returns ``(bytes, merged)``: the bytes
    read (or held) and whether the pieces were merged into the first row (1, else 0)."""

def columns_moments(data: _Buffer, code: str, rows: int, channels: int, width: int,
                    shift: _Buffer, total: _Buffer, mean: _Buffer, m2: _Buffer,
                    m3: _Buffer | None, m4: _Buffer | None, minimum: _Buffer,
                    maximum: _Buffer, zero_count: _Buffer, min_count: _Buffer,
                    max_count: _Buffer, /) -> None:
    """rows_moments in ranges of `width` columns over every row: one output row."""

def slab_moments(data: _Buffer, code: str, outer: int, channels: int, inner: int,
                 shift: _Buffer, higher: bool, out: _Buffer, /) -> None:
    """Moments of each run of `inner` values (below 2**34) of (outer, channels, inner) data
    into `out` (float64, outer x channels x 10)."""

def histogram_window(data: _Buffer, code: str, count: int, channels: int, bits: int,
                     special: _Buffer, /) -> tuple[int, int]:
    """``(low, high)``: the smallest and largest bucket key of the normal finite values
    (low > high when there are none); adds the special counts into `special` (int64)."""

def histogram_count(data: _Buffer, code: str, count: int, channels: int, bits: int,
                    low: int, width: int, counts: _Buffer, cell_bytes: int, /) -> None:
    """Adds one to ``counts[channel, sign, key - low]`` (uint16 or uint32 as `cell_bytes`)
    for each normal finite value; ValueError when the window ``[low, low + width)`` is not
    within the keys of normal finite values or misses a value's key."""

def normalize_rows(data: _Buffer, code: str, rows: int, channels: int, mean: _Buffer,
                   factor: _Buffer, offset: _Buffer, has_offset: bool, out: _Buffer,
                   out_code: str, /) -> None:
    """``out = (x - mean) * factor (+ offset)`` per channel, rounded once to `out_code`."""

def pread_runs(fd: int, out: _Buffer, offsets: _Buffer, run_bytes: int, /) -> int:
    """Reads `run_bytes` at each int64 offset of `offsets` into `out`; returns the bytes
    read (fewer when the file ends inside a run)."""
