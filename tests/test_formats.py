"""Inputs in the formats people have besides .npy and HDF5: .npz archives, safetensors files
(bfloat16 and float8 too) and netCDF4, each written by its own library, each giving the
statistics of the same data as a .npy file bit for bit, and each refused clearly when hostile.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest
from conftest import assert_close, examples, reference_moments, run_bn
from hypothesis import given, settings
from hypothesis import strategies as st

from bncli import api
from bncli.core.layout import is_contiguous, plan_regions
from bncli.errors import InputError
from bncli.io.registry import open_source
from bncli.io.statsfile import to_document

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def document(statistics) -> dict:
    """A statistics document without the inputs (which name the files)."""
    found = to_document(statistics)
    found.pop("inputs")
    return found


def assert_same_statistics(path, reference_path, **options):
    got, expected = api.stats([str(path)], **options), api.stats([str(reference_path)],
                                                                  **options)
    assert json.dumps(document(got)) == json.dumps(document(expected))
    return got


def assert_one_line_error(result, *fragments):
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("bn: error: "), err
    for fragment in fragments:
        assert fragment in err, err


# ---------------------------------------------------------------- .npz


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int16", "uint8", "bool"])
def test_npz_member_gives_the_statistics_of_the_same_npy(tmp_path, rng, save, dtype):
    values = (rng.normal(3, 2, size=(40, 6, 5)) * 10).astype(dtype)
    np.save(tmp_path / "x.npy", values)
    save(tmp_path / "x.npz", acts=values, other=np.arange(7))
    got = assert_same_statistics(f"{tmp_path}/x.npz:acts", tmp_path / "x.npy", axes=(0, 1),
                                 quantiles=True)
    mean, variance = reference_moments(values, (0, 1))
    assert_close(got.values()["mean"], mean, rtol=1e-12, atol=1e-12)
    assert_close(got.values()["variance"], variance, rtol=1e-10, atol=1e-12)
    # the member may be named as np.load names it, or by its file name in the archive
    assert_same_statistics(f"{tmp_path}/x.npz:acts.npy", tmp_path / "x.npy", axes=(0, 1))


@settings(max_examples=examples(25), deadline=None)
@given(rows=st.integers(1, 300), channels=st.integers(1, 9),
       chunk_bytes=st.integers(8, 5000), compressed=st.booleans(),
       fortran=st.booleans())
def test_npz_streams_in_any_chunk_size(tmp_path_factory, rows, channels, chunk_bytes,
                                       compressed, fortran):
    directory = tmp_path_factory.mktemp("npz")
    values = np.random.default_rng(rows).normal(size=(rows, channels)).astype(np.float32)
    if fortran:
        values = np.asfortranarray(values)
    np.save(directory / "x.npy", values)
    (np.savez_compressed if compressed else np.savez)(directory / "x.npz", values)
    storage = values.shape[::-1] if fortran else values.shape
    first = next(plan_regions(storage, 4, chunk_bytes, (1,) if fortran else (0,)))
    if compressed and not is_contiguous(first, storage):
        # a deflated member is read in order, so it is cut into contiguous blocks where a
        # file would be cut into tiles: the same statistics to rounding
        got = api.stats([str(directory / "x.npz")], axes=(0,), chunk_bytes=chunk_bytes)
        mean, variance = reference_moments(values, (0,))
        assert_close(got.values()["mean"], mean, rtol=1e-12, atol=1e-15)
        assert_close(got.values()["variance"], variance, rtol=1e-10)
        return
    assert_same_statistics(directory / "x.npz", directory / "x.npy", axes=(0,),
                           chunk_bytes=chunk_bytes)


def test_npz_normalize_writes_the_bytes_of_the_npy_run(tmp_path, rng):
    values = rng.normal(5, 3, size=(64, 4, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    np.savez_compressed(tmp_path / "x.npz", values)
    for source, target in (("x.npy", "a.npy"), ("x.npz", "b.npy"), ("x.npz", "c.h5")):
        assert run_bn("normalize", tmp_path / source, "-o", tmp_path / target,
                      "--quiet").returncode == 0
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    import h5py

    with h5py.File(tmp_path / "c.h5") as h5file:
        np.testing.assert_array_equal(h5file["data"][...], np.load(tmp_path / "a.npy"))


def test_npz_naming_errors_list_the_members(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.ones(3))
    assert_one_line_error(run_bn("stats", tmp_path / "two.npz"), "holds 2 arrays",
                          "members: a, b")
    assert_one_line_error(run_bn("stats", f"{tmp_path}/two.npz:c"), "no member 'c'",
                          "members: a, b")


def test_npz_info_lists_the_members(tmp_path):
    np.savez_compressed(tmp_path / "two.npz", a=np.zeros((3, 2), np.float32),
                        b=np.arange(5, dtype=np.int16))
    [entry] = api.info([str(tmp_path / "two.npz")])
    rows = {row["dataset"]: row for row in entry["datasets"]}
    assert rows["a"]["shape"] == [3, 2] and rows["a"]["dtype"] == "float32"
    assert rows["b"]["shape"] == [5] and rows["b"]["dtype"] == "int16"
    assert rows["a"]["compression"] == "deflate" and rows["a"]["kind"] == "member"
    with zipfile.ZipFile(tmp_path / "two.npz") as archive:
        assert rows["a"]["stored_bytes"] == archive.getinfo("a.npy").compress_size
    text = run_bn("info", tmp_path / "two.npz").stdout.decode()
    assert "member   a  3x2 float32" in text and "member   b  5 int16" in text


def _zip_bytes(members: dict, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy_bytes(values) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values)
    return buffer.getvalue()


def test_pickled_member_is_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    values = np.empty(2, dtype=object)
    values[0] = Trap()
    np.savez(tmp_path / "p.npz", values)
    assert_one_line_error(run_bn("stats", tmp_path / "p.npz"), "pickled")
    assert not marker.exists()


def test_hostile_npz_archives_are_refused(tmp_path):
    values = np.arange(1000, dtype=np.float32)
    good = _zip_bytes({"x.npy": _npy_bytes(values)}, zipfile.ZIP_DEFLATED)
    cases = {}
    cases["truncated"] = (good[:len(good) // 2], "not a readable .npz")
    # a directory that declares far more than deflate can make of the compressed bytes
    bomb = bytearray(good)
    directory = bomb.rindex(b"PK\x01\x02")
    struct.pack_into("<L", bomb, directory + 24, 2**31)
    cases["declared size"] = (bytes(bomb), "more than deflate can produce")
    # a corrupted deflate stream, caught by zlib or the CRC
    corrupt = bytearray(good)
    corrupt[60:70] = bytes(10)
    cases["corrupt"] = (bytes(corrupt), "corrupt.npz:x: member data is corrupt")
    # a stored member whose declared size lies about its .npy content
    short = _zip_bytes({"x.npy": _npy_bytes(values)[:-8]})
    cases["short member"] = (short, "header declares 1000 float32")
    # two directory entries over the same bytes (the overlapping-file zip bomb)
    one = _zip_bytes({"x.npy": _npy_bytes(values)})
    central = one.index(b"PK\x01\x02")
    end = one.index(b"PK\x05\x06")
    entry = one[central:end]
    twin = entry.replace(b"x.npy", b"y.npy")
    tail = bytearray(one[end:])
    struct.pack_into("<HHLL", tail, 8, 2, 2, 2 * len(entry), central)
    cases["overlap"] = (one[:central] + entry + twin + bytes(tail), "share bytes")
    # an archive inside the archive
    cases["nested"] = (_zip_bytes({"x.npy": _zip_bytes({"y.npy": _npy_bytes(values)})}),
                       "nested archives are refused")
    for label, (data, fragment) in cases.items():
        path = tmp_path / f"{label.replace(' ', '_')}.npz"
        path.write_bytes(data)
        assert_one_line_error(run_bn("stats", path), fragment)


def test_short_stored_member_message(tmp_path):
    values = np.arange(1000, dtype=np.float32)
    (tmp_path / "s.npz").write_bytes(_zip_bytes({"x.npy": _npy_bytes(values)[:-8]}))
    with pytest.raises(InputError, match="s.npz:x"):
        api.stats([str(tmp_path / "s.npz")])


# ---------------------------------------------------------------- safetensors


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int8", "uint8", "int16",
                                   "uint16", "int32", "uint32", "int64", "uint64", "bool"])
def test_safetensors_tensor_gives_the_statistics_of_the_same_npy(tmp_path, rng, dtype):
    values = (rng.normal(3, 2, size=(30, 7, 4)) * 20).astype(dtype)
    np.save(tmp_path / "x.npy", values)
    safetensors_numpy.save_file({"model.layer.0": values[:2], "acts": values},
                                str(tmp_path / "x.safetensors"))
    assert_same_statistics(f"{tmp_path}/x.safetensors:acts", tmp_path / "x.npy",
                           axes=(0, 1), quantiles=True, chunk_bytes=700)


try:
    import ml_dtypes
except ImportError:  # pragma: no cover - a test-only reference
    ml_dtypes = None
needs_ml_dtypes = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed")


@needs_ml_dtypes
@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_narrow_floats_are_widened_exactly(tmp_path, name):
    kind = getattr(ml_dtypes, name)
    bits = np.arange(2 ** (8 * np.dtype(kind).itemsize), dtype=np.uint16 if
                     np.dtype(kind).itemsize == 2 else np.uint8)
    every = bits.view(kind)  # every bit pattern, NaNs and infinities included
    safetensors_numpy.save_file({"t": every}, str(tmp_path / "t.safetensors"))
    with open_source(f"{tmp_path}/t.safetensors:t") as source:
        assert source.dtype == np.float32
        got = source.read(next(iter(source.regions(2**20))))
    expected = every.astype(np.float32)
    np.testing.assert_array_equal(got.view(np.uint32)[~np.isnan(expected)],
                                  expected.view(np.uint32)[~np.isnan(expected)])
    assert np.array_equal(np.isnan(got), np.isnan(expected))


@needs_ml_dtypes
def test_bfloat16_statistics_are_those_of_the_widened_values(tmp_path, rng):
    values = rng.normal(1, 4, size=(256, 3, 8)).astype(ml_dtypes.bfloat16)
    safetensors_numpy.save_file({"w": values}, str(tmp_path / "b.safetensors"))
    np.save(tmp_path / "w.npy", values.astype(np.float32))
    got = assert_same_statistics(tmp_path / "b.safetensors", tmp_path / "w.npy", axes=(0, 1),
                                 quantiles=True)
    assert got.inputs[0]["dtype"] == "bfloat16"
    mean, variance = reference_moments(values.astype(np.float64), (0, 1))
    assert_close(got.values()["mean"], mean, rtol=1e-12)
    assert_close(got.values()["variance"], variance, rtol=1e-10)
    text = run_bn("stats", tmp_path / "b.safetensors", "--format", "table").stdout.decode()
    assert "dtype bfloat16" in text


def test_safetensors_normalize_and_info(tmp_path, rng):
    values = rng.normal(5, 3, size=(64, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    safetensors_numpy.save_file({"a": values, "b": values[:3]}, str(tmp_path / "x.safetensors"))
    assert run_bn("normalize", tmp_path / "x.npy", "-o", tmp_path / "a.npy", "-q").returncode == 0
    assert run_bn("normalize", f"{tmp_path}/x.safetensors:a", "-o", tmp_path / "b.npy",
                  "-q").returncode == 0
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    [entry] = api.info([str(tmp_path / "x.safetensors")])
    assert [(row["dataset"], row["shape"], row["dtype"], row["stored_bytes"])
            for row in entry["datasets"]] == [("a", [64, 4], "float32", 1024),
                                              ("b", [3, 4], "float32", 48)]
    assert_one_line_error(run_bn("stats", tmp_path / "x.safetensors"), "holds 2 arrays",
                          "tensors: a, b")


def _safetensors(header, data: bytes = b"", length=None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


HOSTILE_SAFETENSORS = {
    "header too long": (_safetensors(b"{}", length=2**40), "over the limit"),
    "header past end": (_safetensors(b"{}", length=500), "longer than the"),
    "short file": (b"\x01\x00", "too short"),
    "not json": (_safetensors(b"{nope"), "not JSON"),
    "not an object": (_safetensors(b"[1, 2]"), "not a JSON object"),
    "duplicate": (_safetensors(
        b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},'
        b' "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}', b"xx"),
        "more than once"),
    "outside": (_safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                             b"\x00" * 8), "fall outside"),
    "size mismatch": (_safetensors({"a": {"dtype": "F32", "shape": [3],
                                          "data_offsets": [0, 16]}}, b"\x00" * 16),
                      "needs 12 bytes"),
    "overlap": (_safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}},
                             b"\x00" * 16), "overlap"),
    "dtype": (_safetensors({"a": {"dtype": 5, "shape": [1], "data_offsets": [0, 8]}},
                           b"\x00" * 8), "is not a type name"),
    "dtype size": (_safetensors({"a": {"dtype": "C64", "shape": [2], "data_offsets": [0, 8]}},
                                b"\x00" * 8), "needs 16 bytes"),
    "shape": (_safetensors({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}},
                           b"\x00"), "not a list of sizes"),
    "offsets": (_safetensors({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1]}},
                             b"\x00"), "not [begin, end]"),
    "entry": (_safetensors({"a": [1, 2]}), "is not {dtype, shape, data_offsets}"),
    "metadata": (_safetensors({"__metadata__": {"x": 1}}), "not a map of strings"),
    "deep": (_safetensors(b"[" * 100000 + b"]" * 100000), "not JSON"),
}


@pytest.mark.parametrize("label", sorted(HOSTILE_SAFETENSORS))
def test_hostile_safetensors_are_refused_before_reading(tmp_path, label):
    data, fragment = HOSTILE_SAFETENSORS[label]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    assert_one_line_error(run_bn("stats", f"{path}:a"), "bad.safetensors", fragment)
    assert_one_line_error(run_bn("info", path), "bad.safetensors", fragment)


def test_safetensors_is_recognized_by_content(tmp_path, rng):
    values = rng.normal(size=(10, 3)).astype(np.float32)
    safetensors_numpy.save_file({"a": values}, str(tmp_path / "weights.bin"))
    np.save(tmp_path / "a.npy", values)
    assert_same_statistics(tmp_path / "weights.bin", tmp_path / "a.npy")


# ---------------------------------------------------------------- netCDF4


def test_netcdf4_variable_gives_the_statistics_of_the_same_npy(tmp_path, rng):
    netCDF4 = pytest.importorskip("netCDF4")
    values = rng.normal(280, 15, size=(24, 10, 12)).astype(np.float32)
    np.save(tmp_path / "t.npy", values)
    with netCDF4.Dataset(tmp_path / "air.nc", "w", format="NETCDF4") as nc:
        for name, size in zip(("time", "lat", "lon"), values.shape):
            nc.createDimension(name, size)
            nc.createVariable(name, "f8", (name,))[:] = np.arange(size)
        air = nc.createVariable("air", "f4", ("time", "lat", "lon"), zlib=True,
                                chunksizes=(6, 10, 12))
        air[:] = values
    assert_same_statistics(f"{tmp_path}/air.nc:/air", tmp_path / "t.npy", axes=(0, 2))
    listed = {row["dataset"] for row in api.info([str(tmp_path / "air.nc")])[0]["datasets"]}
    assert "/air" in listed


# ---------------------------------------------------------------- every array at once


def _checkpoint(path, rng):
    weight = rng.normal(size=(16, 8, 3, 3)).astype(np.float32)
    running_var = np.abs(rng.normal(size=16)).astype(np.float32)
    running_var[3] = np.nan
    tensors = {"conv.weight": weight, "conv.bias": np.zeros(16, np.float32),
               "bn.running_var": running_var, "bn.steps": np.array(7, np.int64),
               "emb": rng.normal(size=(100, 32)).astype(np.float16)}
    safetensors_numpy.save_file(tensors, str(path))
    return tensors


def test_each_reduces_every_tensor_of_a_checkpoint(tmp_path, rng):
    tensors = _checkpoint(tmp_path / "model.safetensors", rng)
    results = {result.name: result for result in api.stats_each(tmp_path / "model.safetensors")}
    assert set(results) == set(tensors)
    for name, values in tensors.items():
        got = results[name].statistics.values()
        mean, variance = reference_moments(values.reshape(-1), (0,))
        assert_close(got["mean"], np.reshape(mean, (-1,)), rtol=1e-12, atol=1e-15)
        assert_close(got["variance"], np.reshape(variance, (-1,)), rtol=1e-10, atol=1e-15)
        assert int(got["count"].sum()) == values.size
        assert int(got["nan_count"].sum()) == int(np.isnan(values).sum())
    # with a channel axis, each tensor that has it is reduced per channel
    per_channel = {result.name: result for result in api.stats_each(
        tmp_path / "model.safetensors", channel_axis=0)}
    weight = tensors["conv.weight"]
    mean, variance = reference_moments(weight, (1, 2, 3))
    assert_close(per_channel["conv.weight"].statistics.values()["mean"], mean, rtol=1e-12)
    assert per_channel["bn.steps"].statistics.values()["mean"].reshape(-1).tolist() == [7.0]
    assert per_channel["conv.bias"].statistics.channel_shape == ()  # 1-d: all of it


def test_each_from_the_command_line(tmp_path, rng):
    _checkpoint(tmp_path / "model.safetensors", rng)
    result = run_bn("stats", tmp_path / "model.safetensors", "--each", "--format", "json")
    assert result.returncode == 0, result.stderr
    documents = json.loads(result.stdout)
    assert [doc["tensor"] for doc in documents] == [
        "bn.steps", "bn.running_var", "conv.bias", "conv.weight", "emb"]
    by_name = {doc["tensor"]: doc for doc in documents}
    assert by_name["bn.running_var"]["statistics"]["nan_count"] == 1
    assert by_name["emb"]["dtype"] == "float16" and by_name["emb"]["shape"] == [100, 32]
    # a NaN anywhere fails the gate, and the message names the tensor
    gate = run_bn("stats", tmp_path / "model.safetensors", "--each", "--fail-on", "nonfinite",
                  "--format", "csv")
    assert gate.returncode == 3
    assert "nan in " in gate.stderr.decode() and "bn.running_var" in gate.stderr.decode()
    rows = gate.stdout.decode().splitlines()
    assert rows[0].startswith("tensor,channel,count,mean")
    assert len(rows) == 6 and rows[2].startswith('"bn.running_var",,16,nan')
    table = run_bn("stats", tmp_path / "model.safetensors", "--each", "--format", "table")
    text = table.stdout.decode()
    assert "5 arrays: 5 reduced, 0 skipped, 3 with findings" in text
    refused = run_bn("stats", tmp_path / "model.safetensors", "--each", "-o", tmp_path / "s.json")
    assert refused.returncode == 2 and "--each" in refused.stderr.decode()


def test_each_over_hdf5_and_npz_lists_what_it_skips(tmp_path):
    import h5py

    with h5py.File(tmp_path / "m.h5", "w") as h5file:
        h5file["a"] = np.arange(10.0)
        h5file["text"] = "hello"
        h5file["none"] = np.zeros((0, 3))
        h5file["g/b"] = np.ones((4, 2), np.int8)
    results = {result.name: result for result in api.stats_each(tmp_path / "m.h5")}
    assert results["/a"].statistics.values()["mean"].reshape(-1).tolist() == [4.5]
    assert results["/g/b"].statistics.values()["count"].reshape(-1).tolist() == [8]
    assert "strings" in results["/text"].skipped and results["/none"].skipped == "no elements"
    np.savez_compressed(tmp_path / "x.npz", a=np.array(3.5), b=np.arange(4))
    got = {result.name: result.statistics.values()["mean"].reshape(-1).tolist()
           for result in api.stats_each(tmp_path / "x.npz")}
    assert got == {"a": [3.5], "b": [1.5]}
    np.save(tmp_path / "one.npy", np.arange(3))
    with pytest.raises(api.UsageError, match="single array"):
        api.stats_each(tmp_path / "one.npy")


# ---------------------------------------------------------------- zarr


def _zarr_stores(directory, values):
    """The same array as a format-3 directory, a format-2 group member and a zip store."""
    zarr = pytest.importorskip("zarr")
    chunks = (values.shape[0] // 4,) + values.shape[1:]
    array = zarr.create_array(str(directory / "v3.zarr"), shape=values.shape, chunks=chunks,
                              dtype=values.dtype)
    array[...] = values
    group = zarr.open_group(str(directory / "g2.zarr"), mode="w", zarr_format=2)
    group.create_array("layer/acts", shape=values.shape, chunks=chunks,
                       dtype=values.dtype)[...] = values
    group.create_array("step", shape=(), dtype="i8")[...] = 3
    store = zarr.storage.ZipStore(str(directory / "z.zarr.zip"), mode="w")
    zarr.create_array(store, shape=values.shape, chunks=chunks, dtype=values.dtype)[...] = values
    store.close()
    return [directory / "v3.zarr", f"{directory}/g2.zarr:/layer/acts",
            directory / "z.zarr.zip"]


@pytest.mark.parametrize("dtype", ["float32", ">f8", "int16", "uint8"])
def test_zarr_arrays_give_the_statistics_of_the_same_npy(tmp_path, rng, dtype):
    values = (rng.normal(3, 2, size=(2048, 6, 5)) * 20).astype(dtype)
    np.save(tmp_path / "x.npy", values.astype(values.dtype.newbyteorder("=")))
    # blocks of two chunks: the blocks a .npy file of this budget is cut into too
    budget = 1024 * 6 * 5 * values.dtype.itemsize
    for store in _zarr_stores(tmp_path, values):
        assert_same_statistics(store, tmp_path / "x.npy", quantiles=True, chunk_bytes=budget)
        assert_same_statistics(store, tmp_path / "x.npy", axes=(1, 2))


def test_zarr_blocks_follow_its_chunks(tmp_path, rng):
    """Where the budget cuts a .npy file across the chunks of the store, the store's blocks
    follow its chunks (each chunk decompressed once): the counts, extremes and histograms
    are the same to the bit, the moments the same to rounding."""
    values = rng.normal(3, 2, size=(64, 6, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    [store, *_] = _zarr_stores(tmp_path, values)
    got, expected = (to_document(api.stats([str(path)], axes=(0, 1), quantiles=True,
                                           chunk_bytes=4096))
                     for path in (store, tmp_path / "x.npy"))
    for key in ("count", "min", "max", "nan_count", "zero_count", "min_count", "max_count",
                "histogram_pos_counts", "histogram_neg_counts"):
        assert got[key] == expected[key], key
    assert_close(got["mean"], expected["mean"], rtol=1e-14)
    assert_close(got["variance"], expected["variance"], rtol=1e-13)


def test_zarr_group_each_info_and_errors(tmp_path, rng):
    values = rng.normal(size=(32, 4)).astype(np.float32)
    _zarr_stores(tmp_path, values)
    results = {result.name: result for result in api.stats_each(tmp_path / "g2.zarr")}
    assert set(results) == {"/layer/acts", "/step"}
    assert results["/step"].statistics.values()["mean"].reshape(-1).tolist() == [3.0]
    [entry] = api.info([str(tmp_path / "g2.zarr")])
    rows = {row["dataset"]: row for row in entry["datasets"]}
    assert rows["/layer/acts"]["chunks"] == [8, 4] and rows["/layer/acts"]["shape"] == [32, 4]
    [single] = api.info([str(tmp_path / "v3.zarr")])
    assert single["format"] == "zarr 3" and single["chunks"] == [8, 4]
    assert single["stored_bytes"] > 0
    assert_one_line_error(run_bn("stats", tmp_path / "g2.zarr"), "holds 2 arrays",
                          "/layer/acts")
    assert_one_line_error(run_bn("stats", f"{tmp_path}/g2.zarr:/nope"), "no array '/nope'")
    # a chunk cut short, then metadata that is not JSON
    chunk = next(path for path in (tmp_path / "v3.zarr").rglob("*")
                 if path.is_file() and path.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:10])
    assert_one_line_error(run_bn("stats", tmp_path / "v3.zarr"), "v3.zarr",
                          "cannot read the zarr store")
    (tmp_path / "v3.zarr" / "zarr.json").write_text("{not json")
    assert_one_line_error(run_bn("stats", tmp_path / "v3.zarr"), "v3.zarr",
                          "cannot read the zarr store")


def test_normalize_writes_a_zarr_store_atomically(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    values = rng.normal(7, 3, size=(48, 5, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    _zarr_stores(tmp_path, values)
    assert run_bn("normalize", tmp_path / "x.npy", "-o", tmp_path / "ref.npy",
                  "-q").returncode == 0
    expected = np.load(tmp_path / "ref.npy")
    for source, options in ((tmp_path / "x.npy", []), (tmp_path / "v3.zarr", []),
                            (tmp_path / "x.npy", ["--compression", "gzip", "--chunks",
                                                  "8,5,4"])):
        result = run_bn("normalize", source, "-o", tmp_path / "out.zarr", "-q", "--force",
                        *options)
        assert result.returncode == 0, result.stderr
        written = zarr.open(str(tmp_path / "out.zarr"), mode="r")
        np.testing.assert_array_equal(written[...], expected)
        assert written.attrs["epsilon"] == 0.001
    assert tuple(written.chunks) == (8, 5, 4)
    # without --force an existing store is kept; a directory that is not a store is refused
    kept = run_bn("normalize", tmp_path / "x.npy", "-o", tmp_path / "out.zarr")
    assert kept.returncode == 1 and "already exists" in kept.stderr.decode()
    (tmp_path / "plain.zarr").mkdir()
    refused = run_bn("normalize", tmp_path / "x.npy", "-o", tmp_path / "plain.zarr", "--force")
    assert refused.returncode == 1 and "not a zarr store" in refused.stderr.decode()
    # a run that fails midway leaves neither the store nor its temporary directory
    truncated = tmp_path / "short.npy"
    truncated.write_bytes((tmp_path / "x.npy").read_bytes()[:-100])
    stats_file = tmp_path / "s.json"
    assert run_bn("stats", tmp_path / "x.npy", "-o", stats_file).returncode == 0
    failed = run_bn("normalize", truncated, "-o", tmp_path / "new.zarr", "--stats", stats_file)
    assert failed.returncode == 1
    assert sorted(path.name for path in tmp_path.iterdir()
                  if path.name.startswith((".new.zarr", "new.zarr"))) == []
