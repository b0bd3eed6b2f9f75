"""zarr stores (format 2 or 3; a directory or a zip archive), read through the ``zarr``
package, imported only when a zarr input is used (``bncli[zarr]``). ``STORE:/group/array``
names one array of a group.

What the ``zarr`` package would read is checked first. Every file it reads from a directory
store is a regular file inside the store (a symbolic link to a file outside it only with
``allow_external``; never a FIFO or a device, which is not opened at all), of at most
:data:`MAX_METADATA_BYTES` for metadata and at most what one stored chunk can take for a
chunk; the members of a zip store are held to the same sizes before any is read. An array
whose chunks that are not stored would read as more than
:data:`~bncli.io.hdf5.MAX_UNWRITTEN_BYTES` of fill values is refused (unless
``allow_sparse``), as an HDF5 dataset is; the stored chunks are counted from the store's
listing before anything is read.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from bncli.core.buffers import BufferRing
from bncli.core.dtypes import check_dtype, check_rank
from bncli.core.layout import format_bytes, region_shape
from bncli.errors import InputError
from bncli.io import interrupts
from bncli.io.hdf5 import MAX_UNWRITTEN_BYTES
from bncli.io.source import Entry, InputSpec, OpenOptions, Source, choose

if TYPE_CHECKING:
    import zipfile

    import zarr
    from zarr.abc.store import Store

_T = TypeVar("_T")

# The metadata files that make a directory (or a zip archive) a zarr store, v2 and v3.
ZARR_METADATA = (".zarray", ".zgroup", "zarr.json")
# Every metadata file the zarr package may read (attributes and consolidated metadata too).
METADATA_FILES = (*ZARR_METADATA, ".zattrs", ".zmetadata")
# A metadata file larger than this is refused before it is read. bn's own outputs hold the
# mean and variance of up to 4,194,304 channels as JSON attributes, well within it.
MAX_METADATA_BYTES = 256 * 2**20
# Parsed JSON takes more memory than its text, up to some 25 times more for small objects,
# lists and strings; a metadata file whose parse would take more than this is refused.
MAX_METADATA_PARSE_BYTES = 2**30
# A stored chunk may take this many times the bytes of the values it holds (a codec that
# widens the type, headers), plus CHUNK_SLACK_BYTES; a larger file is no chunk.
CHUNK_EXPANSION = 8
CHUNK_SLACK_BYTES = 2**20
# What the index of a shard holds for an inner chunk that is not stored.
_EMPTY = 2**64 - 1
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


class ZarrSource(Source):
    """A zarr array (format 2 or 3; a directory or a zip store), read by the ``zarr``
    package region by region from the worker threads, in blocks aligned to its chunks."""

    def __init__(self, array: zarr.Array, store: Store | None, name: str, path: str,
                 dataset: str | None, storage: StoredChunks | None = None):
        self._array = array
        self._store = store
        self._storage = storage
        # read in native byte order: how the bytes are stored is a codec's business
        dtype = check_dtype(np.dtype(array.dtype), name).newbyteorder("=")
        check_rank(array.shape, name)
        codecs = [type(codec).__name__ for codec in (*array.filters, *array.compressors)]
        super().__init__(name=name, path=path, dataset=dataset, shape=tuple(array.shape),
                         dtype=dtype, chunks=tuple(array.chunks), details={
                             "format": f"zarr {array.metadata.zarr_format}",
                             "chunks": list(array.chunks),
                             "compression": ", ".join(codecs) or None,
                             "stored_bytes": None if storage is None else
                             storage.stored_bytes})

    @property
    def is_file(self) -> bool:
        return True

    @property
    def random_access(self) -> bool:
        return True

    def written_chunks(self) -> tuple | None:
        """``(stored, total)`` chunks of the array (inner chunks of a sharded one)."""
        if self._storage is None or self._storage.written is None:
            return None
        return self._storage.written, self._storage.total

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



def _zarr_call(call: Callable[[], _T], name: str) -> _T:
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
        return any(os.path.lexists(os.path.join(path, meta)) for meta in ZARR_METADATA)
    if not path.lower().endswith(".zip"):
        return False
    import zipfile

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] in ZARR_METADATA
                       for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
        return False


# ---------------------------------------------------------------- what a store may read


class StoreGuard:
    """What the ``zarr`` package may read from one store, checked before each read.

    Parameters
    ----------
    name : str
        The store, for messages.
    allow_external : bool
        Read a symbolic link to a regular file outside the store.

    Attributes
    ----------
    chunk_limit : int or None
        The largest file a chunk of the array being read may be, once that array is known
        (until then any file but metadata is held to :data:`MAX_METADATA_BYTES`).
    """

    def __init__(self, name: str, allow_external: bool):
        self.name = name
        self.allow_external = allow_external
        self.chunk_limit: int | None = None

    def kind(self, key: str) -> str:
        """What the file at `key` is to the store, for messages."""
        if key.rsplit("/", 1)[-1] in METADATA_FILES:
            return "metadata file"
        return "file" if self.chunk_limit is None else "chunk"

    def check_size(self, key: str, size: int) -> None:
        """Refuse a file of `size` bytes at `key` that is larger than its kind can be."""
        what = self.kind(key)
        limit = self.chunk_limit if what == "chunk" and self.chunk_limit is not None \
            else MAX_METADATA_BYTES
        if size > limit:
            bound = "a chunk of this array can take" if what == "chunk" else \
                "a zarr metadata file may hold"
            raise InputError(f"{self.name}: {what} {key} holds {size:,} bytes, more than the "
                             f"{limit:,} {bound}; refused")

    def check_metadata(self, key: str, data: bytes) -> None:
        """Refuse the bytes of a metadata file whose JSON would take more than
        :data:`MAX_METADATA_PARSE_BYTES` of memory to parse (a generous estimate from its
        objects, lists, strings and separators, counted without parsing)."""
        if key.rsplit("/", 1)[-1] not in METADATA_FILES:
            return
        cost = (len(data) + 72 * (data.count(b"{") + data.count(b"["))
                + 32 * data.count(b'"') + 32 * data.count(b","))
        if cost > MAX_METADATA_PARSE_BYTES:
            raise InputError(f"{self.name}: metadata file {key} holds {len(data):,} bytes of "
                             f"JSON that would take about {format_bytes(cost)} of memory to parse, "
                             f"more than {format_bytes(MAX_METADATA_PARSE_BYTES)}; refused")


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def read_store_file(root: str, key: str, guard: StoreGuard,
                    byte_range: Any = None) -> bytes | None:
    """The bytes of `key` in the directory store whose real path is `root` (None where there
    is no such file), as the ``zarr`` package asks for them.

    The file must be a regular file (it is looked at before it is opened, and a FIFO or a
    device is never opened) inside `root` once every symbolic link is resolved (outside it
    only with ``guard.allow_external``), and no larger than ``guard`` allows.

    Parameters
    ----------
    root : str
        The real path of the store's directory.
    key : str
        The store key (``/``-separated, relative to the store).
    guard : StoreGuard
    byte_range : zarr ByteRequest, optional
        A range (``start``, ``end``), an ``offset`` to the end or a ``suffix`` of the file.

    Returns
    -------
    bytes or None
    """
    path = os.path.join(root, *key.split("/"))
    real = os.path.realpath(path)
    try:
        status = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.lexists(path):
            raise InputError(f"{guard.name}: {guard.kind(key)} {key} is a symbolic link to "
                             f"{real}, which does not exist; refused") from None
        return None
    except OSError as exc:
        raise InputError(f"{guard.name}: cannot read {key}: {exc.strerror}") from None
    linked = real != os.path.normpath(path)
    if stat.S_ISDIR(status.st_mode) and not linked:
        return None  # a directory of the store (a group, or chunks nested by "/")
    what = f"{guard.kind(key)} {key} is " + (f"a symbolic link to {real}, " if linked else "")
    if not stat.S_ISREG(status.st_mode):
        raise InputError(f"{guard.name}: {what}{_kind(status.st_mode)}, not a regular file; "
                         "refused")
    if os.path.commonpath((root, real)) != root and not guard.allow_external:
        raise InputError(f"{guard.name}: {what}outside the store; refused since it reads "
                         "another file", hint="use --allow-external")
    guard.check_size(key, status.st_size)
    flags = (os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        descriptor = os.open(real, flags)
    except OSError as exc:
        raise InputError(f"{guard.name}: cannot read {key}: {exc.strerror}") from None
    try:
        opened = os.fstat(descriptor)
        if (opened.st_dev, opened.st_ino) != (status.st_dev, status.st_ino):
            raise InputError(f"{guard.name}: {key} was replaced while it was opened; refused")
        start, stop = _span(byte_range, status.st_size)
        data = _pread(descriptor, start, stop - start)
    finally:
        os.close(descriptor)
    guard.check_metadata(key, data)
    return data


def _span(byte_range: Any, size: int) -> tuple[int, int]:
    """``(start, stop)`` in a file of `size` bytes of a zarr ByteRequest (or None: all)."""
    if byte_range is None:
        return 0, size
    if hasattr(byte_range, "suffix"):
        return max(0, size - int(byte_range.suffix)), size
    if hasattr(byte_range, "offset"):
        return min(int(byte_range.offset), size), size
    start = min(int(byte_range.start), size)
    return start, max(start, min(int(byte_range.end), size))


def _pread(descriptor: int, offset: int, length: int) -> bytes:
    """`length` bytes at `offset` (fewer where the file ends first)."""
    parts = []
    while length > 0:
        part = os.pread(descriptor, min(length, 2**30), offset)
        if not part:
            break
        parts.append(part)
        offset += len(part)
        length -= len(part)
    return b"".join(parts)


@functools.cache
def _guarded_store_class() -> type:
    """The ``zarr`` directory store whose every read goes through :func:`read_store_file`
    (made once, when the zarr package is first used)."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype

    class GuardedLocalStore(zarr.storage.LocalStore):
        """A read-only ``LocalStore`` that reads only what its :class:`StoreGuard` allows."""

        def __init__(self, root: str, guard: StoreGuard):
            super().__init__(root, read_only=True)
            self.guard = guard
            self.real_root = os.path.realpath(root)

        def _read(self, key: str, prototype: Any, byte_range: Any) -> Any:
            data = read_store_file(self.real_root, key, self.guard, byte_range)
            if data is None:
                return None
            return (prototype or default_buffer_prototype()).buffer.from_bytes(data)

        async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
            return await asyncio.to_thread(self._read, key, prototype, byte_range)

        def get_sync(self, key: str, *, prototype: Any = None,
                     byte_range: Any = None) -> Any:
            return self._read(key, prototype, byte_range)

        async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list:
            return [await self.get(key, prototype, byte_range)
                    for key, byte_range in key_ranges]

    return GuardedLocalStore


def _zip_members(path: str, name: str) -> list[zipfile.ZipInfo]:
    """The members of the zip store at `path` (`name` in messages), from its directory."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.infolist()
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError,
            NotImplementedError, UnicodeDecodeError) as exc:
        raise InputError(f"{name}: not a readable zip store: {exc}") from None


def _check_zip_metadata(path: str, guard: StoreGuard) -> None:
    """Check the metadata members of a zip store against their bounds before the ``zarr``
    package reads them: their sizes from the directory, then what their JSON would take."""
    import zipfile

    metadata = [member for member in _zip_members(path, guard.name)
                if member.filename.rsplit("/", 1)[-1] in METADATA_FILES]
    for member in metadata:
        guard.check_size(member.filename, member.file_size)
    try:
        with zipfile.ZipFile(path) as archive:
            for member in metadata:
                with archive.open(member) as stream:
                    guard.check_metadata(member.filename, stream.read(member.file_size))
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as exc:
        raise InputError(f"{guard.name}: cannot read its metadata: {exc}") from None


# ---------------------------------------------------------------- chunks stored and declared


@dataclass(frozen=True)
class StoredChunks:
    """What an array's store holds of its chunks.

    Attributes
    ----------
    written : int or None
        The chunks stored (inner chunks, of a sharded array); None where not counted.
    total : int
        The chunks its shape declares.
    chunk_bytes : int
        Bytes of the values of one chunk.
    stored_bytes : int
        Bytes of the files (members) of the array in the store.
    """

    written: int | None
    total: int
    chunk_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class _Layout:
    """Where the chunks of an array are, and what one holds."""

    prefix: str  # the array's path in the store, "" or ending in "/"
    grid: tuple  # stored objects (chunks, or shards) along each axis
    key_head: str  # what every stored key starts with ("c/" for zarr 3's default keys)
    separator: str
    zero_dim_key: str  # the key of the one chunk of a 0-d array
    stored_bytes: int  # values of one stored object (a chunk, or a whole shard)
    inner: int  # inner chunks in one shard (1 without sharding)
    inner_bytes: int  # values of one inner chunk
    shard_index: tuple | None  # (at_end, has_checksum) of a shard index bn reads


def _layout(array: zarr.Array) -> _Layout:
    """The layout of the stored objects of `array`, from its metadata."""
    metadata = array.metadata
    ndim = len(array.shape)
    itemsize = np.dtype(array.dtype).itemsize
    stored = tuple(getattr(array, "shards", None) or array.chunks)  # what one key holds
    if metadata.zarr_format == 2:
        separator = getattr(metadata, "dimension_separator", None) or "."
    else:
        separator = getattr(metadata.chunk_key_encoding, "separator", "/")
    zero = metadata.encode_chunk_key((0,) * ndim)
    body = separator.join(["0"] * ndim)
    head = zero[:len(zero) - len(body)] if ndim and zero.endswith(body) else ""
    grid = tuple(-(-dim // max(size, 1)) for dim, size in zip(array.shape, stored))
    stored_bytes = math.prod(stored) * itemsize
    inner, inner_bytes, index = 1, stored_bytes, None
    codecs = getattr(metadata, "codecs", ()) if metadata.zarr_format == 3 else ()
    sharding = next((codec for codec in codecs if type(codec).__name__ == "ShardingCodec"),
                    None)
    if sharding is not None:
        inner_shape = tuple(sharding.chunk_shape)
        inner = math.prod(size // max(part, 1) for size, part in zip(stored, inner_shape))
        inner_bytes = math.prod(inner_shape) * itemsize
        index = _index_format(sharding)
    return _Layout(array.path.strip("/") + "/" if array.path.strip("/") else "", grid, head,
                   separator, zero if not ndim else "", stored_bytes, inner, inner_bytes,
                   index)


def _index_format(sharding: Any) -> tuple | None:
    """``(at_end, has_checksum)`` of a shard index of little-endian offsets and sizes (with
    a CRC-32C after it or not, as zarr writes it), else None: an index bn does not read."""
    names = [type(codec).__name__ for codec in sharding.index_codecs]
    inner = [type(codec).__name__ for codec in sharding.codecs]
    endian = getattr(getattr(sharding.index_codecs[0], "endian", None), "value", "little") \
        if names else None
    if "ShardingCodec" in inner or names not in (["BytesCodec"], ["BytesCodec", "Crc32cCodec"]) \
            or endian not in ("little", None):
        return None
    location = getattr(sharding.index_location, "value", sharding.index_location)
    return location == "end", len(names) == 2


def _coordinates(key: str, layout: _Layout) -> bool:
    """Whether `key` (relative to the array) is the key of one of its stored objects."""
    if not layout.grid:
        return key == layout.zero_dim_key
    if not key.startswith(layout.key_head):
        return False
    parts = key[len(layout.key_head):].split(layout.separator)
    if len(parts) != len(layout.grid):
        return False
    for part, count in zip(parts, layout.grid):
        if not (part.isascii() and part.isdigit()) or (part[0] == "0" and part != "0") \
                or int(part) >= count:
            return False
    return True


def _directory_files(root: str, top: str, name: str) -> Iterator[tuple[str, int, bool]]:
    """``(key relative to top, bytes, is a regular file)`` of every file under the directory
    `top` of the store at `root` (`name` in messages); directories are not followed through
    symbolic links."""
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            with os.scandir(os.path.join(root, top, relative)) as entries:
                for entry in entries:
                    key = relative + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(key + "/")
                    else:
                        regular = entry.is_file(follow_symlinks=False)
                        size = entry.stat(follow_symlinks=False).st_size if regular else 0
                        yield key, size, regular
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise InputError(f"{name}: cannot list {top + relative}: {exc.strerror}") from None


def _count_chunks(files: Iterator[tuple[str, int, bool]], layout: _Layout, guard: StoreGuard,
                  read_tail: Callable[[str, int, bool], bytes] | None) -> StoredChunks:
    """Count the stored objects of an array among `files` (and, where `read_tail` is given
    for a sharded array, the inner chunks their indexes hold)."""
    total_stored = math.prod(layout.grid)
    stored, stored_bytes, keys = 0, 0, []
    for key, size, regular in files:
        stored_bytes += size
        if _coordinates(key, layout):
            if regular:
                guard.check_size(layout.prefix + key, size)
            stored += 1
            if read_tail is not None:
                keys.append(key)
    total = total_stored * layout.inner
    if layout.inner == 1:
        return StoredChunks(stored, total, layout.inner_bytes, stored_bytes)
    if read_tail is None or layout.shard_index is None:
        return StoredChunks(None, total, layout.inner_bytes, stored_bytes)
    at_end, checksum = layout.shard_index
    length = 16 * layout.inner + 4 * checksum
    written = 0
    for key in keys:
        index = read_tail(layout.prefix + key, length, at_end)
        if len(index) != length:
            raise InputError(f"{guard.name}: shard {layout.prefix + key} is too short to hold "
                             "its index")
        entries = np.frombuffer(index, "<u8", 2 * layout.inner).reshape(-1, 2)
        written += int(np.count_nonzero((entries != _EMPTY).any(axis=1)))
    return StoredChunks(written, total, layout.inner_bytes, stored_bytes)


def stored_chunks(array: zarr.Array, store: Store, guard: StoreGuard, *,
                  count_inner: bool) -> StoredChunks:
    """What the store of `array` holds of its chunks, from the store's listing.

    Parameters
    ----------
    array : zarr.Array
    store : zarr Store
        The guarded directory store or the zip store it was opened from.
    guard : StoreGuard
        Its ``chunk_limit`` is set here, from the array's chunk shape; a stored chunk larger
        than that is refused.
    count_inner : bool
        Read the index of each stored shard of a sharded array to count its inner chunks
        (else a sharded array's ``written`` is None).

    Returns
    -------
    StoredChunks
    """
    layout = _layout(array)
    guard.chunk_limit = (CHUNK_EXPANSION * layout.stored_bytes + CHUNK_SLACK_BYTES
                         + 64 * layout.inner)
    if hasattr(store, "real_root"):
        root = store.real_root

        def read_tail(key: str, length: int, at_end: bool) -> bytes:
            span = _Suffix(length) if at_end else _Range(0, length)
            return read_store_file(root, key, guard, span) or b""

        return _count_chunks(_directory_files(root, layout.prefix, guard.name), layout, guard,
                             read_tail if count_inner else None)
    import zipfile

    import zarr

    assert isinstance(store, zarr.storage.ZipStore)  # the two kinds _zarr_open makes
    members = _zip_members(str(store.path), guard.name)
    files = ((member.filename[len(layout.prefix):], member.file_size, True)
             for member in members if member.filename.startswith(layout.prefix)
             and not member.is_dir())
    if not count_inner or layout.inner == 1:
        return _count_chunks(files, layout, guard, None)
    try:
        with zipfile.ZipFile(str(store.path)) as archive:

            def read_zip_tail(key: str, length: int, at_end: bool) -> bytes:
                with archive.open(key) as member:
                    if at_end:
                        member.seek(max(0, archive.getinfo(key).file_size - length))
                    return member.read(length)

            return _count_chunks(files, layout, guard, read_zip_tail)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError,
            KeyError) as exc:
        raise InputError(f"{guard.name}: cannot read the index of a shard: {exc}") from None


@dataclass(frozen=True)
class _Suffix:
    suffix: int


@dataclass(frozen=True)
class _Range:
    start: int
    end: int


def check_stored(array: zarr.Array, storage: StoredChunks, name: str) -> None:
    """Refuse an array whose chunks that are not stored would read as more than
    :data:`~bncli.io.hdf5.MAX_UNWRITTEN_BYTES` of fill values, as an HDF5 dataset is."""
    logical = math.prod(array.shape) * np.dtype(array.dtype).itemsize
    if logical <= MAX_UNWRITTEN_BYTES:
        return
    written = 0 if storage.written is None else storage.written
    unwritten = (storage.total - written) * storage.chunk_bytes
    if unwritten > MAX_UNWRITTEN_BYTES:
        counted = "" if storage.written is not None else " (its shard indexes are of a kind " \
            "bn does not read, so none is counted)"
        raise InputError(
            f"{name}: {written:,} of its {storage.total:,} chunks are stored{counted}; the "
            f"other {format_bytes(unwritten)} would be read as its fill value "
            f"{getattr(array, 'fill_value', None)}", hint="use --allow-sparse to read them anyway")


# ---------------------------------------------------------------- opening


def _zarr_open(path: str, name: str, allow_external: bool = False,
               ) -> tuple[zarr.Array | zarr.Group, Store, StoreGuard]:
    """``(zarr node, store, guard)`` of a zarr store opened for reading."""
    try:
        import zarr
    except ImportError:
        raise InputError(f"{name}: is a zarr store; reading it needs the zarr package: "
                         "pip install 'bncli[zarr]'") from None
    interrupts.start_zarr_quietly()
    guard = StoreGuard(name, allow_external)
    if os.path.isdir(path):
        store = _zarr_call(lambda: _guarded_store_class()(path, guard), name)
    else:
        _check_zip_metadata(path, guard)
        store = _zarr_call(lambda: zarr.storage.ZipStore(path, mode="r"), name)
    try:
        return _zarr_call(lambda: zarr.open(store=store, mode="r"), name), store, guard
    except BaseException:
        store.close()
        raise



def _zarr_arrays(node: zarr.Array | zarr.Group, name: str) -> dict:
    """Every array of a zarr group (or the array itself, named ``/``), by its path."""
    if hasattr(node, "shape"):
        return {"/": node}
    return _zarr_call(lambda: {"/" + key: member for key, member in node.members(max_depth=None)
                               if hasattr(member, "shape")}, name)



class ZarrFormat:
    """zarr: a directory or zip archive holding zarr metadata; ``STORE:/group/array``."""

    name = "zarr"
    suffixes = ("zarr", "zarr.zip")

    def matches(self, path: str, head: bytes) -> bool:
        return is_zarr(path)

    def open(self, spec: InputSpec, options: OpenOptions) -> Source:
        name = spec.display
        node, store, guard = _zarr_open(spec.path, name, options.allow_external)
        try:
            arrays = _zarr_arrays(node, name)
            wanted = None if spec.dataset is None else "/" + spec.dataset.strip("/")
            array = choose(arrays, None if wanted == "/" and "/" not in arrays else wanted,
                            name, "array")
            dataset = next(key for key, value in arrays.items() if value is array)
            display = spec.path if dataset == "/" else f"{spec.path}:{dataset}"
            guard.name = display
            check = options.require_data and not options.allow_sparse
            storage = stored_chunks(array, store, guard,
                                    count_inner=check or not options.require_data)
            if check:
                check_stored(array, storage, display)
            return ZarrSource(array, store, display, spec.path,
                              None if dataset == "/" else dataset, storage)
        except BaseException:
            store.close()
            raise

    def entries(self, path: str, name: str) -> list | None:
        node, store, guard = _zarr_open(path, name)
        try:
            arrays = _zarr_arrays(node, name)
            if "/" in arrays:
                return None  # one array, not a group
            listing = []
            for key, array in arrays.items():
                try:
                    guard.name = f"{name}:{key}"
                    storage = stored_chunks(array, store, guard, count_inner=False)
                    source = ZarrSource(array, None, f"{name}:{key}", path, key, storage)
                    listing.append(Entry("array", key, source.shape, source.dtype_name,
                                         chunks=source.details.get("chunks"),
                                         compression=source.details.get("compression"),
                                         stored_bytes=source.details.get("stored_bytes")))
                except InputError as exc:
                    listing.append(Entry("array", key, tuple(array.shape), str(array.dtype),
                                         problem=str(exc).split(": ", 1)[-1]))
            return listing
        finally:
            store.close()


FORMAT = ZarrFormat()
