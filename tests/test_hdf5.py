"""HDF5 inputs: finding datasets, chunk-aligned reads, and files that would read other files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import assert_close, reference_moments, run_bn, stats_json

from bncli import api
from bncli.io.registry import open_source


@pytest.fixture
def values(rng):
    return (rng.standard_normal((24, 3, 5, 5)) * 4 + 7).astype(np.float32)


@pytest.mark.parametrize("options", [
    dict(chunks=(4, 3, 5, 5), compression="gzip", shuffle=True),
    dict(chunks=(1, 1, 5, 5), compression="lzf"),
    dict(chunks=(5, 2, 2, 3), compression="gzip"),
    dict(),  # contiguous
])
@pytest.mark.parametrize("chunk_bytes", ["64", "1K", "16M"])
def test_stats_on_hdf5_layouts(invoke, tmp_path, values, options, chunk_bytes):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as h5file:
        h5file.create_dataset("grp/acts", data=values, **options)
    for spec in (f"{path}:/grp/acts", f"{path}:grp/acts", str(path)):
        result = invoke("stats", spec, "--channel-axis", "1", "--chunk-bytes", chunk_bytes)
        assert result.exit_code == 0, result.output
        document = stats_json(result.stdout)
        mean, variance = reference_moments(values, (0, 2, 3))
        assert_close(document["mean"], mean)
        assert_close(document["variance"], variance, rtol=1e-12)
        assert document["inputs"][0]["dataset"] == "/grp/acts"


def test_blocks_follow_the_chunk_layout(tmp_path, values):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as h5file:
        h5file.create_dataset("x", data=values, chunks=(4, 3, 5, 5), compression="gzip")
    with open_source(str(path)) as source:
        starts = [region[0].start for region, _ in source.blocks(9 * 75 * 4)]
        assert starts == [0, 8, 16]  # multiples of the chunk extent, within the budget


def make_file(path, **datasets):
    with h5py.File(path, "w") as h5file:
        for name, data in datasets.items():
            h5file.create_dataset(name, data=data)


def test_several_numeric_datasets_need_a_path(invoke, tmp_path):
    path = tmp_path / "two.h5"
    make_file(path, a=np.zeros((2, 2)), b=np.ones((3, 2)), s=np.array([b"x"]))
    result = invoke("stats", path)
    assert result.exit_code == 1
    assert result.stderr == (f"bn: error: {path}: holds 2 numeric datasets (/a, /b); name one "
                             f"as {path}:/path/to/dataset\n")


def test_missing_dataset_lists_the_numeric_ones(invoke, tmp_path):
    path = tmp_path / "two.h5"
    make_file(path, a=np.zeros((2, 2)), b=np.ones((3, 2)))
    result = invoke("stats", f"{path}:/nope")
    assert result.exit_code == 1
    assert "/nope is no dataset; numeric datasets: /a, /b" in result.stderr


@pytest.mark.parametrize("name, make, message", [
    ("strings", lambda f: f.create_dataset("x", data=np.array([b"ab", b"cd"])), "holds strings"),
    ("vlen strings", lambda f: f.create_dataset("x", data=["ab", "cd"],
                                                dtype=h5py.string_dtype()), "holds strings"),
    ("compound", lambda f: f.create_dataset("x", data=np.zeros(3, [("a", "f4"), ("b", "i4")])),
     "its dtype is structured"),
    ("vlen", lambda f: f.create_dataset("x", (2,), dtype=h5py.vlen_dtype(np.float32)),
     "variable-length"),
    ("reference", lambda f: f.create_dataset("x", (2,), dtype=h5py.ref_dtype), "references"),
    ("enum", lambda f: f.create_dataset("x", data=np.zeros(3, np.int8),
                                        dtype=h5py.enum_dtype({"a": 0, "b": 1},
                                                              basetype="i1")), "enum"),
    ("empty", lambda f: f.create_dataset("x", data=h5py.Empty("f4")), "empty"),
    ("complex", lambda f: f.create_dataset("x", data=np.zeros(3, np.complex64)), "complex"),
])
def test_non_numeric_datasets_are_refused(invoke, tmp_path, name, make, message):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as h5file:
        make(h5file)
    result = invoke("stats", f"{path}:/x")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"bn: error: {path}:/x: ")
    assert message in result.stderr


def test_not_hdf5_and_truncated_files(invoke, tmp_path, values):
    fake = tmp_path / "fake.h5"
    fake.write_bytes(b"this is not hdf5" * 10)
    result = invoke("stats", fake)
    assert result.exit_code == 1 and result.stderr == (
        f"bn: error: {fake}: not a file bn reads (.npy, .npz, HDF5 (netCDF-4, MATLAB v7.3), "
        "safetensors and zarr); it is a text file\n")
    fake.write_bytes(b"\x00\xff" * 80)
    result = invoke("stats", fake)
    assert result.exit_code == 1 and result.stderr == f"bn: error: {fake}: not an HDF5 file\n"
    real = tmp_path / "real.h5"
    make_file(real, x=np.arange(200000, dtype=np.float64))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(real.read_bytes()[:50000])
    result = invoke("stats", f"{cut}:/x", "--axes", "0")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"bn: error: {cut}")
    assert "Traceback" not in result.stderr


def test_missing_filter_is_named(invoke, tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as h5file:
        h5file.create_dataset("x", data=np.arange(4000, dtype=np.float32).reshape(100, 40),
                              chunks=(10, 40), compression="lzf")
    data = bytearray(path.read_bytes())
    at = data.find(b"lzf\0")
    assert data[at - 8:at - 6] == (32000).to_bytes(2, "little")
    data[at - 8:at - 6] = (32099).to_bytes(2, "little")  # a filter id nobody registered
    data[at:at + 3] = b"zzz"
    path.write_bytes(bytes(data))
    result = invoke("stats", f"{path}:/x")
    assert result.exit_code == 1
    assert "compressed with HDF5 filter 32099 (zzz), which is not installed" in result.stderr


def test_external_link_refused_unless_allowed(invoke, tmp_path, values):
    make_file(tmp_path / "other.h5", secret=values)
    path = tmp_path / "links.h5"
    with h5py.File(path, "w") as h5file:
        h5file["ext"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/")
        h5file["soft"] = h5py.SoftLink("/ext/secret")
    for spec in (f"{path}:/ext/secret", f"{path}:/soft"):
        result = invoke("stats", spec)
        assert result.exit_code == 1
        assert "/ext is an external link to" in result.stderr
        assert "--allow-external" in result.stderr
    result = invoke("stats", f"{path}:/ext/secret", "--allow-external", "--channel-axis", "1")
    assert result.exit_code == 0
    assert_close(stats_json(result.stdout)["mean"], reference_moments(values, (0, 2, 3))[0])


def test_external_storage_refused_unless_allowed(invoke, tmp_path):
    raw = tmp_path / "raw.bin"
    np.arange(12, dtype="<f4").tofile(raw)
    path = tmp_path / "ext.h5"
    with h5py.File(path, "w") as h5file:
        h5file.create_dataset("x", shape=(4, 3), dtype="<f4", external=[(str(raw), 0, 48)])
    result = invoke("stats", f"{path}:/x")
    assert result.exit_code == 1 and "stores its data in external files" in result.stderr
    result = invoke("stats", f"{path}:/x", "--allow-external")
    assert result.exit_code == 0
    assert_close(stats_json(result.stdout)["mean"], [4.5, 5.5, 6.5])


def test_virtual_dataset_refused_unless_allowed(invoke, tmp_path):
    make_file(tmp_path / "src.h5", x=np.arange(6.0).reshape(2, 3))
    layout = h5py.VirtualLayout(shape=(2, 3), dtype="f8")
    layout[:] = h5py.VirtualSource(str(tmp_path / "src.h5"), "x", shape=(2, 3))
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as h5file:
        h5file.create_virtual_dataset("v", layout)
    result = invoke("stats", f"{path}:/v")
    assert result.exit_code == 1 and "is a virtual dataset that reads other files" in result.stderr
    result = invoke("stats", f"{path}:/v", "--allow-external")
    assert result.exit_code == 0
    assert_close(stats_json(result.stdout)["mean"], [1.5, 2.5, 3.5])


def test_declared_shape_without_storage_is_refused(invoke, tmp_path):
    path = tmp_path / "nostore.h5"
    with h5py.File(path, "w") as h5file:
        h5file.create_dataset("x", shape=(100, 4), dtype="f4")
    result = invoke("stats", f"{path}:/x")
    assert result.exit_code == 1
    assert "declares shape 100x4 but no data was ever written to it" in result.stderr


def test_output_onto_the_input_hdf5_dataset_is_refused(invoke, tmp_path, values):
    path = tmp_path / "d.h5"
    make_file(path, x=values)
    before = path.read_bytes()
    result = invoke("normalize", f"{path}:/x", "-o", f"{path}:/x", "--force")
    assert result.exit_code == 1 and "is the input dataset; refused" in result.stderr
    assert path.read_bytes() == before


def test_info_describes_a_dataset_never_written_and_stats_refuse_it(tmp_path):
    with h5py.File(tmp_path / "empty.h5", "w") as h5file:
        h5file.create_dataset("x", shape=(10, 4), dtype="f4")
    info = run_bn("info", tmp_path / "empty.h5", "--json")
    assert info.returncode == 0, info.stderr
    entry = json.loads(info.stdout)[0]
    assert entry["shape"] == [10, 4] and entry["storage_bytes"] == 0
    refused = run_bn("stats", f"{tmp_path / 'empty.h5'}:/x")
    assert refused.returncode == 1
    assert b"no data was ever written to it" in refused.stderr


@pytest.mark.parametrize("name", ["acts.nc", "acts.he5", "acts.dat"])
def test_hdf5_files_of_any_name_take_file_colon_dataset(tmp_path, name):
    values = np.random.default_rng(5).standard_normal((40, 3))
    with h5py.File(tmp_path / name, "w") as h5file:  # netCDF4 and HDF-EOS5 are HDF5
        h5file["acts"] = values
        h5file["labels"] = np.arange(40.0)
    listed = run_bn("stats", tmp_path / name)
    assert listed.returncode == 1
    assert f"holds 2 numeric datasets (/acts, /labels); name one as {tmp_path / name}:" in (
        listed.stderr.decode())
    result = run_bn("stats", f"{tmp_path / name}:/acts", "--format", "json")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(json.loads(result.stdout)["mean"], values.mean(0), rtol=1e-13)
    out = run_bn("normalize", f"{tmp_path / name}:/acts", "-o", f"{tmp_path / name}:/normed",
                 "-q")
    assert out.returncode == 0, out.stderr
    with h5py.File(tmp_path / name, "r") as h5file:
        assert sorted(h5file) == ["acts", "labels", "normed"]


def codec_options(codec: str) -> dict:
    """create_dataset's options for a codec (those of hdf5plugin skip where it is not)."""
    if codec == "deflate":
        return {"compression": "gzip"}
    pytest.importorskip("numcodecs", reason="the bncli[hdf5plugin] extra is not installed")
    hdf5plugin = pytest.importorskip("hdf5plugin",
                                     reason="the bncli[hdf5plugin] extra is not installed")
    return dict({"zstd": hdf5plugin.Zstd(), "lz4": hdf5plugin.LZ4(nbytes=256),
                 "blosc": hdf5plugin.Blosc(cname="lz4", clevel=5,
                                           shuffle=hdf5plugin.Blosc.SHUFFLE)}[codec])


PIPELINES = [("deflate", False), ("deflate", True), ("zstd", False), ("zstd", True),
             ("lz4", False), ("lz4", True), ("blosc", False)]


@pytest.mark.parametrize("codec, shuffle", PIPELINES)
@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<i2", "|u1"])
def test_compressed_chunks_decoded_by_the_workers_read_what_h5py_reads(tmp_path, rng, codec,
                                                                       shuffle, dtype):
    from bncli.io.hdf5 import _read_chunks, chunk_pipeline

    values = (rng.standard_normal((37, 10, 6)) * 50).astype(dtype)
    values[:5] = 3  # runs that compress, beside noise that does not
    with h5py.File(tmp_path / "x.h5", "w") as h5file:
        dataset = h5file.create_dataset("x", data=values, chunks=(8, 4, 6), shuffle=shuffle,
                                        **codec_options(codec))
        assert chunk_pipeline(dataset) == (shuffle, codec)
        for region in [(slice(0, 37), slice(0, 10), slice(0, 6)),  # edge chunks cropped
                       (slice(8, 24), slice(4, 10), slice(0, 6))]:
            block = np.empty(tuple(part.stop - part.start for part in region), values.dtype)
            assert _read_chunks(dataset, region, "x.h5", block)
            np.testing.assert_array_equal(block, values[region])
        # not whole chunks: left to h5py
        assert not _read_chunks(dataset, (slice(1, 9), slice(0, 10), slice(0, 6)), "x.h5",
                                  np.empty((8, 10, 6), values.dtype))


@pytest.mark.parametrize("codec", ["zstd", "lz4", "blosc"])
def test_a_damaged_or_oversized_chunk_of_a_plugin_filter_is_one_clear_error(tmp_path, rng,
                                                                            codec):
    values = rng.standard_normal((16, 4)).astype(np.float32)
    options = codec_options(codec)
    numcodecs = pytest.importorskip("numcodecs")
    oversized = {"zstd": lambda: numcodecs.Zstd().encode(bytes(4096)),
                 "lz4": lambda: (4096).to_bytes(8, "big") + (4096).to_bytes(4, "big"),
                 "blosc": lambda: numcodecs.Blosc().encode(bytes(4096))}[codec]()
    for stored, message in ((b"not compressed data at all", b"damaged compressed chunk at [8, 0]"),
                            (oversized, b"declares 4096 bytes, not the 128 bytes of a chunk")):
        with h5py.File(tmp_path / "x.h5", "w") as h5file:
            dataset = h5file.create_dataset("x", data=values, chunks=(8, 4), **options)
            dataset.id.write_direct_chunk((8, 0), stored, filter_mask=0)
        result = run_bn("stats", f"{tmp_path / 'x.h5'}:/x")
        assert result.returncode == 1, stored
        assert message in result.stderr, result.stderr
        assert b"Traceback" not in result.stderr


def test_a_chunk_stored_unfiltered_and_one_never_written_read_right(tmp_path, rng):
    from bncli.io.hdf5 import _read_chunks

    values = rng.standard_normal((16, 4)).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as h5file:
        dataset = h5file.create_dataset("x", shape=(16, 4), dtype=np.float32, chunks=(8, 4),
                                        compression="gzip", fillvalue=7.0)
        # stored as is, its filter mask saying deflate was skipped
        dataset.id.write_direct_chunk((0, 0), values[:8].tobytes(), filter_mask=1)
        block = np.empty((8, 4), np.float32)
        assert _read_chunks(dataset, (slice(0, 8), slice(0, 4)), "x.h5", block)
        np.testing.assert_array_equal(block, values[:8])
        # the second chunk was never written: h5py's read gives its fill value
        assert not _read_chunks(dataset, (slice(0, 16), slice(0, 4)), "x.h5",
                                  np.empty((16, 4), np.float32))
    # a block of the first chunk alone is read by bn, where h5py's own read fails on it
    result = api.stats(f"{tmp_path / 'x.h5'}:/x", axes=(0,), chunk_bytes=128)
    expected = np.concatenate([values[:8], np.full((8, 4), 7.0, np.float32)])
    np.testing.assert_allclose(result.values()["mean"], expected.mean(axis=0, dtype=np.float64),
                               rtol=1e-12)


INFLATERS = [pytest.param({"BN_INFLATE": "zlib"}, id="zlib"), pytest.param({}, id="default")]


@pytest.mark.parametrize("env", INFLATERS)
def test_a_damaged_deflated_chunk_is_one_clear_error(tmp_path, rng, env):
    with h5py.File(tmp_path / "x.h5", "w") as h5file:
        dataset = h5file.create_dataset("x", shape=(16, 4), dtype=np.float32, chunks=(8, 4),
                                        compression="gzip")
        dataset[:] = rng.standard_normal((16, 4))
        dataset.id.write_direct_chunk((8, 0), b"not deflate data", filter_mask=0)
    result = run_bn("stats", f"{tmp_path / 'x.h5'}:/x", env=env)
    assert result.returncode == 1
    assert b"x.h5:/x: damaged compressed chunk at [8, 0]" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("env", INFLATERS)
def test_a_deflated_chunk_that_inflates_past_its_size_is_refused_unread(tmp_path, env):
    import zlib

    with h5py.File(tmp_path / "x.h5", "w") as h5file:
        dataset = h5file.create_dataset("x", shape=(16, 4), dtype=np.float32, chunks=(8, 4),
                                        compression="gzip")
        dataset[:] = 1.0
        bomb = zlib.compress(bytes(2**26))  # 64 MiB of zeros for a 128-byte chunk
        dataset.id.write_direct_chunk((0, 0), bomb, filter_mask=0)
    result = run_bn("stats", f"{tmp_path / 'x.h5'}:/x", env=env)
    assert result.returncode == 1
    assert b"inflates to more than the 128 bytes of a chunk" in result.stderr


def test_isal_inflates_the_chunks_to_the_same_bits_as_zlib(tmp_path, rng, monkeypatch):
    pytest.importorskip("isal", reason="the bncli[isal] extra is not installed")
    from bncli.io import hdf5

    assert hdf5.inflater()[1] == "isal"
    values = (rng.standard_normal((512, 6, 5)) * 3 + 1).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as h5file:
        h5file.create_dataset("plain", data=values, chunks=(8, 6, 5), compression="gzip")
        h5file.create_dataset("shuffled", data=values, chunks=(8, 3, 5), compression="gzip",
                              shuffle=True, compression_opts=9)
    results, used = {}, []
    choose = hdf5.inflater
    monkeypatch.setattr(hdf5, "inflater", lambda: used.append(choose()[1]) or choose())
    for forced in ("", "zlib"):
        monkeypatch.setenv("BN_INFLATE", forced)
        for name in ("plain", "shuffled"):
            results[forced, name] = api.stats(f"{tmp_path / 'x.h5'}:/{name}", axes=(0, 1),
                                              chunk_bytes=10_000, threads=2).values()
    assert used.count("isal") > 4 and used.count("zlib") > 4  # block by block, by each
    for name in ("plain", "shuffled"):
        for key in ("mean", "variance", "min", "max", "count"):
            np.testing.assert_array_equal(results["", name][key], results["zlib", name][key])
        np.testing.assert_allclose(results["", name]["mean"],
                                   values.astype(np.float64).mean(axis=(0, 1)), rtol=1e-12)


@pytest.mark.parametrize("codec, shuffle", PIPELINES[2:])
def test_plugin_filtered_datasets_are_decoded_by_the_worker_threads(tmp_path, rng, codec,
                                                                    shuffle, monkeypatch):
    from bncli.io import hdf5

    values = (rng.standard_normal((4096, 6, 5)) * 3 + 1).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as h5file:
        h5file.create_dataset("x", data=values, chunks=(128, 6, 5), shuffle=shuffle,
                              **codec_options(codec))
    decoded = []
    decode = hdf5.decode_chunk
    monkeypatch.setattr(hdf5, "decode_chunk",
                        lambda *args: decoded.append(args[0]) or decode(*args))
    result = api.stats(f"{tmp_path / 'x.h5'}:/x", axes=(0,), chunk_bytes=64_000,
                       threads=2).values()
    assert decoded == [codec] * 32  # every chunk, once
    wide = values.astype(np.float64)
    np.testing.assert_allclose(result["mean"], wide.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(result["variance"], wide.var(axis=0), rtol=1e-10)
    np.testing.assert_array_equal(result["max"], values.max(axis=0))


def test_info_names_the_codec_of_plugin_filters(tmp_path, rng):
    values = rng.standard_normal((64, 4)).astype(np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as h5file:
        for codec in ("zstd", "lz4", "blosc"):
            h5file.create_dataset(codec, data=values, chunks=(16, 4), **codec_options(codec))
        h5file.create_dataset("gzip", data=values, chunks=(16, 4), compression="gzip")
    listing = run_bn("info", tmp_path / "x.h5").stdout.decode()
    for codec in ("zstd", "lz4", "blosc", "gzip"):
        assert f"/{codec}  64x4 float32  chunks 16x4 {codec}" in listing, listing


def test_a_zstd_chunk_whose_frame_declares_no_size_is_one_clear_error(tmp_path, rng):
    """A zstd frame written by streaming compression need not declare its size; HDF5's own
    zstd filter cannot read such a chunk either, so bn says so rather than guess."""
    pytest.importorskip("numcodecs")
    values = rng.standard_normal((16, 4)).astype(np.float32)
    payload = values[8:].tobytes()
    # magic, a frame header without a content size (window 2**21), one last raw block
    frame = (b"\x28\xb5\x2f\xfd\x00\x58" + ((len(payload) << 3) | 1).to_bytes(3, "little")
             + payload)
    with h5py.File(tmp_path / "x.h5", "w") as h5file:
        dataset = h5file.create_dataset("x", data=values, chunks=(8, 4), **codec_options("zstd"))
        dataset.id.write_direct_chunk((8, 0), frame, filter_mask=0)
    result = run_bn("stats", f"{tmp_path / 'x.h5'}:/x")
    assert result.returncode == 1
    assert (b"x.h5:/x: damaged compressed chunk at [8, 0] (its zstd header declares no size)"
            in result.stderr), result.stderr


def test_worker_threads_read_chunks_of_one_dataset_together(tmp_path, values):
    """Blocks of whole chunks (decoded by bn) and of parts of chunks (read by h5py) read by
    two worker threads at once, many times over: no read fails (with HDF5 before 2.0, two
    threads' H5Dread_chunk calls failed now and then)."""
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as h5file:
        h5file.create_dataset("acts", data=values, chunks=(5, 2, 2, 3), compression="gzip")
    mean, variance = reference_moments(values, (0, 2, 3))
    for _ in range(40):
        found = api.stats([f"{path}:/acts"], channel_axis=1, chunk_bytes=1024, threads=2)
        assert_close(found.values()["mean"], mean)
