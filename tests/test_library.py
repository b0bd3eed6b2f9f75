"""The library under the CLI: typed values in, checks before reading, one statistics model."""

from __future__ import annotations

import importlib.resources
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, assert_close, reference_moments, run_bn

import bncli
from bncli import api
from bncli.errors import BnError, StatsFileError, UsageError


@pytest.fixture
def acts(tmp_path):
    values = np.random.default_rng(3).standard_normal((20, 4, 4, 3)).astype(np.float32) * 2 + 1
    path = tmp_path / "acts.npy"
    np.save(path, values)
    return path, values


def expected_normalized(values, axes, scale, offset, epsilon):
    mean, variance = reference_moments(values, axes)
    return scale * (values.astype(np.float64) - mean) / np.sqrt(variance + epsilon) + offset


def test_normalize_takes_numbers_sequences_arrays_and_paths(acts, tmp_path):
    path, values = acts
    for scale, offset in ((2.0, -1.0), ([1.0, 2.0, 3.0], (0.5, 0.0, -0.5)),
                          (np.array([1.5, 1.0, 0.5]), np.array([[0.1, 0.2, 0.3]]))):
        target = tmp_path / "out.npy"
        result = api.normalize(path, target, scale=scale, offset=offset, force=True,
                               dtype="float64")
        assert result.shape == values.shape and result.dtype == np.float64
        expected = expected_normalized(values, (0, 1, 2), np.ravel(scale), np.ravel(offset),
                                       1e-3)
        assert_close(np.load(target), expected, rtol=1e-12, atol=1e-12)


def test_scale_of_the_channel_shape_for_two_dimensional_channels(tmp_path):
    values = np.random.default_rng(4).standard_normal((10, 3, 2))
    np.save(tmp_path / "x.npy", values)
    scale = np.arange(1.0, 7.0).reshape(3, 2)
    api.normalize(tmp_path / "x.npy", tmp_path / "y.npy", axes=[0], scale=scale, epsilon=0.0)
    mean, variance = reference_moments(values, (0,))
    assert_close(np.load(tmp_path / "y.npy"), scale * (values - mean) / np.sqrt(variance),
                 rtol=1e-12, atol=1e-12)


LIBRARY_MISUSES = [
    ("moments", dict(axes=[0, 0]), "axis 0 is given twice"),
    ("moments", dict(axes=[2]), "axis 2 is out of range"),
    ("stats", dict(axes=[0], channel_axis=1), "give one of axes, a channel axis and a layout"),
    ("stats", dict(channel_axis=7), "channel axis 7 is out of range"),
    ("stats", dict(ddof=5000), "ddof 5000 must be less than"),
    ("stats", dict(moments=3), "order must be 2 or 4"),
    ("stats", dict(chunk_bytes=0), "chunk size must be a positive"),
    ("normalize", dict(epsilon=-1.0), "epsilon -1.0 must be"),
    ("normalize", dict(scale=[1.0, 2.0]), "scale has 2 values"),
    ("normalize", dict(offset="abc"), "offset 'abc' is not a number"),
    ("normalize", dict(output="out.txt"), "the output must be a .npy file"),
]


@pytest.mark.parametrize("function, options, message", LIBRARY_MISUSES)
def test_library_errors_name_the_problem_not_a_flag(acts, tmp_path, function, options,
                                                    message):
    path, values = acts
    out = tmp_path / options.pop("output", "out.npy")
    calls = {
        "moments": lambda: bncli.moments(values[:, 0, 0], **options),
        "stats": lambda: api.stats([path], **options),
        "normalize": lambda: api.normalize(path, out, **options),
    }
    with pytest.raises(UsageError) as caught:
        calls[function]()
    assert message in str(caught.value)
    assert "--" not in str(caught.value)
    assert not out.exists()


def test_hints_about_flags_are_kept_apart_from_the_message(acts, tmp_path):
    path, _ = acts
    (tmp_path / "out.npy").write_bytes(b"mine")
    with pytest.raises(BnError) as caught:
        api.normalize(path, tmp_path / "out.npy")
    assert str(caught.value) == f"{tmp_path / 'out.npy'}: already exists"
    assert caught.value.hint == "use --force to replace it"
    assert (tmp_path / "out.npy").read_bytes() == b"mine"


def test_the_package_is_typed():
    assert importlib.resources.files("bncli").joinpath("py.typed").is_file()


def header_only(shape, dtype=np.float32) -> bytes:
    buffer = io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(np.zeros(shape, dtype))
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


@pytest.mark.parametrize("options, message", [
    (["--scale", "1,2"], b"scale has 2 values"),
    (["--offset", "1,2,3,4,5,6,7"], b"offset has 7 values"),
    (["--epsilon", "-1"], b"epsilon -1.0 must be"),
    (["--ddof", "99999"], b"ddof 99999 must be less than"),
    (["-o", "x.txt"], b"the output must be a .npy file"),
])
def test_what_the_shape_fixes_is_checked_before_any_data_is_read(tmp_path, options, message):
    # a stream that declares 65536x3 values and then sends none, holding the pipe open:
    # bn must answer from the header alone
    command = [sys.executable, "-m", "bncli", "normalize", "-", *options]
    if "-o" not in options:
        command += ["-o", "y.npy"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=tmp_path)
    process.stdin.write(header_only((65536, 3)))
    process.stdin.flush()
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 2, stderr
    assert message in stderr
    assert not (tmp_path / "y.npy").exists()


def test_stats_output_and_save_stats_write_the_same_document(acts, tmp_path):
    path, values = acts
    values[:, :, :, 1] = 7.0  # a dead channel: a finding in both
    np.save(path, values)
    assert run_bn("stats", path, "-o", tmp_path / "a.json", "--format", "csv").returncode == 0
    result = run_bn("normalize", path, "-o", tmp_path / "n.npy", "--save-stats",
                    tmp_path / "b.json", "--quiet")
    assert result.returncode == 0, result.stderr
    first = json.loads((tmp_path / "a.json").read_text())
    second = json.loads((tmp_path / "b.json").read_text())
    assert first == second
    assert [finding["kind"] for finding in first["findings"]] == ["dead"]


def test_a_statistics_file_with_only_mean_and_variance_normalizes(acts, tmp_path):
    path, values = acts
    mean = [0.5, -1.0, 2.0]
    variance = [4.0, 0.25, 1.0]
    (tmp_path / "given.json").write_text(json.dumps({
        "schema": "bncli.stats/2", "axes": [0, 1, 2], "channel_shape": [3],
        "mean": mean, "variance": variance}))
    result = run_bn("normalize", path, "--stats", tmp_path / "given.json", "-o",
                    tmp_path / "y.npy", "--dtype", "float64", "--epsilon", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    expected = (values.astype(np.float64) - mean) / np.sqrt(variance)
    assert_close(np.load(tmp_path / "y.npy"), expected, rtol=1e-13, atol=1e-13)
    merged = run_bn("merge", tmp_path / "given.json", tmp_path / "given.json", "-o",
                    tmp_path / "m.json", "--allow-duplicates")
    assert merged.returncode == 1
    assert b"holds mean and variance but no count and m2" in merged.stderr


def test_the_given_variance_is_what_normalize_uses(acts, tmp_path):
    path, values = acts
    assert run_bn("stats", path, "-o", tmp_path / "s.json", "--format", "csv").returncode == 0
    document = json.loads((tmp_path / "s.json").read_text())
    document["variance"] = [1.0, 1.0, 1.0]  # m2 and count still say otherwise
    (tmp_path / "s.json").write_text(json.dumps(document))
    result = run_bn("normalize", path, "--stats", tmp_path / "s.json", "-o", tmp_path / "y.npy",
                    "--dtype", "float64", "--epsilon", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    mean, _ = reference_moments(values, (0, 1, 2))
    assert_close(np.load(tmp_path / "y.npy"), values.astype(np.float64) - mean, rtol=1e-12,
                 atol=1e-12)


def test_readme_python_section_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Python API.*?```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    script = tmp_path / "readme.py"
    script.write_text(block)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "(16,) (16,)"
    assert lines[2] == "float64 (0, 2, 3)"
    assert lines[3] == "(64, 8, 8, 16) float32"
    assert lines[4].startswith("scale has 2 values")
    assert lines[5] == "(8, 2)"
    assert lines[6] == "[1 4] [4]"
    assert (tmp_path / "normed.npy").exists() and (tmp_path / "nchw.json").exists()
    assert not (tmp_path / "other.npy").exists()


def test_errors_are_bn_errors_with_the_file_named(tmp_path):
    with pytest.raises(BnError) as caught:
        api.stats([tmp_path / "missing.npy"])
    assert "missing.npy: no such file" in str(caught.value)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(StatsFileError) as caught:
        api.merge([tmp_path / "bad.json"])
    assert "bad.json" in str(caught.value)
    assert os.fspath(tmp_path / "bad.json") in str(caught.value)


def test_path_objects_work_everywhere(acts, tmp_path):
    path, _ = acts
    statistics = api.stats([Path(path)])
    api.save_statistics(statistics, Path(tmp_path / "s.npz"))
    merged = api.merge([Path(tmp_path / "s.npz")])
    assert_close(merged.values()["mean"], statistics.values()["mean"], rtol=0)
    entries = api.info([Path(path)])
    assert entries[0]["shape"] == [20, 4, 4, 3]


def test_statistics_of_no_input_is_a_usage_error():
    """An empty list of inputs is refused with a clear error, with or without ignore_nan."""
    for ignore_nan in (False, True):
        with pytest.raises(bncli.UsageError, match="no input to compute statistics of"):
            api.stats([], ignore_nan=ignore_nan)
