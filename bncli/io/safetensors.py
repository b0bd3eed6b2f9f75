"""The safetensors format, read without a framework and without trusting its header.

A ``.safetensors`` file is::

    N (uint64 LE)  header (N bytes of UTF-8 JSON)  data

The header maps each tensor's name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets into ``data``), plus an optional ``"__metadata__"`` map of strings. Data is raw and
little-endian, in C order. Everything is checked before any data is read: the header size
(at most :data:`MAX_HEADER_SIZE` and inside the file), its JSON (no duplicate names), each
entry's dtype and shape, that its offsets lie inside the file and span exactly shape times
item size, and that no two tensors overlap.

bfloat16 and the two 8-bit float formats have no NumPy dtype; they are widened exactly to
float32 as they are read (:func:`widen`). :func:`write` writes a file of NumPy arrays.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from bncli.core.dtypes import rank_problem
from bncli.errors import InputError, OutputError
from bncli.io.npy import RawSource
from bncli.io.source import Entry, InputSpec, OpenOptions, Source, choose, open_file

MAX_HEADER_SIZE = 100 * 2**20
METADATA = "__metadata__"

# safetensors dtype -> (dtype as stored, dtype as read); they differ for the widened types.
DTYPES = {
    "BOOL": ("|b1", "|b1"),
    "U8": ("|u1", "|u1"),
    "I8": ("|i1", "|i1"),
    "U16": ("<u2", "<u2"),
    "I16": ("<i2", "<i2"),
    "U32": ("<u4", "<u4"),
    "I32": ("<i4", "<i4"),
    "U64": ("<u8", "<u8"),
    "I64": ("<i8", "<i8"),
    "F16": ("<f2", "<f2"),
    "F32": ("<f4", "<f4"),
    "F64": ("<f8", "<f8"),
    "BF16": ("<u2", "<f4"),
    "F8_E4M3": ("|u1", "<f4"),
    "F8_E5M2": ("|u1", "<f4"),
}
# bytes per value of the safetensors types bn does not reduce (complex; packed sub-byte
# floats have none), to check their sizes all the same
OTHER_ITEMSIZES = {"C64": 8, "F8_E8M0": 1}
_NAMES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3", "F8_E5M2": "float8_e5m2"}
# bytes per value of the types NumPy lacks, by the names reports give them
ITEMSIZES = {name: np.dtype(DTYPES[code][0]).itemsize for code, name in _NAMES.items()}
# the other way, for writing NumPy arrays
_CODES = {np.dtype(stored).str: code for code, (stored, read) in DTYPES.items()
          if stored == read}


@dataclass(frozen=True)
class Tensor:
    """One entry of a safetensors header.

    Attributes
    ----------
    name : str
    code : str
        The safetensors dtype (``F32``, ``BF16``, ...).
    shape : tuple of int
    offset : int
        Byte offset of the first data byte in the file.
    nbytes : int
    """

    name: str
    code: str
    shape: tuple
    offset: int
    nbytes: int
    problem: str | None = None

    @property
    def stored_dtype(self) -> np.dtype:
        """The dtype of the bytes in the file (uint16 for bfloat16)."""
        return np.dtype(DTYPES[self.code][0])

    @property
    def dtype(self) -> np.dtype:
        """The dtype the values are read as (float32 for the widened types)."""
        return np.dtype(DTYPES[self.code][1])

    @property
    def dtype_name(self) -> str:
        """The name of the stored type, for reports (``bfloat16``, ``float8_e4m3``)."""
        if self.code not in DTYPES:
            return self.code
        return _NAMES.get(self.code, self.dtype.name)


def _unique_keys(pairs: list) -> dict:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"names {twice[:3]} appear more than once")
    return dict(pairs)


def read_header(stream: BinaryIO, size: int, name: str) -> tuple[dict, dict]:
    """Read and validate the header of a safetensors file.

    Parameters
    ----------
    stream : binary file object
        Positioned at the start of the file.
    size : int
        The file's size in bytes.
    name : str
        For messages.

    Returns
    -------
    tensors : dict
        Name to :class:`Tensor`, in the order of their data.
    metadata : dict
        The header's ``__metadata__`` (strings).
    """
    prefix = stream.read(8)
    if len(prefix) < 8:
        raise InputError(f"{name}: file of {len(prefix)} bytes is too short for a "
                         "safetensors header")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_SIZE:
        raise InputError(f"{name}: safetensors header of {length} bytes is over the limit "
                         f"of {MAX_HEADER_SIZE} bytes")
    if length > size - 8:
        raise InputError(f"{name}: safetensors header of {length} bytes is longer than the "
                         f"{size - 8} bytes that follow")
    raw = stream.read(length)
    if len(raw) < length:
        raise InputError(f"{name}: file ends inside the safetensors header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: safetensors header is not UTF-8 text (byte {exc.start})"
                         ) from None
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{name}: safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InputError(f"{name}: safetensors header is not a JSON object")
    metadata = header.pop(METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(value, str) for value in metadata.values()):
        raise InputError(f"{name}: safetensors {METADATA} is not a map of strings")
    data_start, data_size = 8 + length, size - 8 - length
    tensors = [_entry(key, value, data_start, data_size, name) for key, value in header.items()]
    tensors.sort(key=lambda tensor: (tensor.offset, tensor.nbytes))
    for before, after in zip(tensors, tensors[1:]):
        if after.offset < before.offset + before.nbytes:
            raise InputError(f"{name}: tensors {before.name!r} and {after.name!r} overlap "
                             "in the file")
    return {tensor.name: tensor for tensor in tensors}, metadata


def _entry(key: str, value: object, data_start: int, data_size: int, name: str) -> Tensor:
    where = f"{name}: tensor {key!r}"
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data_offsets"}:
        raise InputError(f"{where}: entry is not {{dtype, shape, data_offsets}}")
    code, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if not isinstance(code, str) or not code or len(code) > 40:
        raise InputError(f"{where}: dtype {code!r:.40} is not a type name")
    if (not isinstance(shape, list)
            or not all(type(dim) is int and dim >= 0 for dim in shape)):
        raise InputError(f"{where}: shape {shape!r:.80} is not a list of sizes")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(offset) is int for offset in offsets)):
        raise InputError(f"{where}: data_offsets {offsets!r:.80} are not [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise InputError(f"{where}: data_offsets [{begin}, {end}] fall outside the "
                         f"{data_size} data bytes of the file")
    itemsize = np.dtype(DTYPES[code][0]).itemsize if code in DTYPES else OTHER_ITEMSIZES.get(
        code)
    if itemsize is not None and math.prod(shape) * itemsize != end - begin:
        raise InputError(f"{where}: shape {tuple(shape)} of {code} needs "
                         f"{math.prod(shape) * itemsize} bytes, data_offsets give "
                         f"{end - begin}")
    # a tensor bn cannot reduce is listed with the reason, beside the others
    problem = rank_problem(len(shape)) if code in DTYPES else (
        f"its dtype {code} is not supported; bn reads {', '.join(DTYPES)}")
    return Tensor(key, code, tuple(shape), data_start + begin, end - begin, problem)


def _e4m3_table() -> np.ndarray:
    """float32 value of every float8 e4m3 ("fn": no infinities, NaN at S.1111.111) byte."""
    byte = np.arange(256)
    exponent, mantissa = (byte >> 3) & 0xF, (byte & 7).astype(np.float64)
    magnitude = np.where(exponent == 0, mantissa / 8 * 2.0**-6,
                         (1 + mantissa / 8) * 2.0 ** (exponent - 7))
    value = np.where(byte & 0x80, -magnitude, magnitude)
    value[(byte & 0x7F) == 0x7F] = np.nan
    return value.astype(np.float32)


_E4M3 = _e4m3_table()


def widen(code: str, raw: np.ndarray, out: np.ndarray) -> None:
    """Widen stored values of a type NumPy lacks exactly into the float32 array `out`.

    Parameters
    ----------
    code : str
        ``BF16``, ``F8_E4M3`` or ``F8_E5M2``.
    raw : ndarray
        The stored bytes as uint16 (bfloat16) or uint8.
    out : ndarray of float32
        Same shape as `raw`.
    """
    if code == "BF16":  # the top half of a float32
        np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)
    elif code == "F8_E5M2":  # the top half of a float16
        np.copyto(out, np.left_shift(raw, 8, dtype=np.uint16).view(np.float16))
    else:
        np.take(_E4M3, raw, out=out)


def write(path: str, tensors: dict, metadata: dict | None = None) -> None:
    """Write NumPy arrays as a safetensors file (the caller makes it atomic).

    Parameters
    ----------
    path : str
    tensors : dict
        Name to array; arrays are stored little-endian in C order.
    metadata : dict, optional
        Strings for ``__metadata__``.
    """
    header: dict = {METADATA: dict(metadata)} if metadata else {}
    arrays, offset = [], 0
    for key, array in tensors.items():
        array = np.array(array, np.asarray(array).dtype.newbyteorder("<"), order="C")
        code = _CODES.get(array.dtype.str)
        if code is None:
            raise OutputError(f"{path}: tensor {key!r} of dtype {array.dtype.name} has no "
                              "safetensors type")
        header[key] = {"dtype": code, "shape": list(array.shape),
                       "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data aligned to 8 bytes, as the reference writer does
    with open(path, "wb") as stream:
        stream.write(struct.pack("<Q", len(text)) + text)
        for array in arrays:
            stream.write(array.tobytes())
        stream.flush()
        os.fsync(stream.fileno())


def tensor_source(stream: BinaryIO, tensor: Tensor, name: str, path: str) -> RawSource:
    """One tensor of a safetensors file: raw little-endian C-order data at an offset, read at
    any offset like a ``.npy`` file (bfloat16 and float8 widened to float32 as read)."""
    return RawSource(stream, name=name, path=path, dataset=tensor.name, shape=tensor.shape,
                     dtype=tensor.dtype, offset=tensor.offset, seekable=True,
                     stored_as=tensor.dtype_name, widen=None if tensor.stored_dtype ==
                     tensor.dtype else (tensor.stored_dtype, functools.partial(widen, tensor.code)),
                     details={"format": "safetensors", "data_offset": tensor.offset,
                              "stored_bytes": tensor.nbytes})



def _ninth_byte(path: str) -> bytes:
    with open_file(path, path) as probe:
        probe.seek(8)
        return probe.read(1)


class SafetensorsFormat:
    """safetensors: a JSON header of tensors, then their raw bytes; ``FILE:TENSOR``."""

    name = "safetensors"
    suffixes = ("safetensors",)

    def matches(self, path: str, head: bytes) -> bool:
        # by its name, or by a header size that fits and a header that starts as JSON does
        return path.lower().endswith(".safetensors") or (
            len(head) == 8 and int.from_bytes(head, "little") < 2**27
            and _ninth_byte(path) == b"{")

    def open(self, spec: InputSpec, options: OpenOptions) -> Source:
        name = spec.display
        stream = open_file(spec.path, name)
        try:
            tensors, _ = read_header(stream, os.fstat(stream.fileno()).st_size, name)
            tensor = choose(tensors, spec.dataset, name, "tensor")
            if tensor.problem is not None:
                raise InputError(f"{spec.path}:{tensor.name}: {tensor.problem}")
            return tensor_source(stream, tensor, f"{spec.path}:{tensor.name}", spec.path)
        except BaseException:
            stream.close()
            raise

    def entries(self, path: str, name: str) -> list | None:
        with open_file(path, name) as stream:
            tensors, _ = read_header(stream, os.fstat(stream.fileno()).st_size, name)
        return [Entry("tensor", tensor.name, tensor.shape, tensor.dtype_name,
                      problem=tensor.problem, stored_bytes=tensor.nbytes)
                for tensor in tensors.values()]


FORMAT = SafetensorsFormat()
