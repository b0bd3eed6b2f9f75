"""Normalization: the tf.nn.batch_normalization formula, within one ulp, rounded once."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bncli


def ulp_distance(actual, expected64, dtype):
    """Distance in units of the output dtype's ulp at the expected value (floor 1e-3)."""
    expected64 = np.asarray(expected64, np.float64)
    magnitude = np.maximum(np.abs(expected64), 1e-3).astype(dtype)
    ulp = np.spacing(magnitude).astype(np.float64)
    return np.abs(actual.astype(np.float64) - expected64) / ulp


def test_formula_on_hand_computed_values():
    x = np.array([[1.0, 10.0], [3.0, 30.0]])
    y = bncli.batch_normalization(x, mean=[2.0, 20.0], variance=[1.0, 100.0], offset=[0.5, -1.0],
                                  scale=[2.0, 3.0], variance_epsilon=0.0)
    assert y.tolist() == [[-1.5, -4.0], [2.5, 2.0]]


@settings(max_examples=examples(150), deadline=None)
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 50), st.integers(1, 5)),
                    elements=st.floats(-1e3, 1e3, width=32)),
       big_mean=st.sampled_from([0.0, 1e4, -3e4]), dtype=st.sampled_from(["float32", "float16"]))
def test_within_one_ulp_of_float64_reference(x, big_mean, dtype):
    x = (x + np.float32(big_mean)).astype(np.float32)
    mean, variance = bncli.moments(x, [0])
    scale, offset = np.float64(1.5), np.float64(0.25)
    y = bncli.batch_normalization(x, mean, variance, offset, scale, 1e-3, dtype=dtype)
    expected = scale * (x.astype(np.float64) - mean) / np.sqrt(variance + 1e-3) + offset
    assert y.dtype == np.dtype(dtype)
    finite = np.abs(expected) < np.finfo(dtype).max
    assert np.all(ulp_distance(y[finite], expected[finite], dtype) <= 1.0)


def test_mean_over_std_1e4_in_float32_keeps_every_digit():
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((10000, 4))).astype(np.float32)
    mean, variance = bncli.moments(x, [0])
    y = bncli.batch_normalization(x, mean, variance, None, None, 1e-3)
    expected = (x.astype(np.float64) - mean) / np.sqrt(variance + 1e-3)
    assert np.max(ulp_distance(y, expected, np.float32)) <= 1.0
    # a float32 graph computing the same formula is visibly worse
    mean32 = x.mean(0, dtype=np.float32)
    naive = (x - mean32) / np.sqrt(x.var(0, dtype=np.float32) + np.float32(1e-3))
    assert np.max(ulp_distance(naive, expected, np.float32)) > 1.0


@pytest.mark.parametrize("value", [42.0, 0.1, 0.7, -1e4 / 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_variance_channel_normalizes_to_offset(value, dtype):
    # for float64 0.1 or 0.7, sum / count is off by an ulp: the mean must still be exact
    x = np.full((1001, 2), value, dtype)
    mean, variance = bncli.moments(x, [0])
    y = bncli.batch_normalization(x, mean, variance, np.array([0.5, -2.0]), 3.0, 1e-3)
    assert np.all(y == np.array([0.5, -2.0], dtype))


def test_integer_input_defaults_to_float32_output():
    x = np.arange(12, dtype=np.uint8).reshape(4, 3)
    mean, variance = bncli.moments(x, [0])
    y = bncli.batch_normalization(x, mean, variance, None, None, 1e-3)
    assert y.dtype == np.float32
    expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_keepdims_statistics_broadcast_over_nchw():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 3, 5, 5))
    mean, variance = bncli.moments(x, [0, 2, 3], keepdims=True)
    y = bncli.batch_normalization(x, mean, variance, None, None, 0.0)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1.0, rtol=1e-12)


def test_statistics_that_do_not_broadcast_are_refused():
    with pytest.raises(ValueError, match="do not broadcast"):
        bncli.batch_normalization(np.zeros((4, 3)), np.zeros(5), np.ones(5), None, None, 1e-3)


@pytest.mark.parametrize("dtype, shape, axes", [
    ("float32", (700, 16), (0,)),          # channels-last rows (the compiled loop)
    ("float32", (5, 7, 300), (0, 2)),      # (A, K, B) slabs
    (">f4", (700, 16), (0,)),              # non-native order: the general path
    ("int64", (300, 3, 4), (0, 1)),        # a type the compiled kernel does not take
])
@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
def test_each_part_is_final_when_announced_and_the_parts_cover_the_block(dtype, shape, axes,
                                                                       kernel):
    from conftest import using_kernel

    from bncli.core.normalize import Coefficients, normalize_block

    rng = np.random.default_rng(3)
    values = (rng.standard_normal(shape) * 4 + 2).astype(dtype)
    keep = tuple(1 if axis in axes else dim for axis, dim in enumerate(shape))
    coefficients = Coefficients.from_statistics(rng.random(keep) + 1.5, rng.random(keep) + 0.5)
    out = np.empty(shape, np.float32)
    seen, parts = [], []

    def done(start, stop):
        parts.append((start, stop))
        seen.append(out.reshape(-1)[start:stop].copy())

    with using_kernel(kernel):
        normalize_block(values, coefficients, out, piece_bytes=4096, done=done)
    assert parts[0][0] == 0 and parts[-1][1] == out.size
    if kernel == "compiled" and dtype == "float32" and len(shape) == 2:
        assert len(parts) > 1  # piece by piece, as the compiled loop makes them
    assert all(left[1] == right[0] for left, right in zip(parts, parts[1:]))
    np.testing.assert_array_equal(np.concatenate(seen), out.reshape(-1))
    expected = ((values.astype(np.float64) - coefficients.mean) * coefficients.factor)
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6, atol=1e-6)
