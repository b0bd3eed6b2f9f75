"""The compiled kernel against the NumPy kernel, and the choice between them."""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import pytest
from conftest import examples, run_bn, stats_json, using_kernel
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bncli.core import kernel
from bncli.core.histogram import _rows_histogram
from bncli.core.moments import block_moments

COMPILED_TYPES = ["float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
                  "uint32", "int64", "uint64", "bool"]


def test_version_names_the_active_kernel():
    default = run_bn("--version")
    assert default.returncode == 0
    expected = "kernel: c" if kernel.COMPILED is not None else "the compiled kernel is not built"
    assert expected in default.stdout.decode()
    forced = run_bn("--version", env={"BN_KERNEL": "numpy"})
    assert forced.stdout.decode().strip().endswith("(kernel: numpy (BN_KERNEL=numpy))")


@st.composite
def channel_rows(draw, inner=False):
    """Channels-last rows, or with `inner` (outer, channels, inner) slabs, of any compiled
    type."""
    dtype = np.dtype(draw(st.sampled_from(COMPILED_TYPES)))
    shape = (draw(st.integers(1, 300)), draw(st.integers(1, 40)))
    if inner:
        shape = (draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(2, 70)))
    if dtype.kind == "f":
        bound = 6e4 if dtype.itemsize == 2 else 1e6
        elements = st.one_of(st.floats(-bound, bound, width=dtype.itemsize * 8),
                             st.sampled_from([0.0, -0.0, 1.0, 2.5]))
    elif dtype.kind == "b":
        # bools as stored bytes: any nonzero byte is True, not only 1
        raw = draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from([0, 1, 2, 128, 255])))
        return raw.view(np.bool_)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
        if dtype.itemsize == 8 and draw(st.booleans()):
            # values close together anywhere in the range: shifted in the integer type
            base = draw(st.integers(int(info.min), int(info.max) - 2**20))
            elements = st.integers(base, base + draw(st.sampled_from([0, 3, 2**20])))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=examples(200), deadline=None)
@given(values=st.one_of(channel_rows(), channel_rows(inner=True)), order=st.sampled_from([2, 4]),
       piece_bytes=st.sampled_from([64, 4096, 2**20]))
def test_both_kernels_agree_within_the_numeric_contract(values, order, piece_bytes):
    results = {}
    axes = (0,) if values.ndim == 2 else (0, 2)  # rows, or (outer, channel, inner) slabs
    for name in ("compiled", "numpy"):
        with using_kernel(name):
            results[name] = block_moments(values, axes, order=order,
                                          piece_bytes=piece_bytes).finalize()
    compiled, numpy = results["compiled"], results["numpy"]
    for key in ("count", "min", "max", "zero_count", "min_count", "max_count"):
        np.testing.assert_array_equal(compiled[key], numpy[key], err_msg=key)
        assert compiled[key].dtype == numpy[key].dtype, key
    if order == 4:
        for key in ("skewness", "kurtosis"):  # where the spread is more than rounding
            spread = numpy["variance"] > 1e-6 * np.maximum(1.0, np.abs(numpy["mean"])) ** 2
            np.testing.assert_allclose(compiled[key][spread], numpy[key][spread], rtol=1e-8,
                                       atol=1e-8, err_msg=key)
    wide = values.astype(np.float64)
    scale = np.abs(wide).max(initial=1.0)
    if values.dtype.kind in "iu" and values.dtype.itemsize == 8:
        # shifted in the integer type: the variance is exact to the spread, not the offset
        scale = max(float(values.max()) - float(values.min()), 1.0)
    # a float64 sum of n values is within n * 2**-53 of their largest magnitude, whatever
    # the order the kernels add them in
    per_channel = values.size // values.shape[1]
    np.testing.assert_allclose(compiled["mean"], numpy["mean"], rtol=1e-12,
                               atol=2 * per_channel * 2.0**-53 * np.abs(wide).max(initial=1.0))
    np.testing.assert_allclose(compiled["variance"], numpy["variance"], rtol=1e-10,
                               atol=1e-13 * scale**2)


@settings(max_examples=examples(200), deadline=None)
@given(values=channel_rows(), bits=st.sampled_from([0, 3, 6, 9]),
       specials=st.lists(st.sampled_from([np.nan, np.inf, -np.inf, 1e-300, -1e-40, 0.0]),
                         max_size=4))
def test_both_kernels_give_the_same_histogram_bits(values, bits, specials):
    if values.dtype.kind == "f" and specials:
        values = values.copy()
        flat = values.reshape(-1)
        for index, special in enumerate(specials):
            with np.errstate(over="ignore", under="ignore"):
                flat[index % flat.size] = special
    histograms = {}
    for name in ("compiled", "numpy"):
        with using_kernel(name):
            histograms[name] = _rows_histogram(values, bits)
    compiled, numpy = histograms["compiled"], histograms["numpy"]
    for key in ("pos", "neg", "special"):
        np.testing.assert_array_equal(getattr(compiled, key), getattr(numpy, key), err_msg=key)
        assert getattr(compiled, key).dtype == getattr(numpy, key).dtype
    assert (compiled.pos_low, compiled.neg_low, compiled.limit) == (
        numpy.pos_low, numpy.neg_low, numpy.limit)


def test_the_command_gives_the_same_answers_on_either_kernel(tmp_path, rng):
    if kernel.COMPILED is None:
        pytest.skip("the compiled kernel is not built")
    values = (rng.standard_normal((3000, 8, 16)) * 5 + 3).astype(np.float32)
    values[values < 0] = 0
    np.save(tmp_path / "x.npy", values)
    documents = {}
    for name, env in (("compiled", {}), ("numpy", {"BN_KERNEL": "numpy"})):
        result = run_bn("stats", "x.npy", "--quantiles", "--chunk-bytes", "100K",
                        "--format", "json", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        documents[name] = stats_json(result.stdout)
    compiled, numpy = documents["compiled"], documents["numpy"]
    for key in compiled:
        if key.startswith("histogram") or key in ("count", "min", "max", "zero_count",
                                                   "min_count", "max_count", "quantiles"):
            assert compiled[key] == numpy[key], key
    np.testing.assert_allclose(compiled["mean"], numpy["mean"], rtol=1e-13)
    np.testing.assert_allclose(compiled["variance"], numpy["variance"], rtol=1e-12)
    assert json.dumps(compiled["findings"]) == json.dumps(numpy["findings"])


def test_without_a_compiler_the_build_succeeds_and_bn_runs_on_numpy(tmp_path):
    """A build whose C compiler fails still succeeds, and leaves bn on its NumPy kernel."""
    import os
    import shutil
    import subprocess
    import sys

    from conftest import ROOT

    pytest.importorskip("setuptools", reason="the build needs setuptools")
    tree = tmp_path / "src"
    shutil.copytree(ROOT / "bncli", tree / "bncli",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    env = {**os.environ, "CC": "/bin/false"}
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree,
                           capture_output=True, text=True, timeout=300, env=env)
    assert build.returncode == 0, build.stderr
    assert not list((tree / "bncli").glob("_kernel*.so"))
    import sysconfig

    # -S: no site hooks, so no editable install of the checkout is found before this tree
    path = os.pathsep.join([str(tree), sysconfig.get_paths()["purelib"],
                            sysconfig.get_paths()["platlib"]])
    version = subprocess.run([sys.executable, "-S", "-m", "bncli", "--version"], cwd=tree,
                             capture_output=True, text=True, timeout=60,
                             env={**env, "PYTHONPATH": path})
    assert "kernel: numpy (the compiled kernel is not built)" in version.stdout


@settings(max_examples=examples(150), deadline=None)
@given(values=channel_rows(), out=st.sampled_from(["float32", "float64", "float16"]),
       offset=st.booleans(), seed=st.integers(0, 2**31))
def test_both_kernels_normalize_to_the_same_bits(values, out, offset, seed):
    from bncli.core.normalize import Coefficients, normalize_block

    rng = np.random.default_rng(seed)
    channels = values.shape[1]
    coefficients = Coefficients.from_statistics(
        rng.normal(0, 100, (1, channels)), rng.lognormal(0, 3, (1, channels)),
        scale=rng.normal(1, 1, (1, channels)),
        offset=rng.normal(0, 1, (1, channels)) if offset else None)
    results = []
    for name in ("compiled", "numpy"):
        with using_kernel(name):
            results.append(normalize_block(values, coefficients, np.empty(values.shape, out)))
    np.testing.assert_array_equal(results[0].view(np.uint8), results[1].view(np.uint8))


@settings(max_examples=examples(60), deadline=None)
@given(values=channel_rows(), chunk_bytes=st.sampled_from([64, 1000, 4096, 2**20]),
       threads=st.sampled_from([1, 2]))
def test_the_kernel_reading_a_file_itself_agrees_with_numpy(values, chunk_bytes, threads):
    import tempfile

    from bncli import api

    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/x.npy"
        np.save(path, values)
        results = {}
        for name in ("compiled", "numpy"):
            with using_kernel(name):
                results[name] = api.stats(path, chunk_bytes=chunk_bytes,
                                          threads=threads).values()
    compiled, numpy = results["compiled"], results["numpy"]
    for key in ("count", "min", "max", "zero_count", "min_count", "max_count"):
        np.testing.assert_array_equal(compiled[key], numpy[key], err_msg=key)
    wide = values.astype(np.float64)
    scale = np.abs(wide).max(initial=1.0)
    exact_mean = np.array([math.fsum(column) / len(column) for column in wide.T])
    exact_variance = np.array([math.fsum((column - mean) ** 2) / len(column)
                               for column, mean in zip(wide.T, exact_mean)])
    np.testing.assert_allclose(compiled["mean"], exact_mean, rtol=1e-12, atol=1e-14 * scale)
    np.testing.assert_allclose(compiled["variance"], exact_variance, rtol=1e-10,
                               atol=1e-13 * scale**2)


def test_a_file_cut_short_while_the_kernel_reads_it_is_an_error(tmp_path, rng):
    from bncli.core.partials import Reduction
    from bncli.errors import InputError
    from bncli.exec.engine import source_partials
    from bncli.io.registry import open_source

    if kernel.COMPILED is None:
        pytest.skip("the compiled kernel is not built")
    values = rng.standard_normal((4000, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    with open_source(str(tmp_path / "x.npy")) as source:
        os.truncate(tmp_path / "x.npy", 128 + values.nbytes // 2)
        with pytest.raises(InputError, match=r"x\.npy: file ends at byte 128128, inside the "
                                             "data its header declares"):
            source_partials(source, (0,), Reduction(), chunk_bytes=values.nbytes, threads=1)


@settings(max_examples=examples(100), deadline=None)
@given(values=channel_rows(), piece_bytes=st.sampled_from([64, 1000, 4096]))
def test_pieces_merged_in_the_kernel_give_the_bits_of_their_merge_in_numpy(values,
                                                                           piece_bytes):
    from bncli.core.buffers import LazyBlock
    from bncli.core.moments import Moments

    if kernel.COMPILED is None:
        pytest.skip("the compiled kernel is not built")
    flat = values.reshape(-1)

    def read(start, stop, out):  # read through Python: a row of partials per piece
        out[:] = flat[start:stop]

    held = block_moments(values, (0,), piece_bytes=piece_bytes)
    read_by_piece = block_moments(LazyBlock(np.empty_like(values), read), (0,),
                                  piece_bytes=piece_bytes)
    for name in Moments.ARRAYS + Moments.COUNTS:
        np.testing.assert_array_equal(getattr(held, name), getattr(read_by_piece, name),
                                      err_msg=name)


@settings(max_examples=examples(100), deadline=None)
@given(values=channel_rows(), order=st.sampled_from([2, 4]),
       piece_bytes=st.sampled_from([64, 1000, 4096]))
def test_rows_reduced_in_ranges_of_columns_agree_with_numpy(values, order, piece_bytes):
    """Rows too wide for pieces of whole rows are reduced by the compiled kernel in ranges
    of columns over every row; here every row counts as too wide."""
    from bncli.core import moments as reduction

    results = {}
    for name in ("compiled", "numpy"):
        saved = reduction.MAX_COMPILED_CHANNELS
        reduction.MAX_COMPILED_CHANNELS = 0
        try:
            with using_kernel(name):
                results[name] = block_moments(values, (0,), order=order,
                                              piece_bytes=piece_bytes).finalize()
        finally:
            reduction.MAX_COMPILED_CHANNELS = saved
    compiled, numpy = results["compiled"], results["numpy"]
    for key in ("count", "min", "max", "zero_count", "min_count", "max_count"):
        np.testing.assert_array_equal(compiled[key], numpy[key], err_msg=key)
        assert compiled[key].dtype == numpy[key].dtype, key
    wide = values.astype(np.float64)
    scale = np.abs(wide).max(initial=1.0)
    if values.dtype.kind in "iu" and values.dtype.itemsize == 8:
        scale = max(float(values.max()) - float(values.min()), 1.0)
    # each channel is summed over every row in one piece here: a float64 sum of n values
    # is within n * 2**-53 of their largest magnitude, on either kernel
    np.testing.assert_allclose(compiled["mean"], numpy["mean"], rtol=1e-12,
                               atol=2 * len(values) * 2.0**-53 * np.abs(wide).max(initial=1.0))
    np.testing.assert_allclose(compiled["variance"], numpy["variance"], rtol=1e-10,
                               atol=1e-13 * scale**2)


@pytest.mark.parametrize("dtype", ["float32", "int64", "uint8"])
def test_rows_wider_than_the_kernel_takes_whole_against_float64(dtype, rng):
    """Rows of more channels than the kernel takes in pieces of whole rows."""
    from bncli.core.moments import MAX_COMPILED_CHANNELS

    channels = MAX_COMPILED_CHANNELS + 4321
    values = (rng.standard_normal((9, channels)) * 20 + 50).astype(dtype)
    result = block_moments(values, (0,)).finalize()
    wide = values.astype(np.float64)
    np.testing.assert_allclose(result["mean"].ravel(), wide.mean(axis=0), rtol=1e-14, atol=1e-13)
    np.testing.assert_allclose(result["variance"].ravel(), wide.var(axis=0), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_array_equal(result["min"].ravel(), values.min(axis=0))
    np.testing.assert_array_equal(result["max"].ravel(), values.max(axis=0))
    np.testing.assert_array_equal(result["min_count"].ravel(),
                                  (values == values.min(axis=0)).sum(axis=0))


def test_tiles_read_in_one_kernel_call_and_a_file_cut_short_inside_one(tmp_path, rng):
    """A tile (a range of rows times a range of channels) is many runs of the file: the
    kernel reads them all in one call; the runs are the array's, and a file that ends
    inside one is the usual error, as when the runs are read one by one."""
    from bncli.core.layout import is_contiguous, plan_regions
    from bncli.errors import InputError
    from bncli.io import npy as sources
    from bncli.io.registry import open_source

    if kernel.COMPILED is None:
        pytest.skip("the compiled kernel is not built")
    values = rng.standard_normal((16, 20000)).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    saved = sources.COMPILED
    with open_source(str(tmp_path / "x.npy")) as source:
        regions = list(plan_regions(values.shape, 4, 2**16, (0,)))
        tiles = [region for region in regions if not is_contiguous(region, values.shape)]
        assert len(tiles) > 3
        for region in tiles:
            np.testing.assert_array_equal(source.read(region), values[region])
        os.truncate(tmp_path / "x.npy", 128 + values.nbytes // 2)
        messages = []
        for compiled in (saved, None):
            sources.COMPILED = compiled
            try:
                with pytest.raises(InputError, match=r"x\.npy: file ends at byte \d+, inside "
                                                     "the data its header declares") as error:
                    source.read(tiles[-1])
                messages.append(str(error.value))
            finally:
                sources.COMPILED = saved
        assert messages[0] == messages[1]


def write_bool_npy(path, raw):
    """Write the bytes `raw` (uint8) as a .npy of dtype bool of their shape, as stored."""
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, {"descr": "|b1", "fortran_order": False,
                                                    "shape": raw.shape})
        file.write(raw.tobytes())


def write_bool_safetensors(path, raw, name="t"):
    """Write the bytes `raw` (uint8) as the BOOL tensor `name` of a safetensors file: the
    header's length (8 bytes, little-endian), the JSON header, the bytes as stored."""
    header = json.dumps({name: {"dtype": "BOOL", "shape": list(raw.shape),
                                "data_offsets": [0, raw.size]}}).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw.tobytes())


# The environment of `bn` on each kernel.
KERNEL_ENVIRONMENTS = {"compiled": {"BN_KERNEL": ""}, "numpy": {"BN_KERNEL": "numpy"}}


def bn_stats_on(kernel_name, *args, cwd):
    """``bn stats ARGS --format json`` on the kernel `kernel_name`, parsed."""
    if kernel_name == "compiled" and kernel.COMPILED is None:
        pytest.skip("the compiled kernel is not built")
    result = run_bn("stats", *args, "--format", "json", cwd=cwd,
                    env=KERNEL_ENVIRONMENTS[kernel_name])
    assert result.returncode == 0, result.stderr
    return stats_json(result.stdout)


@pytest.mark.slow  # bn as a process
@pytest.mark.parametrize("kernel_name", ["compiled", "numpy"])
def test_bool_bytes_past_1_are_true_in_a_npy_and_a_safetensors_file(tmp_path, kernel_name):
    raw = np.array([[0, 1], [2, 255]], np.uint8)
    write_bool_npy(tmp_path / "b.npy", raw)
    write_bool_safetensors(tmp_path / "b.safetensors", raw.reshape(4, 1))
    # channels last: channel 0 holds bytes 0 and 2 (False, True), channel 1 bytes 1 and 255
    # (True, True)
    document = bn_stats_on(kernel_name, "b.npy", "--quantiles", cwd=tmp_path)
    assert document["mean"] == [0.5, 1.0]
    assert document["variance"] == [0.25, 0.0]
    assert (document["min"], document["max"]) == ([0.0, 1.0], [1.0, 1.0])
    assert document["zero_count"] == [1, 0]
    assert (document["min_count"], document["max_count"]) == ([1, 2], [1, 2])
    # the histograms: one zero in channel 0, and the Trues in the bucket of 1.0
    assert [counts[0] for counts in document["histogram_special"]] == [1, 0]
    assert document["histogram_pos_length"] == [1, 1]
    assert document["histogram_pos_counts"] == [1, 2]
    assert document["histogram_neg_length"] == [0, 0]
    quantiles = np.array(document["quantiles"]["values"])
    assert set(quantiles[:, 0]) == {0.0, 1.0} and set(quantiles[:, 1]) == {1.0}
    # one channel of bytes 0, 1, 2, 255: three Trues of four
    document = bn_stats_on(kernel_name, "b.safetensors", cwd=tmp_path)
    assert (document["mean"], document["variance"]) == ([0.75], [0.1875])
    assert (document["min"], document["max"]) == ([0.0], [1.0])
    assert (document["zero_count"], document["min_count"], document["max_count"]) == (
        [1], [1], [3])


@pytest.mark.slow  # bn as a process
@pytest.mark.parametrize("kernel_name", ["compiled", "numpy"])
def test_bool_bytes_of_a_file_read_in_pieces_rows_and_slabs_are_true_when_nonzero(
        tmp_path, kernel_name, rng):
    raw = rng.choice(np.array([0, 1, 2, 3, 127, 128, 254, 255], np.uint8), (600, 6, 4))
    write_bool_npy(tmp_path / "b.npy", raw)
    truth = (raw != 0).astype(np.float64)
    for arguments, axes in ((["--chunk-bytes", "2K"], (0, 1)), (["--channel-axis", "1"], (0, 2))):
        document = bn_stats_on(kernel_name, "b.npy", *arguments, cwd=tmp_path)
        expected_mean = truth.mean(axis=axes)
        np.testing.assert_allclose(document["mean"], expected_mean.ravel(), rtol=1e-12)
        np.testing.assert_allclose(document["variance"], truth.var(axis=axes).ravel(),
                                   rtol=1e-10)
        assert document["min"] == truth.min(axis=axes).ravel().tolist()
        assert document["max"] == truth.max(axis=axes).ravel().tolist()
        zeros = (truth == 0).sum(axis=axes).ravel()
        assert document["zero_count"] == zeros.tolist()
        assert document["max_count"] == (truth == 1).sum(axis=axes).ravel().tolist()


@pytest.mark.parametrize("kernel_name", ["compiled", "numpy"])
def test_bool_bytes_past_1_normalize_as_true(tmp_path, kernel_name):
    if kernel_name == "compiled" and kernel.COMPILED is None:
        pytest.skip("the compiled kernel is not built")
    raw = np.tile(np.array([[0, 1, 2], [255, 0, 7], [3, 0, 0], [0, 128, 1]], np.uint8), (50, 1))
    write_bool_npy(tmp_path / "b.npy", raw)
    result = run_bn("normalize", "b.npy", "-o", "out.npy", cwd=tmp_path,
                    env=KERNEL_ENVIRONMENTS[kernel_name])
    assert result.returncode == 0, result.stderr
    truth = (raw != 0).astype(np.float64)
    expected = (truth - truth.mean(axis=0)) / np.sqrt(truth.var(axis=0) + 1e-3)
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["compiled", "numpy"])
@pytest.mark.parametrize("path", ["rows", "columns", "slabs"])
def test_bool_bytes_past_1_are_true_in_each_block_path(name, path, rng):
    """Moments, histograms and normalization of bools stored as bytes other than 0 and 1,
    on each kernel and each way a block is reduced, against the same bools as float64."""
    from bncli.core import moments as reduction
    from bncli.core.normalize import Coefficients, normalize_block

    shape, axes = ((40, 3, 70), (0, 2)) if path == "slabs" else ((700, 5), (0,))
    raw = rng.choice(np.array([0, 1, 2, 64, 128, 255], np.uint8), shape)
    values, truth = raw.view(np.bool_), (raw != 0).astype(np.float64)
    saved = reduction.MAX_COMPILED_CHANNELS
    if path == "columns":
        reduction.MAX_COMPILED_CHANNELS = 0
    try:
        with using_kernel(name):
            for order in (2, 4):
                result = block_moments(values, axes, order=order, piece_bytes=512).finalize()
                kept = dict(axis=axes, keepdims=True)
                np.testing.assert_allclose(result["mean"], truth.mean(**kept), rtol=1e-13)
                np.testing.assert_allclose(result["variance"], truth.var(**kept), rtol=1e-11,
                                           atol=1e-15)
                np.testing.assert_array_equal(result["min"], truth.min(**kept))
                np.testing.assert_array_equal(result["max"], truth.max(**kept))
                np.testing.assert_array_equal(result["zero_count"], (truth == 0).sum(**kept))
                np.testing.assert_array_equal(result["max_count"], (truth == 1).sum(**kept))
            if path != "slabs":
                histogram = _rows_histogram(values, 6)
                np.testing.assert_array_equal(histogram.special[:, 0], (truth == 0).sum(axis=0))
                np.testing.assert_array_equal(histogram.special[:, 1:], 0)
                # every True in the one bucket of 1.0 (exponent 0, mantissa 0)
                assert histogram.pos_low == 1023 << 6 and histogram.pos.shape == (shape[1], 1)
                np.testing.assert_array_equal(histogram.pos[:, 0], truth.sum(axis=0))
                assert histogram.neg.size == 0
            mean = truth.mean(axis=axes, keepdims=True) + 0.25
            factor = np.full(mean.shape, 3.0)
            out = normalize_block(values, Coefficients(mean, factor, np.zeros(mean.shape)),
                                  np.empty(shape))
            np.testing.assert_array_equal(out, (truth - mean) * factor)
    finally:
        reduction.MAX_COMPILED_CHANNELS = saved
