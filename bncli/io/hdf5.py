"""HDF5 access through h5py: finding a dataset safely, describing it, reading blocks.

HDF5 files can make a reader open other files: external links, external raw storage and
virtual datasets. Each is refused unless the caller allows it, before any data is read.
h5py is imported here only, and only when an HDF5 file is used.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from bncli.core.buffers import BufferRing
from bncli.core.dtypes import dtype_problem, rank_problem
from bncli.core.layout import format_bytes, format_shape, region_shape
from bncli.errors import InputError
from bncli.io.source import (
    Entry,
    InputSpec,
    OpenOptions,
    Source,
    check_regular,
    lazy_import,
    open_file,
)

if TYPE_CHECKING:
    import h5py
else:  # imported when an HDF5 file is first used, not by every command
    h5py = lazy_import("h5py")

# Enough slots that chunks of one block row rarely collide in the cache's hash table.
CHUNK_CACHE_SLOTS = 100003
MAX_LINK_HOPS = 32  # soft links pointing at soft links; deeper than this is a loop
SIGNATURE = b"\x89HDF\r\n\x1a\n"
# MATLAB v7.3 files are HDF5 files behind a 512-byte user block that starts with this text.
MATLAB_HDF5 = b"MATLAB 7"
# Names HDF5 files commonly have (netCDF4 and HDF-EOS5 files are HDF5 too); any other file
# is recognized by its signature.
SUFFIXES = ("h5", "hdf5", "hdf", "he5", "nc", "nc4", "h5ad")
HDF5_SUFFIX = re.compile(r"^(?P<path>.*?\.(?:" + "|".join(SUFFIXES) + r"))(?::(?P<dataset>.*))?$",
                         re.IGNORECASE)
# HDF5 reads go through a chunk cache; it must hold every chunk one block touches, or a chunk
# would be decompressed once per block row. The default is 1 MiB.
MIN_CHUNK_CACHE_BYTES = 16 * 2**20


def _register_filters() -> None:
    """Register the filters of the hdf5plugin package (zstd, lz4, blosc...) with HDF5, once,
    before the first file is opened (they are then not installed where it is not); a thread
    that comes while another registers them waits for it."""
    global _FILTERS_REGISTERED
    if _FILTERS_REGISTERED:
        return
    with _FILTERS_LOCK:
        if not _FILTERS_REGISTERED:
            try:
                import hdf5plugin  # noqa: F401
            except (ImportError, OSError):  # pragma: no cover - the extra is not installed
                pass
            _FILTERS_REGISTERED = True


_FILTERS_REGISTERED = False
_FILTERS_LOCK = threading.Lock()


def _open_file(path: str, name: str, chunk_cache_bytes: int) -> h5py.File:
    check_regular(path, name)
    _register_filters()
    try:
        return h5py.File(path, "r", rdcc_nbytes=chunk_cache_bytes, rdcc_nslots=CHUNK_CACHE_SLOTS)
    except OSError as exc:
        text = str(exc)
        if "signature" in text:
            raise InputError(f"{name}: not an HDF5 file") from None
        raise InputError(f"{name}: cannot open HDF5 file ({h5_reason(text)})") from None


def h5_reason(text: str) -> str:
    """HDF5's messages are long; keep the part in parentheses that says what failed."""
    text = text.strip().strip("'\"")
    return text.split("(", 1)[-1].rstrip(")'\"") if "(" in text else text


def dataset_name(dataset: h5py.Dataset) -> str:
    """The path of a dataset as text (names that are not UTF-8 with their bytes escaped)."""
    return _path_text(dataset.name)


# What h5py raises when the library meets damaged metadata, wherever it is read.
H5_ERRORS = (RuntimeError, OSError, KeyError, ValueError, TypeError)


@contextlib.contextmanager
def h5_errors(name: str) -> Iterator[None]:
    """Turn what h5py raises on a damaged file into one error that names it."""
    try:
        yield
    except H5_ERRORS as exc:
        raise InputError(f"{name}: damaged HDF5 file ({h5_reason(str(exc))})") from None


def _visit(h5file: h5py.Group, name: str,
           visitor: Callable[[str | bytes, object], None]) -> None:
    """Call `visitor(path, object)` for every object reached by hard links (each once), a
    damaged file being one clear error.

    The walk goes group by group through their links, as ``visititems`` does, but not
    through HDF5's ``H5Ovisit``: on a file whose root symbol table is damaged, that
    allocated all the memory it could get before it failed, where iterating the group's
    links fails at once.
    """
    seen: set[int] = set()

    def walk(group: h5py.Group, prefix: bytes) -> None:
        for key in list(group.id):
            if group.id.links.get_info(key).type != h5py.h5l.TYPE_HARD:
                continue  # soft and external links name objects, they are not objects
            item = group[key]
            address = h5py.h5o.get_info(item.id).addr
            if address in seen:
                continue
            seen.add(address)
            path = prefix + key
            visitor(path, item)
            if isinstance(item, h5py.Group):
                walk(item, path + b"/")

    try:
        walk(h5file, b"")
    except H5_ERRORS as exc:
        raise InputError(f"{name}: cannot list its datasets ({h5_reason(str(exc))})") from None


def _path_text(path: str | bytes) -> str:
    """An HDF5 object path as text: names that are not UTF-8 keep their bytes as escapes."""
    if isinstance(path, bytes):
        return path.decode("utf-8", errors="backslashreplace")
    return path


def numeric_problem(dataset: h5py.Dataset) -> str | None:
    """Return why a dataset cannot be used as a tensor, or None if it can.

    Parameters
    ----------
    dataset : h5py.Dataset

    Returns
    -------
    str or None
    """
    if dataset.shape is None:
        return "is an empty (null dataspace) dataset"
    try:
        dtype = dataset.dtype
    except (ValueError, TypeError):  # h5py maps the type to no NumPy dtype
        return _unmapped_type(dataset)
    if h5py.check_enum_dtype(dtype) is not None:
        return "holds an enum type, not numbers"
    if h5py.check_string_dtype(dtype) is not None:
        return "holds strings, not numbers"
    if h5py.check_vlen_dtype(dtype) is not None:
        return "holds variable-length data, not numbers"
    if h5py.check_ref_dtype(dtype) is not None:
        return "holds object references, not numbers"
    element, trailing = element_type(dtype)
    return dtype_problem(element) or rank_problem(len(dataset.shape) + len(trailing))


def _unmapped_type(dataset: h5py.Dataset) -> str:
    """Why a dataset whose element type has no NumPy dtype (a quad-precision float...) is
    refused."""
    stored = dataset.id.get_type()
    size = stored.get_size()
    if isinstance(stored, h5py.h5t.TypeFloatID):
        what = f"a {size}-byte float ({size * 8}-bit precision)"
    else:
        what = f"a {size}-byte type of HDF5 class {stored.get_class()}"
    return (f"its element type is {what}, which NumPy cannot hold; bn reads bool, integer "
            "and real floating data of up to 8 bytes")


def element_type(dtype: np.dtype) -> tuple[np.dtype, tuple]:
    """The element dtype of a dataset and the trailing axes of its HDF5 array type
    (``f8[3]`` is float64 and ``(3,)``, read as h5py reads it: an extra trailing axis)."""
    if dtype.subdtype is not None:
        base, trailing = dtype.subdtype
        return base, tuple(trailing)
    return dtype, ()


def list_numeric_datasets(h5file: h5py.File, name: str = "") -> list:
    """Return the paths of the numeric datasets reachable by hard links, sorted."""
    found = []

    def visit(path, item):
        if isinstance(item, h5py.Dataset) and numeric_problem(item) is None:
            found.append("/" + _path_text(path))

    _visit(h5file, name or h5file.filename, visit)
    return sorted(found)


def _resolve(h5file: h5py.File, path: str, name: str, allow_external: bool,
             hops: int = 0) -> h5py.Group | h5py.Dataset | None:
    """Follow `path` component by component, checking each link before following it."""
    if hops > MAX_LINK_HOPS:
        raise InputError(f"{name}: soft links loop while resolving {path!r}")
    node = h5file["/"]
    walked = ""
    for component in [part for part in path.split("/") if part]:
        if not isinstance(node, h5py.Group):
            raise InputError(f"{name}: {walked or '/'} is a dataset, not a group")
        if component in (".", ".."):
            raise InputError(f"{name}: {path!r} has a {component!r} component; name the "
                             "dataset by its path from the root")
        try:
            # a name that is not UTF-8 arrives from argv with its bytes as surrogates
            key = component.encode("utf-8", "surrogateescape") if any(
                "\udc80" <= char <= "\udcff" for char in component) else component
            link = _raw_link(node, key) if isinstance(key, bytes) else node.get(
                key, getlink=True)
        except H5_ERRORS as exc:  # UnicodeError is a ValueError
            raise InputError(f"{name}: cannot resolve {walked}/{component} "
                             f"({h5_reason(str(exc))})") from None
        if link is None:
            return None
        walked += "/" + component
        if isinstance(link, h5py.ExternalLink) and not allow_external:
            raise InputError(
                f"{name}: {walked} is an external link to {link.filename}:{link.path}; "
                "refused since it reads another file", hint="use --allow-external"
            )
        if isinstance(link, h5py.SoftLink):
            target = link.path if link.path.startswith("/") else (
                walked.rsplit("/", 1)[0] + "/" + link.path)
            node = _resolve(h5file, target, name, allow_external, hops + 1)
            if node is None:
                raise InputError(f"{name}: {walked} is a soft link to missing {link.path}")
            continue
        try:
            node = _open_raw(node, key) if isinstance(key, bytes) else node[key]
        except H5_ERRORS as exc:
            raise InputError(f"{name}: cannot open {walked} ({h5_reason(str(exc))})") from None
    return node


def _raw_link(group: h5py.Group,
              key: bytes) -> h5py.SoftLink | h5py.ExternalLink | h5py.HardLink | None:
    """``group.get(key, getlink=True)`` for a name that is not UTF-8 (h5py's decodes it)."""
    links = group.id.links
    if not links.exists(key):
        return None
    kind = links.get_info(key).type
    if kind == h5py.h5l.TYPE_SOFT:
        return h5py.SoftLink(_path_text(links.get_val(key)))
    if kind == h5py.h5l.TYPE_EXTERNAL:
        filename, path = links.get_val(key)
        return h5py.ExternalLink(_path_text(filename), _path_text(path))
    return h5py.HardLink()


def _open_raw(group: h5py.Group, key: bytes) -> h5py.Dataset | h5py.Group:
    """``group[key]`` for a name that is not UTF-8."""
    opened = h5py.h5o.open(group.id, key)
    return h5py.Dataset(opened) if isinstance(opened, h5py.h5d.DatasetID) else h5py.Group(opened)


def _filters(dataset: h5py.Dataset) -> list:
    """``(code, flags, name)`` of each filter of the dataset's pipeline, in order (`name` as
    stored, bytes)."""
    plist = dataset.id.get_create_plist()
    stages = (plist.get_filter(index) for index in range(plist.get_nfilters()))
    return [(code, flags, name) for code, flags, _values, name in stages]


def _check_storage(dataset: h5py.Dataset, name: str, allow_external: bool,
                   require_data: bool = True, allow_sparse: bool = False) -> None:
    if dataset.is_virtual and not allow_external:
        raise InputError(
            f"{name}: is a virtual dataset that reads other files; refused",
            hint="use --allow-external"
        )
    if dataset.external and not allow_external:
        files = ", ".join(str(entry[0]) for entry in dataset.external)
        raise InputError(
            f"{name}: stores its data in external files ({files}); refused",
            hint="use --allow-external"
        )
    for index, (code, flags, filter_name) in enumerate(_filters(dataset)):
        # HDF5 skips an optional filter it cannot apply; chunks it did not filter read fine
        if not h5py.h5z.filter_avail(code) and (not flags & h5py.h5z.FLAG_OPTIONAL
                                                or _filtered_chunks(dataset, index)):
            label = filter_name.decode(errors="replace") if filter_name else "unnamed"
            raise InputError(
                f"{name}: compressed with HDF5 filter {code} ({label}), which is not "
                "installed (the bncli[hdf5plugin] extra adds the common ones)"
            )
    size = int(np.prod(dataset.shape, dtype=object))
    if (require_data and size and not dataset.is_virtual and not dataset.external
            and dataset.id.get_storage_size() == 0):
        raise InputError(
            f"{name}: declares shape {format_shape(dataset.shape)} but no data was ever "
            "written to it"
        )
    if dataset.is_virtual:
        _check_virtual(dataset, name, allow_sparse)
    if require_data and not allow_sparse:
        _check_written(dataset, name)


# Virtual datasets whose sources are virtual datasets, followed this deep at most.
MAX_VIRTUAL_DEPTH = 8


def _check_virtual(dataset: h5py.Dataset, name: str, allow_sparse: bool) -> None:
    """Refuse a virtual dataset that reads itself (HDF5 recurses until it crashes), through
    any chain of virtual datasets, and one whose unmapped elements would read more than
    ``MAX_UNWRITTEN_BYTES`` of fill values (unless `allow_sparse`), as for unwritten chunks."""
    home = os.path.realpath(dataset.file.filename)
    seen = {(home, dataset_name(dataset))}

    def walk(node: h5py.Dataset, where: str, depth: int) -> int:
        """Elements of `node` its sources map; refuses a source seen on the way."""
        mapped = 0
        for source in node.virtual_sources():
            mapped += source.vspace.get_select_npoints()
            target = where if source.file_name == "." else os.path.realpath(
                os.path.join(os.path.dirname(where), source.file_name))
            path = "/" + source.dset_name.lstrip("/")
            if (target, path) in seen:
                raise InputError(f"{name}: is a virtual dataset that reads itself (through "
                                 f"{source.file_name}:{path}); refused")
            if depth >= MAX_VIRTUAL_DEPTH:
                raise InputError(f"{name}: virtual datasets read virtual datasets more than "
                                 f"{MAX_VIRTUAL_DEPTH} deep; refused")
            try:
                if target == home:
                    inner = node.file.get(path)
                    if isinstance(inner, h5py.Dataset) and inner.is_virtual:
                        seen.add((target, path))
                        walk(inner, target, depth + 1)
                elif os.path.isfile(target) and has_hdf5_signature(target):
                    with h5py.File(target, "r") as other:
                        inner = other.get(path)
                        if isinstance(inner, h5py.Dataset) and inner.is_virtual:
                            seen.add((target, path))
                            walk(inner, target, depth + 1)
            except (OSError, KeyError, ValueError):
                pass  # a source HDF5 cannot open reads as fill values
        return mapped

    mapped = walk(dataset, home, 0)
    unmapped = (int(np.prod(dataset.shape, dtype=object)) - mapped) * dataset.dtype.itemsize
    if not allow_sparse and unmapped > MAX_UNWRITTEN_BYTES:
        raise InputError(
            f"{name}: its sources map {mapped:,} of its "
            f"{int(np.prod(dataset.shape, dtype=object)):,} elements; the other "
            f"{format_bytes(unmapped)} would be read as its fill value {dataset.fillvalue}",
            hint="use --allow-sparse to read them anyway")


# Chunks whose filter masks are looked at to see if an optional filter was applied.
FILTER_CHECK_CHUNKS = 64


def _filtered_chunks(dataset: h5py.Dataset, index: int) -> bool:
    """Whether the first written chunks went through filter `index` of the pipeline (an
    optional filter leaves a chunk it could not process unfiltered, and says so in the
    chunk's filter mask)."""
    written = dataset.id.get_num_chunks() if dataset.chunks else 0
    for chunk in range(min(written, FILTER_CHECK_CHUNKS)):
        if not dataset.id.get_chunk_info(chunk).filter_mask & (1 << index):
            return True
    return False


# Unwritten chunks read as the fill value, without I/O: a small file can declare petabytes.
# A dataset whose unwritten chunks would give more values than this is refused.
MAX_UNWRITTEN_BYTES = 2**30


def written_chunks(dataset: h5py.Dataset) -> tuple | None:
    """``(written, total)`` chunks of a chunked dataset, or None if it is not chunked."""
    if not dataset.chunks:
        return None
    total = 1
    for dim, chunk in zip(dataset.shape, dataset.chunks):
        total *= -(-dim // chunk)
    return int(dataset.id.get_num_chunks()), total


def _check_written(dataset: h5py.Dataset, name: str) -> None:
    """Refuse a chunked dataset whose unwritten chunks hold more than MAX_UNWRITTEN_BYTES."""
    itemsize = dataset.dtype.itemsize
    chunk_bytes = int(np.prod(dataset.chunks or (), dtype=object)) * itemsize
    logical = int(np.prod(dataset.shape, dtype=object)) * itemsize
    if not dataset.chunks or logical <= MAX_UNWRITTEN_BYTES:
        return
    chunks = written_chunks(dataset)
    assert chunks is not None  # the dataset is chunked: returned above if not
    written, total = chunks
    unwritten = (total - written) * chunk_bytes
    if unwritten > MAX_UNWRITTEN_BYTES:
        raise InputError(
            f"{name}: {written:,} of its {total:,} chunks were ever written; the other "
            f"{format_bytes(unwritten)} would be read as its fill value {dataset.fillvalue}",
            hint="use --allow-sparse to read them anyway")


def open_dataset(path: str, dataset_path: str | None, name: str, *, allow_external: bool,
                 chunk_cache_bytes: int, require_data: bool = True,
                 allow_sparse: bool = False) -> tuple[h5py.File, h5py.Dataset]:
    """Open an HDF5 file and one numeric dataset in it.

    Parameters
    ----------
    path : str
        File path.
    dataset_path : str or None
        Dataset path; None means the only numeric dataset of the file.
    name : str
        For messages.
    allow_external : bool
        Allow external links, external storage and virtual datasets.
    chunk_cache_bytes : int
        Size of the chunk cache.
    require_data : bool
        Refuse a dataset that was created but never written (False to describe it).
    allow_sparse : bool
        Read a dataset whose unwritten chunks would give more than ``MAX_UNWRITTEN_BYTES``
        of fill values.

    Returns
    -------
    (h5py.File, h5py.Dataset)
    """
    h5file = _open_file(path, name, chunk_cache_bytes)
    try:
        if dataset_path is None:
            candidates = list_numeric_datasets(h5file, name)
            if len(candidates) != 1:
                listing = ", ".join(candidates) if candidates else "none"
                raise InputError(
                    f"{name}: holds {len(candidates)} numeric datasets ({listing}); "
                    f"name one as {path}:/path/to/dataset"
                )
            dataset_path = candidates[0]
        node = _resolve(h5file, dataset_path, name, allow_external)
        if node is None or not isinstance(node, h5py.Dataset):
            candidates = list_numeric_datasets(h5file, name)
            what = "no dataset" if node is None else "a group, not a dataset"
            raise InputError(
                f"{name}: {dataset_path} is {what}; numeric datasets: "
                f"{', '.join(candidates) if candidates else 'none'}"
            )
        problem = numeric_problem(node)
        if problem:
            raise InputError(f"{path}:{dataset_name(node)}: {problem}")
        _check_storage(node, f"{path}:{dataset_name(node)}", allow_external, require_data,
                       allow_sparse)
        return h5file, node
    except BaseException:
        h5file.close()
        raise


def describe_dataset(dataset: h5py.Dataset) -> dict:
    """Return the storage facts of a dataset for ``bn info``."""
    layout = "virtual" if dataset.is_virtual else (
        "external" if dataset.external else ("chunked" if dataset.chunks else "contiguous"))
    filters = [filter_name.decode(errors="replace") or str(code)
               for code, _flags, filter_name in _filters(dataset)]
    return {
        "format": "hdf5",
        "layout": layout,
        "chunks": list(dataset.chunks) if dataset.chunks else None,
        "compression": compression_name(dataset),
        "compression_opts": dataset.compression_opts,
        "filters": filters,
        "storage_bytes": int(dataset.id.get_storage_size()),
    }


# The worker threads' reads of an HDF5 library older than 2.0 (h5py before 3.16) go one at
# a time: there, H5Dread_chunk called from two threads fails now and then ("return value
# < 0") although h5py serializes its own calls. The decoding stays in parallel.
_READS_LOCK = threading.Lock()


@functools.cache
def _reads_lock() -> contextlib.AbstractContextManager:
    """The lock of the worker threads' reads, or none: decided once, at the first read."""
    if h5py.version.hdf5_version_tuple >= (2, 0, 0):
        return contextlib.nullcontext()
    return _READS_LOCK


def read_block(dataset: h5py.Dataset, region: tuple, name: str, block: np.ndarray) -> np.ndarray:
    """Read one block (a tuple of slices) of a dataset into `block` (C-contiguous).

    A compressed dataset of the filters in :func:`chunk_pipeline` whose block covers whole
    chunks is read chunk by chunk as stored and decoded here (:func:`decode_chunk`): the
    decoders release the GIL, so the worker threads decode in parallel, where h5py's own
    read would decode one chunk at a time for the whole process. Anything else is h5py's
    read.
    """
    try:
        if block.size and dataset.dtype.subdtype is not None:  # an array type: h5py's read
            rank = len(dataset.shape)
            with _reads_lock():
                values = dataset[region[:rank]] if rank else dataset[()]
            block[...] = values[(Ellipsis,) + tuple(region[rank:])]
        elif block.size and not _read_chunks(dataset, region, name, block):
            with _reads_lock():
                dataset.read_direct(block, source_sel=region)
    except H5_ERRORS as exc:
        raise InputError(f"{name}: cannot read data ({h5_reason(str(exc))})") from None
    return block


# The filters bn undoes itself, by their ids: deflate's is fixed by the HDF5 format
# (H5Z_FILTER_DEFLATE), those of the hdf5plugin package are registered with The HDF Group.
FILTER_DEFLATE, FILTER_BLOSC, FILTER_LZ4, FILTER_ZSTD = 1, 32001, 32004, 32015
CODECS = {FILTER_DEFLATE: "deflate", FILTER_ZSTD: "zstd", FILTER_LZ4: "lz4",
          FILTER_BLOSC: "blosc"}


def chunk_pipeline(dataset: h5py.Dataset) -> tuple | None:
    """``(shuffled, codec)`` where bn inflates the dataset's chunks itself, else None.

    `codec` is ``deflate`` (gzip), or, where ``numcodecs`` is installed, ``zstd`` or
    ``lz4`` (the filters of hdf5plugin), each after shuffle or alone, or ``blosc`` alone
    (it shuffles within its own format). None for contiguous datasets, no filter, or others.
    """
    if dataset.chunks is None:
        return None
    filters = [code for code, _flags, _name in _filters(dataset)]
    shuffled = filters[:1] == [h5py.h5z.FILTER_SHUFFLE]
    rest = filters[1:] if shuffled else filters
    codec = CODECS.get(rest[0]) if len(rest) == 1 else None
    if codec is None or (codec == "blosc" and shuffled):
        return None
    if codec != "deflate":
        try:
            import numcodecs  # noqa: F401
        except ImportError:
            return None
    return shuffled, codec


def inflater() -> tuple[ModuleType, str]:
    """The zlib interface that inflates chunks, and its name.

    ISA-L's (``isal.isal_zlib``, the ``bncli[isal]`` extra) where it is installed: it
    inflates the same bytes about twice as fast as zlib, and likewise without the GIL.
    Else, or with ``BN_INFLATE=zlib``, Python's own ``zlib``.
    """
    if os.environ.get("BN_INFLATE", "").strip().lower() != "zlib":
        try:
            from isal import isal_zlib
        except ImportError:
            pass
        else:
            return isal_zlib, "isal"
    import zlib

    return zlib, "zlib"


class DamagedChunk(ValueError):
    """Stored chunk bytes that do not decode to exactly one chunk."""


def _zstd_content_size(data: bytes) -> int | None:
    """The content size a zstd frame's header declares (None if it declares none)."""
    if len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        raise DamagedChunk("not a zstd frame")
    descriptor = data[4]
    single_segment = descriptor >> 5 & 1
    field = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    start = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
    if field == 0:
        return None
    if len(data) < start + field:
        raise DamagedChunk("a zstd frame header cut short")
    return int.from_bytes(data[start:start + field], "little") + (256 if field == 2 else 0)


def _declared(codec: str, declared: int | None, size: int) -> None:
    if declared is None:  # HDF5's own zstd filter refuses such a frame too
        raise DamagedChunk(f"its {codec} header declares no size")
    if declared != size:
        raise DamagedChunk(f"its {codec} header declares {declared} bytes, not the {size} "
                           "bytes of a chunk")


def decode_chunk(codec: str, data: bytes, size: int) -> bytes | np.ndarray:
    """The `size` bytes of one chunk, from its stored bytes (never more memory than a chunk).

    Raises
    ------
    DamagedChunk
        The bytes are not valid data of `codec`, or do not give exactly `size` bytes.
    """
    if codec == "deflate":
        inflate, _ = inflater()
        try:  # never more than a chunk (and a byte to tell), whatever the data claims
            raw = inflate.decompressobj().decompress(data, size + 1)
        except inflate.error as exc:
            raise DamagedChunk(str(exc)) from None
        if len(raw) != size:
            got = "more than" if len(raw) > size else f"{len(raw)} bytes, not"
            raise DamagedChunk(f"it inflates to {got} the {size} bytes of a chunk")
        return raw
    out = np.empty(size, np.uint8)
    try:
        if codec == "zstd":
            from numcodecs.zstd import Zstd

            _declared(codec, _zstd_content_size(data), size)
            Zstd().decode(data, out=out)
        elif codec == "blosc":
            from numcodecs import blosc

            _declared(codec, int.from_bytes(data[4:8], "little") if len(data) >= 16 else None,
                      size)
            # blosc reads as many bytes as its header says the frame takes, and its blocks at
            # the offsets the frame lists: both must lie within the stored bytes
            stored, block = (int.from_bytes(data[at:at + 4], "little") for at in (12, 8))
            if stored != len(data):
                raise DamagedChunk(f"its blosc header says it takes {stored} bytes, not the "
                                   f"{len(data)} stored")
            if not 0 < block <= max(size, 1):
                raise DamagedChunk(f"its blosc header declares blocks of {block} bytes")
            blosc.decompress(data, out)
        else:  # lz4: total size, block size, then blocks, each after its stored size
            from numcodecs import lz4

            _declared(codec, int.from_bytes(data[:8], "big") if len(data) >= 12 else None,
                      size)
            block, position, done = int.from_bytes(data[8:12], "big"), 12, 0
            if block <= 0:
                raise DamagedChunk(f"its lz4 header declares blocks of {block} bytes")
            while done < size:
                count = min(block, size - done)
                stored = int.from_bytes(data[position:position + 4], "big")
                piece = data[position + 4:position + 4 + stored]
                position += 4 + stored
                if len(piece) != stored or stored > count:
                    raise DamagedChunk("its lz4 blocks end early or overrun")
                if stored == count:  # a block that did not compress is stored as it is
                    out[done:done + count] = np.frombuffer(piece, np.uint8)
                else:
                    lz4.decompress(count.to_bytes(4, "little") + piece, out[done:done + count])
                done += count
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DamagedChunk(str(exc)) from None
    return out


def _read_chunks(dataset: h5py.Dataset, region: tuple, name: str, block: np.ndarray) -> bool:
    """Read `region` from its stored chunks, decoded here; False where it cannot be."""
    import itertools

    with _reads_lock():
        pipeline = chunk_pipeline(dataset)
        chunks, shape, dtype = dataset.chunks, dataset.shape, dataset.dtype
    if pipeline is None or dtype.kind not in "biuf":
        return False
    if any(part.start % size or (part.stop % size and part.stop != dim)
           for part, size, dim in zip(region, chunks, shape)):
        return False  # not whole chunks
    shuffled, codec = pipeline
    chunk_bytes = int(np.prod(chunks)) * dtype.itemsize
    origins = itertools.product(*(range(part.start, part.stop, size)
                                  for part, size in zip(region, chunks)))
    for origin in origins:
        with _reads_lock():
            stored = dataset.id.get_chunk_info_by_coord(origin)
            if stored.byte_offset is None:
                return False  # never written: its fill value comes from h5py's read
            # the chunk's own filter mask (read_direct_chunk's is 0 in some h5py versions)
            mask = stored.filter_mask
            _, data = dataset.id.read_direct_chunk(origin)
        try:
            raw = data if mask & (2 if shuffled else 1) else decode_chunk(codec, data,
                                                                          chunk_bytes)
        except DamagedChunk as exc:
            raise InputError(f"{name}: damaged compressed chunk at {list(origin)} "
                             f"({exc})") from None
        if len(raw) != chunk_bytes:  # stored as it is, and not a chunk's size
            raise InputError(f"{name}: the chunk at {list(origin)} is stored as "
                             f"{len(raw)} bytes, not the {chunk_bytes} bytes of a chunk")
        values = np.frombuffer(raw, np.uint8)
        if shuffled and not mask & 1:  # bytes were grouped by their place in the value
            values = values.reshape(dtype.itemsize, -1).T
        chunk = np.ascontiguousarray(values).view(dtype).reshape(chunks)
        inside = tuple(slice(0, min(size, dim - start))
                       for start, size, dim in zip(origin, chunks, shape))
        target = tuple(slice(start - part.start, start - part.start + piece.stop)
                       for start, part, piece in zip(origin, region, inside))
        block[target] = chunk[inside]
    return True


def compression_name(dataset: h5py.Dataset) -> str | None:
    """The dataset's compression as h5py names it (``gzip``...), else its codec's name
    (``zstd``, ``lz4``, ``blosc``) or its filter's own; None when it has none."""
    named = dataset.compression
    if named is None or named in ("gzip", "lzf", "szip"):
        return named
    for code, _flags, filter_name in _filters(dataset):
        if code in CODECS:
            return CODECS[code]
        if code not in (h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32,
                        h5py.h5z.FILTER_SCALEOFFSET, h5py.h5z.FILTER_NBIT):
            return filter_name.decode(errors="replace") or str(code)
    return named


def list_datasets(path: str, name: str) -> list:
    """Return ``(path, shape, dtype, problem, chunks, compression)`` for every dataset of a
    file, for ``bn info``."""
    h5file = _open_file(path, name, 2**20)
    rows = []
    with h5file:
        def visit(item_path, item):
            if isinstance(item, h5py.Dataset):
                problem = numeric_problem(item)
                try:
                    shape, dtype = item.shape, item.dtype
                except (ValueError, TypeError):  # a type with no NumPy dtype
                    shape, dtype = item.shape, None
                if problem is None and dtype.subdtype is not None:
                    dtype, trailing = element_type(dtype)
                    shape = (*shape, *trailing)
                rows.append(("/" + _path_text(item_path), shape, dtype, problem, item.chunks,
                             compression_name(item)))

        _visit(h5file, name, visit)
    return sorted(rows, key=lambda row: row[0])


class Hdf5Source(Source):
    """One numeric dataset of an HDF5 file, read in blocks aligned to its chunks."""

    def __init__(self, h5file: h5py.File, dataset: h5py.Dataset, name: str, path: str):
        self._file = h5file
        self._dataset = dataset
        details = describe_dataset(dataset)
        dtype, trailing = element_type(dataset.dtype)
        super().__init__(
            name=name,
            path=path,
            dataset=dataset_name(dataset),
            shape=(*dataset.shape, *trailing),
            dtype=dtype,
            chunks=(*dataset.chunks, *trailing) if dataset.chunks else None,
            details=details,
        )

    @property
    def is_file(self) -> bool:
        return True

    def written_chunks(self) -> tuple | None:
        return written_chunks(self._dataset)

    @property
    def random_access(self) -> bool:
        """A compressed dataset whose filters bn undoes itself (deflate; zstd, lz4 and
        blosc with the bncli[hdf5plugin] extra) is read by the worker threads, which decode
        its chunks in parallel (see :func:`bncli.io.hdf5.read_block`); others in order."""
        return chunk_pipeline(self._dataset) is not None

    def blocks(self, budget_bytes: int, ring: BufferRing | None = None,
               reduce_axes: tuple | None = None) -> Iterator[tuple]:
        ring = ring or BufferRing(0)
        for region in self.regions(budget_bytes, reduce_axes):
            yield region, self.read(region, ring.array(region_shape(region), self.dtype))

    def read(self, region: tuple, out: np.ndarray | None = None) -> np.ndarray:
        block = np.empty(region_shape(region), self.dtype) if out is None else out
        return read_block(self._dataset, region, self.name, block)

    def close(self) -> None:
        self._file.close()



def has_hdf5_signature(path: str) -> bool:
    """Whether `path` is a regular file that starts with the HDF5 signature (False for
    anything that is not, or cannot be read)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open_file(path, path) as probe:
            return probe.read(8).startswith((SIGNATURE, MATLAB_HDF5))
    except (OSError, InputError):
        return False



def split_hdf5_file(text: str) -> tuple | None:
    """``(path, dataset or None)`` when `text` is ``FILE:dataset`` for an existing file of any
    name that holds the HDF5 signature, else None."""
    for index in (i for i, char in enumerate(text) if char == ":"):
        if has_hdf5_signature(text[:index]):
            return text[:index], text[index + 1:] or None
    return None



class Hdf5Format:
    """HDF5 (netCDF4 too): recognised by its signature whatever the file's name;
    ``FILE:/group/dataset``."""

    name = "hdf5"
    suffixes = SUFFIXES

    def matches(self, path: str, head: bytes) -> bool:
        return head.startswith((SIGNATURE, MATLAB_HDF5))

    def open(self, spec: InputSpec, options: OpenOptions) -> Source:
        name = spec.display
        cache = max(options.chunk_cache_bytes, MIN_CHUNK_CACHE_BYTES)
        with h5_errors(name):
            h5file, dataset = open_dataset(
                spec.path, spec.dataset, name, allow_external=options.allow_external,
                chunk_cache_bytes=cache, require_data=options.require_data,
                allow_sparse=options.allow_sparse,
            )
            chunk = (math.prod(dataset.chunks) * dataset.dtype.itemsize
                     if dataset.chunks and _filters(dataset) else 0)
            if chunk > cache:
                # a compressed chunk larger than the cache would be inflated again for each
                # block that reads part of it: the cache holds one (its size is declared)
                path = dataset_name(dataset)
                h5file.close()
                h5file, dataset = open_dataset(
                    spec.path, path, name, allow_external=options.allow_external,
                    chunk_cache_bytes=chunk + chunk // 8, require_data=options.require_data,
                    allow_sparse=options.allow_sparse)
            try:
                return Hdf5Source(h5file, dataset, spec.display if spec.dataset else
                                  f"{spec.path}:{dataset_name(dataset)}", spec.path)
            except BaseException:
                h5file.close()
                raise

    def entries(self, path: str, name: str) -> list | None:
        return [Entry("dataset", item_path, shape, None if dtype is None else str(dtype),
                      problem=problem, chunks=chunks,
                      compression=compression)
                for item_path, shape, dtype, problem, chunks, compression in list_datasets(
                    path, name)]


FORMAT = Hdf5Format()
