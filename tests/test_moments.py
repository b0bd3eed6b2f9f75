"""The core: float64 moments per block, the Chan merge, NaN/Inf rules, exactness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import KERNELS, assert_close, examples, reference_moments, using_kernel
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bncli
from bncli.core.moments import Moments, block_moments

DTYPES = ["float16", "float32", "float64", "int8", "uint8", "int32", "int64", "bool", ">f4",
          ">i2"]


@st.composite
def arrays_and_axes(draw, dtypes=DTYPES):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6))
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    if dtype.kind == "f":
        elements = st.floats(-1e3, 1e3, width=min(dtype.itemsize * 8, 64),
                             allow_nan=False, allow_infinity=False)
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dtype)
        elements = st.integers(max(info.min, -1000), min(info.max, 1000))
    values = draw(hnp.arrays(dtype, shape, elements=elements))
    axes = draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    return values, sorted(axes)


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=examples(300), deadline=None)
@given(case=arrays_and_axes(), piece_bytes=st.sampled_from([8, 24, 64, 1000, 2**20]),
       ddof=st.sampled_from([0, 1]))
def test_block_moments_match_numpy_two_pass(kernel, case, piece_bytes, ddof):
    values, axes = case
    with using_kernel(kernel):
        result = block_moments(values, axes, piece_bytes=piece_bytes).finalize(ddof)
    expected_mean, expected_var = reference_moments(values, axes, ddof)
    as64 = values.astype(np.float64)
    keep = tuple(1 if axis in axes else dim for axis, dim in enumerate(values.shape))
    count = values.size // int(np.prod(keep))
    assert_close(result["mean"].reshape(expected_mean.shape), expected_mean, rtol=1e-12,
                 atol=1e-12)
    if count > ddof:
        scale = max(np.abs(as64).max(), 1.0) ** 2
        assert_close(result["variance"].reshape(expected_var.shape), expected_var, rtol=1e-10,
                     atol=1e-13 * scale)
    else:
        assert np.all(np.isnan(result["variance"]))
    assert_close(result["min"], as64.min(axis=tuple(axes), keepdims=True))
    assert_close(result["max"], as64.max(axis=tuple(axes), keepdims=True))
    assert np.all(result["count"] == count)
    assert np.all(result["nan_count"] == 0) and np.all(result["inf_count"] == 0)
    reduced = tuple(axes)
    assert np.all(result["zero_count"] == (as64 == 0).sum(axis=reduced, keepdims=True))
    assert np.all(result["min_count"] == (as64 == as64.min(axis=reduced, keepdims=True)).sum(
        axis=reduced, keepdims=True))
    assert np.all(result["max_count"] == (as64 == as64.max(axis=reduced, keepdims=True)).sum(
        axis=reduced, keepdims=True))


@settings(max_examples=examples(100), deadline=None)
@given(case=arrays_and_axes(dtypes=["float32", "float64"]),
       small=st.sampled_from([8, 40, 200]))
def test_result_does_not_depend_on_piece_size(case, small):
    values, axes = case
    values = values + 1e4  # a large offset makes ordering effects visible
    one = block_moments(values, axes, piece_bytes=2**24).finalize()
    many = block_moments(values, axes, piece_bytes=small).finalize()
    assert_close(many["mean"], one["mean"], rtol=1e-12)
    assert_close(many["variance"], one["variance"], rtol=1e-12, atol=1e-12 * 1e4)


def test_large_offset_where_naive_formula_fails():
    # values near 1e8 with unit spread: E[x^2] - E[x]^2 in float64 loses everything
    rng = np.random.default_rng(0)
    values = 1e8 + rng.standard_normal((20000, 3))
    expected_mean, expected_var = reference_moments(values, [0])
    naive = (values**2).mean(0) - values.mean(0) ** 2
    assert np.max(np.abs(naive - expected_var) / expected_var) > 1e-3
    got = block_moments(values, [0], piece_bytes=4096).finalize()
    assert_close(got["variance"].ravel(), expected_var, rtol=1e-9)
    exact_mean = [math.fsum(values[:, channel]) / len(values) for channel in range(3)]
    assert_close(got["mean"].ravel(), exact_mean, rtol=1e-15)
    assert_close(expected_mean, exact_mean, rtol=1e-14)


def test_float32_data_with_mean_over_std_1e4():
    rng = np.random.default_rng(1)
    values = (1e4 + rng.standard_normal((4096, 8))).astype(np.float32)
    expected_mean, expected_var = reference_moments(values, [0])
    float32_var = values.var(axis=0, dtype=np.float32)  # what a float32 graph gets
    got = block_moments(values, [0], piece_bytes=1024).finalize()
    assert_close(got["variance"].ravel(), expected_var, rtol=1e-11)
    assert np.max(np.abs(float32_var - expected_var) / expected_var) > 1e-7


def test_merge_is_chan_update_on_hand_computed_values():
    left = block_moments(np.array([[1.0], [2.0], [3.0]]), [0])
    right = block_moments(np.array([[10.0], [20.0]]), [0])
    merged = left.merge(right).finalize()
    # 1, 2, 3, 10, 20: mean 7.2; deviations -6.2 -5.2 -4.2 2.8 12.8 square-sum to 254.8
    assert merged["mean"].item() == pytest.approx(7.2, rel=1e-15)
    assert merged["m2"].item() == pytest.approx(254.8, rel=1e-15)
    assert merged["variance"].item() == pytest.approx(254.8 / 5, rel=1e-15)
    assert merged["min"].item() == 1.0 and merged["max"].item() == 20.0
    assert merged["count"].item() == 5


@settings(max_examples=examples(100), deadline=None)
@given(parts=st.lists(hnp.arrays(np.float64, st.tuples(st.integers(1, 20), st.just(3)),
                                 elements=st.floats(-1e6, 1e6)), min_size=3, max_size=6))
def test_merge_is_associative(parts):
    moments = [block_moments(part, [0]) for part in parts]
    left = moments[0]
    for item in moments[1:]:
        left = left.merge(item)
    right = moments[-1]
    for item in reversed(moments[:-1]):
        right = item.merge(right)
    expected_mean, expected_var = reference_moments(np.concatenate(parts), [0])
    for result in (left.finalize(), right.finalize()):
        assert_close(result["mean"].ravel(), expected_mean, rtol=1e-12, atol=1e-9)
        assert_close(result["variance"].ravel(), expected_var, rtol=1e-9, atol=1e-6)


def test_empty_moments_are_the_identity():
    data = block_moments(np.arange(12.0).reshape(4, 3), [0])
    for merged in (Moments.empty(data.shape).merge(data), data.merge(Moments.empty(data.shape))):
        result = merged.finalize()
        assert_close(result["mean"].ravel(), [4.5, 5.5, 6.5])
        assert_close(result["variance"].ravel(), [11.25] * 3)


def test_nan_makes_mean_and_variance_nan_and_is_counted():
    values = np.array([[1.0, 1.0], [np.nan, 2.0], [3.0, 3.0], [4.0, 4.0]])
    for piece_bytes in (8, 16, 1024):
        result = block_moments(values, [0], piece_bytes=piece_bytes).finalize()
        assert np.isnan(result["mean"][0, 0]) and np.isnan(result["variance"][0, 0])
        assert result["nan_count"].ravel().tolist() == [1, 0]
        assert result["count"].ravel().tolist() == [4, 4]
        assert_close(result["mean"][0, 1], 2.5)
        assert np.isnan(result["min"][0, 0])  # as np.min


def test_ignore_nan_leaves_nans_out():
    values = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, np.nan], [5.0, np.nan]])
    for piece_bytes in (8, 16, 1024):
        result = block_moments(values, [0], ignore_nan=True, piece_bytes=piece_bytes).finalize()
        assert result["count"].ravel().tolist() == [3, 0]
        assert result["nan_count"].ravel().tolist() == [1, 4]
        assert_close(result["mean"][0, 0], 3.0)
        assert_close(result["variance"][0, 0], np.nanvar([1.0, 3.0, 5.0]))
        assert result["min"][0, 0] == 1.0 and result["max"][0, 0] == 5.0
        assert np.isnan(result["mean"][0, 1]) and np.isnan(result["min"][0, 1])


def test_inf_follows_numpy():
    values = np.array([[np.inf, 1.0], [5.0, 2.0], [6.0, -np.inf], [7.0, np.inf]])
    for piece_bytes in (8, 16, 1024):
        result = block_moments(values, [0], piece_bytes=piece_bytes).finalize()
        with np.errstate(invalid="ignore"):
            expected_mean = values.mean(0)
        assert_close(result["mean"].ravel(), expected_mean)  # [inf, nan]
        assert np.all(np.isnan(result["variance"]))
        assert result["inf_count"].ravel().tolist() == [1, 2]
        assert result["max"][0, 0] == np.inf and result["min"][0, 1] == -np.inf


def test_zero_variance_channel_is_exactly_zero():
    values = np.full((1000, 2), 0.1, np.float32)
    result = block_moments(values, [0], piece_bytes=64).finalize()
    assert np.all(result["variance"] == 0.0)


@settings(max_examples=examples(100), deadline=None)
@given(case=arrays_and_axes(dtypes=["float32", "float64", "int16"]), keepdims=st.booleans(),
       ddof=st.sampled_from([0, 1]))
def test_public_moments_matches_tf_nn_moments_semantics(case, keepdims, ddof):
    values, axes = case
    mean, variance = bncli.moments(values, axes, keepdims=keepdims, ddof=ddof)
    expected_mean = values.astype(np.float64).mean(axis=tuple(axes), keepdims=keepdims)
    assert mean.shape == expected_mean.shape and variance.shape == expected_mean.shape
    assert_close(mean, expected_mean, rtol=1e-12, atol=1e-12)
    count = values.size // max(expected_mean.size, 1)
    if count > ddof:
        expected_var = values.astype(np.float64).var(axis=tuple(axes), keepdims=keepdims,
                                                      ddof=ddof)
        assert_close(variance, expected_var, rtol=1e-9, atol=1e-9)


@settings(max_examples=examples(100), deadline=None)
@given(case=arrays_and_axes(dtypes=["float32", "float64", "uint8"]),
       piece_bytes=st.sampled_from([8, 100, 4096, 2**21]))
def test_fast_layouts_agree_with_the_general_path(case, piece_bytes):
    values, axes = case
    fast = block_moments(np.ascontiguousarray(values), axes, piece_bytes=piece_bytes).finalize()
    # a Fortran-ordered copy is not C-contiguous and takes the general, piecewise path
    general = block_moments(np.asfortranarray(values), axes, piece_bytes=piece_bytes).finalize()
    for key in ("mean", "variance", "min", "max", "count"):
        assert_close(fast[key], general[key], rtol=1e-12, atol=1e-12)


def test_buffer_ring_reuses_memory_in_turn():
    from bncli.core.buffers import BufferRing

    ring = BufferRing(2)
    first, second, third = (ring.array((4, 3), np.float32) for _ in range(3))
    assert np.shares_memory(first, third) and not np.shares_memory(first, second)
    big = ring.array((100,), ">f8")  # a larger request replaces the buffer in that slot
    assert big.dtype == np.dtype(">f8") and big.shape == (100,)
    assert not np.shares_memory(big, second)


@pytest.mark.parametrize("count", list(range(1, 40)) + [64, 100, 129])
def test_streaming_tree_is_the_level_by_level_tree(count):
    from bncli.core.partials import TreeAccumulator, pairwise_levels

    class Symbolic:
        """Stands for a node of the tree; merging records the tree's shape."""

        def __init__(self, tree):
            self.tree = tree

        def merge(self, other):
            return Symbolic((self.tree, other.tree))

        def spread(self, shape):
            return self

    accumulator = TreeAccumulator((1,), None)
    for leaf in range(count):
        accumulator.add(Symbolic(leaf))
    expected = pairwise_levels([Symbolic(leaf) for leaf in range(count)],
                               lambda left, right: left.merge(right))
    assert accumulator.result().tree == expected.tree


@pytest.mark.parametrize("axes", [(0, 1), (0, 2), (1,), (0, 1, 2)])
@pytest.mark.parametrize("poison", [None, np.nan, np.inf])
def test_block_read_piece_by_piece_gives_the_same_bits(tmp_path, rng, axes, poison):
    from bncli.core.buffers import LazyBlock
    from bncli.core.normalize import Coefficients, normalize_block
    from bncli.io.registry import open_source
    from bncli.io.source import InputSpec

    values = (rng.standard_normal((50, 6, 4)) * 2 + 30).astype(np.float32)
    if poison is not None:
        values[37, 2, 1] = poison
    np.save(tmp_path / "x.npy", values)
    piece_bytes = 8 * 64  # 64 values per piece: many pieces per block
    with open_source(InputSpec(str(tmp_path / "x.npy"))) as source:
        region = next(iter(source.regions(values.nbytes)))
        reads = []

        def lazy(span=None):
            def read(start, stop, out):
                reads.append(stop - start)
                source.read_part(region, start, stop, out)
            return LazyBlock(np.empty(values.shape, values.dtype), read, span=span)

        expected = block_moments(values, axes, piece_bytes=piece_bytes)
        got = block_moments(lazy(), axes, piece_bytes=piece_bytes)
        if axes == (0, 1) and poison is None:  # channels last: read in pieces, never whole
            assert len(reads) > 1 and max(reads) < values.size
        # and where the compiled kernel reads the pieces from the file itself
        by_kernel = block_moments(lazy(span=(*source.file_span(region), source.name)), axes,
                                  piece_bytes=piece_bytes)
        for name in Moments.ARRAYS:
            assert np.array_equal(getattr(got, name), getattr(expected, name), equal_nan=True)
            assert np.array_equal(getattr(by_kernel, name), getattr(expected, name),
                                  equal_nan=True)
        keep = tuple(1 if axis in axes else dim for axis, dim in enumerate(values.shape))
        coefficients = Coefficients.from_statistics(np.full(keep, 30.0), np.full(keep, 4.0))
        want = normalize_block(values, coefficients, np.empty(values.shape),
                               piece_bytes=piece_bytes)
        have = normalize_block(lazy(), coefficients, np.empty(values.shape),
                               piece_bytes=piece_bytes)
        assert np.array_equal(have, want, equal_nan=True)
        assert_close(want, (values.astype(np.float64) - 30.0) / np.sqrt(4.0 + 1e-3), rtol=1e-15)


@given(st.lists(st.tuples(st.integers(0, 999), st.integers(0, 7),
                          st.sampled_from([math.nan, math.inf, -math.inf])),
                min_size=1, max_size=6),
       st.sampled_from([np.float32, np.float64]))
@settings(max_examples=examples(40), deadline=None)
def test_pieces_with_nan_or_inf_among_many(placed, dtype):
    """A block of many pieces where a few hold NaN or Inf: only those pieces are reduced
    again, and every channel comes out as NumPy's float64 two-pass says, on each kernel."""
    rng = np.random.default_rng(len(placed))
    values = (rng.standard_normal((1000, 8)) * 3 + 50).astype(dtype)
    values[rng.random(values.shape) < 0.05] = 0  # zeros among them, counted too
    for row, channel, value in placed:
        values[row, channel] = value
    wide = values.astype(np.float64)
    with np.errstate(invalid="ignore"):
        mean, variance = reference_moments(wide, (0,))
    for name in KERNELS:
        with using_kernel(name):
            # pieces of 64 rows: 16 of them
            found = block_moments(values, (0,), piece_bytes=64 * 8 * 8).finalize()
        assert found["nan_count"].ravel().tolist() == np.isnan(wide).sum(axis=0).tolist()
        assert found["inf_count"].ravel().tolist() == np.isinf(wide).sum(axis=0).tolist()
        assert found["count"].ravel().tolist() == [1000] * 8
        assert found["zero_count"].ravel().tolist() == (wide == 0).sum(axis=0).tolist()
        np.testing.assert_array_equal(found["min"].ravel(), np.min(wide, axis=0))
        np.testing.assert_array_equal(found["max"].ravel(), np.max(wide, axis=0))
        assert_close(found["mean"].ravel(), mean, rtol=1e-13)
        assert_close(found["variance"].ravel(), variance, rtol=1e-11)


@pytest.mark.parametrize("kernel_name", KERNELS)
def test_pieces_whose_sum_overflows_only_when_merged(kernel_name):
    """Pieces each of a finite sum whose merged sum overflows: every row still counts (the
    block is reduced again as a whole, not as the first piece alone)."""
    values = np.zeros((128, 1))
    values[1, 0] = values[65, 0] = 1e308  # one in each piece of 64 rows
    values[100, 0] = 5.0
    with using_kernel(kernel_name):
        found = block_moments(values, (0,), piece_bytes=512).finalize()
    assert found["count"].ravel().tolist() == [128]
    assert found["zero_count"].ravel().tolist() == [125]
    assert found["max_count"].ravel().tolist() == [2]
    assert found["max"].ravel().tolist() == [1e308]
