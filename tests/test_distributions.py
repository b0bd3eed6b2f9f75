"""Per-channel distributions: quantiles against np.quantile, exact counts, exact merging."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import KERNELS, every_path, examples, run_bn, stats_json, using_kernel
from hypothesis import given, settings
from hypothesis import strategies as st

from bncli import api
from bncli.core.histogram import DEFAULT_LEVELS, bucket_accuracy, mantissa_bits
from bncli.io import statsfile

LEVELS = (0.0, 0.0001, 0.001, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999, 0.9999, 1.0)


def reference_quantiles(values, levels, axes=(0,)):
    """Independent reference: NumPy's inverted-CDF quantiles in float64, channels last."""
    values = np.moveaxis(np.asarray(values, np.float64), axes, range(len(axes)))
    flat = values.reshape(-1, *values.shape[len(axes):])
    return np.moveaxis(np.quantile(flat, levels, axis=0, method="inverted_cdf"), 0, -1)


def assert_within_accuracy(found, expected, accuracy):
    found, expected = np.asarray(found, np.float64), np.asarray(expected, np.float64)
    assert found.shape == expected.shape
    both_equal = found == expected
    error = np.abs(found - expected)
    assert np.all(both_equal | (error <= accuracy * np.abs(expected))), (
        np.max(error / np.abs(expected)))


def datasets(rng):
    n = 20000
    normal = rng.standard_normal((n, 6)).astype(np.float32) * np.array([1, 2, 3, 0.1, 10, 1e-3],
                                                                       np.float32)
    relu = np.maximum(rng.standard_normal((n, 6)) - 0.52, 0)  # ~70% exact zeros
    saturated = np.clip(rng.standard_normal((n, 6)) * 3, -1, 6).astype(np.float32)
    return {
        "normal": normal,
        "lognormal": rng.lognormal(0, 2, (n, 5)),
        "relu": relu,
        "uint8": rng.integers(0, 256, (n, 4)).astype(np.uint8),
        "saturated": saturated,
        "float16": rng.standard_normal((n, 3)).astype(np.float16),
        "int64": rng.integers(-2**50, 2**50, (n, 3)),
        "big-endian": rng.standard_normal((n, 3)).astype(">f8") * 1e200,
    }


@pytest.mark.parametrize("name", list(datasets(np.random.default_rng(0))))
def test_quantiles_are_within_the_accuracy_of_numpy_inverted_cdf(tmp_path, name):
    values = datasets(np.random.default_rng(5))[name]
    np.save(tmp_path / "x.npy", values)
    statistics = api.stats(tmp_path / "x.npy", quantiles=LEVELS, chunk_bytes=50_000)
    expected = reference_quantiles(values, LEVELS)
    assert_within_accuracy(statistics.values()["quantiles"], expected, 0.01)
    # the lowest and highest rank are the exact extremes
    np.testing.assert_array_equal(statistics.values()["quantiles"][:, 0], values.min(axis=0))
    np.testing.assert_array_equal(statistics.values()["quantiles"][:, -1], values.max(axis=0))


def test_relu_channels_have_exact_zero_quantiles_and_zero_counts(tmp_path, rng):
    values = np.maximum(rng.standard_normal((5000, 4)) - 0.52, 0).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    statistics = api.stats(tmp_path / "x.npy", quantiles=(0.5, 0.6))
    result = statistics.values()
    np.testing.assert_array_equal(result["zero_count"], (values == 0).sum(axis=0))
    np.testing.assert_array_equal(result["min_count"], (values == 0).sum(axis=0))
    np.testing.assert_array_equal(result["quantiles"][:, 0], 0.0)  # the median is a zero


@pytest.mark.parametrize("accuracy", [0.1, 0.01, 0.001])
def test_a_finer_accuracy_is_kept(tmp_path, rng, accuracy):
    values = rng.lognormal(0, 3, (30000, 2))
    np.save(tmp_path / "x.npy", values)
    statistics = api.stats(tmp_path / "x.npy", quantiles=LEVELS, accuracy=accuracy)
    assert bucket_accuracy(mantissa_bits(accuracy)) <= accuracy
    assert_within_accuracy(statistics.values()["quantiles"], reference_quantiles(values, LEVELS),
                           accuracy)


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=examples(40), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 300), channels=st.integers(1, 5),
       dtype=st.sampled_from(["float32", "float64", "int16", "uint8", "float16", "int32",
                              "bool"]),
       chunk=st.integers(64, 5000), zeros=st.floats(0, 1))
def test_quantiles_and_counts_hold_for_any_shape_dtype_and_chunking(tmp_path_factory, kernel,
                                                                    seed, rows, channels,
                                                                    dtype, chunk, zeros):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((rows, channels)) * 40
    values[rng.random(values.shape) < zeros] = 0
    values = values.astype(dtype)
    path = tmp_path_factory.mktemp("q") / "x.npy"
    np.save(path, values)
    with using_kernel(kernel):
        statistics = api.stats(path, quantiles=LEVELS, chunk_bytes=chunk)
    result = statistics.values()
    assert_within_accuracy(result["quantiles"], reference_quantiles(values, LEVELS), 0.01)
    wide = values.astype(np.float64)
    np.testing.assert_array_equal(result["zero_count"], (wide == 0).sum(axis=0))
    np.testing.assert_array_equal(result["min_count"], (wide == wide.min(axis=0)).sum(axis=0))
    np.testing.assert_array_equal(result["max_count"], (wide == wide.max(axis=0)).sum(axis=0))


def histogram_fields(document):
    return {key: value for key, value in document.items()
            if key.startswith("histogram") or key in ("quantiles", "zero_count", "min_count",
                                                      "max_count")}


def test_histograms_are_bit_identical_across_chunks_threads_orders_files_and_merge(tmp_path,
                                                                                    rng):
    values = (rng.standard_normal((64, 6, 5, 3)) * np.array([1, 10, 100])).astype(np.float32)
    values[:, :, :, 1] = np.maximum(values[:, :, :, 1], 0)
    runs = every_path(tmp_path, values, 20, (7, 2, 5, 3))
    documents = {}
    for name, args in runs.items():
        result = run_bn("stats", *args, "--quantiles", "--format", "json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        documents[name] = histogram_fields(stats_json(result.stdout))
    for part in ("a", "b"):
        assert run_bn("stats", f"{part}.npy", "--quantiles", "-o", f"{part}.json",
                      "-q", cwd=tmp_path).returncode == 0
    merged = run_bn("merge", "a.json", "b.json", "--format", "json", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    documents["merge"] = histogram_fields(stats_json(merged.stdout))
    first = documents.pop("one block")
    assert first["quantiles"]["levels"] == list(DEFAULT_LEVELS)
    for name, document in documents.items():
        assert document == first, name


def test_statistics_files_keep_the_histograms_and_merge_them_exactly(tmp_path, rng):
    values = rng.standard_normal((3000, 4)) * [1, 5, 25, 125]
    for index, part in enumerate(np.array_split(values, 5)):
        np.save(tmp_path / f"p{index}.npy", part)
        api.save_statistics(api.stats(tmp_path / f"p{index}.npy", quantiles=(0.01, 0.5, 0.99)),
                            tmp_path / f"p{index}.{'npz' if index % 2 else 'json'}")
    np.save(tmp_path / "all.npy", values)
    whole = api.stats(tmp_path / "all.npy", quantiles=(0.01, 0.5, 0.99))
    merged = api.merge([tmp_path / f"p{index}.{'npz' if index % 2 else 'json'}"
                        for index in range(5)])
    np.testing.assert_array_equal(merged.values()["quantiles"], whole.values()["quantiles"])
    np.testing.assert_array_equal(merged.histogram.pos, whole.histogram.pos)


def test_files_without_histograms_still_merge_and_normalize(tmp_path, rng):
    values = rng.standard_normal((100, 3))
    np.save(tmp_path / "x.npy", values)
    api.save_statistics(api.stats(tmp_path / "x.npy"), tmp_path / "plain.json")
    document = json.loads((tmp_path / "plain.json").read_text())
    assert "quantiles" not in document and document["zero_count"] == [0, 0, 0]
    for key in ("zero_count", "min_count", "max_count"):  # as a file of an older bn
        del document[key]
    (tmp_path / "old.json").write_text(json.dumps(document))
    merged = api.merge([tmp_path / "old.json", tmp_path / "plain.json"], allow_duplicates=True)
    assert merged.values()["count"].tolist() == [200] * 3
    assert "zero_count" not in merged.values()
    result = run_bn("normalize", "x.npy", "--stats", "old.json", "-o", "y.npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_histograms_of_different_accuracies_do_not_merge(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((50, 2)))
    for name, accuracy in (("a", "0.01"), ("b", "0.05")):
        assert run_bn("stats", "x.npy", "--quantiles", "--accuracy", accuracy, "-o",
                      f"{name}.json", "-q", cwd=tmp_path).returncode == 0
    result = run_bn("merge", "a.json", "b.json", "--allow-duplicates", cwd=tmp_path)
    assert result.returncode == 1
    assert b"only histograms of one grid merge" in result.stderr


def test_findings_sparse_saturated_and_wide_range(tmp_path, rng):
    values = rng.standard_normal((20000, 5))
    values[:19900, 0] = 0  # 99.5% zeros: sparse
    values[:, 1] = np.clip(values[:, 1], -1, 1)  # ~16% at each bound: saturated
    values[7, 2] = 1e3  # one value 130x beyond the rest: wide_range
    np.save(tmp_path / "x.npy", values)
    result = run_bn("stats", "x.npy", "--quantiles", "--format", "json",
                    "--fail-on", "sparse,saturated,wide_range", cwd=tmp_path)
    assert result.returncode == 3
    findings = {item["kind"]: item["channels"] for item in stats_json(result.stdout)["findings"]}
    assert findings["sparse"] == [0]
    assert findings["saturated"] == [1]
    assert findings["wide_range"] == [2]
    assert b"--fail-on: sparse in 1 channel: 0" in result.stderr
    # without quantiles, no wide_range; a lower sparse threshold flags more
    plain = run_bn("stats", "x.npy", "--format", "json", "--sparse-threshold", "0.5",
                   cwd=tmp_path)
    kinds = {item["kind"] for item in stats_json(plain.stdout)["findings"]}
    assert "wide_range" not in kinds and "sparse" in kinds


def test_table_and_csv_show_the_quantiles(tmp_path, rng):
    values = rng.standard_normal((1000, 2))
    np.save(tmp_path / "x.npy", values)
    table = run_bn("stats", "x.npy", "--quantiles", "--format", "table", cwd=tmp_path)
    header = next(line for line in table.stdout.decode().splitlines()
                  if line.lstrip().startswith("channel"))
    assert header.split()[6:9] == ["p1", "p50", "p99"]
    few = run_bn("stats", "--quantiles", "0.05,0.95", "x.npy", "--format", "csv", cwd=tmp_path)
    assert few.returncode == 0, few.stderr
    lines = few.stdout.decode().splitlines()
    assert lines[0].split(",")[-3:] == ["p5", "p95", "flags"]
    expected = reference_quantiles(values, (0.05, 0.95))
    found = np.array([[float(cell) for cell in line.split(",")[-3:-1]] for line in lines[1:]])
    assert_within_accuracy(found, expected, 0.01)


@pytest.mark.parametrize("args, message", [
    (["--quantiles", "1.5"], b"level 1.5 is not from 0 to 1"),
    (["--quantiles", "--accuracy", "0"], b"accuracy 0.0 is not between 0 and 1"),
    (["--quantiles", "--accuracy", "1e-9"], b"finer than"),
])
def test_bad_quantile_options_are_usage_errors(tmp_path, rng, args, message):
    np.save(tmp_path / "x.npy", rng.standard_normal((10, 2)))
    result = run_bn("stats", "x.npy", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and b"Traceback" not in result.stderr


def test_a_lying_histogram_in_a_statistics_file_is_refused(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((100, 2)))
    api.save_statistics(api.stats(tmp_path / "x.npy", quantiles=True), tmp_path / "s.json")
    document = json.loads((tmp_path / "s.json").read_text())
    document["histogram_pos_length"][0] += 1
    (tmp_path / "bad.json").write_text(json.dumps(document))
    result = run_bn("merge", "bad.json", cwd=tmp_path)
    assert result.returncode == 1
    assert b"bad.json: histogram_pos_counts holds" in result.stderr
    with pytest.raises(Exception, match="outside the grid"):
        document = json.loads((tmp_path / "s.json").read_text())
        document["histogram_neg_start"][1] = 2047 << 6  # past the largest finite bucket
        (tmp_path / "bad2.json").write_text(json.dumps(document))
        statsfile.load(str(tmp_path / "bad2.json"))


@pytest.fixture
def drift_pair(tmp_path):
    """BASE and NEW of 6 channels: 0 unchanged, 1 shifted by 0.5 std, 2 twice as wide,
    3 newly sparse, 4 newly saturated, 5 newly dead."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((20000, 6))
    new = rng.standard_normal((20000, 6))
    new[:, 1] += 0.5
    new[:, 2] *= 2
    new[:19900, 3] = 0
    new[:, 4] = np.clip(new[:, 4], -1, 1)
    new[:, 5] = 0.25
    np.save(tmp_path / "base.npy", base)
    np.save(tmp_path / "new.npy", new)
    return tmp_path, base, new


def reference_psi(base, new, bins=10, floor=1e-4):
    """PSI over BASE's deciles from the raw values (an independent computation)."""
    edges = np.quantile(base, np.arange(1, bins) / bins, method="inverted_cdf")
    p = np.diff(np.concatenate([[0], np.searchsorted(np.sort(base), edges, "right"),
                                [base.size]])) / base.size
    q = np.diff(np.concatenate([[0], np.searchsorted(np.sort(new), edges, "right"),
                                [new.size]])) / new.size
    used = (p > 0) | (q > 0)
    p, q = np.maximum(p, floor), np.maximum(q, floor)
    return float(np.sum(np.where(used, (q - p) * np.log(q / p), 0)))


def test_diff_reports_known_shifts_and_new_dead_sparse_saturated_channels(drift_pair):
    directory, base, new = drift_pair
    result = run_bn("diff", "base.npy", "new.npy", "--format", "json", cwd=directory)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    expected_shift = (new.mean(axis=0) - base.mean(axis=0)) / base.std(axis=0)
    np.testing.assert_allclose(document["mean_shift"], expected_shift, rtol=1e-12)
    np.testing.assert_allclose(document["std_ratio"], new.std(axis=0) / base.std(axis=0),
                               rtol=1e-12)
    assert document["drift"] == [1, 2, 3, 4, 5]
    assert document["became"] == {"dead": [5], "sparse": [3], "nonfinite": [],
                                  "saturated": [4]}
    # PSI from the histograms agrees with PSI from the raw values where bucket edges do not
    # matter (the unchanged and the shifted channel), and is large for the wider one
    for channel in (0, 1):
        assert document["psi"][channel] == pytest.approx(
            reference_psi(base[:, channel], new[:, channel]), abs=0.02)
    assert document["psi"][0] < 0.01 and document["psi"][2] > 0.3
    # mass outside BASE's [p0.1, p99.9]: 0.2% for the same distribution; more when wider
    assert document["outside"][0] == pytest.approx(0.002, abs=0.0015)
    exact = np.mean((new[:, 2] < np.quantile(base[:, 2], 0.001)) |
                    (new[:, 2] > np.quantile(base[:, 2], 0.999)))
    assert document["outside"][2] == pytest.approx(exact, rel=0.1)


def test_diff_exit_status_follows_the_thresholds(drift_pair):
    directory, _, _ = drift_pair
    gate = run_bn("diff", "base.npy", "new.npy", "--fail-on", "drift", "-q", cwd=directory)
    assert gate.returncode == 3
    assert b"bn: --fail-on: drift in 5 channels: 1, 2, 3, 4, 5" in gate.stderr
    loose = run_bn("diff", "base.npy", "new.npy", "--fail-on", "dead", "-q", cwd=directory)
    assert loose.returncode == 3 and b"dead in 1 channel: 5" in loose.stderr
    same = run_bn("diff", "base.npy", "base.npy", "--fail-on", "any", "-q", cwd=directory)
    assert same.returncode == 0, same.stderr
    wide = run_bn("diff", "base.npy", "new.npy", "--fail-on", "drift", "--max-shift", "1",
                  "--max-psi", "100", "--format", "json", cwd=directory)
    assert wide.returncode == 0 and json.loads(wide.stdout)["drift"] == []


def test_diff_of_statistics_files_equals_diff_of_the_inputs(drift_pair):
    directory, _, _ = drift_pair
    for name in ("base", "new"):
        assert run_bn("stats", f"{name}.npy", "--quantiles", "-o", f"{name}.json", "-q",
                      cwd=directory).returncode == 0
    files = json.loads(run_bn("diff", "base.json", "new.json", "--format", "json",
                              cwd=directory).stdout)
    inputs = json.loads(run_bn("diff", "base.npy", "new.npy", "--format", "json",
                               cwd=directory).stdout)
    for key in ("mean_shift", "std_ratio", "psi", "outside", "drift", "became"):
        assert files[key] == inputs[key], key
    # without histograms on one side: the moments only, and the table says why
    assert run_bn("stats", "base.npy", "-o", "plain.json", "-q", cwd=directory).returncode == 0
    plain = run_bn("diff", "plain.json", "new.json", "--format", "table", cwd=directory)
    assert plain.returncode == 0, plain.stderr
    assert b"need histograms on both sides" in plain.stdout
    assert "psi" not in json.loads(run_bn("diff", "plain.json", "new.json", "--format", "json",
                                          cwd=directory).stdout)


def test_diff_refuses_sides_of_different_channels(tmp_path, rng):
    np.save(tmp_path / "a.npy", rng.standard_normal((10, 4)))
    np.save(tmp_path / "b.npy", rng.standard_normal((10, 5)))
    result = run_bn("diff", "a.npy", "b.npy", cwd=tmp_path)
    assert result.returncode == 2
    assert b"b.npy: channel shape 5 does not match a.npy's 4" in result.stderr


def test_plot_draws_percentile_bands_and_the_flagged_channels_histograms(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs the bncli[plot] extra")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from bncli.cli.plot import plot_statistics

    rng = np.random.default_rng(8)
    values = np.maximum(rng.standard_normal((20000, 6)) + 0.3, 0)
    values[:19950, 2] = 0  # sparse
    values[:, 4] = np.minimum(values[:, 4], 0.5)  # saturated at 0.5
    np.save(tmp_path / "x.npy", values)
    statistics = api.stats(tmp_path / "x.npy", quantiles=True)
    stairs, titles = {}, []
    original_stairs, original_title = pyplot.Axes.stairs, pyplot.Axes.set_title

    def record_stairs(self, values, edges=None, *args, **kwargs):
        stairs.setdefault(kwargs.get("label"), []).append(np.asarray(values))
        return original_stairs(self, values, edges, *args, **kwargs)

    def record_title(self, text, *args, **kwargs):
        titles.append(text)
        return original_title(self, text, *args, **kwargs)

    pyplot.Axes.stairs, pyplot.Axes.set_title = record_stairs, record_title
    try:
        plot_statistics(statistics, statistics.findings(), str(tmp_path / "p.png"))
    finally:
        pyplot.Axes.stairs, pyplot.Axes.set_title = original_stairs, original_title
    # the p1..p99 band's tops, in the left half of each channel, are the channels' p99
    tops = stairs["p1 .. p99"][0][::2]
    np.testing.assert_allclose(tops, statistics.quantiles([0.99])[:, 0])
    assert np.all(tops >= stairs["median"][0][::2])
    # one histogram panel per flagged channel, the saturated one peaking in its last bin
    panels = [title for title in titles if title.startswith("channel ")]
    assert [title.split(":")[0] for title in panels] == ["channel 2", "channel 4"]
    assert "sparse" in panels[0] and f"{np.mean(values[:, 2] == 0):.1%} zeros" in panels[0]
    assert "saturated" in panels[1]
    saturated = stairs[None][-1]
    assert saturated.argmax() == len(saturated) - 1
