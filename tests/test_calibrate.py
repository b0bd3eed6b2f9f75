"""Quantization ranges from the histograms, against direct NumPy computations of the same
methods on the data in memory, and the TensorRT cache against its documented layout."""

from __future__ import annotations

import json
import struct
from collections import Counter

import numpy as np
import pytest
from conftest import run_bn

from bncli import api
from bncli.errors import StatsFileError

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.fixture
def relu(tmp_path):
    """ReLU-like activations with a long tail, 4 channels of different scales."""
    rng = np.random.default_rng(5)
    values = np.maximum(rng.standard_t(4, size=(4000, 4, 4)) * [0.5, 1.0, 2.0, 4.0], 0)
    values[::97, 0, 2] *= -1  # a few negative values, so |x| folds both signs
    values = values.astype(np.float32)
    np.save(tmp_path / "acts.npy", values)
    return values, tmp_path / "acts.npy"


def magnitudes(values, channel=None):
    data = np.abs(values.astype(np.float64))
    return (data[..., channel] if channel is not None else data).reshape(-1)


def test_minmax_is_the_exact_largest_magnitude(relu):
    values, path = relu
    result = api.calibrate(path, method="minmax")
    assert result.amax.tolist() == [float(np.abs(values).max())]
    assert result.scale[0] == result.amax[0] / 127
    per_channel = api.calibrate(path, method="minmax", per_channel=True, target="fp8-e4m3")
    np.testing.assert_array_equal(per_channel.amax, np.abs(values).max(axis=(0, 1)))
    np.testing.assert_array_equal(per_channel.scale, per_channel.amax / 448)
    assert per_channel.channels == [0, 1, 2, 3]


@pytest.mark.parametrize("percentile", [50.0, 99.0, 99.99])
def test_percentile_within_the_histogram_accuracy(relu, percentile):
    values, path = relu
    result = api.calibrate(path, method="percentile", percentile=percentile, accuracy=0.01)
    expected = np.percentile(magnitudes(values), percentile, method="inverted_cdf")
    assert abs(result.amax[0] - expected) <= 0.01 * expected + 1e-30
    per_channel = api.calibrate(path, method="percentile", percentile=percentile,
                                per_channel=True)
    for channel in range(4):
        expected = np.percentile(magnitudes(values, channel), percentile,
                                 method="inverted_cdf")
        assert abs(per_channel.amax[channel] - expected) <= 0.01 * expected + 1e-30


def reference_entropy_amax(data: np.ndarray, num_bins=2048, start_bin=128, levels=128):
    """pytorch-quantization's _compute_amax_entropy (TensorRT's method), on a histogram of
    the data made by NumPy, written out as a plain loop."""
    hist, edges = np.histogram(data, bins=num_bins, range=(0, data.max()))
    bins = hist.astype(np.float64)
    bins[0] = bins[1]
    total = bins.sum()
    divergences, arguments = [], []
    for i in range(start_bin, num_bins + 1):
        space = np.linspace(0, i, num=levels + 1)
        digitized = np.digitize(range(i), space) - 1
        digitized[bins[:i] == 0] = -1
        density = np.zeros(levels)
        for index, level in enumerate(digitized):
            if level != -1:
                density[level] += bins[index]
        for level, count in Counter(digitized).items():
            if level != -1:
                density[level] /= count
        new = np.array([density[level] if level != -1 else 0.0 for level in digitized])
        reference = bins[:i].copy()
        reference[-1] += bins[i:].sum()
        assert round(reference.sum()) == total
        divergences.append(scipy_stats.entropy(reference, new))
        arguments.append(i)
    divergences = np.array(divergences)
    last = len(divergences) - 1 - np.argmin(divergences[::-1])
    return edges[arguments[last]]


def test_entropy_threshold_is_tensorrts_on_the_same_bins(relu):
    from bncli.core.calibrate import entropy_threshold

    values, _ = relu
    data = magnitudes(values)
    hist, edges = np.histogram(data, bins=2048, range=(0, data.max()))
    assert edges[entropy_threshold(hist)] == reference_entropy_amax(data)


def test_entropy_follows_tensorrt_within_the_histogram_accuracy(tmp_path):
    """From the histograms, the bins are made by spreading each bucket over the linear bins
    it overlaps; at a fine accuracy they are NumPy's to within the threshold's bin, at the
    default one the (flat) divergence curve may put the threshold some bins away."""
    rng = np.random.default_rng(1)
    values = np.maximum(rng.standard_t(4, size=(250000, 4)) * [0.5, 1.0, 2.0, 4.0], 0)
    np.save(tmp_path / "big.npy", values.astype(np.float32))
    data = magnitudes(values.astype(np.float32))
    expected = reference_entropy_amax(data)
    fine = api.calibrate(tmp_path / "big.npy", method="entropy", accuracy=0.0001)
    assert abs(fine.amax[0] - expected) <= 2 * data.max() / 2048, (fine.amax[0], expected)
    coarse = api.calibrate(tmp_path / "big.npy", method="entropy", accuracy=0.01)
    assert abs(coarse.amax[0] - expected) <= 0.1 * expected, (coarse.amax[0], expected)


def direct_error(data, amax, largest_code=127.0):
    step = amax / largest_code
    return float(np.sum((data - np.minimum(np.round(data / step), largest_code) * step) ** 2))


def test_mse_range_has_the_least_error_on_the_data(relu):
    values, path = relu
    data = magnitudes(values)
    result = api.calibrate(path, method="mse")
    candidates = data.max() * np.arange(1, 257) / 256
    best = min(direct_error(data, candidate) for candidate in candidates)
    assert direct_error(data, result.amax[0]) <= 1.02 * best
    assert result.amax[0] < data.max()  # the tail is clipped
    per_channel = api.calibrate(path, method="mse", per_channel=True, target="fp8-e4m3")
    for channel in range(4):
        data = magnitudes(values, channel)
        candidates = data.max() * np.arange(1, 257) / 256
        best = min(direct_error(data, candidate, 448.0) for candidate in candidates)
        assert direct_error(data, per_channel.amax[channel], 448.0) <= 1.02 * best


def test_a_hundred_shards_calibrate_as_their_concatenation(tmp_path, relu):
    values, path = relu
    names = []
    for index, part in enumerate(np.array_split(values, 100)):
        np.save(tmp_path / f"part{index}.npy", part)
        names.append(tmp_path / f"part{index}.json")
        api.save_statistics(api.stats(tmp_path / f"part{index}.npy", quantiles=True),
                            names[-1])
    for method in ("minmax", "percentile", "entropy", "mse"):
        for per_channel in (False, True):
            whole = api.calibrate(path, method=method, per_channel=per_channel)
            shards = api.calibrate(names, method=method, per_channel=per_channel)
            np.testing.assert_array_equal(shards.amax, whole.amax)


def test_tensorrt_cache_layout(relu, tmp_path):
    _, path = relu
    result = run_bn("calibrate", path, "--method", "percentile", "--name", "conv1/relu",
                    "--to", "tensorrt", "-o", tmp_path / "calib.cache")
    assert result.returncode == 0, result.stderr
    header, line, *rest = (tmp_path / "calib.cache").read_text().split("\n")
    assert rest == [""]
    assert header.startswith("TRT-") and header.endswith("-EntropyCalibration2")
    name, hex_scale = line.split(": ")
    assert name == "conv1/relu" and len(hex_scale) == 8
    scale = struct.unpack(">f", bytes.fromhex(hex_scale))[0]
    expected = api.calibrate(path, method="percentile")
    assert scale == np.float32(expected.amax[0] / 127)
    refused = run_bn("calibrate", path, "--per-channel", "--to", "tensorrt")
    assert refused.returncode == 2


def test_calibrate_outputs_and_errors(relu, tmp_path):
    values, path = relu
    as_json = json.loads(run_bn("calibrate", path, "--method", "minmax", "--per-channel",
                                "--to", "json").stdout)
    assert as_json["amax"] == np.abs(values).max(axis=(0, 1)).astype(float).tolist()
    assert as_json["channels"] == [0, 1, 2, 3] and as_json["method"] == "minmax"
    csv = run_bn("calibrate", path, "--method", "minmax", "--to", "csv").stdout.decode()
    assert csv.splitlines()[0] == "tensor,amax,scale"
    table = run_bn("calibrate", path, "--to", "table").stdout.decode()
    assert "entropy ranges for int8" in table
    api.save_statistics(api.stats(path), tmp_path / "plain.json")
    with pytest.raises(StatsFileError, match="no histograms"):
        api.calibrate(tmp_path / "plain.json")


def test_each_tensor_of_a_file_in_one_tensorrt_cache(tmp_path, rng):
    import h5py

    first = np.maximum(rng.normal(size=(2000, 8)), 0).astype(np.float32)
    second = (rng.normal(size=(500, 3, 3)) * 5).astype(np.float32)
    with h5py.File(tmp_path / "acts.h5", "w") as h5file:
        h5file["block1/relu"] = first
        h5file["block2/conv"] = second
    np.save(tmp_path / "first.npy", first)
    result = run_bn("calibrate", tmp_path / "acts.h5", "--each", "--method", "minmax",
                    "--to", "tensorrt")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("TRT-") and len(lines) == 3
    scales = dict(line.split(": ") for line in lines[1:])
    for name, values in (("block1/relu", first), ("block2/conv", second)):
        expected = np.float32(np.abs(values).max() / 127)
        assert struct.unpack(">f", bytes.fromhex(scales[name]))[0] == expected
    # the same range as the array alone
    alone = api.calibrate(tmp_path / "first.npy", method="entropy")
    [each] = [found for found in api.calibrate_each(tmp_path / "acts.h5", method="entropy")
              if found.name == "block1/relu"]
    np.testing.assert_array_equal(each.amax, alone.amax)


def test_nan_is_refused_unless_left_out(tmp_path, rng):
    values = rng.normal(size=(1000, 2))
    values[5, 1] = np.nan
    np.save(tmp_path / "x.npy", values)
    refused = run_bn("calibrate", tmp_path / "x.npy")
    assert refused.returncode == 1 and "1 NaN value" in refused.stderr.decode()
    assert "--ignore-nan" in refused.stderr.decode()
    result = api.calibrate(tmp_path / "x.npy", method="minmax", ignore_nan=True)
    assert result.amax[0] == np.nanmax(np.abs(values))


def test_an_archive_of_arrays_is_an_input_and_a_statistics_npz_is_not(relu, tmp_path):
    values, _ = relu
    np.savez(tmp_path / "layers.npz", conv1=values, conv2=-2 * values)
    member = json.loads(run_bn("calibrate", f"{tmp_path / 'layers.npz'}:conv2", "--method",
                               "minmax", "--to", "json").stdout)
    assert member["amax"] == [float(2 * np.abs(values.astype(np.float64)).max())]
    whole = run_bn("calibrate", tmp_path / "layers.npz")
    assert whole.returncode == 1
    assert "holds 2 arrays; name one as" in whole.stderr.decode()
    assert run_bn("stats", tmp_path / "layers.npz:conv1", "--quantiles", "-o",
                  tmp_path / "s.npz", "-q").returncode == 0
    from_statistics = json.loads(run_bn("calibrate", tmp_path / "s.npz", "--method", "minmax",
                                        "--to", "json").stdout)
    assert from_statistics["amax"] == [float(np.abs(values).max())]
    refused = run_bn("normalize", tmp_path / "layers.npz:conv1", "--stats",
                     tmp_path / "layers.npz", "-o", tmp_path / "y.npy")
    assert refused.returncode == 1
    assert "layers.npz: not a statistics file" in refused.stderr.decode()
    assert not (tmp_path / "y.npy").exists()
