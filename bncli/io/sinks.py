"""Outputs, written atomically: a temporary file beside the target, renamed at the end.

A failure or an interrupt removes the temporary file and leaves an existing target as it
was; after a hard kill the target is still absent or the old file. Without ``force`` an
existing target is refused, and with it the replacement is still a single rename.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from bncli.core.layout import DEFAULT_CHUNK_BYTES, plan_blocks, region_shape, region_start
from bncli.errors import InputError, OutputError, UsageError
from bncli.io import interrupts
from bncli.io.npy import make_header

if TYPE_CHECKING:
    import h5py

    from bncli.io.source import Source

TEMP_SUFFIX = ".bn-tmp"


def output_error(name: str, exc: OSError) -> OutputError:
    """The one-line error of a failed write: a full disk, a size limit, or else the reason."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"{name}: no space left on device while writing")
    if exc.errno == errno.EFBIG:
        return OutputError(f"{name}: file size limit exceeded while writing")
    return OutputError(f"{name}: cannot write: {exc.strerror or exc}")


def check_target(path: str, *, force: bool, inputs: Iterable[str] = (),
                 directory_output: bool = False) -> None:
    """Refuse an output that exists (without `force`), is a directory, or is an input.

    Parameters
    ----------
    path : str
        Output file path.
    force : bool
        Allow replacing an existing file.
    inputs : iterable of str
        Input file paths; the output may never be one of them (links included).
    directory_output : bool
        The output is a directory (a zarr store): an existing zarr store may be replaced
        with `force`, any other directory never.
    """
    try:
        target = os.stat(path)
    except FileNotFoundError:
        target = None
        if os.path.islink(path) and not force:  # a dangling symlink is still in the way
            raise OutputError(f"{path}: already exists as a symbolic link to a missing file",
                              hint="use --force to replace it") from None
    except OSError as exc:
        raise output_error(path, exc) from None
    if target is not None:
        if stat.S_ISDIR(target.st_mode) and not (directory_output and _is_zarr_store(path)):
            raise OutputError(f"{path}: is a directory" + (
                " that is not a zarr store; refused" if directory_output else ""))
        _refuse_inputs(path, target, inputs)
        if not force:
            raise OutputError(f"{path}: already exists", hint="use --force to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OutputError(f"{path}: directory {directory} does not exist")


def _is_zarr_store(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, meta))
               for meta in (".zarray", ".zgroup", "zarr.json"))


def _refuse_inputs(name: str, target: os.stat_result, inputs: Iterable[str]) -> None:
    """Refuse an output that is one of the inputs (through links too)."""
    for input_path in inputs:
        if input_path == "-":
            continue
        try:
            source = os.stat(input_path)
        except OSError:
            continue
        if (source.st_dev, source.st_ino) == (target.st_dev, target.st_ino):
            raise OutputError(f"{name}: is the input file {input_path}; refused")


class AtomicFile:
    """A temporary file beside `path` that becomes `path` on :meth:`commit`.

    Parameters
    ----------
    path : str
        Final path.
    force : bool
        Replace an existing file at commit.
    copy : bool
        Start from a copy of the existing file (to change it: an HDF5 file that gains or
        replaces one dataset). The commit then refuses if the file changed meanwhile.
    directory : bool
        The output is a directory (a zarr store), built in a temporary directory beside
        `path` and renamed into place; one it replaces is renamed away first, then removed.
    """

    def __init__(self, path: str, *, force: bool, copy: bool = False, directory: bool = False):
        import shutil
        import tempfile

        self.path = path
        self.force = force or copy
        self._original = None
        self._directory = directory
        parent, base = os.path.split(os.path.abspath(path))
        try:
            if directory:
                self.temp_path = tempfile.mkdtemp(dir=parent, prefix=f".{base}.",
                                                  suffix=TEMP_SUFFIX)
            else:
                handle, self.temp_path = tempfile.mkstemp(
                    dir=parent, prefix=f".{base}.", suffix=TEMP_SUFFIX)
                os.close(handle)
        except OSError as exc:
            raise output_error(path, exc) from None
        self._done = False
        if copy:
            try:
                self._original = _identity(path)
                shutil.copyfile(path, self.temp_path)
                shutil.copymode(path, self.temp_path)
            except OSError as exc:
                self.abort()
                raise output_error(path, exc) from None

    def commit(self) -> None:
        """Move the temporary file into place (refusing to clobber without force).

        If that fails, the temporary file is removed and :class:`OutputError` raised.
        """
        try:
            self._commit()
        except BaseException:
            self.abort()
            raise

    def _commit(self) -> None:
        if self._directory:
            self._commit_directory()
            return
        if self._original is not None:
            if _identity(self.path) != self._original:
                raise OutputError(f"{self.path}: changed while bn was writing a copy of it; "
                                  "left as the other writer made it")
            os.replace(self.temp_path, self.path)
            self._done = True
            return
        umask = os.umask(0)
        os.umask(umask)
        exists = f"{self.path}: already exists"
        try:
            os.chmod(self.temp_path, 0o666 & ~umask)
            if self.force:
                os.replace(self.temp_path, self.path)
                self._done = True
                return
            try:
                os.link(self.temp_path, self.path)
            except FileExistsError:
                raise OutputError(exists, hint="use --force to replace it") from None
            except OSError:
                # Filesystems without hard links: check, then rename.
                if os.path.lexists(self.path):
                    raise OutputError(exists, hint="use --force to replace it") from None
                os.replace(self.temp_path, self.path)
                self._done = True
                return
            self._done = True
            os.unlink(self.temp_path)
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot put the output in place: "
                              f"{exc.strerror or exc}") from None

    def _commit_directory(self) -> None:
        import shutil
        import tempfile

        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(self.temp_path, 0o777 & ~umask)
            if os.path.lexists(self.path):
                if not self.force:
                    raise OutputError(f"{self.path}: already exists",
                                      hint="use --force to replace it")
                old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(self.path)),
                                       prefix=f".{os.path.basename(self.path)}.old.")
                os.rename(self.path, os.path.join(old, "store"))
                os.rename(self.temp_path, self.path)
                self._done = True
                shutil.rmtree(old, ignore_errors=True)
                return
            os.rename(self.temp_path, self.path)
            self._done = True
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot put the output in place: "
                              f"{exc.strerror or exc}") from None

    def abort(self) -> None:
        """Remove the temporary file (or directory), if it is still there."""
        if not self._done:
            self._done = True
            if self._directory:
                import shutil

                shutil.rmtree(self.temp_path, ignore_errors=True)
                return
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        with interrupts.critical():  # a signal waits until the file is in place or removed
            if exc_type is None:
                self.commit()
            else:
                self.abort()


def _identity(path: str) -> tuple | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def check_hdf5_target(path: str, dataset: str, *, force: bool,
                      inputs: Iterable[str] = ()) -> None:
    """Check writing `dataset` into the existing HDF5 file `path`.

    Only that dataset is written (replaced with `force`); every other object of the file
    is kept. Refuses the file if it is an input, and a dataset path that exists without
    `force`, is a group, or runs through a dataset.
    """
    import h5py

    from bncli.io.hdf5 import H5_ERRORS, h5_reason

    name = f"{path}:{dataset}"
    _refuse_inputs(path, os.stat(path), inputs)
    if not os.access(path, os.W_OK):
        raise OutputError(f"{path}: is read-only; refusing to add {dataset} to it")
    try:
        with h5py.File(path, "r") as h5file:
            node = h5file["/"]
            parts = [part for part in dataset.split("/") if part]
            for depth, part in enumerate(parts):
                if not isinstance(node, h5py.Group):
                    raise OutputError(f"{name}: /{'/'.join(parts[:depth])} is a dataset, "
                                      "not a group")
                if part not in node:
                    return
                node = node[part]
            if isinstance(node, h5py.Group):
                raise OutputError(f"{name}: is a group of {path}; name a new dataset")
            if not force:
                raise OutputError(f"{name}: already exists",
                                  hint="use --force to replace it; the rest of the file is kept")
    except OutputError:
        raise
    except H5_ERRORS as exc:
        raise OutputError(f"{path}: cannot open the HDF5 file to add {dataset} to it "
                          f"({h5_reason(str(exc))})") from None


def preallocate(descriptor: int, size: int, name: str) -> None:
    """Reserve `size` bytes for a file being written.

    A full disk or a file-size limit is then reported before any data is computed, and
    the filesystem lays the file out in one go (writing 1 GiB takes a steadier time).
    Filesystems that cannot preallocate are written as usual.
    """
    if not hasattr(os, "posix_fallocate"):  # not on macOS: written as it comes
        return
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV, errno.ESPIPE):
            return
        raise output_error(name, exc) from None


def as_bytes(array: np.ndarray) -> memoryview:
    """Return the raw bytes of an array in C order, whatever its dtype's byte order."""
    # NumPy's stubs give ndarray the buffer protocol only for Python 3.12 and later
    return memoryview(
        np.ascontiguousarray(array).reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def pwrite_all(descriptor: int, data: memoryview, offset: int) -> None:
    """Write all of `data` at `offset` of an open file, whatever the file position."""
    done = 0
    while done < len(data):
        done += os.pwrite(descriptor, data[done:], offset + done)


class NpyWriter:
    """Writes a ``.npy`` header and then blocks in storage order to a binary stream.

    Parameters
    ----------
    stream : binary file object
    name : str
        For messages.
    shape : tuple of int
        Logical shape.
    dtype : numpy.dtype
    fortran_order : bool
    """

    def __init__(self, stream: BinaryIO, name: str, shape: tuple, dtype: np.dtype,
                 fortran_order: bool):
        self.stream = stream
        self.name = name
        self.expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
        self.written = 0
        self._write(make_header(shape, dtype, fortran_order))
        self.written = 0

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self.stream.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise output_error(self.name, exc) from None

    #: Whether :meth:`write_part` may be used (a file, not a stream).
    random_access = False

    def write(self, region: tuple, block: np.ndarray) -> None:
        """Append the next block (C-contiguous, storage order)."""
        self._write(as_bytes(block))
        self.written += block.nbytes

    def finish(self) -> None:
        """Flush; every declared byte must have been written."""
        if self.written != self.expected:  # pragma: no cover - an engine bug, not input
            raise OutputError(f"{self.name}: wrote {self.written} of {self.expected} bytes")
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise output_error(self.name, exc) from None


class NpyFileWriter(NpyWriter):
    """Writes a new ``.npy`` file, preallocated, whose blocks may be written in any order.

    Parameters
    ----------
    path : str
        The file to create (the temporary file of an :class:`AtomicFile`).
    name : str
        For messages.
    shape, dtype, fortran_order :
        As :class:`NpyWriter`.
    """

    random_access = True

    def __init__(self, path: str, name: str, shape: tuple, dtype: np.dtype, fortran_order: bool):
        try:
            self._file = open(path, "wb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise output_error(name, exc) from None
        header = make_header(shape, dtype, fortran_order)
        self._shape = tuple(reversed(shape)) if fortran_order else tuple(shape)
        #: Byte offset of the data in the file.
        self.data_offset = len(header)
        self._itemsize = dtype.itemsize
        self._lock = threading.Lock()
        size = len(header) + int(np.prod(shape)) * dtype.itemsize
        try:
            preallocate(self._file.fileno(), size, name)
            super().__init__(self._file, name, shape, dtype, fortran_order)
            self._file.flush()  # the header is in place before any positional write
            self._file.truncate(size)  # the full size even where nothing was preallocated
        except OSError as exc:
            self._file.close()
            raise output_error(name, exc) from None
        except BaseException:
            self._file.close()
            raise

    def write_part(self, region: tuple, block: np.ndarray, start: int, stop: int) -> None:
        """Write the flat elements ``[start, stop)`` of a block (C-contiguous, storage
        order) at their place; thread-safe."""
        part = block.reshape(-1)[start:stop]
        offset = self.data_offset + (region_start(region, self._shape) + start) * self._itemsize
        try:
            pwrite_all(self._file.fileno(), as_bytes(part), offset)
        except OSError as exc:
            raise output_error(self.name, exc) from None
        with self._lock:
            self.written += part.nbytes

    def close(self) -> None:
        """Close the file."""
        self._file.close()


# Bytes of one chunk of an HDF5 output: whole blocks of the engine are whole chunks, and
# each chunk is written once (the writer keeps no chunk cache, see Hdf5Writer).
OUTPUT_CHUNK_BYTES = 2**20


def output_chunks(shape: tuple, itemsize: int, fortran_order: bool,
                  budget_bytes: int | None = None) -> tuple | None:
    """The chunk shape of an HDF5 output: the engine's first block of ~1 MiB (or of
    `budget_bytes`).

    Blocks are runs of storage order (rows of the leading axes), so they are made of whole
    chunks of this shape wherever their extents are multiples of it.
    """
    storage = tuple(reversed(shape)) if fortran_order else tuple(shape)
    if not storage or 0 in storage:
        return None
    chunk = region_shape(next(plan_blocks(storage, itemsize,
                                          budget_bytes or OUTPUT_CHUNK_BYTES)))
    return tuple(reversed(chunk)) if fortran_order else chunk


class Hdf5Writer:
    """Writes one chunked dataset of a new HDF5 file (or of a copy of one), block by block.

    The file has no chunk cache: each block goes to disk as it is written, and nothing is
    left to flush at close. (With dirty chunks cached, a write past a full disk or a
    file-size limit made HDF5 2.0 crash when the file was closed.)

    Parameters
    ----------
    path : str
        File to create (a temporary path), or with `existing` a copy of a file to change.
    name : str
        For messages.
    dataset : str
        Dataset path inside the file (replaced if `existing` holds it).
    shape : tuple of int
        Logical shape.
    dtype : numpy.dtype
    fortran_order : bool
        Whether blocks arrive in Fortran storage order (they are transposed back).
    chunks : tuple of int or None
        Chunk shape; None lets h5py choose.
    attrs : dict
        Attributes of the dataset.
    compression : str or None
        ``gzip`` or ``lzf``, or None.
    existing : bool
        Add the dataset to the HDF5 file at `path` rather than create the file.
    """

    random_access = False  # written in order, by one thread

    # None once closed (or if opening failed)
    file: h5py.File | None
    dataset: h5py.Dataset | None

    # what the dataset is and how it is stored: each argument a fact of the output
    def __init__(self, path: str, name: str, dataset: str, shape: tuple, dtype: np.dtype,
                 fortran_order: bool, chunks: tuple | None, attrs: dict,
                 compression: str | None = None, existing: bool = False):
        import h5py

        from bncli.io.hdf5 import H5_ERRORS, h5_reason
        from bncli.io.targets import check_chunk_count

        if chunks:  # millions of chunks take HDF5 gigabytes and minutes (6.5 GB for 10**6)
            check_chunk_count(name, shape, chunks, dtype.itemsize, fortran_order)
        self.name = name
        self.fortran_order = fortran_order
        self.file = self.dataset = None
        try:
            self.file = h5py.File(path, "r+" if existing else "w", rdcc_nbytes=0)
            if existing and dataset in self.file:  # replaced (checked before)
                del self.file[dataset]
            self.dataset = self.file.create_dataset(
                dataset, shape=shape, dtype=dtype, chunks=chunks or True,
                compression=compression)
            for key, value in attrs.items():
                self.dataset.attrs[key] = value
            return
        except OSError as exc:
            error = output_error(name, exc)
        except H5_ERRORS as exc:  # OSError is taken above
            error = OutputError(f"{name}: cannot create the dataset ({h5_reason(str(exc))})")
        self.close()
        raise error

    def write(self, region: tuple, block: np.ndarray) -> None:
        """Write one block given in storage order."""
        if self.fortran_order:
            region, block = tuple(reversed(region)), block.T
        assert self.dataset is not None  # written to between opening and finish()
        try:
            self.dataset[region] = block
            return
        except OSError as exc:
            error = output_error(self.name, exc)
        # raised here, not in the handler, so that no traceback keeps HDF5 objects alive
        raise error

    def finish(self) -> None:
        """Flush and close the file."""
        assert self.file is not None  # finished once, after it was opened
        try:
            self.file.flush()
            error = None
        except OSError as exc:
            error = output_error(self.name, exc)
        if error is not None:
            raise error
        self.file.close()
        self.dataset = self.file = None

    def close(self) -> None:
        """Close the file without raising (after a failure).

        Closing the file closes every object open in it; only then are the Python handles
        dropped. A handle of a file that failed to flush (a full disk, a file-size limit)
        freed in another order, or kept alive by an exception's traceback, crashes the
        HDF5 library later.
        """
        if self.file is not None:
            try:
                self.file.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                # The HDF5 library may now crash when it shuts down (seen with HDF5 2.0
                # after a write past a file-size limit): the command line then ends
                # without that shutdown, see hdf5_left_broken.
                global _HDF5_LEFT_BROKEN
                _HDF5_LEFT_BROKEN = True
        self.dataset = self.file = None


_HDF5_LEFT_BROKEN = False


class ZarrWriter:
    """Writes one zarr array (format 3) into a new store directory, block by block.

    Parameters
    ----------
    path : str
        The store's directory (a temporary one, renamed into place by the caller).
    name : str
        For messages.
    shape : tuple of int
    dtype : numpy.dtype
    fortran_order : bool
        Whether blocks arrive in Fortran storage order (they are transposed back).
    chunks : tuple of int
        Each chunk is a file: a chunk shape that makes more than
        :data:`~bncli.io.targets.MAX_OUTPUT_CHUNKS` of them is refused before anything is
        written.
    attrs : dict
        JSON attributes of the array.
    compression : str or None
        ``gzip``, ``none``, or None for zarr's default (zstd).
    """

    random_access = False

    def __init__(self, path: str, name: str, shape: tuple, dtype: np.dtype,
                 fortran_order: bool, chunks: tuple, attrs: dict,
                 compression: str | None = None):
        from bncli.io.targets import check_chunk_count

        check_chunk_count(name, shape, chunks, dtype.itemsize, fortran_order)
        import zarr

        interrupts.start_zarr_quietly()

        self.name = name
        self.fortran_order = fortran_order
        options = {}
        if compression == "gzip":
            # zarr.codecs is loaded by ``import zarr`` but not declared in its __init__
            options["compressors"] = zarr.codecs.GzipCodec()  # type: ignore[attr-defined]
        elif compression == "none":
            options["compressors"] = None
        try:
            self.array = zarr.create_array(
                store=zarr.storage.LocalStore(path), shape=shape, chunks=chunks,
                dtype=dtype.newbyteorder("="), attributes=attrs, zarr_format=3,
                overwrite=True, **options)
        except OSError as exc:
            raise output_error(name, exc) from None

    def write(self, region: tuple, block: np.ndarray) -> None:
        """Write one block given in storage order."""
        if self.fortran_order:
            region, block = tuple(reversed(region)), block.T
        try:
            self.array[region] = block
        except OSError as exc:
            raise output_error(self.name, exc) from None

    def finish(self) -> None:
        """Nothing is buffered: each write is in the store when it returns."""

    def close(self) -> None:
        """Nothing to release."""


def hdf5_left_broken() -> bool:
    """Whether an HDF5 output failed so that the library could not close it cleanly."""
    return _HDF5_LEFT_BROKEN


def stdout_stream(inputs: Iterable[str] = ()) -> BinaryIO:
    """Return the binary stdout, refusing a terminal and a file that is one of `inputs`
    (``bn normalize x.npy >> x.npy``)."""
    stream = sys.stdout.buffer
    if stream.isatty():
        raise UsageError("<stdout>: is a terminal; refusing to write binary .npy data",
                         hint="use -o FILE or a pipe")
    try:
        target = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return stream
    if stat.S_ISREG(target.st_mode):
        _refuse_inputs("<stdout>", target, inputs)
    return stream


def spool_stdin(source: Source, directory: str | None = None,
                chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[Source, str]:
    """Copy a ``.npy`` stream to a temporary file so that it can be read twice.

    Parameters
    ----------
    source : Source
        An opened stdin source (its header already checked).
    directory : str, optional
        Where to put the file (default: the system temporary directory).

    Returns
    -------
    (Source, str)
        The source reading the spooled file (named as the stream), and the file's path,
        which the caller removes.
    """
    import tempfile

    try:
        handle, path = tempfile.mkstemp(prefix="bn-stdin-", suffix=".npy", dir=directory)
    except OSError as exc:
        raise _spool_error(source, directory, exc) from None
    try:
        try:
            with os.fdopen(handle, "wb") as spool:
                spool.write(make_header(source.shape, source.dtype, source.fortran_order))
                for _region, block in source.blocks(chunk_bytes):
                    spool.write(as_bytes(block))
        except OSError as exc:
            raise _spool_error(source, os.path.dirname(path), exc) from None
        from bncli.io.registry import open_source

        spooled = open_source(path)
        spooled.name = source.name
        spooled.path = source.path
        return spooled, path
    except BaseException:
        os.unlink(path)
        raise


def _spool_error(source: Source, directory: str | None, exc: OSError) -> InputError:
    import tempfile

    where = directory or tempfile.gettempdir()
    return InputError(f"{source.name}: cannot keep a copy for the second pass in {where}: "
                      f"{exc.strerror or exc}", hint="set TMPDIR to a directory with room")
