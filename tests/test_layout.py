"""Axes resolution and the cutting of arrays into blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from bncli.core.layout import plan_blocks, region_shape, region_start, resolve_axes, storage_axes
from bncli.errors import UsageError


def test_default_axes_are_all_but_last():
    assert resolve_axes((4, 5, 6, 7)) == (0, 1, 2)


def test_negative_axes_and_channel_axis():
    assert resolve_axes((4, 5, 6, 7), axes=[-1, 0]) == (0, 3)
    assert resolve_axes((4, 5, 6, 7), channel_axis=1) == (0, 2, 3)
    assert resolve_axes((4, 5, 6, 7), channel_axis=-3) == (0, 2, 3)


@pytest.mark.parametrize("axes, message", [
    ([0, 0], "axis 0 is given twice in the axes: x has shape 4x5 (2 axes)"),
    ([0, -2], "axis -2 is given twice in the axes: x has shape 4x5 (2 axes)"),
    ([2], "axis 2 is out of range: x has shape 4x5 (2 axes)"),
    ([-3], "axis -3 is out of range: x has shape 4x5 (2 axes)"),
])
def test_bad_axes_name_the_shape(axes, message):
    with pytest.raises(UsageError) as caught:
        resolve_axes((4, 5), axes=axes, name="x")
    assert str(caught.value) == message


def test_axes_and_channel_axis_exclusive():
    with pytest.raises(UsageError, match="give one of axes, a channel axis and a layout"):
        resolve_axes((4, 5), axes=[0], channel_axis=1)


def test_storage_axes_reverse_for_fortran():
    assert storage_axes(4, (0, 1, 2), False) == (0, 1, 2)
    assert storage_axes(4, (0, 1, 2), True) == (1, 2, 3)
    assert storage_axes(4, (1,), True) == (2,)


@settings(max_examples=examples(200), deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=5),
       itemsize=st.sampled_from([1, 2, 4, 8]), budget=st.integers(1, 3000),
       use_align=st.booleans(), data=st.data())
def test_blocks_cover_every_element_once_in_file_order(shape, itemsize, budget, use_align, data):
    align = None
    if use_align:
        align = [data.draw(st.integers(1, dim)) for dim in shape]
    seen = np.zeros(shape, np.int64)
    flat_positions = np.arange(math.prod(shape)).reshape(shape)
    next_start = 0
    for region in plan_blocks(shape, itemsize, budget, align):
        assert len(region) == len(shape)
        seen[region] += 1
        block_positions = flat_positions[region].reshape(-1)
        # each block is one contiguous run of bytes, right after the previous one
        assert block_positions[0] == next_start
        assert np.array_equal(block_positions, np.arange(block_positions[0],
                                                         block_positions[0] + block_positions.size))
        next_start = block_positions[-1] + 1
        if align is None:
            assert math.prod(region_shape(region)) * itemsize <= max(budget, itemsize)
    assert np.all(seen == 1)


def test_aligned_blocks_follow_chunks():
    regions = list(plan_blocks((100, 16, 8), 4, 10 * 16 * 8 * 4, align=(8, 16, 8)))
    assert [part[0].start for part in regions] == list(range(0, 100, 8))


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), budget=st.integers(1, 200))
def test_region_start_is_the_flat_index_of_the_first_element(shape, budget):
    for region in plan_blocks(shape, 4, budget):
        expected = np.ravel_multi_index(tuple(part.start for part in region), shape)
        assert region_start(region, shape) == expected
