"""What every input is: the :class:`Source` protocol, the entries a file lists, and the
helpers the formats share. Nothing here names a format; :mod:`bncli.io.registry` knows
them all, and each format is one module (:mod:`bncli.io.npy`, :mod:`bncli.io.npz`,
:mod:`bncli.io.safetensors`, :mod:`bncli.io.hdf5`, :mod:`bncli.io.zarr`).

A source checks everything its file declares before any data is read or allocated, then
yields blocks in storage order (see :mod:`bncli.core.layout`), each a C-contiguous array of
the block's storage-order shape. Memory in use is one block, whatever the file size.
"""

from __future__ import annotations

import importlib
import itertools
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Protocol, TypeVar

import numpy as np

from bncli.core.buffers import BufferRing
from bncli.core.layout import plan_regions
from bncli.errors import InputError

if TYPE_CHECKING:
    class ReadsInto(Protocol):
        """A binary stream read in order into buffers (stdin, a pipe, an inflated member)."""

        def readinto(self, buffer: memoryview, /) -> int | None:
            """Fill `buffer` from the stream; the bytes read (0 or None: none now)."""

_V = TypeVar("_V")


@dataclass(frozen=True)
class InputSpec:
    """A parsed INPUT argument (see :func:`bncli.io.registry.parse_input`).

    Attributes
    ----------
    path : str
        File path, or ``-`` for stdin.
    dataset : str or None
        What follows ``:``: an HDF5 dataset path, an ``.npz`` member, a safetensors
        tensor or a zarr array.
    """

    path: str
    dataset: str | None = None

    @property
    def display(self) -> str:
        """The name used in messages."""
        if self.path == "-":
            return "<stdin>"
        return f"{self.path}:{self.dataset}" if self.dataset else self.path


@dataclass(frozen=True)
class OpenOptions:
    """How inputs are opened, the same for every input of a command.

    Attributes
    ----------
    allow_external : bool
        Allow HDF5 external links, external storage and virtual datasets.
    chunk_cache_bytes : int
        HDF5 chunk cache size to use at least.
    require_data : bool
        Refuse an HDF5 dataset that was never written (False to describe it).
    allow_sparse : bool
        Read an HDF5 dataset whose unwritten chunks hold more than a GiB of fill values.
    """

    allow_external: bool = False
    chunk_cache_bytes: int = 0
    require_data: bool = True
    allow_sparse: bool = False


@dataclass(frozen=True)
class Entry:
    """One array a file holds, as ``bn info`` and ``--each`` list it.

    Attributes
    ----------
    kind : str
        What the format calls it: ``dataset``, ``member``, ``tensor`` or ``array``.
    name : str
        Its name after ``FILE:``.
    shape : tuple of int or None
        None where the entry cannot be read (`problem` says why).
    dtype : str or None
    problem : str or None
        Why bn cannot reduce it.
    chunks : tuple of int or None
    compression : str or None
    stored_bytes : int or None
        Bytes it takes in the file, where the format says.
    """

    kind: str
    name: str
    shape: tuple | None
    dtype: str | None
    problem: str | None = None
    chunks: tuple | None = None
    compression: str | None = None
    stored_bytes: int | None = None

    def as_info(self) -> dict:
        """The JSON-ready form of ``bn info``'s ``datasets`` list."""
        described: dict[str, object] = {
            "kind": self.kind, "dataset": self.name,
            "shape": None if self.shape is None else list(self.shape),
            "dtype": self.dtype, "usable": self.problem is None,
            "problem": self.problem,
            "chunks": None if not self.chunks else list(self.chunks),
            "compression": self.compression}
        if self.kind != "dataset":  # HDF5's listing gives no stored size
            described["stored_bytes"] = self.stored_bytes
        return described


class Format(Protocol):
    """A file format bn reads: one module, one object of this shape, one registry line.

    Attributes
    ----------
    name : str
        As ``bn info`` and messages say it.
    suffixes : tuple of str
        File name endings (lower case, no dot) after which ``:NAME`` names an entry.
    """

    name: str
    suffixes: tuple

    def matches(self, path: str, head: bytes) -> bool:
        """Whether the file at `path`, whose first bytes are `head`, is of this format."""

    def open(self, spec: InputSpec, options: OpenOptions) -> Source:
        """Open the entry `spec` names (the only one when it names none)."""

    def entries(self, path: str, name: str) -> list | None:
        """Every array of the file, a list of :class:`Entry`; None for a file that is one
        array."""


@dataclass
class Source:
    """An opened input.

    Attributes
    ----------
    name : str
        For messages.
    path : str
    dataset : str or None
        HDF5 dataset path.
    shape : tuple of int
        Logical shape.
    dtype : numpy.dtype
        As stored (byte order included).
    fortran_order : bool
    chunks : tuple of int or None
        HDF5 chunk shape.
    details : dict
        Format facts for ``bn info``.
    stored_as : str or None
        The stored type's name where values are widened as read (``bfloat16``).
    """

    # Whether `read_part` reads any flat range of a block that is one run of the file
    read_ranges: ClassVar[bool] = False

    name: str
    path: str
    dataset: str | None
    shape: tuple
    dtype: np.dtype
    fortran_order: bool = False
    chunks: tuple | None = None
    details: dict = field(default_factory=dict)
    stored_as: str | None = None

    @property
    def dtype_name(self) -> str:
        """The type of the values as stored, for reports."""
        return self.stored_as or self.dtype.name

    @property
    def storage_shape(self) -> tuple:
        """Shape in the order the bytes are stored (reversed for Fortran order)."""
        return tuple(reversed(self.shape)) if self.fortran_order else tuple(self.shape)

    @property
    def nbytes(self) -> int:
        """Data bytes."""
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize

    def written_chunks(self) -> tuple | None:
        """``(written, total)`` chunks of a chunked HDF5 dataset, else None (for ``bn info``;
        counting walks the chunk index, so it is done only when asked)."""
        return None

    def describe(self) -> dict:
        """Return what goes into the ``inputs`` list of a statistics file."""
        return {
            "path": self.path,
            "dataset": self.dataset,
            "shape": list(self.shape),
            "dtype": self.dtype_name,
        }

    def blocks(self, budget_bytes: int, ring: BufferRing | None = None,
               reduce_axes: tuple | None = None) -> Iterator[tuple]:
        """Yield ``(region, block)`` in the order of :meth:`regions`.

        With a `ring`, blocks live in its reused buffers: a block is valid until the ring
        has handed out ``ring.size`` more.
        """
        raise NotImplementedError

    def regions(self, budget_bytes: int, reduce_axes: tuple | None = None) -> Iterator[tuple]:
        """The blocks of this source, as :meth:`blocks` reads them.

        With `reduce_axes` (storage order), a file is cut for that reduction (see
        :func:`bncli.core.layout.plan_regions`); a stream is always cut into contiguous blocks
        in file order. Every pass, here or on cluster workers, cuts a source through this
        one method, so the same budget gives the same blocks and therefore the same bits.
        """
        if not self.is_file:
            reduce_axes = None
        return plan_regions(self.storage_shape, self.dtype.itemsize, budget_bytes,
                            reduce_axes, self.chunks)

    @property
    def is_file(self) -> bool:
        """Whether the input is a file: read again, and in blocks other than contiguous
        runs in file order (tiles), unlike stdin or a FIFO."""
        return self.random_access

    @property
    def random_access(self) -> bool:
        """Whether :meth:`read` may be called on any region, from several threads at once."""
        return False

    def read(self, region: tuple, out: np.ndarray | None = None) -> np.ndarray:
        """Read one block (a region from :meth:`regions`) of a file.

        Safe to call from several threads at once; stdin cannot be read this way.
        """
        raise InputError(f"{self.name}: a stream can only be read in order")

    def read_part(self, region: tuple, start: int, stop: int, out: np.ndarray) -> None:
        """Read the flat elements ``[start, stop)`` of a block into the 1-d array `out`
        (sources whose `read_ranges` is true)."""
        raise InputError(f"{self.name}: cannot be read in parts")

    def file_span(self, region: tuple) -> tuple | None:
        """``(fd, offset)`` of a region that is one run of the file's bytes, stored as they
        are used (no widening), for a kernel that reads them itself; else None."""
        return None

    def read_scalar(self) -> np.ndarray:
        """The value of a 0-d input, as a 0-d array."""
        for _region, block in self.blocks(max(self.dtype.itemsize, 1)):
            return block.reshape(()).copy()
        raise InputError(f"{self.name}: holds no value")  # pragma: no cover - 0-d has one

    def close(self) -> None:
        """Release the file."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()



class ArraySource(Source):
    """An array in memory, read as a file is (a 0-d input's value, taken as one element).

    Parameters
    ----------
    array : ndarray
    like : Source
        The input it stands for: its name, path, dataset and stored type.
    """

    def __init__(self, array: np.ndarray, like: Source):
        self._array = np.ascontiguousarray(array)
        super().__init__(name=like.name, path=like.path, dataset=like.dataset,
                         shape=self._array.shape, dtype=self._array.dtype,
                         stored_as=like.stored_as, details=dict(like.details))

    @property
    def random_access(self) -> bool:
        return True

    def read(self, region: tuple, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return self._array[region].copy()
        out[...] = self._array[region]
        return out

    def blocks(self, budget_bytes: int, ring: BufferRing | None = None,
               reduce_axes: tuple | None = None) -> Iterator[tuple]:
        for region in self.regions(budget_bytes, reduce_axes):
            yield region, self.read(region)


def choose(entries: dict[str, _V], wanted: str | None, name: str, kind: str) -> _V:
    """The entry a ``FILE[:name]`` argument names: the only one when none is named."""
    if wanted is not None and wanted in entries:
        return entries[wanted]
    listing = ", ".join(itertools.islice(entries, 20)) + (", ..." if len(entries) > 20 else "")
    if wanted is None:
        if len(entries) != 1:
            raise InputError(f"{name}: holds {len(entries)} arrays; name one as "
                             f"{name}:{kind.upper()} ({kind}s: {listing or 'none'})")
        return next(iter(entries.values()))
    if wanted not in entries:
        raise InputError(f"{name}: no {kind} {wanted!r} ({kind}s: {listing or 'none'})")
    return entries[wanted]



def read_into(stream: ReadsInto, buffer: np.ndarray) -> int:
    # numpy's stubs give ndarray the buffer protocol (`__buffer__`) only for Python >= 3.12
    view = memoryview(buffer.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    done = 0
    while done < len(view):
        got = stream.readinto(view[done:])
        if not got:
            break
        done += got
    return done


class _LazyModule:
    """Stands for a module until one of its attributes is first used, then imports it, once,
    under a lock: worker threads may all reach for it at the same moment (importlib's own
    LazyLoader is not safe for that before Python 3.12)."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None
        self._lock = threading.Lock()

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            with self._lock:
                if self._module is None:
                    self._module = importlib.import_module(self._name)
                module = self._module
        return getattr(module, attribute)


def lazy_import(name: str) -> Any:
    """A module imported when one of its attributes is first used: a format whose library is
    slow to import (h5py) costs nothing to a command that reads no file of that format."""
    return _LazyModule(name)


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, for messages."""
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def open_file(path: str, name: str, *, stream: bool = False) -> BinaryIO:
    """Open a file for unbuffered binary reads; errors name the input.

    The one rule of what bn opens: a regular file, or with `stream` (a ``.npy`` read once, in
    order) also a FIFO or a character device. Anything else is refused before a byte is
    read, and opening never blocks: a FIFO is opened without waiting for a writer, and
    refused unless `stream`.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode) and not (stream and (stat.S_ISFIFO(mode)
                                                       or stat.S_ISCHR(mode))):
            raise InputError(f"{name}: is {_kind(mode)}, not a regular file"
                             if not stat.S_ISDIR(mode) else f"{name}: is a directory, not a "
                             "file")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb", buffering=0)  # closed by the source
    except BaseException:
        os.close(descriptor)
        raise


def check_regular(path: str, name: str) -> None:
    """Refuse, as :func:`open_file` does, a path that is not a regular file (for readers that
    open the file themselves, as h5py does)."""
    open_file(path, name).close()


def sniff(path: str, name: str) -> bytes:
    """The first 8 bytes of a regular file (errors for missing files, directories, FIFOs and
    devices)."""
    try:
        with open_file(path, name) as probe:
            return probe.read(8)
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}") from None


# What bn reads, for the message of a file it does not.
READS = ".npy, .npz, HDF5 (netCDF-4, MATLAB v7.3), safetensors and zarr"
# The first bytes of formats bn does not read, and what to call them.
_FOREIGN = (
    (b"CDF\x01", "a netCDF-3 file (bn reads netCDF-4, which is HDF5)"),
    (b"CDF\x02", "a netCDF-3 (64-bit offset) file (bn reads netCDF-4, which is HDF5)"),
    (b"CDF\x05", "a netCDF-3 (CDF-5) file (bn reads netCDF-4, which is HDF5)"),
    (b"MATLAB", "a MATLAB v5 .mat file (MATLAB's save -v7.3 writes HDF5, which bn reads)"),
    (b"PAR1", "a Parquet file"),
    (b"ARROW1", "an Arrow IPC file"),
    (b"GGUF", "a GGUF file"),
    (b"\x0e\x03\x13\x01", "an HDF4 file (bn reads HDF5)"),
    (b"\x1f\x8b", "a gzip-compressed file (decompress it: gunzip -c FILE | bn stats -)"),
    (b"BZh", "a bzip2-compressed file (decompress it: bunzip2 -c FILE | bn stats -)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file (decompress it: xz -dc FILE | bn stats -)"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file (decompress it: zstd -dc FILE | bn stats -)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"SIMPLE  ", "a FITS file"),
)


def foreign_format(head: bytes) -> str | None:
    """What a file of a format bn does not read is, from its first bytes (None if unknown).

    Parameters
    ----------
    head : bytes
        The file's first bytes (at least 8 where the file has them).

    Returns
    -------
    str or None
    """
    for magic, what in _FOREIGN:
        if head.startswith(magic):
            return what
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle (bn never unpickles)"
    if head and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return "a text file"
    return None


def unknown_format(name: str, head: bytes) -> str:
    """The message for a file of no format bn reads: what it reads, and what the file is
    where its first bytes say."""
    what = foreign_format(head)
    found = f"it is {what}" if what else f"its first bytes are {head[:8]!r}"
    return f"{name}: not a file bn reads ({READS}); {found}"


def is_stream(path: str) -> bool:
    """Whether a path is a FIFO or a character device: readable once, in order."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)
