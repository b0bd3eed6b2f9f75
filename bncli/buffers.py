"""Reusable block buffers, so that streaming allocates (and page-faults) nothing per block."""

from __future__ import annotations

import math

import numpy as np


class BufferRing:
    """Hands out `size` buffers in turn; the one handed out `size` calls ago is reused.

    A fresh allocation of a large block costs a page fault per 4 KiB page on first touch;
    reusing a few buffers avoids that for every block after the first few. The caller
    guarantees that fewer than `size` arrays are in use at once.

    Parameters
    ----------
    size : int
        Number of buffers; 0 allocates a new array each time.
    """

    def __init__(self, size: int):
        self.size = size
        self._buffers: list = []
        self._next = 0

    def array(self, shape: tuple, dtype) -> np.ndarray:
        """Return a C-contiguous array of `shape` and `dtype` (contents undefined)."""
        dtype = np.dtype(dtype)
        if self.size == 0:
            return np.empty(shape, dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        index = self._next
        self._next = (index + 1) % self.size
        if index == len(self._buffers):
            self._buffers.append(np.empty(nbytes, np.uint8))
        elif self._buffers[index].nbytes < nbytes:
            self._buffers[index] = np.empty(nbytes, np.uint8)
        return self._buffers[index][:nbytes].view(dtype).reshape(shape)
