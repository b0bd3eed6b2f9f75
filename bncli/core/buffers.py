"""Reusable block buffers, so that streaming allocates (and page-faults) nothing per block."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import DTypeLike


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
        self._buffers: list[np.ndarray] = []
        self._next = 0

    def array(self, shape: tuple, dtype: DTypeLike) -> np.ndarray:
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


class LazyBlock:
    """A block of a file, read piece by piece into one small reused buffer as it is used.

    A piece read just before it is computed on, into the same few hundred KiB each time, is
    still in the core's cache (and TLB) when it is used; a whole block read first has left
    the cache by then. Code that needs the whole block calls :meth:`array`.

    Parameters
    ----------
    block : ndarray
        C-contiguous, of the block's shape and dtype: the data, or (with `read`) the
        buffer that :meth:`array` fills.
    read : callable, optional
        ``read(start, stop, out)`` reads the flat (C-order) elements ``[start, stop)`` of
        the block into the 1-d array `out`. Without it, `block` holds the data.
    pieces : BufferRing, optional
        Where the pieces go (default: a new ring of one buffer).
    span : tuple, optional
        ``(fd, offset, name)``: the block is the bytes of the open file `fd` from `offset`
        on, as stored, so that a compiled kernel can read its pieces itself (`name` is the
        input's, for errors). Only with `read`.
    """

    def __init__(self, block: np.ndarray,
                 read: Callable[[int, int, np.ndarray], None] | None = None,
                 pieces: BufferRing | None = None, span: tuple | None = None):
        self._block = block
        self._read = read
        self._pieces = pieces or BufferRing(1)
        self.span = span if read is not None else None
        self.shape, self.dtype, self.size = block.shape, block.dtype, block.size
        self.c_contiguous = bool(block.flags.c_contiguous)

    @classmethod
    def of(cls, block: np.ndarray | LazyBlock) -> LazyBlock:
        """`block` itself if it is a LazyBlock, else a LazyBlock of the array."""
        return block if isinstance(block, LazyBlock) else cls(block)

    def piece(self, start: int, stop: int) -> np.ndarray:
        """The flat elements ``[start, stop)``: a view of the block, or freshly read.

        A piece read from the file is valid until the next call.
        """
        if self._read is None:
            return self._block.reshape(-1)[start:stop]
        out = self._pieces.array((stop - start,), self.dtype)
        self._read(start, stop, out)
        return out

    @property
    def in_memory(self) -> bool:
        """Whether the whole block is held (given, or read already)."""
        return self._read is None

    def piece_buffer(self, items: int) -> np.ndarray:
        """A buffer of `items` elements of the block's dtype from the piece ring (valid
        until the next piece), for a reader that fills it itself."""
        return self._pieces.array((items,), self.dtype)

    def array(self) -> np.ndarray:
        """The whole block, read now if it was not."""
        if self._read is not None:
            self._read(0, self.size, self._block.reshape(-1))
            self._read = None
            self.span = None
        return self._block
