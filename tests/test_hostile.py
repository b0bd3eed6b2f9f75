"""Files bn did not expect, through the real command: names holding ``:`` and ``/``, element
types it refuses beside ones it reads, HDF5 array types, archives of many members, entries
``--each`` cannot reduce, and messages for files of other formats."""

from __future__ import annotations

import json
import struct

import h5py
import numpy as np
import pytest
from conftest import run_bn, run_bn_peak, stats_json

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def error_line(result) -> str:
    """The one stderr line of a refused run."""
    message = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert message.count("\n") == 1 and message.startswith("bn: error: "), message
    assert "Traceback" not in message and "unexpected" not in message
    return message


# -- FILE:NAME: the name is everything after the split, ':' and '/' included ---------------

def test_entry_names_holding_colons_and_slashes_are_named_whole(invoke, tmp_path):
    first, second = np.arange(6, dtype=np.float32).reshape(3, 2), np.full((2, 2), 4.0)
    folder = tmp_path / "run:7"  # a directory whose name holds ':' too
    folder.mkdir()
    safetensors_numpy.save_file({"a:b": first, "x/y": second.astype(np.float32)},
                                str(folder / "t.safetensors"))
    np.savez(folder / "m.npz", **{"a:b": first, "g/h": second})
    with h5py.File(folder / "f.h5", "w") as h5:
        h5["g/a:b"] = first
    (folder / "plain").write_bytes((folder / "m.npz").read_bytes())  # a name of no format
    cases = {"t.safetensors:a:b": first, "t.safetensors:x/y": second, "m.npz:a:b": first,
             "m.npz:g/h": second, "f.h5:/g/a:b": first, "f.h5:g/a:b": first,
             "plain:a:b": first}
    for text, values in cases.items():
        result = invoke("stats", f"{folder}/{text}", "--format", "json")
        assert result.exit_code == 0, (text, result.stderr)
        document = stats_json(result.stdout)
        np.testing.assert_array_equal(document["mean"], values.mean(axis=0))
        named = text.split(":", 1)[1]
        assert document["inputs"][0]["dataset"] in (named, "/" + named)  # HDF5's are absolute


def test_a_name_that_is_not_in_the_file_is_named_in_the_error(invoke, tmp_path):
    safetensors_numpy.save_file({"a:b": np.zeros(2, np.float32)}, str(tmp_path / "t.safetensors"))
    result = invoke("stats", tmp_path / "t.safetensors:a")
    assert result.exit_code == 1
    assert "no tensor 'a' (tensors: a:b)" in error_line(result)
    np.save(tmp_path / "x.npy", np.zeros(3))
    result = invoke("stats", tmp_path / "x.npy:foo")
    assert result.exit_code == 1
    assert "holds one array" in error_line(result)


# -- refused element types: said once, in plain words; the rest of the file stays usable ---

def test_refused_types_are_listed_beside_usable_ones(invoke, tmp_path):
    np.savez(tmp_path / "mix.npz", good=np.arange(3.0), c=np.zeros(2, np.complex128),
             wide=np.zeros(2, np.longdouble))
    result = invoke("info", tmp_path / "mix.npz", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["dataset"]: row for row in json.loads(result.stdout)[0]["datasets"]}
    assert rows["good"]["usable"] and rows["good"]["shape"] == [3]
    assert rows["c"]["shape"] == [2] and rows["c"]["dtype"] == "complex128"
    assert rows["c"]["problem"].startswith("its dtype complex128 is complex, which is not")
    assert "wider than 8 bytes" in rows["wide"]["problem"]
    assert json.loads(result.stdout)[0]["shape"] == [3]  # the one usable array, described
    text = invoke("info", tmp_path / "mix.npz").stdout
    assert "None" not in text and "empty" not in text
    result = invoke("stats", f"{tmp_path}/mix.npz:c")
    assert result.exit_code == 1
    assert error_line(result) == (
        f"bn: error: {tmp_path}/mix.npz:c: its dtype complex128 is complex, which is not "
        "supported; bn reads bool, integer and real floating data of up to 8 bytes\n")


def _quad(h5file: h5py.File, name: str) -> None:
    """A dataset of IEEE quad precision floats, a type h5py maps to no NumPy dtype."""
    quad = h5py.h5t.IEEE_F64LE.copy()
    quad.set_size(16)
    quad.set_precision(128)
    quad.set_fields(127, 112, 15, 0, 112)
    quad.set_ebias(16383)
    h5py.h5d.create(h5file.id, name.encode(), quad, h5py.h5s.create_simple((4,)))


def test_a_quad_precision_dataset_is_named_as_such_not_as_damage(invoke, tmp_path):
    path = tmp_path / "quad.h5"
    with h5py.File(path, "w") as h5:
        _quad(h5, "q")
        h5["ok"] = np.arange(3.0)
    result = invoke("info", path, "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["dataset"]: row for row in json.loads(result.stdout)[0]["datasets"]}
    assert rows["/ok"]["usable"]
    assert "16-byte float" in rows["/q"]["problem"] and rows["/q"]["dtype"] is None
    result = invoke("stats", f"{path}:/q")
    assert result.exit_code == 1
    message = error_line(result)
    assert "16-byte float" in message and "damaged" not in message


# -- HDF5 array types (f8[3]) are an extra trailing axis, as h5py reads them ----------------

@pytest.mark.parametrize("chunked", [False, True])
def test_hdf5_array_types_are_a_trailing_axis(invoke, tmp_path, chunked):
    values = np.random.default_rng(1).standard_normal((40, 2, 3))
    path = tmp_path / "arrays.h5"
    with h5py.File(path, "w") as h5:
        element = h5py.h5t.array_create(h5py.h5t.IEEE_F64LE, (2, 3))
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        if chunked:
            plist.set_chunk((7,))
            plist.set_deflate(4)
        h5py.h5d.create(h5.id, b"a", element, h5py.h5s.create_simple((40,)), dcpl=plist)
        h5["a"][...] = values
    listing = json.loads(invoke("info", path, "--json").stdout)[0]
    assert listing["shape"] == [40, 2, 3] and listing["dtype"] == "float64"
    result = invoke("stats", path, "--axes", "0", "--format", "json", "--chunk-bytes", "512")
    assert result.exit_code == 0, result.stderr
    document = stats_json(result.stdout)
    assert document["channel_shape"] == [2, 3]
    np.testing.assert_allclose(document["mean"], values.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(document["variance"], values.var(axis=0), rtol=1e-12)


# -- --each: what cannot be reduced is skipped with one line; the exit status says if any was

def test_each_skips_an_entry_it_cannot_reduce_and_says_so(invoke, tmp_path):
    path = tmp_path / "partly.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("never", shape=(100, 4), chunks=(10, 4), dtype="f4")
        h5["ok"] = np.arange(8.0).reshape(4, 2)
        _quad(h5, "quad")
    listing = json.loads(invoke("info", path, "--json").stdout)[0]["datasets"]
    assert {row["dataset"]: row["usable"] for row in listing} == {
        "/never": True, "/ok": True, "/quad": False}
    result = invoke("stats", path, "--each", "--format", "json")
    assert result.exit_code == 0
    rows = {row["tensor"]: row for row in json.loads(result.stdout)}
    assert rows["/ok"]["statistics"]["mean"] == 3.5
    assert "no data was ever written" in rows["/never"]["skipped"]
    lines = result.stderr.splitlines()
    assert [line.split(":", 2)[1] for line in lines] == [" skipped " + str(path)] * 2
    assert any("/never: declares shape 100x4 but no data" in line for line in lines)
    # nothing reducible: an error
    with h5py.File(tmp_path / "none.h5", "w") as h5:
        h5.create_dataset("never", shape=(10,), chunks=(5,), dtype="f4")
        _quad(h5, "quad")
    result = invoke("stats", tmp_path / "none.h5", "--each", "-q")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "bn: error: no array could be reduced"
    # --fail-on still fails on a finding of what was reduced
    result = invoke("stats", path, "--each", "-q", "--fail-on", "dead")
    assert result.exit_code == 0
    with h5py.File(path, "a") as h5:
        h5["zeros"] = np.zeros(5)
    assert invoke("stats", path, "--each", "-q", "--fail-on", "dead").exit_code == 3


def test_each_over_thousands_of_members_reads_the_directory_once(tmp_path):
    """Members of one archive each open it; its directory is read once (it was read once per
    member: 2,000 members took minutes)."""
    members = {f"m{index}": np.arange(3.0) + index for index in range(3000)}
    np.savez_compressed(tmp_path / "many.npz", **members)
    result = run_bn("stats", tmp_path / "many.npz", "--each", "--format", "csv", timeout=90)
    assert result.returncode == 0, result.stderr
    rows = result.stdout.decode().splitlines()[1:]
    assert len(rows) == 3000
    assert rows[-1].split(",")[:4] == ['"m2999"', "", "3", "3000.0"]


# -- statistics files: memory bounded by what their declared sizes justify -----------------

def _quantile_file(invoke, tmp_path) -> dict:
    np.save(tmp_path / "tiny.npy", np.arange(1, 25, dtype=np.float64).reshape(2, 12))
    assert invoke("stats", tmp_path / "tiny.npy", "--quantiles", "--accuracy", "0.0001", "-o",
                  tmp_path / "tiny.json", "-q").exit_code == 0
    return json.loads((tmp_path / "tiny.json").read_text())


def test_histogram_windows_at_both_ends_of_the_grid_are_refused_unexpanded(invoke, tmp_path):
    """12 channels, one count each, half at the bottom and half at the top of the 13-bit
    grid: a 2.5 KB file whose histograms, on one shared window, would take 1.5 GiB (merge
    took 1.6 GB, diff 12 GB before it was bounded)."""
    document = _quantile_file(invoke, tmp_path)
    top = 2047 << 13
    document.update(histogram_pos_start=[1 if i % 2 == 0 else top - 1 for i in range(12)],
                    histogram_pos_length=[1] * 12, histogram_pos_counts=[2] * 12)
    bomb = tmp_path / "bomb.json"
    bomb.write_text(json.dumps(document))
    for command in (["merge", bomb], ["diff", bomb, tmp_path / "tiny.json"],
                    ["export", bomb, "--to", "torchvision"], ["calibrate", bomb]):
        result, peak = run_bn_peak(*command)
        assert result.returncode == 1, (command, result.stderr)
        assert f"{bomb}: histogram_pos_start spreads 12 channels over" in error_line(result)
        assert peak < 200, (command, peak)


def test_a_statistics_npz_that_inflates_past_its_channels_is_refused_uninflated(invoke,
                                                                              tmp_path):
    _quantile_file(invoke, tmp_path)
    assert invoke("stats", tmp_path / "tiny.npy", "-o", tmp_path / "small.npz",
                  "-q").exit_code == 0
    import io
    import zipfile

    payload = io.BytesIO()
    np.save(payload, np.zeros(350_000_000, np.uint8))  # 350 MB of zeros: 340 KB deflated
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(tmp_path / "small.npz") as small, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for member in small.namelist():
            out.writestr(member, small.read(member))
        out.writestr("mean_extra.npy", payload.getvalue())
    assert bomb.stat().st_size < 400_000
    result, peak = run_bn_peak("merge", bomb, "-q")
    assert result.returncode == 1
    assert "mean_extra declares 350,000,000 values, more than 8 for each of its 12 channels" \
        in error_line(result)
    assert peak < 200, peak


def test_calibration_of_a_histogram_at_the_top_of_the_grid(invoke, tmp_path):
    """Buckets whose bounds overflow to infinity: a range, not an OverflowError."""
    document = _quantile_file(invoke, tmp_path)
    document.update(histogram_pos_start=[(2047 << 13) - 1] * 12,
                    histogram_pos_length=[1] * 12, histogram_pos_counts=[2] * 12)
    (tmp_path / "top.json").write_text(json.dumps(document))
    for method in ("entropy", "percentile", "mse", "minmax"):
        result = invoke("calibrate", tmp_path / "top.json", "--method", method)
        assert result.exit_code == 0, (method, result.stderr)
        amax = json.loads(result.stdout)["amax"][0]
        assert 0 < amax <= 24.0  # never past the largest value the file records


# -- exports are Python that runs, whatever the numbers ------------------------------------

@pytest.mark.parametrize("target", ["torchvision", "keras"])
def test_exports_of_non_finite_statistics_are_runnable_python(invoke, tmp_path, target):
    import ast

    values = np.ones((4, 3))
    values[0, 1], values[1, 2] = np.nan, np.inf
    np.save(tmp_path / "x.npy", values)
    result = invoke("stats", tmp_path / "x.npy", "--export", target)
    assert result.exit_code == 0, result.stderr
    tree = ast.parse(result.stdout)
    arguments = {keyword.arg: keyword.value for node in ast.walk(tree)
                 if isinstance(node, ast.Call) for keyword in node.keywords}
    number_lists = {name: node for name, node in arguments.items()
                    if name in ("mean", "std", "variance")}
    assert len(number_lists) == 2
    for name, node in number_lists.items():
        call = node.args[0] if isinstance(node, ast.Call) else node  # np.array([...])
        evaluated = eval(compile(ast.Expression(call), "<export>", "eval"), {})  # noqa: S307
        with np.errstate(invalid="ignore"):
            expected = {"mean": values.mean(axis=0), "std": values.std(axis=0),
                        "variance": values.var(axis=0)}[name]
        np.testing.assert_array_equal(evaluated, expected)


# -- what bn opens: regular files (and FIFOs as .npy streams), never blocking ---------------

def test_devices_and_fifos_are_refused_at_once_wherever_a_file_is_sniffed(tmp_path):
    import os

    np.save(tmp_path / "small.npy", np.arange(6.0).reshape(3, 2))
    for name in ("zero.npz", "zero.json", "zero.h5", "zero.safetensors"):
        os.symlink("/dev/zero", tmp_path / name)
    os.mkfifo(tmp_path / "ff.npz")
    os.mkfifo(tmp_path / "ff.json")
    small = tmp_path / "small.npy"
    cases = [
        (["diff", "zero.npz", small], "zero.npz: is a character device, not a regular file"),
        (["calibrate", "zero.npz"], "zero.npz: is a character device, not a regular file"),
        (["merge", "zero.json"], "zero.json: is a character device, not a regular file"),
        (["diff", "ff.npz", small], "ff.npz: is a FIFO (named pipe), not a regular file"),
        (["merge", "ff.json"], "ff.json: is a FIFO (named pipe), not a regular file"),
        (["normalize", small, "--stats", "ff.json", "-o", "out.npy"],
         "ff.json: is a FIFO (named pipe), not a regular file"),
        (["stats", "ff.npz:a"], "ff.npz:a: is a FIFO (named pipe), not a regular file"),
        (["stats", "zero.h5:/x"], "zero.h5:/x: is a character device, not a regular file"),
        (["info", "zero.safetensors:t"], "is a character device, not a regular file"),
    ]
    for args, message in cases:
        result, peak = run_bn_peak(*args, cwd=tmp_path, timeout=20)
        assert result.returncode == 1, (args, result.stderr)
        assert message in error_line(result), args
        assert peak < 200, (args, peak)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "ff.json", "ff.npz", "small.npy", "zero.h5", "zero.json", "zero.npz",
        "zero.safetensors"]


# -- files of other formats are named; old files NumPy reads are read ----------------------

@pytest.mark.parametrize("name, head, what", [
    ("a.nc", b"CDF\x01" + bytes(60), "it is a netCDF-3 file"),
    ("b.mat", b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + bytes(90), "a MATLAB v5 .mat file"),
    ("c.parquet", b"PAR1" + bytes(60), "it is a Parquet file"),
    ("d.pkl", b"\x80\x04\x95" + bytes(60), "it is a Python pickle (bn never unpickles)"),
    ("e.gguf", b"GGUF\x03\x00\x00\x00" + bytes(60), "it is a GGUF file"),
    ("f.h5", b"\x1f\x8b\x08\x00" + bytes(60), "it is a gzip-compressed file"),
    ("g.bin", b"\x01\x02\x03\x04\x05\x06\x07\x08", r"its first bytes are b'\x01\x02\x03"),
])
def test_a_file_of_another_format_is_named(invoke, tmp_path, name, head, what):
    (tmp_path / name).write_bytes(head)
    for args in (["stats", tmp_path / name], ["info", tmp_path / name]):
        result = invoke(*args)
        assert result.exit_code == 1
        message = error_line(result)
        assert message.startswith(f"bn: error: {tmp_path / name}: not a file bn reads (.npy, "
                                  ".npz, HDF5 (netCDF-4, MATLAB v7.3), safetensors and zarr)")
        assert what in message


def test_python2_npy_and_matlab_v73_files_are_read(invoke, tmp_path):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2L, 3L), }"
    header += " " * (64 - 10 - len(header) - 1) + "\n"
    values = np.arange(6.0).reshape(2, 3)
    (tmp_path / "py2.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header))
                                       + header.encode("latin1") + values.tobytes())
    with h5py.File(tmp_path / "m.mat", "w", userblock_size=512) as h5:
        h5["x"] = values
    with open(tmp_path / "m.mat", "r+b") as mat:  # what MATLAB writes in its user block
        mat.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sat Dec  5 2026 HDF5")
    for path in (tmp_path / "py2.npy", tmp_path / "m.mat"):
        result = invoke("stats", path, "--format", "json")
        assert result.exit_code == 0, result.stderr
        np.testing.assert_array_equal(stats_json(result.stdout)["mean"], values.mean(axis=0))


# -- ranks bn cannot reduce are refused when the header is read -----------------------------

def _safetensors(path, tensors: dict) -> None:
    """A safetensors file written by hand: any dtype name, any shape."""
    header, data = {}, b""
    for name, (code, shape, raw) in tensors.items():
        header[name] = {"dtype": code, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_unusable_tensors_are_listed_and_refused_by_name(invoke, tmp_path):
    path = tmp_path / "odd.safetensors"
    _safetensors(path, {"deep": ("F32", [1] * 64, np.float32(1).tobytes()),
                        "z": ("C64", [2], np.zeros(2, np.complex64).tobytes()),
                        "ok": ("F32", [2], np.ones(2, np.float32).tobytes())})
    rows = {row["dataset"]: row for row in json.loads(
        invoke("info", path, "--json").stdout)[0]["datasets"]}
    assert rows["deep"]["problem"] == "it has 64 axes; bn reads arrays of at most 32 axes"
    assert rows["z"]["problem"].startswith("its dtype C64 is not supported")
    assert rows["ok"]["usable"]
    for args in (["stats", f"{path}:deep", "--quantiles"],
                 ["normalize", f"{path}:deep", "-o", tmp_path / "out.npy"],
                 ["stats", f"{path}:deep", "--keepdims"]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert error_line(result) == (f"bn: error: {path}:deep: it has 64 axes; bn reads "
                                      "arrays of at most 32 axes\n")
    assert not (tmp_path / "out.npy").exists()
    result = invoke("stats", path, "--each", "--format", "json")
    assert result.exit_code == 0
    assert [row["tensor"] for row in json.loads(result.stdout) if row["statistics"]] == ["ok"]


# -- HDF5 chunks whose headers lie: one line, never memory outside the chunk ---------------

def _lie_about_chunks(path, options, lie) -> np.ndarray:
    """A dataset of 4 compressed chunks, each stored as `lie` rewrites its bytes."""
    values = np.random.default_rng(2).standard_normal((4096, 4)).astype(np.float32)
    with h5py.File(path, "w") as h5:
        dataset = h5.create_dataset("x", shape=values.shape, dtype="f4", chunks=(1024, 4),
                                    **options)
        dataset[...] = values
        for row in range(0, 4096, 1024):
            mask, data = dataset.id.read_direct_chunk((row, 0))
            dataset.id.write_direct_chunk((row, 0), lie(bytes(data)), mask)
    return values


def _set(data: bytes, at: int, width: int, value: int, order: str) -> bytes:
    changed = bytearray(data)
    changed[at:at + width] = value.to_bytes(width, order)
    return bytes(changed)


def test_compressed_chunks_whose_headers_lie_are_one_clear_error(tmp_path):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    pytest.importorskip("numcodecs")
    lz4, blosc = hdf5plugin.LZ4(nbytes=4096), hdf5plugin.Blosc(cname="lz4")
    cases = {
        # lz4: total size, block size, then each block after its stored length (big-endian)
        "lz4 block smaller than written": (lz4, lambda d: _set(d, 8, 4, 1000, "big"),
                                           "its lz4 blocks end early or overrun"),
        "lz4 total smaller": (lz4, lambda d: _set(d, 0, 8, 8192, "big"),
                              "declares 8192 bytes, not the 16384 bytes of a chunk"),
        "lz4 stored length past the end": (
            lz4, lambda d: _set(d, 12, 4, int.from_bytes(d[12:16], "big") + 99999, "big"),
            "its lz4 blocks end early or overrun"),
        "lz4 zero block size": (lz4, lambda d: _set(d, 8, 4, 0, "big"),
                                "declares blocks of 0 bytes"),
        # blosc: nbytes, blocksize, cbytes (little-endian) at 4, 8, 12
        "blosc frame longer than stored": (
            blosc, lambda d: _set(d, 12, 4, len(d) * 64, "little"),
            "its blosc header says it takes"),
        "blosc cut short": (blosc, lambda d: d[:len(d) // 2], "its blosc header says it takes"),
        "blosc zero blocks": (blosc, lambda d: _set(d, 8, 4, 0, "little"),
                              "declares blocks of 0 bytes"),
    }
    for label, (options, lie, message) in cases.items():
        path = tmp_path / "lies.h5"
        _lie_about_chunks(path, options, lie)
        result = run_bn("stats", path, "--format", "json")
        assert result.returncode == 1, (label, result.returncode, result.stdout[:200])
        line = error_line(result)
        assert f"{path}:/x: damaged compressed chunk at [0, 0]" in line, label
        assert message in line, (label, line)


def test_valid_lz4_chunks_of_many_blocks_are_read(tmp_path):
    """Blocks that compress and blocks that do not (stored as they are), and a last short
    block, as hdf5plugin's LZ4 filter writes them."""
    hdf5plugin = pytest.importorskip("hdf5plugin")
    pytest.importorskip("numcodecs")
    for block in (1000, 4096, 0):
        values = _lie_about_chunks(tmp_path / "ok.h5", hdf5plugin.LZ4(nbytes=block),
                                   lambda data: data)
        result = run_bn("stats", tmp_path / "ok.h5", "--format", "json")
        assert result.returncode == 0, result.stderr
        np.testing.assert_allclose(stats_json(result.stdout)["mean"],
                                   values.astype(np.float64).mean(axis=0), rtol=1e-12)


def test_a_chunk_larger_than_the_budget_is_planned_lazily(tmp_path):
    """One gzip chunk of 40 million rows in a 43 KB file: blocks are ranges across the chunk,
    planned one at a time (the plan held range(40,000,000) whole: 1.6 GB, and made one
    block per row), and the chunk is inflated once, not once per block."""
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as h5:
        dataset = h5.create_dataset("x", shape=(40_000_000, 1), chunks=(40_000_000, 1),
                                    dtype="u1", compression="gzip")
        dataset[:1000] = 1
    for axes in ("0", "0,1"):
        result, peak = run_bn_peak("stats", path, "--axes", axes, "--format", "json",
                                   timeout=60)
        assert result.returncode == 0, result.stderr
        document = stats_json(result.stdout)
        assert abs(np.ravel(document["mean"])[0] - 1000 / 40_000_000) < 1e-13
        assert peak < 400, (axes, peak)


# -- virtual datasets: never themselves, never terabytes of fill --------------------------

def test_virtual_datasets_that_read_themselves_or_mostly_fill_are_refused(tmp_path):
    with h5py.File(tmp_path / "self.h5", "w") as h5:
        layout = h5py.VirtualLayout(shape=(100,), dtype="f8")
        layout[:] = h5py.VirtualSource(str(tmp_path / "self.h5"), "v", shape=(100,))
        h5.create_virtual_dataset("v", layout, fillvalue=0)
    with h5py.File(tmp_path / "chain.h5", "w") as h5:
        for name, other in (("a", "b"), ("b", "a")):
            layout = h5py.VirtualLayout(shape=(10,), dtype="f8")
            layout[:] = h5py.VirtualSource(".", other, shape=(10,))
            h5.create_virtual_dataset(name, layout, fillvalue=0)
    with h5py.File(tmp_path / "huge.h5", "w") as h5:
        h5["src"] = np.arange(10.0)
        layout = h5py.VirtualLayout(shape=(10**12,), dtype="f8")
        layout[:10] = h5py.VirtualSource(".", "src", shape=(10,))
        h5.create_virtual_dataset("v", layout, fillvalue=0)
    with h5py.File(tmp_path / "fine.h5", "w") as h5:
        h5["src"] = np.arange(10.0)
        layout = h5py.VirtualLayout(shape=(20,), dtype="f8")
        layout[:10] = h5py.VirtualSource(".", "src", shape=(10,))
        h5.create_virtual_dataset("v", layout, fillvalue=-1)
    cases = [("self.h5:v", "self.h5:/v: is a virtual dataset that reads itself"),
             ("chain.h5:a", "chain.h5:/a: is a virtual dataset that reads itself"),
             ("huge.h5:v", "huge.h5:/v: its sources map 10 of its 1,000,000,000,000 elements;"
                           " the other 7.3 TiB would be read as its fill value 0.0")]
    for text, message in cases:
        result = run_bn("stats", tmp_path / text, "--allow-external", timeout=30)
        assert result.returncode == 1, (text, result.returncode)
        assert message in error_line(result)
    result = run_bn("stats", tmp_path / "fine.h5:v", "--allow-external", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert stats_json(result.stdout)["mean"] == (45 - 10) / 20


def test_an_hdf5_output_of_a_million_chunks_is_refused_before_it_is_written(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((100, 100, 100), np.float32))
    result, peak = run_bn_peak("normalize", tmp_path / "c.npy", "-o", tmp_path / "c.h5",
                               "--chunks", "1,1,1")
    assert result.returncode == 2
    assert error_line(result) == (
        f"bn: error: {tmp_path}/c.h5:/data: chunks 1,1,1 would cut its shape 100x100x100 "
        "into 1,000,000 chunks, more than the 100,000 an output may have; refused (use "
        "--chunks 26,100,100)\n")
    assert peak < 200
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c.npy"]


def test_a_dtype_string_numpy_parses_as_python_is_one_clear_error(invoke, tmp_path):
    """Found by fuzzing: NumPy raises SyntaxError for some dtype strings ('> 5), } f8'),
    which reached the user as "unexpected SyntaxError"."""
    header = "{'descr': '> 5), } f8', 'fortran_order': True, 'shape': (3, 5), }"
    header += " " * (118 - len(header) - 1) + "\n"
    (tmp_path / "odd.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header))
                                       + header.encode("latin1") + bytes(120))
    result = invoke("stats", tmp_path / "odd.npy")
    assert result.exit_code == 1
    assert ".npy descr '> 5), } f8' is not a valid dtype" in error_line(result)


def test_a_statistics_npz_with_a_zip_feature_it_cannot_read_is_one_clear_error(invoke,
                                                                             tmp_path):
    """Found by fuzzing: a member flagged as "compressed patched data" made zipfile raise
    NotImplementedError, which reached the user as "unexpected"."""
    np.save(tmp_path / "x.npy", np.arange(12.0).reshape(4, 3))
    assert invoke("stats", tmp_path / "x.npy", "-o", tmp_path / "s.npz", "-q").exit_code == 0
    data = bytearray((tmp_path / "s.npz").read_bytes())
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central flags
        start = 0
        while (start := data.find(signature, start)) >= 0:
            data[start + at] |= 0x20
            start += 4
    (tmp_path / "s.npz").write_bytes(bytes(data))
    for command in (["merge", tmp_path / "s.npz"], ["export", tmp_path / "s.npz", "--to",
                                                    "torchvision"]):
        result = invoke(*command)
        assert result.exit_code == 1, result.stderr
        assert "s.npz: not a valid .npz statistics file (compressed patched data" in \
            error_line(result)


def test_a_damaged_root_group_is_one_line_in_bounded_memory(tmp_path):
    """Found by fuzzing: a 6 KB file whose root symbol table is damaged made HDF5's object
    visit (h5py's visititems) allocate all the memory it could get (11.9 GB) before it
    failed; the group's links are walked instead, which fails at once."""
    from pathlib import Path

    damaged = Path(__file__).parent / "fuzz" / "damaged-symbol-table.h5"
    for command in ("info", "stats"):
        result, peak = run_bn_peak(command, damaged, timeout=60)
        assert result.returncode == 1
        assert "damaged-symbol-table.h5: cannot list its datasets (bad symbol table node " \
               "signature)" in error_line(result)
        assert peak < 300, (command, peak)


def test_the_walk_of_an_hdf5_file_visits_each_object_once(invoke, tmp_path):
    """Hard links to one dataset and to a parent group (a cycle) are visited once; soft and
    external links are names, not objects."""
    path = tmp_path / "links.h5"
    with h5py.File(path, "w") as h5:
        h5["g/a"] = np.arange(4.0)
        h5["g/again"] = h5["g/a"]  # a second hard link to the same dataset
        h5["g/up"] = h5["g"]  # a hard link to the group itself: a cycle
        h5["soft"] = h5py.SoftLink("/g/a")
        h5["outside"] = h5py.ExternalLink("elsewhere.h5", "/x")
        h5["b"] = np.arange(3.0)
    rows = json.loads(invoke("info", path, "--json").stdout)[0]["datasets"]
    assert sorted(row["dataset"] for row in rows) in (["/b", "/g/a"], ["/b", "/g/again"])
