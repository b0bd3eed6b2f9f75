"""Where ``normalize`` writes: a ``.npy`` file, an HDF5 dataset (in a new file or added to an
existing one), a zarr store, or stdout; parsed and checked once, before any data is read."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from bncli.core.layout import format_shape, plan_blocks, region_shape
from bncli.errors import UsageError
from bncli.io.hdf5 import HDF5_SUFFIX, has_hdf5_signature, split_hdf5_file

# The dataset of an HDF5 output when neither the output nor the input names one.
DEFAULT_OUTPUT_DATASET = "/data"
COMPRESSIONS = (None, "none", "gzip", "lzf")
# Each chunk of a zarr output is a file; a chunk shape that would make more chunks than this
# is refused before anything is written (100,000 chunk files take about a minute to write).
MAX_OUTPUT_CHUNKS = 100_000


@dataclass(frozen=True)
class Target:
    """A parsed output argument.

    Attributes
    ----------
    path : str
        ``-`` for stdout.
    dataset : str or None
        An HDF5 output's dataset, as an absolute path.
    hdf5, zarr : bool
        The kind of output (neither: ``.npy``, or stdout).
    """

    path: str
    dataset: str | None = None
    hdf5: bool = False
    zarr: bool = False

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parse ``-``, ``out.npy``, ``out.h5``, ``out.h5:/dataset`` or ``out.zarr``."""
        if text.rstrip("/").lower().endswith(".zarr"):
            return cls(text.rstrip("/"), zarr=True)
        match = HDF5_SUFFIX.match(text)
        if text != "-" and match:
            return cls(match.group("path"), match.group("dataset") or None, hdf5=True)
        if has_hdf5_signature(text):
            return cls(text, None, hdf5=True)
        named = split_hdf5_file(text)  # an existing HDF5 file of any name
        if named:
            path, dataset = named
            return cls(path, dataset, hdf5=True)
        if text != "-" and not text.lower().endswith(".npy"):
            raise UsageError(f"{text}: the output must be a .npy file, an HDF5 file "
                             "(out.h5 or out.h5:/dataset), a zarr store (out.zarr), or - "
                             "for stdout")
        return cls(text)

    def __post_init__(self) -> None:
        if self.dataset is not None:
            parts = [part for part in self.dataset.split("/") if part]
            for part in parts:
                if part in (".", ".."):
                    raise UsageError(f"{self.path}:{self.dataset}: has a {part!r} component; "
                                     "name the dataset by its path from the root")
            object.__setattr__(self, "dataset", "/" + "/".join(parts) if parts else None)

    @property
    def stdout(self) -> bool:
        """Whether the output is standard output."""
        return self.path == "-"

    def check_encoding(self, compression: str | None, chunks: Sequence[int] | None) -> None:
        """Refuse a compression or chunk shape that this kind of output does not take."""
        if compression not in COMPRESSIONS:
            raise UsageError(f"compression {compression!r} is not gzip, lzf or none")
        if (compression not in (None, "none") or chunks is not None) and not (
                self.hdf5 or self.zarr):
            raise UsageError("compression and chunks apply to HDF5 and zarr outputs only")
        if compression == "lzf" and self.zarr:
            raise UsageError("a zarr output takes gzip or none (or zarr's zstd by default), "
                             "not lzf")

    def dataset_for(self, input_dataset: str | None) -> str:
        """The dataset an HDF5 output is written to: as named, or as the input's, or
        :data:`DEFAULT_OUTPUT_DATASET`."""
        return self.dataset or input_dataset or DEFAULT_OUTPUT_DATASET


def chunk_shape(chunks: Sequence[int], shape: tuple) -> tuple:
    """A chunk shape given for an HDF5 or zarr output, checked against `shape` and cut to it."""
    chunks = tuple(int(size) for size in chunks)
    if len(chunks) != len(shape) or min(chunks, default=1) < 1:
        raise UsageError(f"chunks {list(chunks)} do not fit the shape {format_shape(shape)}")
    return tuple(min(size, max(dim, 1)) for size, dim in zip(chunks, shape))


def chunk_count(shape: Sequence[int], chunks: Sequence[int]) -> int:
    """The number of chunks of shape `chunks` that cover an array of `shape`."""
    return math.prod(-(-int(dim) // max(int(size), 1)) for dim, size in zip(shape, chunks))


def check_chunk_count(name: str, shape: tuple, chunks: Sequence[int], itemsize: int,
                      fortran_order: bool = False) -> None:
    """Refuse a chunk shape that would cut an output into more than
    :data:`MAX_OUTPUT_CHUNKS` chunks; the error suggests one that would not.

    Parameters
    ----------
    name : str
        The output, for the message.
    shape : tuple of int
        The output's shape.
    chunks : sequence of int
        Its chunk shape.
    itemsize : int
        Bytes of one value of the output.
    fortran_order : bool
        Whether the output is written in Fortran order (the suggested chunks follow it).

    Raises
    ------
    UsageError
        Naming the output, the number of chunks, the limit and a chunk shape within it.
    """
    count = chunk_count(shape, chunks)
    if count <= MAX_OUTPUT_CHUNKS:
        return
    suggestion = ",".join(map(str, suggest_chunks(shape, itemsize, fortran_order)))
    raise UsageError(f"{name}: chunks {','.join(map(str, chunks))} would cut its shape "
                     f"{format_shape(shape)} into {count:,} chunks, more than the "
                     f"{MAX_OUTPUT_CHUNKS:,} an output may have; refused",
                     hint=f"use --chunks {suggestion}")


def suggest_chunks(shape: tuple, itemsize: int, fortran_order: bool = False) -> tuple:
    """A chunk shape for `shape`: a block of whole rows of at least 1 MiB (or the whole
    array), large enough to cut it into at most half of :data:`MAX_OUTPUT_CHUNKS` chunks."""
    storage = tuple(reversed(shape)) if fortran_order else tuple(shape)
    total = math.prod(storage) * itemsize
    budget = max(2**20, -(-2 * total // MAX_OUTPUT_CHUNKS))
    while True:
        chunks = region_shape(next(plan_blocks(storage, itemsize, budget)))
        if chunk_count(storage, chunks) <= MAX_OUTPUT_CHUNKS // 2 or budget >= total:
            return tuple(reversed(chunks)) if fortran_order else chunks
        budget *= 2


def same_file(first: str, second: str) -> bool:
    """Whether two paths name one file (False where either does not exist)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False
