"""Files streamed in blocks: any shape, axes, dtype, layout, chunk size and thread count."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
from conftest import assert_close, examples, reference_moments, run_bn
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bncli import api


@st.composite
def stored_arrays(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7))
    dtype = np.dtype(draw(st.sampled_from(["<f4", ">f4", "<f8", "<f2", "|u1", "<i4", "|b1"])))
    if dtype.kind == "f":
        elements = st.floats(-100, 100, width=dtype.itemsize * 8)
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        elements = st.integers(0, 100)
    values = draw(hnp.arrays(dtype, shape, elements=elements))
    offset = draw(st.sampled_from([0, 0, 1e4]))
    if offset and dtype.kind == "f" and dtype.itemsize >= 4:
        values = (values + offset).astype(dtype)
    fortran = draw(st.booleans())
    axes = sorted(draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1)))
    return (np.asfortranarray(values) if fortran else values), axes


@settings(max_examples=examples(120), deadline=None)
@given(case=stored_arrays(), chunk_bytes=st.sampled_from([1, 7, 64, 500, 2**20]),
       threads=st.sampled_from([1, 2, 3]), hdf5=st.booleans())
def test_stats_of_files_match_reference(case, chunk_bytes, threads, hdf5):
    values, axes = case
    with tempfile.TemporaryDirectory() as directory:
        if hdf5:
            path = f"{directory}/x.h5"
            with h5py.File(path, "w") as h5file:
                h5file.create_dataset("x", data=values, chunks=True if values.size > 1 else None)
            spec = f"{path}:/x"
        else:
            spec = f"{directory}/x.npy"
            np.save(spec, values)
        statistics = api.stats([spec], axes=axes, chunk_bytes=chunk_bytes, threads=threads)
        result = statistics.values()
        whole = api.stats([spec], axes=axes, chunk_bytes=2**30, threads=1).values()
    mean, variance = reference_moments(values, axes)
    assert result["mean"].shape == mean.shape
    assert_close(result["mean"], mean, rtol=1e-12, atol=1e-12)
    magnitude = max(float(np.abs(values.astype(np.float64)).max()), 1.0)
    assert_close(result["variance"], variance, rtol=1e-9, atol=1e-14 * magnitude**2)
    # independent of the chunk size and thread count, below 1e-12 relative (a mean near 0
    # of values near 100 is known to 1e-14 of their magnitude, not of itself)
    assert_close(result["mean"], whole["mean"], rtol=1e-12, atol=1e-14 * magnitude)
    assert_close(result["variance"], whole["variance"], rtol=1e-12,
                 atol=1e-15 * magnitude**2)


@settings(max_examples=examples(60), deadline=None)
@given(case=stored_arrays(), chunk_bytes=st.sampled_from([3, 64, 2**20]),
       threads=st.sampled_from([1, 2]))
def test_normalized_files_match_reference(case, chunk_bytes, threads):
    values, axes = case
    with tempfile.TemporaryDirectory() as directory:
        source, target = Path(directory, "x.npy"), Path(directory, "y.npy")
        np.save(source, values)
        api.normalize(str(source), str(target), axes=axes, dtype="float64",
                      chunk_bytes=chunk_bytes, threads=threads)
        normed = np.load(target)
    as64 = values.astype(np.float64)
    mean = as64.mean(axis=tuple(axes), keepdims=True)
    variance = ((as64 - mean) ** 2).mean(axis=tuple(axes), keepdims=True)
    expected = (as64 - mean) / np.sqrt(variance + 1e-3)
    assert normed.shape == values.shape
    assert normed.flags.f_contiguous == values.flags.f_contiguous or values.ndim == 1 or (
        values.flags.c_contiguous and values.flags.f_contiguous)
    assert_close(normed, expected, rtol=1e-9, atol=1e-9)


def test_thread_count_does_not_change_a_single_bit(tmp_path, rng):
    path = tmp_path / "x.npy"
    np.save(path, (rng.standard_normal((300, 7, 9)) * 5 + 1e3).astype(np.float32))
    results = [api.stats([str(path)], axes=[0, 1], chunk_bytes=999, threads=threads).values()
               for threads in (1, 2, 4)]
    for other in results[1:]:
        for key in ("mean", "m2", "min", "max"):
            assert np.array_equal(results[0][key], other[key])


def test_normalized_bytes_do_not_depend_on_threads_or_target(tmp_path, rng):
    # Several threads write blocks at their places in a file; one thread, or a stream,
    # appends them in order. The bytes must be the same, in either memory order.
    values = (rng.standard_normal((40, 6, 5)) * 3 + 50).astype(np.float32)
    for order, array in (("C", values), ("F", np.asfortranarray(values))):
        source = tmp_path / f"x{order}.npy"
        np.save(source, array)
        outputs = []
        for threads in (1, 3):
            target = tmp_path / f"y{order}{threads}.npy"
            api.normalize(str(source), str(target), axes=[0, 2], chunk_bytes=300,
                          threads=threads)
            outputs.append(target.read_bytes())
        piped = run_bn("normalize", str(source), "--axes", "0,2", "--chunk-bytes", "300",
                       "--threads", "3", "-q", "-o", "-")
        assert piped.returncode == 0, piped.stderr
        outputs.append(piped.stdout)
        assert outputs[0] == outputs[1] == outputs[2]
        normed = np.load(tmp_path / f"y{order}3.npy")
        assert normed.flags.f_contiguous == (order == "F")
        as64 = values.astype(np.float64)
        mean = as64.mean(axis=(0, 2), keepdims=True)
        expected = (as64 - mean) / np.sqrt(as64.var(axis=(0, 2), keepdims=True) + 1e-3)
        assert_close(normed, expected, rtol=1e-6, atol=1e-6)
