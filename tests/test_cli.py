"""The commands end to end through click, on real .npy and HDF5 files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import assert_close, reference_moments, stats_json

import bncli


@pytest.fixture
def nhwc(tmp_path, rng):
    values = (rng.standard_normal((16, 4, 4, 5)) * np.arange(1, 6) + 100).astype(np.float32)
    path = tmp_path / "acts.npy"
    np.save(path, values)
    return path, values


def test_version_and_help(invoke):
    assert invoke("--version").stdout.startswith(f"bn {bncli.__version__} (kernel: ")
    for command in ("info", "stats", "normalize", "merge"):
        result = invoke(command, "-h")
        assert result.exit_code == 0
        assert f"bn {command}" in result.stdout  # every help carries an example


def test_stats_default_axes_json(invoke, nhwc):
    path, values = nhwc
    result = invoke("stats", path)
    assert result.exit_code == 0
    document = stats_json(result.stdout)  # stdout is not a terminal: json
    mean, variance = reference_moments(values, (0, 1, 2))
    assert document["schema"] == "bncli.stats/2"
    assert document["axes"] == [0, 1, 2] and document["channel_shape"] == [5]
    assert document["inputs"] == [{"path": str(path), "dataset": None, "shape": [16, 4, 4, 5],
                                   "dtype": "float32"}]
    assert_close(document["mean"], mean)
    assert_close(document["variance"], variance, rtol=1e-12)
    assert_close(document["std"], np.sqrt(variance), rtol=1e-12)
    assert_close(document["m2"], variance * 256, rtol=1e-12)
    assert document["count"] == [256] * 5
    assert_close(document["min"], values.min(axis=(0, 1, 2)))
    assert_close(document["max"], values.max(axis=(0, 1, 2)))
    assert document["nan_count"] == [0] * 5 and document["inf_count"] == [0] * 5


@pytest.mark.parametrize("options, axes", [
    (["--axes", "1,2,3"], (1, 2, 3)),
    (["--axes", "0,2"], (0, 2)),
    (["--channel-axis", "1"], (0, 2, 3)),
    (["--axes", "-1"], (3,)),
    (["--axes=-3,-2"], (1, 2)),
])
def test_stats_any_axes_stream_with_tiny_chunks(invoke, nhwc, options, axes):
    path, values = nhwc
    result = invoke("stats", path, *options, "--chunk-bytes", "100", "--format", "json")
    assert result.exit_code == 0, result.output
    document = stats_json(result.stdout)
    mean, variance = reference_moments(values, axes)
    assert document["axes"] == list(axes)
    assert document["channel_shape"] == list(mean.shape)
    assert_close(document["mean"], mean)
    assert_close(document["variance"], variance, rtol=1e-11)


def test_keepdims_shapes_arrays_with_input_rank(invoke, nhwc):
    path, values = nhwc
    document = stats_json(invoke("stats", path, "--channel-axis", "3", "--keepdims").stdout)
    assert np.asarray(document["mean"]).shape == (1, 1, 1, 5)
    assert document["channel_shape"] == [5]
    assert_close(np.asarray(document["mean"]), values.astype(np.float64).mean((0, 1, 2),
                                                                              keepdims=True))


def test_ddof_and_ignore_nan(invoke, tmp_path):
    values = np.array([[1.0, 2.0], [np.nan, 4.0], [5.0, 9.0]])
    path = tmp_path / "n.npy"
    np.save(path, values)
    document = stats_json(invoke("stats", path, "--ddof", "1").stdout)
    assert document["mean"][0] == "NaN" and document["variance"][0] == "NaN"
    assert document["nan_count"] == [1, 0]
    assert_close(document["variance"][1], np.var([2.0, 4.0, 9.0], ddof=1))
    document = stats_json(invoke("stats", path, "--ignore-nan", "--ddof", "1").stdout)
    assert document["count"] == [2, 3] and document["ignore_nan"] is True
    assert_close(document["variance"][0], 8.0)


def test_csv_format(invoke, nhwc):
    path, values = nhwc
    lines = invoke("stats", path, "--format", "csv").stdout.splitlines()
    assert lines[0] == ("channel,count,mean,variance,std,min,max,nan_count,inf_count,"
                        "zero_count,min_count,max_count,flags")
    assert len(lines) == 6
    mean, variance = reference_moments(values, (0, 1, 2))
    fields = lines[3].split(",")
    assert fields[0] == "2" and fields[1] == "256"
    assert_close(float(fields[2]), mean[2])
    assert_close(float(fields[3]), variance[2])


def test_table_format_lists_channels(invoke, nhwc):
    path, values = nhwc
    out = invoke("stats", path, "--format", "table").stdout
    assert "axes [0, 1, 2]" in out and "channels 5" in out
    assert f"{values.astype(np.float64)[..., 4].mean():.6g}" in out


def test_several_inputs_are_one_dataset(invoke, tmp_path, rng):
    parts = [rng.standard_normal((n, 3, 2)) for n in (5, 9, 1)]
    paths = []
    for index, part in enumerate(parts):
        paths.append(tmp_path / f"part{index}.npy")
        np.save(paths[-1], part)
    document = stats_json(invoke("stats", *paths, "--format", "json").stdout)
    mean, variance = reference_moments(np.concatenate(parts), (0, 1))
    assert_close(document["mean"], mean)
    assert_close(document["variance"], variance, rtol=1e-12)
    assert [entry["shape"][0] for entry in document["inputs"]] == [5, 9, 1]


def test_inputs_with_different_channels_are_refused(invoke, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 3)))
    np.save(tmp_path / "b.npy", np.zeros((4, 5)))
    result = invoke("stats", tmp_path / "a.npy", tmp_path / "b.npy")
    assert result.exit_code == 1
    assert "b.npy: shape 4x5 gives channel shape 5" in result.stderr


@pytest.mark.parametrize("suffix", ["json", "npz"])
def test_statistics_file_round_trips_bit_for_bit_and_merges(invoke, tmp_path, rng, suffix):
    data = rng.standard_normal((40, 6)) * 1e3 + 1e5
    np.save(tmp_path / "a.npy", data[:13])
    np.save(tmp_path / "b.npy", data[13:])
    np.save(tmp_path / "all.npy", data)
    for name in ("a", "b", "all"):
        assert invoke("stats", tmp_path / f"{name}.npy", "-o",
                      tmp_path / f"{name}.{suffix}").exit_code == 0
    result = invoke("merge", tmp_path / f"a.{suffix}", tmp_path / f"b.{suffix}", "-o",
                    tmp_path / f"m.{suffix}")
    assert result.exit_code == 0, result.output
    merged = bncli.api.merge([str(tmp_path / f"m.{suffix}")]).values()
    whole = bncli.api.merge([str(tmp_path / f"all.{suffix}")]).values()
    mean, variance = reference_moments(data, (0,))
    assert_close(merged["mean"], mean, rtol=1e-14)
    assert_close(merged["variance"], variance, rtol=1e-12)
    assert_close(merged["variance"], whole["variance"], rtol=1e-12)
    assert merged["count"].tolist() == [40] * 6
    # written values read back bit for bit
    direct = bncli.api.stats([str(tmp_path / "all.npy")]).values()
    assert np.array_equal(whole["mean"], direct["mean"])
    assert np.array_equal(whole["m2"], direct["m2"])


def test_json_statistics_file_is_strict_json(invoke, tmp_path):
    np.save(tmp_path / "x.npy", np.array([[np.inf, np.nan], [1.0, 2.0]]))
    invoke("stats", tmp_path / "x.npy", "-o", tmp_path / "s.json")
    text = (tmp_path / "s.json").read_text()
    document = stats_json(text)
    assert document["mean"] == ["Infinity", "NaN"]
    assert document["max"] == ["Infinity", "NaN"]  # as np.max
    assert document["min"] == [1.0, "NaN"]


def test_merge_refuses_mismatched_files(invoke, tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 3)))
    np.save(tmp_path / "b.npy", np.zeros((4, 2)))
    invoke("stats", tmp_path / "a.npy", "-o", tmp_path / "a.json")
    invoke("stats", tmp_path / "b.npy", "-o", tmp_path / "b.json")
    invoke("stats", tmp_path / "a.npy", "--ddof", "1", "-o", tmp_path / "a1.json")
    result = invoke("merge", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "m.json")
    assert result.exit_code == 1
    assert "b.json: channel shape (2,) does not match (3,)" in result.stderr
    result = invoke("merge", tmp_path / "a.json", tmp_path / "a1.json", "-o", tmp_path / "m.json")
    assert result.exit_code == 2  # both of a.npy: its values would count twice
    assert "a1.json: holds the same statistics of the same inputs as" in result.stderr
    result = invoke("merge", tmp_path / "a.json", tmp_path / "a1.json", "-o", tmp_path / "m.json",
                    "--allow-duplicates")
    assert "a1.json: ddof 1 does not match 0" in result.stderr
    assert not (tmp_path / "m.json").exists()


def reference_normalize(values, axes, epsilon=1e-3, scale=1.0, offset=0.0):
    values = values.astype(np.float64)
    mean = values.mean(axis=axes, keepdims=True)
    variance = ((values - mean) ** 2).mean(axis=axes, keepdims=True)
    return scale * (values - mean) / np.sqrt(variance + epsilon) + offset


def test_normalize_npy(invoke, nhwc, tmp_path):
    path, values = nhwc
    out = tmp_path / "normed.npy"
    result = invoke("normalize", path, "-o", out, "--chunk-bytes", "300")
    assert result.exit_code == 0, result.output
    assert "bn: normalized 16x4x4x5 over axes [0, 1, 2]" in result.stderr
    normed = np.load(out)
    assert normed.dtype == np.float32 and normed.shape == values.shape
    expected = reference_normalize(values, (0, 1, 2))
    assert np.max(np.abs(normed - expected) / np.spacing(np.abs(expected).astype(
        np.float32).clip(1e-3))) <= 1.0


def test_normalize_scale_offset_lists_and_files(invoke, nhwc, tmp_path):
    path, values = nhwc
    np.save(tmp_path / "scale.npy", np.arange(1.0, 6.0))
    out = tmp_path / "o.npy"
    result = invoke("normalize", path, "-o", out, "--scale", str(tmp_path / "scale.npy"),
                    "--offset", "0,1,2,3,4", "--epsilon", "0.5", "--dtype", "float64", "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    expected = reference_normalize(values, (0, 1, 2), 0.5, np.arange(1.0, 6.0),
                                   np.arange(5.0))
    assert_close(np.load(out), expected, rtol=1e-13, atol=1e-13)


def test_normalize_with_saved_statistics_and_save_stats(invoke, nhwc, tmp_path):
    path, values = nhwc
    train = values[:8]
    np.save(tmp_path / "train.npy", train)
    invoke("stats", tmp_path / "train.npy", "-o", tmp_path / "train.json")
    out = tmp_path / "o.npy"
    result = invoke("normalize", path, "--stats", tmp_path / "train.json", "-o", out,
                    "--save-stats", tmp_path / "used.npz", "--dtype", "float64")
    assert result.exit_code == 0, result.output
    mean, variance = reference_moments(train, (0, 1, 2))
    assert_close(np.load(out), (values - mean) / np.sqrt(variance + 1e-3), rtol=1e-12,
                 atol=1e-12)
    used = np.load(tmp_path / "used.npz")
    assert_close(used["mean"], mean)


def test_normalize_stats_with_other_channels_is_refused(invoke, nhwc, tmp_path):
    path, _ = nhwc
    np.save(tmp_path / "other.npy", np.zeros((3, 7)))
    invoke("stats", tmp_path / "other.npy", "-o", tmp_path / "other.json")
    result = invoke("normalize", path, "--stats", tmp_path / "other.json", "-o",
                    tmp_path / "o.npy")
    assert result.exit_code == 1
    assert "other.json: channel shape 7 does not match" in result.stderr
    assert not (tmp_path / "o.npy").exists()


def test_normalize_nchw_hdf5_to_hdf5_with_attributes(invoke, tmp_path, rng):
    values = (rng.gamma(2.0, size=(10, 3, 6, 6)) * 50).astype(np.float32)
    with h5py.File(tmp_path / "in.h5", "w") as h5file:
        h5file.create_dataset("g/x", data=values, chunks=(2, 3, 6, 6), compression="gzip")
    result = invoke("normalize", f"{tmp_path / 'in.h5'}:/g/x", "--channel-axis", "1", "-o",
                    f"{tmp_path / 'out.h5'}:/normed", "--dtype", "float16", "--chunk-bytes",
                    "2K")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "out.h5") as h5file:
        dataset = h5file["normed"]
        assert dataset.dtype == np.float16 and dataset.chunks is not None
        mean, variance = reference_moments(values, (0, 2, 3))
        assert_close(dataset.attrs["mean"], mean)
        assert_close(dataset.attrs["variance"], variance, rtol=1e-12)
        assert dataset.attrs["epsilon"] == 1e-3
        assert dataset.attrs["axes"].tolist() == [0, 2, 3]
        expected = reference_normalize(values, (0, 2, 3)).astype(np.float16)
        got = dataset[()]
    ulps = np.abs(got.astype(np.float64) - expected.astype(np.float64)) / np.spacing(
        np.abs(expected).clip(np.float16(1e-3)))
    assert ulps.max() <= 1.0


def test_normalize_fortran_and_big_endian_keep_layout(invoke, tmp_path, rng):
    values = np.asfortranarray(rng.standard_normal((5, 4, 3)).astype(">f4"))
    np.save(tmp_path / "f.npy", values)
    out = tmp_path / "o.npy"
    assert invoke("normalize", tmp_path / "f.npy", "-o", out, "--chunk-bytes", "16").exit_code == 0
    normed = np.load(out)
    assert normed.flags.f_contiguous and normed.dtype == np.float32
    expected = reference_normalize(values, (0, 1))
    assert np.max(np.abs(normed - expected)) < 1e-6


def test_existing_output_refused_without_force(invoke, nhwc, tmp_path):
    path, _ = nhwc
    out = tmp_path / "o.npy"
    out.write_bytes(b"precious")
    result = invoke("normalize", path, "-o", out)
    assert result.exit_code == 1
    assert result.stderr == f"bn: error: {out}: already exists (use --force to replace it)\n"
    assert out.read_bytes() == b"precious"
    assert invoke("normalize", path, "-o", out, "--force").exit_code == 0
    assert np.load(out).shape == (16, 4, 4, 5)


def test_output_may_never_be_the_input(invoke, nhwc, tmp_path):
    path, values = nhwc
    link = tmp_path / "link.npy"
    link.symlink_to(path)
    for target in (path, link):
        result = invoke("normalize", path, "-o", target, "--force")
        assert result.exit_code == 1
        assert "is the input file" in result.stderr
    assert np.array_equal(np.load(path), values)


def test_info_reports_layout(invoke, tmp_path):
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((3, 4), ">f8")))
    with h5py.File(tmp_path / "d.h5", "w") as h5file:
        h5file.create_dataset("a", data=np.zeros((8, 4), np.int16), chunks=(2, 4),
                              compression="gzip", compression_opts=5)
        h5file.create_dataset("names", data=np.array([b"x", b"y"]))
    out = invoke("info", tmp_path / "f.npy", tmp_path / "d.h5").stdout
    assert "byte order   big" in out and "order        F (Fortran)" in out
    assert "chunks       2x4" in out and "compression  gzip (5)" in out
    assert "/names" in out and "not usable: holds strings" in out
    entries = json.loads(invoke("info", "--json", tmp_path / "d.h5:/a").stdout)
    assert entries[0]["shape"] == [8, 4] and entries[0]["chunks"] == [2, 4]


def test_info_lists_a_file_with_several_datasets(invoke, tmp_path):
    with h5py.File(tmp_path / "two.h5", "w") as h5file:
        h5file.create_dataset("a", data=np.zeros((8, 4), np.int16))
        h5file.create_dataset("g/b", data=np.zeros((3,), np.float32))
    result = invoke("info", tmp_path / "two.h5")
    assert result.exit_code == 0
    assert "dataset  /a  8x4 int16" in result.stdout
    assert "dataset  /g/b  3 float32" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--axes", "0,0"], "axis 0 is given twice"),
    (["--axes", "5"], "axis 5 is out of range"),
    (["--axes", "0", "--channel-axis", "1"], "give one of axes, a channel axis and a layout"),
    (["--ddof", "-1"], "-1 is negative"),
    (["--chunk-bytes", "lots"], "'lots' is not a size"),
    (["--axes", "a,b"], "is not a comma list of integers"),
])
def test_usage_errors_exit_2(invoke, nhwc, args, message):
    path, _ = nhwc
    result = invoke("stats", path, *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_scale_list_of_wrong_length_is_a_usage_error(invoke, nhwc, tmp_path):
    path, _ = nhwc
    result = invoke("normalize", path, "-o", tmp_path / "o.npy", "--scale", "1,2")
    assert result.exit_code == 2
    assert "scale has 2 values of shape 2, but there are 5 channels" in result.stderr
    assert not (tmp_path / "o.npy").exists()


def test_scalar_and_empty_inputs_are_refused(invoke, tmp_path):
    np.save(tmp_path / "s.npy", np.float32(3.0))
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
    result = invoke("stats", tmp_path / "s.npy")
    assert result.exit_code == 1 and "is a 0-d array" in result.stderr
    result = invoke("stats", tmp_path / "e.npy")
    assert result.exit_code == 1 and "has shape 0x3 and no elements" in result.stderr


def test_output_of_another_kind_is_a_usage_error(invoke, nhwc, tmp_path):
    path, _ = nhwc
    result = invoke("normalize", path, "-o", tmp_path / "out.npz")
    assert result.exit_code == 2
    assert "the output must be a .npy file, an HDF5 file" in result.stderr
    assert list(tmp_path.iterdir()) == [path]


def test_keepdims_statistics_file_serves_normalize_and_merge(invoke, nhwc, tmp_path):
    path, values = nhwc
    for name in ("a", "b"):
        assert invoke("stats", path, "--channel-axis", "3", "--keepdims", "-o",
                      tmp_path / f"{name}.json").exit_code == 0
    result = invoke("merge", tmp_path / "a.json", tmp_path / "b.json", "-o",
                    tmp_path / "ab.json", "--allow-duplicates")
    assert result.exit_code == 0
    merged = json.loads((tmp_path / "ab.json").read_text())
    assert np.asarray(merged["mean"]).shape == (1, 1, 1, 5) and merged["count"] == [
        [[[512] * 5]]]
    out = tmp_path / "n.npy"
    result = invoke("normalize", path, "--stats", tmp_path / "a.json", "-o", out,
                    "--dtype", "float64")
    assert result.exit_code == 0, result.output
    mean, variance = reference_moments(values, (0, 1, 2))
    assert_close(np.load(out), (values - mean) / np.sqrt(variance + 1e-3), rtol=1e-12,
                 atol=1e-12)


def test_bn_process_collects_garbage_while_a_command_runs(tmp_path):
    """bn pauses the collector while it starts and freezes what its imports made, but a
    command runs with the collector on, so a long run's cyclic garbage is still freed."""
    import subprocess
    import sys

    path = tmp_path / "x.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(4, 3))
    script = (
        "import gc, sys\n"
        "import bncli.api as api\n"
        "from bncli.cli.main import main\n"
        "real = api.stats\n"
        "def stats(*args, **kwargs):\n"
        "    sys.stderr.write(f'enabled={gc.isenabled()} frozen={gc.get_freeze_count()}\\n')\n"
        "    return real(*args, **kwargs)\n"
        "api.stats = stats\n"
        "main(['stats', sys.argv[1], '--format', 'json'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    state = dict(item.split("=") for item in result.stderr.split())
    assert state["enabled"] == "True"
    assert int(state["frozen"]) > 10_000  # NumPy's and bn's module objects
    assert json.loads(result.stdout)["mean"] == [4.5, 5.5, 6.5]
