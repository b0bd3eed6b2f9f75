"""The .npy reader against hand-made files: every layout it must read, every lie it must catch."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import assert_close, reference_moments, stats_json

from bncli.io.npy import make_header


def npy_bytes(header: str | bytes, data: bytes = b"", version=(1, 0)) -> bytes:
    """A .npy file from a literal header text (padded as NumPy does) and raw data."""
    body = header.encode("latin1") if isinstance(header, str) else header
    prefix = 10 if version[0] == 1 else 12
    body = body + b" " * ((-(prefix + len(body) + 1)) % 64) + b"\n"
    length = struct.pack("<H" if version[0] == 1 else "<I", len(body))
    return b"\x93NUMPY" + bytes(version) + length + body + data


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("descr", ["<f4", ">f4", "<f8", ">i2", "|u1", "|b1", "<f2"])
@pytest.mark.parametrize("fortran", [False, True])
def test_reads_every_version_byte_order_and_layout(tmp_path, invoke, version, descr, fortran):
    rng = np.random.default_rng(5)
    values = (rng.standard_normal((6, 5, 4)) * 20).astype(np.dtype(descr))
    header = (f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': (6, 5, 4), }}")
    data = values.tobytes(order="F" if fortran else "C")
    path = tmp_path / "x.npy"
    path.write_bytes(npy_bytes(header, data, version))
    result = invoke("stats", path, "--axes", "0,1", "--format", "json", "--chunk-bytes", "40")
    assert result.exit_code == 0, result.output
    document = stats_json(result.stdout)
    mean, variance = reference_moments(values, (0, 1))
    assert_close(document["mean"], mean)
    assert_close(document["variance"], variance, rtol=1e-11)
    assert document["inputs"][0]["shape"] == [6, 5, 4]


def test_our_header_reads_back_with_numpy(tmp_path):
    for shape, dtype, fortran in [((3, 4), np.float32, False), ((2, 3, 5), np.float16, True),
                                  ((7,), np.float64, False)]:
        path = tmp_path / "h.npy"
        values = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
        path.write_bytes(make_header(shape, np.dtype(dtype), fortran)
                         + values.tobytes(order="F" if fortran else "C"))
        loaded = np.load(path)
        assert loaded.shape == shape and loaded.dtype == dtype
        assert np.array_equal(loaded, values)
        assert loaded.flags.f_contiguous == fortran or len(shape) == 1


def write(tmp_path, content: bytes, name="bad.npy"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


GOOD = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
BROKEN = {
    "empty": (b"", "empty file, not a .npy file"),
    "bad magic": (b"\x93NUMPX\x01\x00" + b"\x00" * 80, "not a file bn reads (.npy, .npz"),
    "version": (npy_bytes(GOOD, b"\x00" * 24)[:6] + b"\x04\x00" + b"\x00" * 80,
                "unsupported .npy format version 4.0"),
    "short header": (npy_bytes(GOOD)[:30], "file ends inside the .npy header"),
    "not literal": (npy_bytes("{'descr': os.system('x')}"), ".npy header is not a Python literal"),
    "not dict": (npy_bytes("[1, 2, 3]"), ".npy header is not a dict"),
    "missing key": (npy_bytes("{'descr': '<f4', 'shape': (2, 3)}"), ".npy header keys are"),
    "extra key": (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}"),
                  ".npy header keys are"),
    "pickle": (npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
                         b"\x80\x04" * 8), "object arrays (pickled data) are refused"),
    "complex": (npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
                          b"\x00" * 16), "its dtype complex64 is complex, which is not supported"),
    "string": (npy_bytes("{'descr': '<U4', 'fortran_order': False, 'shape': (2,), }",
                         b"\x00" * 32), "its dtype '<U4' (str128) is not numeric"),
    "bytes": (npy_bytes("{'descr': '|S4', 'fortran_order': False, 'shape': (2,), }",
                        b"\x00" * 8), "is not numeric"),
    "datetime": (npy_bytes("{'descr': '<M8[s]', 'fortran_order': False, 'shape': (2,), }",
                           b"\x00" * 16), "is not numeric"),
    "void": (npy_bytes("{'descr': '|V8', 'fortran_order': False, 'shape': (2,), }",
                       b"\x00" * 16), "is not numeric"),
    "structured": (npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, "
                             "'shape': (2,), }", b"\x00" * 8), "its dtype is structured"),
    "bad shape": (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }"),
                  ".npy shape is not a tuple of sizes"),
    "overflow": (npy_bytes("{'descr': '<f8', 'fortran_order': False, "
                           "'shape': (2**40, 2**40), }".replace("2**40", str(2**40))),
                 "is too large for any file"),
    "truncated data": (npy_bytes(GOOD, b"\x00" * 12),
                       "header declares 2x3 float32 (24 bytes) but the file holds 12 bytes"),
    "trailing data": (npy_bytes(GOOD, b"\x00" * 30), "6 bytes of trailing data follow"),
    "huge header": (b"\x93NUMPY\x02\x00" + struct.pack("<I", 200000) + b" " * 100,
                    ".npy header of 200000 bytes is over the limit of 10000 bytes"),
    "header past end": (b"\x93NUMPY\x01\x00" + struct.pack("<H", 5000) + b"{}",
                        "file ends inside the .npy header (2 of 5000 bytes)"),
    "fortran not bool": (npy_bytes("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,), }"),
                         "fortran_order is not a bool"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("command", ["stats", "info"])
def test_broken_files_get_one_clear_error(tmp_path, invoke, case, command):
    content, message = BROKEN[case]
    path = write(tmp_path, content)
    result = invoke(command, path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"bn: error: {path}: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy"]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_streams_on_stdin_get_one_clear_error(invoke, case):
    content, message = BROKEN[case]
    result = invoke("stats", "-", input=content)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("bn: error: <stdin>: ")
    assert result.stderr.count("\n") == 1
    if case not in ("truncated data", "trailing data"):  # a stream has no size to check first
        assert message in result.stderr
