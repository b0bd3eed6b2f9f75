"""The NumPy ``.npy`` format: its header read without trusting it, and its data read at
any offset (or as a stream, from stdin or a pipe).

A ``.npy`` file is::

    b"\\x93NUMPY" major minor  header_len  header  data
                  (1 byte each) (uint16 LE for 1.0, uint32 LE for 2.0 and 3.0)

``header`` is the ``repr`` of a dict with exactly the keys ``descr``, ``fortran_order`` and
``shape``, encoded in latin-1 (1.0, 2.0) or UTF-8 (3.0), padded with spaces and ended by a
newline. ``data`` is the raw array in C or Fortran order. Checks run in a fixed order: magic,
version, header length, header syntax, keys, dtype, shape, and, when the size of the data is
known, that it holds exactly what the header declares. Nothing is ever unpickled.
"""

from __future__ import annotations

import ast
import itertools
import math
import os
import re
import struct
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from bncli.core.buffers import BufferRing
from bncli.core.dtypes import check_dtype, check_rank
from bncli.core.kernel import COMPILED
from bncli.core.layout import format_shape, is_contiguous, region_shape, region_start
from bncli.errors import InputError
from bncli.io.source import (
    InputSpec,
    OpenOptions,
    Source,
    open_file,
    read_into,
    unknown_format,
)

if TYPE_CHECKING:
    from typing import Protocol, TypeAlias

    class FileStream(Protocol):
        """A file: its header read in order, its data at offsets through its descriptor."""

        def read(self, size: int = -1, /) -> bytes: ...
        def fileno(self) -> int: ...
        def close(self) -> None: ...

    class OrderedStream(Protocol):
        """A stream read once, in order: stdin, a pipe, an inflated ``.npz`` member."""

        def read(self, size: int = -1, /) -> bytes: ...
        def readinto(self, buffer: memoryview, /) -> int | None: ...
        def close(self) -> None: ...

    # What a .npy header and data are read from: a file when `seekable`, else a stream.
    NpyStream: TypeAlias = FileStream | OrderedStream

MAGIC = b"\x93NUMPY"
# NumPy refuses headers above this size by default: literal_eval is not safe for large inputs.
MAX_HEADER_SIZE = 10000
# Output headers are padded so that the data starts on this boundary, as NumPy does.
HEADER_ALIGNMENT = 64
_HEADER_KEYS = {"descr", "fortran_order", "shape"}
# A Python 2 long literal in a version 1.0 header's shape: `(2L, 3L)`.
_PYTHON2_LONG = re.compile(r"\b([0-9]+)L\b")


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
        With its byte order as stored.
    fortran_order : bool
    data_offset : int
        Byte offset of the first data byte.
    version : tuple of int
    """

    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    data_offset: int
    version: tuple

    @property
    def data_bytes(self) -> int:
        """Number of data bytes the header promises."""
        return math.prod(self.shape) * self.dtype.itemsize


def _read_exact(stream: NpyStream, count: int, name: str, what: str) -> bytes:
    data = b""
    while len(data) < count:
        piece = stream.read(count - len(data))
        if not piece:
            break
        data += piece
    if len(data) < count:
        if not data and what == "magic":
            raise InputError(f"{name}: empty file, not a .npy file")
        raise InputError(
            f"{name}: file ends inside the .npy {what} ({len(data)} of {count} bytes)"
        )
    return data




# The checks in the fixed order of the module docstring, each with its message: kept whole.
def read_header(stream: NpyStream, name: str, *, check_type: bool = True) -> NpyHeader:
    """Read and validate a ``.npy`` header from a binary stream positioned at its start.

    Parameters
    ----------
    stream : binary file object
        Read sequentially; left positioned at the first data byte.
    name : str
        Input name for error messages.
    check_type : bool
        Refuse element types bn does not reduce (False: only describe them).

    Returns
    -------
    NpyHeader
    """
    magic = _read_exact(stream, 6, name, "magic")
    if magic != MAGIC:
        head = magic + (stream.read(2) or b"")
        raise InputError(unknown_format(name, head))
    major, minor = _read_exact(stream, 2, name, "version")
    if (major, minor) not in ((1, 0), (2, 0), (3, 0)):
        raise InputError(f"{name}: unsupported .npy format version {major}.{minor}")
    if major == 1:
        (header_len,) = struct.unpack("<H", _read_exact(stream, 2, name, "header length"))
        prefix = 10
    else:
        (header_len,) = struct.unpack("<I", _read_exact(stream, 4, name, "header length"))
        prefix = 12
    if header_len > MAX_HEADER_SIZE:
        raise InputError(
            f"{name}: .npy header of {header_len} bytes is over the limit of "
            f"{MAX_HEADER_SIZE} bytes"
        )
    raw = _read_exact(stream, header_len, name, "header")
    encoding = "utf8" if major == 3 else "latin1"
    try:
        text = raw.decode(encoding)
        with warnings.catch_warnings():  # an odd escape in a hostile header: no stderr line
            warnings.simplefilter("ignore")
            try:
                header = ast.literal_eval(text)
            except SyntaxError:
                if major != 1:
                    raise
                # Python 2's NumPy wrote long sizes as `2L`; NumPy reads them, and so does bn
                header = ast.literal_eval(_PYTHON2_LONG.sub(r"\1", text))
    except (UnicodeDecodeError, ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise InputError(f"{name}: .npy header is not a Python literal: {raw[:80]!r}") from exc
    if not isinstance(header, dict):
        raise InputError(f"{name}: .npy header is not a dict: {header!r:.80}")
    keys = set(header) if all(isinstance(k, str) for k in header) else None
    if keys != _HEADER_KEYS:
        raise InputError(
            f"{name}: .npy header keys are {sorted(map(repr, header))}, "
            "expected 'descr', 'fortran_order', 'shape'"
        )
    fortran_order = header["fortran_order"]
    if not isinstance(fortran_order, bool):
        raise InputError(f"{name}: .npy fortran_order is not a bool: {fortran_order!r:.80}")
    descr = header["descr"]
    if not isinstance(descr, str):
        if isinstance(descr, list):
            raise InputError(f"{name}: its dtype is structured ({descr!r:.80}); bn reads bool, "
                             "integer and real floating data of up to 8 bytes")
        raise InputError(f"{name}: .npy descr is not a dtype string: {descr!r:.80}")
    if descr.lstrip("<>|=").startswith("O"):
        raise InputError(
            f"{name}: object arrays (pickled data) are refused; bn never unpickles"
        )
    try:  # NumPy parses some dtype strings as Python ("(2,)f4"): SyntaxError too
        dtype = np.dtype(descr)
    except (TypeError, ValueError, SyntaxError, RecursionError, MemoryError) as exc:
        raise InputError(f"{name}: .npy descr {descr!r:.80} is not a valid dtype") from exc
    if check_type:
        check_dtype(dtype, name)
    shape = header["shape"]
    if (
        not isinstance(shape, tuple)
        or not all(type(dim) is int for dim in shape)
        or any(dim < 0 for dim in shape)
    ):
        raise InputError(f"{name}: .npy shape is not a tuple of sizes: {shape!r:.80}")
    check_rank(shape, name)
    if math.prod(shape) * dtype.itemsize >= 2**63:
        raise InputError(f"{name}: .npy shape {shape!r:.80} is too large for any file")
    return NpyHeader(
        shape=shape,
        dtype=dtype,
        fortran_order=fortran_order,
        data_offset=prefix + header_len,
        version=(major, minor),
    )


def check_data_size(header: NpyHeader, available: int, name: str) -> None:
    """Check that exactly the declared data follows the header.

    Parameters
    ----------
    header : NpyHeader
    available : int
        Bytes in the file after the header.
    name : str
    """
    if available != header.data_bytes:
        declared = "x".join(map(str, header.shape)) or "scalar"
        if available < header.data_bytes:
            raise InputError(
                f"{name}: header declares {declared} {header.dtype.name} "
                f"({header.data_bytes} bytes) but the file holds {available} bytes of data"
            )
        raise InputError(
            f"{name}: header declares {declared} {header.dtype.name} "
            f"({header.data_bytes} bytes) but {available - header.data_bytes} "
            "bytes of trailing data follow"
        )


def make_header(shape: tuple, dtype: np.dtype, fortran_order: bool) -> bytes:
    """Build a ``.npy`` header, version 1.0 when it fits, else 2.0.

    Parameters
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    fortran_order : bool

    Returns
    -------
    bytes
        Magic, version, length and padded header; the data starts right after.
    """
    body = repr(
        {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran_order,
         "shape": tuple(shape)}
    ).encode("latin1")
    for version, prefix, fmt in (((1, 0), 10, "<H"), ((2, 0), 12, "<I")):
        total = prefix + len(body) + 1
        padded_len = len(body) + 1 + (-total) % HEADER_ALIGNMENT
        if padded_len < 2 ** (8 * struct.calcsize(fmt)):
            body = body + b" " * (padded_len - len(body) - 1) + b"\n"
            return MAGIC + bytes(version) + struct.pack(fmt, padded_len) + body
    raise ValueError("header too large")  # pragma: no cover - needs a > 4 GiB header


Widen = Callable[[np.ndarray, np.ndarray], None]


class RawSource(Source):
    """An array whose data is one contiguous run of bytes at an offset of a file: a ``.npy``
    file, a stored ``.npz`` member, a safetensors tensor; or a stream read in order.

    A file is read with positional reads (from any thread, at any offset, and by the
    compiled kernel itself, see :meth:`file_span`); a stream sequentially with ``readinto``.

    Parameters
    ----------
    stream : binary file
        Closed with the source (unless it is stdin).
    name, path : str
    dataset : str or None
    shape : tuple of int
    dtype : numpy.dtype
        As read (byte order included).
    offset : int
        Where the data starts in `stream`.
    seekable : bool
        False for a stream, read once in order.
    fortran_order : bool
    details : dict
    widen : tuple of (numpy.dtype, callable) or None
        The stored dtype and ``widen(raw, out)``, where values are widened as read
        (bfloat16 and float8 to float32).
    stored_as : str or None
    """

    read_ranges = True

    # each argument is a fact the format declares; a reader of many formats takes them all
    def __init__(self, stream: NpyStream, *, name: str, path: str, dataset: str | None,
                 shape: tuple, dtype: np.dtype, offset: int, seekable: bool,
                 fortran_order: bool = False, details: dict | None = None,
                 widen: tuple[np.dtype, Widen] | None = None, stored_as: str | None = None):
        super().__init__(name=name, path=path, dataset=dataset, shape=shape, dtype=dtype,
                         fortran_order=fortran_order, details=details or {},
                         stored_as=stored_as)
        self._stream = stream
        self._seekable = seekable
        self._data_offset = offset
        self._widen = widen

    def blocks(self, budget_bytes: int, ring: BufferRing | None = None,
               reduce_axes: tuple | None = None) -> Iterator[tuple]:
        ring = ring or BufferRing(0)
        done = 0
        for region in self.regions(budget_bytes):  # in file order, read sequentially
            block = ring.array(region_shape(region), self.dtype)
            if self._seekable:
                self._pread(done // self.dtype.itemsize, block.reshape(-1))
                got = block.nbytes
            else:
                got = read_into(cast("OrderedStream", self._stream), block)  # not seekable
            done += got
            if got < block.nbytes:
                raise InputError(
                    f"{self.name}: data ends after {done} of {self.nbytes} bytes declared "
                    f"by the header ({format_shape(self.shape)} {self.dtype.name})"
                )
            yield region, block
        if not self._seekable and self._stream.read(1):
            raise InputError(
                f"{self.name}: more data follows the {self.nbytes} bytes declared by the "
                f"header ({format_shape(self.shape)} {self.dtype.name})"
            )

    @property
    def random_access(self) -> bool:
        return self._seekable

    def read(self, region: tuple, out: np.ndarray | None = None) -> np.ndarray:
        if not self._seekable:
            return super().read(region, out)
        block = np.empty(region_shape(region), self.dtype) if out is None else out
        if is_contiguous(region, self.storage_shape):
            self.read_part(region, 0, block.size, block.reshape(-1))
            return block
        self._read_runs(region, block)  # a tile: several runs
        return block

    def _read_runs(self, region: tuple, block: np.ndarray) -> None:
        """Read a region of several runs (fixed leading indices, a range, whole axes), each
        at its offset: no map of the file, whose pages would stay resident."""
        shape = self.storage_shape
        split = max((axis for axis, (part, dim) in enumerate(zip(region, shape))
                     if part.stop - part.start != dim), default=0)
        runs = block.reshape(-1, (region[split].stop - region[split].start)
                             * math.prod(shape[split + 1:]))
        if self._widen is None and COMPILED is not None:  # every run in one call, no GIL
            starts = np.ravel_multi_index(tuple(np.meshgrid(
                *(np.arange(part.start, part.stop) for part in region[:split]),
                np.array([region[split].start]), *(np.zeros(1, np.intp) for _ in shape[split + 1:]),
                indexing="ij")), shape).reshape(-1)
            offsets = self._data_offset + starts.astype(np.int64) * self.dtype.itemsize
            # (read only when seekable: the stream is a file)
            got = COMPILED.pread_runs(cast("FileStream", self._stream).fileno(), runs, offsets,
                                      runs[0].nbytes)
            if got < runs.nbytes:
                run, within = divmod(got, runs[0].nbytes)
                raise InputError(f"{self.name}: file ends at byte {int(offsets[run]) + within}, "
                                 "inside the data its header declares")
            return
        prefixes = itertools.product(*(range(part.start, part.stop) for part in region[:split]))
        for index, prefix in enumerate(prefixes):
            first = prefix + (region[split].start,) + (0,) * (len(shape) - split - 1)
            self._pread(int(np.ravel_multi_index(first, shape)), runs[index])

    def file_span(self, region: tuple) -> tuple | None:
        """``(fd, offset)`` of a region that is one run of the file's bytes, stored as they
        are used (no widening), for a kernel that reads them itself; else None."""
        if not self._seekable or self._widen is not None or not is_contiguous(
                region, self.storage_shape):
            return None
        return (cast("FileStream", self._stream).fileno(),  # seekable: a file
                self._data_offset + region_start(region, self.storage_shape)
                * self.dtype.itemsize)

    def read_part(self, region: tuple, start: int, stop: int, out: np.ndarray) -> None:
        """Read the flat elements ``[start, stop)`` of a block into the 1-d array `out`.

        A region from :meth:`regions` that is not a tile is one run of bytes in the file,
        so any part of it is too. Safe to call from several threads at once.
        """
        self._pread(region_start(region, self.storage_shape) + start, out[:stop - start])

    def _pread(self, first: int, out: np.ndarray) -> None:
        """Read elements from flat index `first` into the contiguous array `out`."""
        if self._widen is not None:
            stored, widen = self._widen
            raw = np.empty(out.shape, stored)
            self._pread_bytes(first * stored.itemsize, raw)
            widen(raw, out)
        else:
            self._pread_bytes(first * self.dtype.itemsize, out)

    def _pread_bytes(self, start: int, out: np.ndarray) -> None:
        offset = self._data_offset + start
        # numpy's stubs give ndarray the buffer protocol (`__buffer__`) only for Python >= 3.12
        view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        done = 0
        while done < len(view):  # positional reads: no shared file position between threads
            got = os.preadv(cast("FileStream", self._stream).fileno(),  # seekable: a file
                            [view[done:]], offset + done)
            if not got:
                raise InputError(f"{self.name}: file ends at byte {offset + done}, inside "
                                 "the data its header declares")
            done += got

    def close(self) -> None:
        if self._stream is not sys.stdin.buffer:
            self._stream.close()



def npy_source(stream: NpyStream, name: str, path: str, *, seekable: bool, base: int = 0,
               size: int | None = None, details: dict | None = None,
               dataset: str | None = None) -> RawSource:
    """The ``.npy`` array that starts at `base` of `stream`, its header checked.

    `size` is how many bytes the ``.npy`` file has there (the rest of the file by default;
    unknown for a stream).
    """
    header = read_header(stream, name)
    if size is None and seekable:
        size = os.fstat(cast("FileStream", stream).fileno()).st_size - base
    if size is not None:
        check_data_size(header, size - header.data_offset, name)
    return RawSource(stream, name=name, path=path, dataset=dataset, shape=header.shape,
                     dtype=header.dtype, fortran_order=header.fortran_order,
                     offset=base + header.data_offset, seekable=seekable, details={
                         "format": f"npy {header.version[0]}.{header.version[1]}",
                         "data_offset": base + header.data_offset, **(details or {})})


def open_npy(path: str, name: str, *, seekable: bool) -> RawSource:
    """A ``.npy`` file (`seekable`) or a FIFO read once, in order."""
    stream = open_file(path, name, stream=not seekable)
    try:
        return npy_source(stream, name, path, seekable=seekable)
    except BaseException:
        stream.close()
        raise


def open_stdin() -> RawSource:
    """Standard input, read once, in order."""
    if sys.stdin is None:  # <&-
        raise InputError("<stdin>: standard input is closed")
    return npy_source(sys.stdin.buffer, "<stdin>", "-", seekable=False)


class NpyFormat:
    """``.npy``: what a file is when no other format claims it."""

    name = "npy"
    suffixes = ()

    def matches(self, path: str, head: bytes) -> bool:
        return head.startswith(MAGIC)

    def open(self, spec: InputSpec, options: OpenOptions) -> Source:
        return open_npy(spec.path, spec.display, seekable=True)

    def entries(self, path: str, name: str) -> list | None:
        return None


FORMAT = NpyFormat()
