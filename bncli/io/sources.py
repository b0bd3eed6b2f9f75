"""Inputs: ``.npy`` files, HDF5 datasets and ``.npy`` streams on stdin, read block by block.

A source checks everything its file declares before any data is read or allocated, then
yields blocks in storage order (see :mod:`bncli.core.layout`), each a C-contiguous array of the
block's storage-order shape. Memory in use is one block, whatever the file size.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bncli.core.buffers import BufferRing
from bncli.core.kernel import COMPILED
from bncli.core.layout import format_shape, is_contiguous, plan_regions, region_shape, region_start
from bncli.errors import InputError
from bncli.io.npyformat import check_data_size, read_header

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NPY_SIGNATURE = b"\x93NUMPY"
ZIP_SIGNATURE = b"PK\x03\x04"
EMPTY_ZIP_SIGNATURE = b"PK\x05\x06"
# Names HDF5 files commonly have (netCDF4 and HDF-EOS5 files are HDF5 too); any other file
# is recognized by its signature.
# Archives of named arrays: FILE.npz[:member], FILE.safetensors[:tensor].
CONTAINER_SUFFIX = re.compile(
    r"^(?P<path>.*?\.(?:npz|safetensors|zarr|zarr\.zip))/*(?::(?P<dataset>.*))?$",
    re.IGNORECASE)
# The metadata files that make a directory (or a zip archive) a zarr store, v2 and v3.
ZARR_METADATA = (".zarray", ".zgroup", "zarr.json")
HDF5_SUFFIX = re.compile(r"^(?P<path>.*?\.(?:h5|hdf5|hdf|he5|nc|nc4|h5ad))(?::(?P<dataset>.*))?$",
                         re.IGNORECASE)
# HDF5 reads go through a chunk cache; it must hold every chunk one block touches, or a chunk
# would be decompressed once per block row. The default is 1 MiB.
MIN_CHUNK_CACHE_BYTES = 16 * 2**20


@dataclass
class InputSpec:
    """A parsed INPUT argument.

    Attributes
    ----------
    path : str
        File path, or ``-`` for stdin.
    dataset : str or None
        What follows ``:``: an HDF5 dataset path, an ``.npz`` member or a safetensors
        tensor name.
    """

    path: str
    dataset: str | None = None

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """Split ``file.h5:/group/dataset``; other text is a path (``-`` is stdin)."""
        if text == "-" or os.path.lexists(text):
            return cls(text)
        for suffix in (HDF5_SUFFIX, CONTAINER_SUFFIX):
            match = suffix.match(text)
            if match and match.group("dataset") is not None:
                return cls(match.group("path"), match.group("dataset") or None)
        return cls(*(split_hdf5_file(text) or (text,)))

    @property
    def display(self) -> str:
        """The name used in messages."""
        if self.path == "-":
            return "<stdin>"
        return f"{self.path}:{self.dataset}" if self.dataset else self.path


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


def _read_into(stream, buffer: np.ndarray) -> int:
    view = memoryview(buffer.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        got = stream.readinto(view[done:])
        if not got:
            break
        done += got
    return done


class NpySource(Source):
    """A ``.npy`` file or stream, read sequentially with ``readinto``.

    `base` is where the ``.npy`` file starts in `stream` (a member stored in an ``.npz``
    archive) and `size` how many bytes it has there (the rest of the file by default).
    """

    _widen = None  # (stored dtype, function) where stored values are widened as read

    def __init__(self, stream, name: str, path: str, *, seekable: bool, base: int = 0,
                 size: int | None = None, details: dict | None = None):
        self._stream = stream
        header = read_header(stream, name)
        if size is None and seekable:
            size = os.fstat(stream.fileno()).st_size - base
        if size is not None:
            check_data_size(header, size - header.data_offset, name)
        super().__init__(
            name=name,
            path=path,
            dataset=None,
            shape=header.shape,
            dtype=header.dtype,
            fortran_order=header.fortran_order,
            details={
                "format": f"npy {header.version[0]}.{header.version[1]}",
                "data_offset": base + header.data_offset,
                **(details or {}),
            },
        )
        self._seekable = seekable
        self._data_offset = base + header.data_offset

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
                got = _read_into(self._stream, block)
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
            got = COMPILED.pread_runs(self._stream.fileno(), runs, offsets, runs[0].nbytes)
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
        return (self._stream.fileno(),
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
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):  # positional reads: no shared file position between threads
            got = os.preadv(self._stream.fileno(), [view[done:]], offset + done)
            if not got:
                raise InputError(f"{self.name}: file ends at byte {offset + done}, inside "
                                 "the data its header declares")
            done += got

    def close(self) -> None:
        if self._stream is not sys.stdin.buffer:
            self._stream.close()


class Hdf5Source(Source):
    """One numeric dataset of an HDF5 file, read in blocks aligned to its chunks."""

    def __init__(self, h5file, dataset, name: str, path: str):
        from bncli.io.hdf5 import dataset_name, describe_dataset

        self._file = h5file
        self._dataset = dataset
        details = describe_dataset(dataset)
        super().__init__(
            name=name,
            path=path,
            dataset=dataset_name(dataset),
            shape=tuple(dataset.shape),
            dtype=dataset.dtype,
            chunks=dataset.chunks,
            details=details,
        )

    @property
    def is_file(self) -> bool:
        return True

    def written_chunks(self) -> tuple | None:
        from bncli.io.hdf5 import written_chunks

        return written_chunks(self._dataset)

    @property
    def random_access(self) -> bool:
        """A compressed dataset whose filters bn undoes itself (deflate; zstd, lz4 and
        blosc with the bncli[hdf5plugin] extra) is read by the worker threads, which decode
        its chunks in parallel (see :func:`bncli.io.hdf5.read_block`); others in order."""
        from bncli.io.hdf5 import chunk_pipeline

        return chunk_pipeline(self._dataset) is not None

    def blocks(self, budget_bytes: int, ring: BufferRing | None = None,
               reduce_axes: tuple | None = None) -> Iterator[tuple]:
        ring = ring or BufferRing(0)
        for region in self.regions(budget_bytes, reduce_axes):
            yield region, self.read(region, ring.array(region_shape(region), self.dtype))

    def read(self, region: tuple, out: np.ndarray | None = None) -> np.ndarray:
        from bncli.io.hdf5 import read_block

        block = np.empty(region_shape(region), self.dtype) if out is None else out
        return read_block(self._dataset, region, self.name, block)

    def close(self) -> None:
        self._file.close()


def _choose(entries: dict, wanted: str | None, name: str, kind: str):
    """The entry a ``FILE[:name]`` argument names: the only one when none is named."""
    listing = ", ".join(list(entries)[:20]) + (", ..." if len(entries) > 20 else "")
    if wanted is None:
        if len(entries) != 1:
            raise InputError(f"{name}: holds {len(entries)} arrays; name one as "
                             f"{name}:{kind.upper()} ({kind}s: {listing or 'none'})")
        return next(iter(entries.values()))
    if wanted not in entries:
        raise InputError(f"{name}: no {kind} {wanted!r} ({kind}s: {listing or 'none'})")
    return entries[wanted]


class ZarrSource(Source):
    """A zarr array (format 2 or 3; a directory or a zip store), read by the ``zarr``
    package region by region from the worker threads, in blocks aligned to its chunks."""

    def __init__(self, array, store, name: str, path: str, dataset: str | None):
        from bncli.io.npyformat import check_dtype

        self._array = array
        self._store = store
        # read in native byte order: how the bytes are stored is a codec's business
        dtype = check_dtype(np.dtype(array.dtype), name).newbyteorder("=")
        codecs = [type(codec).__name__ for codec in (*array.filters, *array.compressors)]
        super().__init__(name=name, path=path, dataset=dataset, shape=tuple(array.shape),
                         dtype=dtype, chunks=tuple(array.chunks), details={
                             "format": f"zarr {array.metadata.zarr_format}",
                             "chunks": list(array.chunks),
                             "compression": ", ".join(codecs) or None,
                             "stored_bytes": _zarr_call(array.nbytes_stored, name)})

    @property
    def is_file(self) -> bool:
        return True

    @property
    def random_access(self) -> bool:
        return True

    def read(self, region: tuple, out: np.ndarray | None = None) -> np.ndarray:
        block = np.empty(region_shape(region), self.dtype) if out is None else out
        block[...] = _zarr_call(lambda: self._array[region], self.name)
        return block

    def blocks(self, budget_bytes: int, ring: BufferRing | None = None,
               reduce_axes: tuple | None = None) -> Iterator[tuple]:
        ring = ring or BufferRing(0)
        for region in self.regions(budget_bytes, reduce_axes):
            yield region, self.read(region, ring.array(region_shape(region), self.dtype))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _zarr_call(call, name: str):
    """Run a call of the ``zarr`` package; its errors (of many kinds, and not a stable
    hierarchy) become :class:`InputError`."""
    try:
        return call()
    except (KeyboardInterrupt, MemoryError, InputError):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read the store is the input's
        raise InputError(f"{name}: cannot read the zarr store: {type(exc).__name__}: "
                         f"{exc}".rstrip(": ")) from None


def is_zarr(path: str) -> bool:
    """Whether `path` is a zarr store: a directory or a zip archive holding its metadata."""
    if os.path.isdir(path):
        return any(os.path.exists(os.path.join(path, meta)) for meta in ZARR_METADATA)
    if not path.lower().endswith(".zip"):
        return False
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] in ZARR_METADATA
                       for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
        return False


def _zarr_open(path: str, name: str):
    """``(zarr node, store)`` of a zarr store opened for reading."""
    try:
        import zarr
    except ImportError:
        raise InputError(f"{name}: is a zarr store; reading it needs the zarr package: "
                         "pip install 'bncli[zarr]'") from None
    store = _zarr_call(lambda: zarr.storage.ZipStore(path, mode="r") if os.path.isfile(path)
                       else zarr.storage.LocalStore(path, read_only=True), name)
    try:
        return _zarr_call(lambda: zarr.open(store=store, mode="r"), name), store
    except BaseException:
        store.close()
        raise


def _zarr_arrays(node, name: str) -> dict:
    """Every array of a zarr group (or the array itself, named ``/``), by its path."""
    if hasattr(node, "shape"):
        return {"/": node}
    return _zarr_call(lambda: {"/" + key: member for key, member in node.members(max_depth=None)
                               if hasattr(member, "shape")}, name)


def _open_zarr(spec: InputSpec) -> Source:
    name = spec.display
    node, store = _zarr_open(spec.path, name)
    try:
        arrays = _zarr_arrays(node, name)
        wanted = None if spec.dataset is None else "/" + spec.dataset.strip("/")
        array = _choose(arrays, None if wanted == "/" and "/" not in arrays else wanted,
                        name, "array")
        dataset = next(key for key, value in arrays.items() if value is array)
        return ZarrSource(array, store, spec.path if dataset == "/" else
                          f"{spec.path}:{dataset}", spec.path,
                          None if dataset == "/" else dataset)
    except BaseException:
        store.close()
        raise


class SafetensorsSource(NpySource):
    """One tensor of a safetensors file: raw little-endian C-order data at an offset, read at
    any offset like a ``.npy`` file (bfloat16 and float8 widened to float32 as read)."""

    def __init__(self, stream, tensor, name: str, path: str):
        from bncli.io.safetensors import widen

        self._stream = stream
        Source.__init__(self, name=name, path=path, dataset=tensor.name, shape=tensor.shape,
                        dtype=tensor.dtype, stored_as=tensor.dtype_name, details={
                            "format": "safetensors", "data_offset": tensor.offset,
                            "stored_bytes": tensor.nbytes})
        if tensor.stored_dtype != tensor.dtype:
            self._widen = (tensor.stored_dtype, functools.partial(widen, tensor.code))
        self._seekable = True
        self._data_offset = tensor.offset


def list_entries(path: str, name: str) -> list | None:
    """Describe every array of an ``.npz``, safetensors or zarr file (None for other files):
    ``(kind, name, shape, dtype, details)`` each."""
    if is_zarr(path):
        node, store = _zarr_open(path, name)
        try:
            arrays = _zarr_arrays(node, name)
            if "/" in arrays:
                return None  # one array, not a group
            listing = []
            for key, array in arrays.items():
                try:
                    source = ZarrSource(array, None, f"{name}:{key}", path, key)
                    listing.append(("array", key, source.shape, source.dtype_name,
                                    source.details))
                except InputError as exc:
                    listing.append(("array", key, None, str(array.dtype),
                                    {"problem": str(exc).split(": ", 1)[-1]}))
            return listing
        finally:
            store.close()
    kind = _container_kind(path, _sniff(path, name))
    if kind is None:
        return None
    with _open_file(path, name) as stream:
        if kind == "npz":
            from bncli.io.npz import read_members

            members = read_members(stream, os.fstat(stream.fileno()).st_size, name)
            listing = []
            for member in members.values():
                try:
                    with _open_member(path, member, f"{name}:{member.name}") as source:
                        listing.append(("member", member.name, source.shape,
                                        source.dtype_name, source.details))
                except InputError as exc:
                    listing.append(("member", member.name, None, None,
                                    {"problem": str(exc).split(": ", 1)[-1]}))
            return listing
        from bncli.io.safetensors import read_header

        tensors, _ = read_header(stream, os.fstat(stream.fileno()).st_size, name)
        return [("tensor", tensor.name, tensor.shape, tensor.dtype_name,
                 {"stored_bytes": tensor.nbytes})
                for tensor in tensors.values()]


def _container_kind(path: str, signature: bytes) -> str | None:
    if signature.startswith((ZIP_SIGNATURE, EMPTY_ZIP_SIGNATURE)):
        return "npz"
    if path.lower().endswith(".safetensors") or (
            len(signature) == 8 and int.from_bytes(signature, "little") < 2**27
            and _ninth_byte(path) == b"{"):
        return "safetensors"
    return None


def _ninth_byte(path: str) -> bytes:
    with open(path, "rb") as probe:
        probe.seek(8)
        return probe.read(1)


def _open_container(spec: InputSpec, kind: str) -> Source:
    name = spec.display
    stream = _open_file(spec.path, name)
    try:
        size = os.fstat(stream.fileno()).st_size
        if kind == "safetensors":
            from bncli.io.safetensors import read_header

            tensors, _ = read_header(stream, size, name)
            tensor = _choose(tensors, spec.dataset, name, "tensor")
            return SafetensorsSource(stream, tensor, f"{spec.path}:{tensor.name}", spec.path)
        from bncli.io.npz import member_name, read_members

        members = read_members(stream, size, name)
        stream.close()
    except BaseException:
        stream.close()
        raise
    member = _choose(members, None if spec.dataset is None else member_name(spec.dataset),
                     name, "member")
    return _open_member(spec.path, member, f"{spec.path}:{member.name}")


def _open_member(path: str, member, name: str) -> NpySource:
    """An ``.npz`` member: a stored one read at any offset, a deflated one as a stream."""
    import zipfile

    from bncli.io.npz import MemberStream

    details = {"archive_member": member.filename,
               "compression": "deflate" if member.compressed else None,
               "stored_bytes": member.stored_size}
    if member.compressed:
        stream = MemberStream(zipfile.ZipFile(_open_file(path, name)), member, name)
        seekable = False
    else:
        stream = _open_file(path, name)
        stream.seek(member.offset)
        seekable = True
    try:
        if _peek_nested(stream, seekable, member):
            raise InputError(f"{name}: is a zip archive inside the archive, not a .npy "
                             "array; nested archives are refused")
        source = NpySource(stream, name, path, seekable=seekable, base=member.offset
                           if seekable else 0, size=member.size, details=details)
    except BaseException:
        stream.close()
        raise
    source.dataset = member.name
    return source


def _peek_nested(stream, seekable: bool, member) -> bool:
    if not seekable:
        return False  # the .npy reader refuses its magic all the same
    head = stream.read(4)
    stream.seek(member.offset)
    return head in (ZIP_SIGNATURE, EMPTY_ZIP_SIGNATURE)


def _sniff(path: str, name: str) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{name}: is a directory, not a file")
    try:
        with open(path, "rb") as probe:
            return probe.read(8)
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}") from None


def is_stream(path: str) -> bool:
    """Whether a path is a FIFO or a character device: readable once, in order."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def has_hdf5_signature(path: str) -> bool:
    """Whether `path` is a regular file that starts with the HDF5 signature (False for
    anything that is not, or cannot be read)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as probe:
            return probe.read(8).startswith(HDF5_SIGNATURE)
    except OSError:
        return False


def split_hdf5_file(text: str) -> tuple | None:
    """``(path, dataset or None)`` when `text` is ``FILE:dataset`` for an existing file of any
    name that holds the HDF5 signature, else None."""
    for index in (i for i, char in enumerate(text) if char == ":"):
        if has_hdf5_signature(text[:index]):
            return text[:index], text[index + 1:] or None
    return None


def is_hdf5_file(path: str, name: str) -> bool:
    """Whether a file starts with the HDF5 signature (errors for missing files, directories)."""
    return _sniff(path, name).startswith(HDF5_SIGNATURE)


def open_source(spec, *, allow_external: bool = False, chunk_cache_bytes: int = 0,
                require_data: bool = True, allow_sparse: bool = False) -> Source:
    """Open an input and check what it declares.

    Parameters
    ----------
    spec : InputSpec or str
        ``file.npy``, ``file.h5[:/dataset]`` or ``-``.
    allow_external : bool
        Allow HDF5 external links, external storage and virtual datasets.
    chunk_cache_bytes : int
        HDF5 chunk cache size to use at least.
    require_data : bool
        Refuse an HDF5 dataset that was never written (False to describe it).
    allow_sparse : bool
        Read an HDF5 dataset whose unwritten chunks hold more than a GiB of fill values.

    Returns
    -------
    Source
    """
    if isinstance(spec, str):
        spec = InputSpec.parse(spec)
    name = spec.display
    if spec.path == "-":
        if sys.stdin is None:  # <&-
            raise InputError("<stdin>: standard input is closed")
        return NpySource(sys.stdin.buffer, name, "-", seekable=False)
    if spec.dataset is None and is_stream(spec.path):
        # a FIFO or <(process substitution): read once, in order, as stdin is; sniffing its
        # first bytes would consume them
        return _open_npy(spec.path, name, seekable=False)
    if is_zarr(spec.path):
        return _open_zarr(spec)
    signature = _sniff(spec.path, name)
    kind = None if signature.startswith(HDF5_SIGNATURE) else _container_kind(spec.path,
                                                                            signature)
    if kind is not None:
        return _open_container(spec, kind)
    is_hdf5_name = bool(HDF5_SUFFIX.match(spec.path))
    if signature.startswith(HDF5_SIGNATURE) or spec.dataset is not None or (
        is_hdf5_name and not signature.startswith(NPY_SIGNATURE)
    ):
        from bncli.io.hdf5 import dataset_name, h5_errors, open_dataset

        with h5_errors(name):
            h5file, dataset = open_dataset(
                spec.path, spec.dataset, name, allow_external=allow_external,
                chunk_cache_bytes=max(chunk_cache_bytes, MIN_CHUNK_CACHE_BYTES),
                require_data=require_data, allow_sparse=allow_sparse,
            )
            try:
                return Hdf5Source(h5file, dataset, spec.display if spec.dataset else
                                  f"{spec.path}:{dataset_name(dataset)}", spec.path)
            except BaseException:
                h5file.close()
                raise
    return _open_npy(spec.path, name, seekable=True)


def _open_file(path: str, name: str):
    try:
        return open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the source
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror}") from None


def _open_npy(path: str, name: str, *, seekable: bool) -> NpySource:
    stream = _open_file(path, name)
    try:
        return NpySource(stream, name, path, seekable=seekable)
    except BaseException:
        stream.close()
        raise
