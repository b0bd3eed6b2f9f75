"""zarr stores (format 2 or 3; a directory or a zip archive), read through the ``zarr``
package, imported only when a zarr input is used (``bncli[zarr]``). ``STORE:/group/array``
names one array of a group."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from bncli.core.buffers import BufferRing
from bncli.core.dtypes import check_dtype
from bncli.core.layout import region_shape
from bncli.errors import InputError
from bncli.io.source import Entry, InputSpec, OpenOptions, Source, choose

if TYPE_CHECKING:
    import zarr
    from zarr.abc.store import Store

_T = TypeVar("_T")

# The metadata files that make a directory (or a zip archive) a zarr store, v2 and v3.
ZARR_METADATA = (".zarray", ".zgroup", "zarr.json")


class ZarrSource(Source):
    """A zarr array (format 2 or 3; a directory or a zip store), read by the ``zarr``
    package region by region from the worker threads, in blocks aligned to its chunks."""

    def __init__(self, array: zarr.Array, store: Store | None, name: str, path: str,
                 dataset: str | None):
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



def _zarr_open(path: str, name: str) -> tuple[zarr.Array | zarr.Group, Store]:
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
        node, store = _zarr_open(spec.path, name)
        try:
            arrays = _zarr_arrays(node, name)
            wanted = None if spec.dataset is None else "/" + spec.dataset.strip("/")
            array = choose(arrays, None if wanted == "/" and "/" not in arrays else wanted,
                            name, "array")
            dataset = next(key for key, value in arrays.items() if value is array)
            return ZarrSource(array, store, spec.path if dataset == "/" else
                              f"{spec.path}:{dataset}", spec.path,
                              None if dataset == "/" else dataset)
        except BaseException:
            store.close()
            raise

    def entries(self, path: str, name: str) -> list | None:
        node, store = _zarr_open(path, name)
        try:
            arrays = _zarr_arrays(node, name)
            if "/" in arrays:
                return None  # one array, not a group
            listing = []
            for key, array in arrays.items():
                try:
                    source = ZarrSource(array, None, f"{name}:{key}", path, key)
                    listing.append(Entry("array", key, source.shape, source.dtype_name,
                                         chunks=source.details.get("chunks"),
                                         compression=source.details.get("compression"),
                                         stored_bytes=source.details.get("stored_bytes")))
                except InputError as exc:
                    listing.append(Entry("array", key, None, str(array.dtype),
                                         problem=str(exc).split(": ", 1)[-1]))
            return listing
        finally:
            store.close()


FORMAT = ZarrFormat()
