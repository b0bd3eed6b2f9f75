"""Exactness against exact rational references: large offsets, 64-bit integers, normalize bounds.

The references are Python fractions (moments) and 50-digit decimals (normalize, whose
square root is irrational), never the code under test.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal, getcontext
from fractions import Fraction

import numpy as np
import pytest
from conftest import every_path, run_bn, stats_json, using_kernel

import bncli
from bncli.core.moments import block_moments

getcontext().prec = 50
UNIT = Fraction(1, 2**53)  # the unit roundoff of float64


def exact_moments(values: np.ndarray, axes) -> tuple:
    """Exact mean and population variance per channel, as lists of Fractions."""
    values = np.asarray(values)
    kept = [axis for axis in range(values.ndim) if axis not in axes]
    columns = np.moveaxis(values, kept, list(range(len(kept)))).reshape(
        int(np.prod([values.shape[axis] for axis in kept])), -1)
    means, variances = [], []
    for column in columns:
        numbers = [Fraction(int(v)) if values.dtype.kind in "iub" else Fraction(float(v))
                   for v in column.tolist()]
        mean = sum(numbers) / len(numbers)
        means.append(mean)
        variances.append(sum((number - mean) ** 2 for number in numbers) / len(numbers))
    return means, variances


def relative_errors(got, exact) -> list:
    return [abs(Fraction(float(value)) - reference) / reference if reference else
            abs(Fraction(float(value))) for value, reference in zip(np.ravel(got), exact)]


def ulp_errors(got, exact) -> list:
    return [abs(Fraction(float(value)) - reference) / Fraction(np.spacing(abs(float(value))))
            for value, reference in zip(np.ravel(got), exact)]


def offset_data(offset: float, shape=(64, 6, 6, 3), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return offset + rng.standard_normal(shape)


@pytest.mark.parametrize("offset", [1e6, 1e8])
@pytest.mark.parametrize("piece_bytes", [64, 4096, 2**21])
def test_float64_with_a_large_mean_keeps_the_variance_to_1e13(offset, piece_bytes):
    values = offset_data(offset)
    result = block_moments(values, (0, 1, 2), piece_bytes=piece_bytes).finalize()
    means, variances = exact_moments(values, (0, 1, 2))
    assert max(relative_errors(result["variance"], variances)) <= 1e-13
    assert max(ulp_errors(result["mean"], means)) <= 2


@pytest.mark.parametrize("axes", [(0,), (0, 2, 3), (1, 2, 3)])
def test_float64_offset_1e8_in_the_general_and_slab_paths(axes):
    values = offset_data(1e8, shape=(24, 3, 5, 4), seed=3)
    for piece_bytes in (40, 2**20):
        result = block_moments(values, axes, piece_bytes=piece_bytes).finalize()
        means, variances = exact_moments(values, axes)
        assert max(relative_errors(result["variance"], variances)) <= 1e-13
        assert max(ulp_errors(result["mean"], means)) <= 2


def test_shift_invariance_of_the_library_function():
    values = offset_data(0.0, shape=(512, 4), seed=5)
    _, centred = bncli.moments(values, axes=[0])
    _, shifted = bncli.moments(values + 1e8, axes=[0])
    exact = exact_moments(values + 1e8, (0,))[1]
    assert max(relative_errors(shifted, exact)) <= 1e-13
    # the data shifted by 1e8 are not the same numbers (rounding), so compare loosely
    np.testing.assert_allclose(shifted, centred, rtol=1e-6)


@pytest.mark.parametrize("kernel_name", ["compiled", "numpy"])
@pytest.mark.parametrize("layout", ["rows", "slabs"])
def test_int64_near_2_to_62_is_exact(kernel_name, layout):
    rng = np.random.default_rng(7)
    values = (2**62 + rng.integers(-2**45, 2**45, size=(3000, 3))).astype(np.int64)
    values[:, 2] = values[0, 2]  # a constant channel
    with using_kernel(kernel_name):
        for piece_bytes in (256, 2**20):
            result = _moments_in(layout, values, piece_bytes)
            means, variances = exact_moments(values, (0,))
            assert max(relative_errors(result["variance"][:2], variances[:2])) <= 1e-13
            assert max(ulp_errors(result["mean"], means)) <= 2
            assert result["variance"][0, 2] == 0.0
            np.testing.assert_array_equal(result["min"], values.min(axis=0, keepdims=True))
            np.testing.assert_array_equal(result["max"], values.max(axis=0, keepdims=True))


@pytest.mark.parametrize("kernel_name", ["compiled", "numpy"])
@pytest.mark.parametrize("layout", ["rows", "slabs"])
def test_uint64_near_the_top_of_its_range_and_int64_extremes(kernel_name, layout):
    rng = np.random.default_rng(8)
    unsigned = np.uint64(2**64 - 2**50) + rng.integers(0, 2**41, size=(2000, 2)).astype(np.uint64)
    with using_kernel(kernel_name):
        result = _moments_in(layout, unsigned, 512)
        assert max(relative_errors(result["variance"], exact_moments(unsigned, (0,))[1])) <= 1e-13
        assert result["max"].dtype == np.uint64
        np.testing.assert_array_equal(result["max"], unsigned.max(axis=0, keepdims=True))
        # a spread past 2**63 cannot be subtracted in int64 without wrapping: still right
        extremes = np.array([[-2**63], [2**63 - 1], [0], [5]], np.int64)
        result = _moments_in(layout, extremes, 2**20)
        assert max(relative_errors(result["variance"], exact_moments(extremes, (0,))[1])) <= 1e-13
        assert (result["min"][0, 0], result["max"][0, 0]) == (-2**63, 2**63 - 1)
        assert result["zero_count"][0, 0] == 1


def _moments_in(layout: str, values: np.ndarray, piece_bytes: int) -> dict:
    """The finalized moments of ``(N, C)`` `values` over axis 0, computed from channels-last
    rows, or from the same data laid out as ``(1, C, N)`` slabs (reshaped back to (1, C))."""
    if layout == "rows":
        return block_moments(values, (0,), piece_bytes=piece_bytes).finalize()
    slabs = np.ascontiguousarray(values.T)[None]
    result = block_moments(slabs, (0, 2), piece_bytes=piece_bytes).finalize()
    return {key: value.reshape(1, -1) if isinstance(value, np.ndarray) else value
            for key, value in result.items()}


def test_constant_channels_at_large_offsets_have_variance_exactly_0():
    values = np.empty((1000, 3))
    values[:, 0] = 1e8 + 0.1
    values[:, 1] = -3.3e15
    values[:, 2] = np.float64(np.float32(1e4 + 1 / 3))
    for piece_bytes in (64, 2**20):
        result = block_moments(values, (0,), piece_bytes=piece_bytes).finalize()
        assert np.all(result["variance"] == 0.0)
        assert np.array_equal(result["mean"].ravel(), values[0])


def test_every_path_agrees_with_the_exact_variance_at_offset_1e8(tmp_path):
    values = offset_data(1e8, shape=(96, 5, 4, 3), seed=9)
    means, variances = exact_moments(values, (0, 1, 2))
    runs = every_path(tmp_path, values, 37, (7, 3, 4, 2))
    for name, args in runs.items():
        result = run_bn("stats", *args, "--format", "json", cwd=tmp_path)
        assert result.returncode == 0, (name, result.stderr)
        document = stats_json(result.stdout)
        assert max(relative_errors(document["variance"], variances)) <= 1e-13, name
        assert max(ulp_errors(document["mean"], means)) <= 2, name
    for part in ("a", "b"):
        assert run_bn("stats", f"{part}.npy", "-o", f"{part}.json", "--format", "csv",
                      cwd=tmp_path).returncode == 0
    merged = run_bn("merge", "a.json", "b.json", "-o", "ab.json", "--format", "json", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    document = stats_json(merged.stdout)
    assert max(relative_errors(document["variance"], variances)) <= 1e-13
    assert max(ulp_errors(document["mean"], means)) <= 2


def test_version_1_statistics_files_are_still_read_and_merged(tmp_path):
    rng = np.random.default_rng(4)
    values = rng.standard_normal((50, 2))
    halves = values[:20], values[20:]
    for index, half in enumerate(halves):
        mean = half.mean(0)
        m2 = ((half - mean) ** 2).sum(0)
        document = {"schema": "bncli.stats/1", "inputs": [], "axes": [0], "channel_shape": [2],
                    "ddof": 0, "ignore_nan": False, "count": [len(half)] * 2,
                    "mean": mean.tolist(), "m2": m2.tolist(), "variance": (m2 / len(half)).tolist(),
                    "std": np.sqrt(m2 / len(half)).tolist(), "min": half.min(0).tolist(),
                    "max": half.max(0).tolist(), "nan_count": [0, 0], "inf_count": [0, 0]}
        import json
        (tmp_path / f"{index}.json").write_text(json.dumps(document))
    result = run_bn("merge", "0.json", "1.json", "-o", "01.json", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    merged = stats_json(result.stdout)
    assert merged["schema"] == "bncli.stats/2"
    means, variances = exact_moments(values, (0,))
    assert max(relative_errors(merged["variance"], variances)) <= 1e-14
    assert max(ulp_errors(merged["mean"], means)) <= 4


def exact_normalized(x, mean, variance, scale, offset, epsilon):
    """50-digit decimal ``scale * (x - mean) / sqrt(variance + epsilon)`` and ``offset``."""
    denominator = (Decimal(float(variance)) + Decimal(float(epsilon))).sqrt()
    scaled = [Decimal(float(scale)) * (Decimal(float(value)) - Decimal(float(mean)))
              / denominator for value in np.ravel(x).tolist()]
    return scaled, Decimal(float(offset))


# The bound the README states for float64 arithmetic: the factor scale/sqrt(var + eps) has
# three roundings (2.5 u), x - mean one, the product one and the offset's addition one.
BOUND_UNITS = Decimal("5.5")
UNIT_D = Decimal(2) ** -53


@pytest.mark.parametrize("offset", [0.0, 0.25, -3.0])
@pytest.mark.parametrize("scale", [1.0, 1.7])
def test_float64_output_is_within_the_stated_bound(offset, scale):
    rng = np.random.default_rng(12)
    x = rng.standard_normal(4000) * 2 + 5
    mean, variance = float(x.mean()), float(x.var())
    y = bncli.batch_normalization(x, mean, variance, offset, scale, 1e-3, dtype="float64")
    scaled, exact_offset = exact_normalized(x, mean, variance, scale, offset, 1e-3)
    worst = max(abs(Decimal(float(got)) - (term + exact_offset))
                / (UNIT_D * (abs(term) + abs(exact_offset)))
                for got, term in zip(y.tolist(), scaled))
    assert worst <= BOUND_UNITS


def test_float64_output_with_mean_over_std_1e4_stays_in_the_bound():
    rng = np.random.default_rng(13)
    x = 1e4 + rng.standard_normal(3000)
    mean, variance = float(x.mean()), float(x.var())
    y = bncli.batch_normalization(x, mean, variance, 0.5, 2.0, 1e-3, dtype="float64")
    scaled, exact_offset = exact_normalized(x, mean, variance, 2.0, 0.5, 1e-3)
    for got, term in zip(y.tolist(), scaled):
        error = abs(Decimal(float(got)) - (term + exact_offset))
        assert error <= BOUND_UNITS * UNIT_D * (abs(term) + abs(exact_offset))


def test_a_cancelling_offset_is_within_the_bound_relative_to_both_terms():
    rng = np.random.default_rng(14)
    x = rng.standard_normal(2000)
    offsets = -1e8 * x[:10]  # the offset cancels the scaled term of the first values
    for index, offset in enumerate(offsets):
        y = bncli.batch_normalization(x[index:index + 1], 0.0, 1.0, offset, 1e8, 0.0,
                                      dtype="float64")
        scaled, exact_offset = exact_normalized(x[index:index + 1], 0.0, 1.0, 1e8, offset, 0.0)
        error = abs(Decimal(float(y[0])) - (scaled[0] + exact_offset))
        assert error <= BOUND_UNITS * UNIT_D * (abs(scaled[0]) + abs(exact_offset))


def test_float32_output_is_correctly_rounded_up_to_the_float64_bound():
    rng = np.random.default_rng(15)
    x = (1e4 + rng.standard_normal(3000)).astype(np.float32)
    mean, variance = float(x.astype(np.float64).mean()), float(x.astype(np.float64).var())
    y = bncli.batch_normalization(x, mean, variance, 0.25, 1.0, 1e-3)
    assert y.dtype == np.float32
    scaled, exact_offset = exact_normalized(x, mean, variance, 1.0, 0.25, 1e-3)
    for got, term in zip(y.tolist(), scaled):
        exact = term + exact_offset
        half_ulp = Decimal(float(np.spacing(np.float32(abs(float(exact)))))) / 2
        error = abs(Decimal(float(got)) - exact)
        assert error <= half_ulp + BOUND_UNITS * UNIT_D * (abs(term) + abs(exact_offset))


@pytest.mark.parametrize("epsilon", ["0", "1e-3"])
def test_a_zero_variance_channel_normalizes_to_exactly_the_offset(tmp_path, epsilon):
    values = np.random.default_rng(2).standard_normal((40, 3))
    values[:, 1] = 1e8 + 0.1
    np.save(tmp_path / "x.npy", values)
    result = run_bn("normalize", "x.npy", "-o", "y.npy", "--epsilon", epsilon,
                    "--offset", "0.5,0.75,-2", "--scale", "3", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    normed = np.load(tmp_path / "y.npy")
    assert np.all(normed[:, 1] == 0.75)
    assert np.all(np.isfinite(normed))


@pytest.mark.parametrize("epsilon", ["-1e-3", "nan"])
def test_a_negative_or_nan_epsilon_is_a_usage_error(tmp_path, epsilon):
    np.save(tmp_path / "x.npy", np.ones((4, 2)))
    result = run_bn("normalize", "x.npy", "-o", "y.npy", f"--epsilon={epsilon}", cwd=tmp_path)
    assert result.returncode == 2
    assert b"epsilon" in result.stderr and b"Traceback" not in result.stderr
    assert not (tmp_path / "y.npy").exists()


def test_ddof_at_or_above_the_count_is_refused_before_the_data_is_read(tmp_path):
    # the header of a 4096-per-channel stream, and then nothing: bn must answer without
    # waiting for data that never comes
    header = np.lib.format.header_data_from_array_1_0(np.zeros((4096, 2), np.float32))
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    for command in (["stats", "-", "--format", "json"], ["normalize", "-", "-o", "y.npy"]):
        process = subprocess.Popen([sys.executable, "-m", "bncli", *command, "--ddof", "4096"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=tmp_path)
        process.stdin.write(buffer.getvalue())
        process.stdin.flush()
        try:
            _, stderr = process.communicate(timeout=60)  # stdin stays open until then
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 2, stderr
        assert b"ddof 4096 must be less than the 4096 values per channel" in stderr
        assert b"--ddof" not in stderr or b"Usage" not in stderr
    assert not (tmp_path / "y.npy").exists()


def test_ddof_with_ignore_nan_gives_nan_variance_and_a_finding(tmp_path):
    values = np.random.default_rng(6).standard_normal((10, 3))
    values[2:, 1] = np.nan  # channel 1 keeps 2 values
    np.save(tmp_path / "x.npy", values)
    result = run_bn("stats", "x.npy", "--ignore-nan", "--ddof", "2", "--format", "json",
                    cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == b""  # no RuntimeWarning
    document = stats_json(result.stdout)
    assert document["variance"][1] == "NaN"
    assert document["variance"][0] == pytest.approx(np.var(values[:, 0], ddof=2), rel=1e-13)
    findings = {finding["kind"]: finding["channels"] for finding in document["findings"]}
    assert findings["few_values"] == [1]
