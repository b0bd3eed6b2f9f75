"""The extensible reduction: higher moments, a new kind of partial, and wide channel shapes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import assert_close, doc_example, examples, reference_moments, run_bn, stats_json
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bncli import api
from bncli.core.layout import AxesSpec, is_contiguous, plan_regions
from bncli.core.moments import block_moments
from bncli.core.partials import KINDS, Reduction
from bncli.exec.engine import compute_statistics
from bncli.io import statsfile
from bncli.io.registry import open_source

scipy_stats = pytest.importorskip("scipy.stats")


def scipy_shape(values: np.ndarray, axes) -> tuple:
    """scipy's population skewness and excess kurtosis per channel, in float64."""
    values = np.asarray(values, np.float64)
    kept = [axis for axis in range(values.ndim) if axis not in axes]
    columns = np.moveaxis(values, kept, list(range(len(kept)))).reshape(
        int(np.prod([values.shape[axis] for axis in kept])), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nearly constant columns
        return scipy_stats.skew(columns, axis=1), scipy_stats.kurtosis(columns, axis=1)


@st.composite
def shaped_data(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=2, max_side=7))
    dtype = draw(st.sampled_from(["float32", "float64", "int16", "uint8"]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    values = rng.gamma(2.0, size=shape) * 10 + draw(st.sampled_from([0.0, 100.0, -1e4]))
    values = values.astype(dtype) if dtype.startswith("float") else np.clip(
        values, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    axes = draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    return values, tuple(sorted(axes))


@settings(max_examples=examples(150), deadline=None)
@given(case=shaped_data(), piece_bytes=st.sampled_from([16, 64, 1000, 2**21]),
       ignore_nan=st.booleans())
def test_skewness_and_kurtosis_match_scipy(case, piece_bytes, ignore_nan):
    values, axes = case
    result = block_moments(values, axes, order=4, ignore_nan=ignore_nan,
                           piece_bytes=piece_bytes).finalize()
    skew, kurtosis = scipy_shape(values, axes)
    variance = reference_moments(values, axes)[1].ravel()
    spread = variance > 1e-6  # below, the shape statistics are rounding noise
    # scipy's own rounding at an offset of 1e4 reaches 1e-10 where the true value is 0
    assert_close(result["skewness"].ravel()[spread], skew[spread], rtol=1e-10, atol=1e-9)
    assert_close(result["kurtosis"].ravel()[spread], kurtosis[spread], rtol=1e-10, atol=1e-9)
    # a constant channel has no shape (a tiny but real spread has one, however noisy)
    assert np.all(np.isnan(result["skewness"].ravel()[variance == 0]))


def test_pebay_merge_on_hand_computed_values():
    left = block_moments(np.array([[1.0], [2.0], [3.0]]), [0], order=4)
    right = block_moments(np.array([[10.0], [20.0]]), [0], order=4)
    merged = left.merge(right)
    # deviations from 7.2: -6.2 -5.2 -4.2 2.8 12.8
    deviations = np.array([-6.2, -5.2, -4.2, 2.8, 12.8])
    assert merged.m3.item() == pytest.approx(np.sum(deviations**3), rel=1e-13)
    assert merged.m4.item() == pytest.approx(np.sum(deviations**4), rel=1e-13)


def test_moments_4_in_json_csv_and_merge(tmp_path):
    values = np.random.default_rng(5).gamma(3.0, size=(300, 4))
    np.save(tmp_path / "a.npy", values[:120])
    np.save(tmp_path / "b.npy", values[120:])
    np.save(tmp_path / "all.npy", values)
    skew, kurtosis = scipy_shape(values, (0,))
    whole = stats_json(run_bn("stats", tmp_path / "all.npy", "--moments", "4", "--format",
                              "json").stdout)
    assert_close(whole["skewness"], skew, rtol=1e-10)
    assert_close(whole["kurtosis"], kurtosis, rtol=1e-10)
    csv = run_bn("stats", tmp_path / "all.npy", "--moments", "4", "--format", "csv").stdout
    header, first = csv.decode().splitlines()[:2]
    row = dict(zip(header.split(","), first.split(",")))
    assert float(row["skewness"]) == pytest.approx(skew[0], rel=1e-10)
    for part in ("a", "b"):
        assert run_bn("stats", tmp_path / f"{part}.npy", "--moments", "4", "-o",
                      tmp_path / f"{part}.json", "--format", "csv").returncode == 0
    merged = run_bn("merge", tmp_path / "a.json", tmp_path / "b.json", "-o",
                    tmp_path / "ab.json", "--format", "json")
    assert merged.returncode == 0, merged.stderr
    document = stats_json(merged.stdout)
    assert_close(document["skewness"], skew, rtol=1e-10)
    assert_close(document["kurtosis"], kurtosis, rtol=1e-10)
    default = stats_json(run_bn("stats", tmp_path / "all.npy", "--format", "json").stdout)
    assert "skewness" not in default and "m3" not in default
    assert run_bn("stats", tmp_path / "all.npy", "-o", tmp_path / "two.json", "--format",
                  "csv").returncode == 0
    mixed = run_bn("merge", tmp_path / "a.json", tmp_path / "two.json", "-o", tmp_path / "x.json")
    assert mixed.returncode == 1
    assert b"two.json: moments order 2 does not match 4" in mixed.stderr
    assert not (tmp_path / "x.json").exists()


# the worked example of docs/ARCHITECTURE.md: a partial that no part of bn knows
SignCounts = doc_example("statistic")["SignCounts"]


def test_a_new_partial_goes_through_engine_tree_file_and_merge(tmp_path):
    assert KINDS["test_signs"] is SignCounts
    rng = np.random.default_rng(6)
    values = rng.standard_normal((40, 5, 3))
    np.save(tmp_path / "x.npy", values)
    np.save(tmp_path / "f.npy", np.asfortranarray(values[:25]))
    np.save(tmp_path / "g.npy", values[25:])
    reduction = Reduction(kinds=("moments", "test_signs"))
    expected_negative = (values < 0).sum(axis=(0, 2))
    with open_source(str(tmp_path / "x.npy")) as source:
        for chunk_bytes, threads in ((200, 1), (333, 2), (10**6, 2)):
            statistics = compute_statistics([source], axes=AxesSpec((0, 2)), reduction=reduction,
                                            chunk_bytes=chunk_bytes, threads=threads)
            values_out = statistics.values()
            assert values_out["negative"].tolist() == expected_negative.tolist()
            assert values_out["negative"].tolist() == (
                values_out["count"] - values_out["positive"]).tolist()
    with open_source(str(tmp_path / "f.npy")) as first, \
            open_source(str(tmp_path / "g.npy")) as second:
        parts = [compute_statistics([source], axes=AxesSpec((0, 2)), reduction=reduction,
                                    chunk_bytes=150) for source in (first, second)]
    for index, part in enumerate(parts):
        api.save_statistics(part, tmp_path / f"p{index}.{'json' if index else 'npz'}")
    loaded = statsfile.load(str(tmp_path / "p0.npz"))
    assert list(loaded.partials.members) == ["moments", "test_signs"]
    merged = api.merge([tmp_path / "p0.npz", tmp_path / "p1.json"])
    assert merged.values()["negative"].tolist() == expected_negative.tolist()
    assert_close(merged.values()["mean"], values.mean(axis=(0, 2)), rtol=1e-13)


@pytest.mark.parametrize("shape, axes", [
    ((16, 2**16), (0,)),          # few rows of very many channels
    ((600, 3, 40, 40), (0,)),     # per-pixel statistics
    ((300, 5, 2000), (0, 2)),     # NCW with long rows
])
def test_wide_channel_shapes_are_cut_into_tiles_with_the_same_numbers(tmp_path, shape, axes):
    rng = np.random.default_rng(7)
    values = (rng.standard_normal(shape) + 50).astype(np.float32)
    np.save(tmp_path / "wide.npy", values)
    regions = list(plan_regions(shape, 4, 2**18, axes))
    covered = np.zeros(shape, np.int8)
    for region in regions:
        covered[region] += 1
    assert np.all(covered == 1)  # the tiles cut the array exactly once
    mean, variance = reference_moments(values, axes)
    for chunk in ("256K", "64K"):
        result = run_bn("stats", tmp_path / "wide.npy", "--axes", ",".join(map(str, axes)),
                        "--chunk-bytes", chunk, "--format", "json", "-o",
                        tmp_path / f"s{chunk}.npz")
        assert result.returncode == 0, result.stderr
        document = stats_json(result.stdout)
        assert_close(np.asarray(document["mean"], np.float64).ravel(), mean.ravel(),
                     rtol=1e-13)
        assert_close(np.asarray(document["variance"], np.float64).ravel(), variance.ravel(),
                     rtol=1e-12)
    if shape == (16, 2**16):
        assert not any(is_contiguous(region, shape) for region in regions)
