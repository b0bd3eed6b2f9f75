"""Reading and writing the header of the NumPy ``.npy`` format, without trusting it.

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
import math
import struct
import warnings
from dataclasses import dataclass

import numpy as np

from bncli.errors import InputError

MAGIC = b"\x93NUMPY"
# NumPy refuses headers above this size by default: literal_eval is not safe for large inputs.
MAX_HEADER_SIZE = 10000
# Output headers are padded so that the data starts on this boundary, as NumPy does.
HEADER_ALIGNMENT = 64
_HEADER_KEYS = {"descr", "fortran_order", "shape"}
# Kinds whose values we can reduce in float64: bool, signed, unsigned, floating.
NUMERIC_KINDS = "biuf"


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


def _read_exact(stream, count: int, name: str, what: str) -> bytes:
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


def check_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """Refuse every dtype that is not bool, integer or real floating of at most 8 bytes.

    Parameters
    ----------
    dtype : numpy.dtype
    name : str
        Input name for the error message.

    Returns
    -------
    numpy.dtype
        The same dtype.
    """
    if dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{name}: structured dtype {dtype.descr!r} is not supported")
    if dtype.kind == "c":
        raise InputError(f"{name}: complex dtype {dtype.name!r} is not supported")
    if dtype.kind not in NUMERIC_KINDS:
        raise InputError(
            f"{name}: dtype {dtype.str!r} ({dtype.name}) is not numeric; "
            "bn reads bool, integer and floating data"
        )
    if dtype.itemsize > 8:
        raise InputError(f"{name}: dtype {dtype.name!r} is wider than float64 and not supported")
    return dtype


def read_header(stream, name: str) -> NpyHeader:
    """Read and validate a ``.npy`` header from a binary stream positioned at its start.

    Parameters
    ----------
    stream : binary file object
        Read sequentially; left positioned at the first data byte.
    name : str
        Input name for error messages.

    Returns
    -------
    NpyHeader
    """
    magic = _read_exact(stream, 6, name, "magic")
    if magic != MAGIC:
        raise InputError(f"{name}: not a .npy file (magic bytes {magic!r})")
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
            header = ast.literal_eval(text)
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
            raise InputError(f"{name}: structured dtype {descr!r:.80} is not supported")
        raise InputError(f"{name}: .npy descr is not a dtype string: {descr!r:.80}")
    if descr.lstrip("<>|=").startswith("O"):
        raise InputError(
            f"{name}: object arrays (pickled data) are refused; bn never unpickles"
        )
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: .npy descr {descr!r:.80} is not a valid dtype") from exc
    check_dtype(dtype, name)
    shape = header["shape"]
    if (
        not isinstance(shape, tuple)
        or not all(type(dim) is int for dim in shape)
        or any(dim < 0 for dim in shape)
    ):
        raise InputError(f"{name}: .npy shape is not a tuple of sizes: {shape!r:.80}")
    if len(shape) > 64:
        raise InputError(f"{name}: .npy shape has {len(shape)} dimensions, more than 64")
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
