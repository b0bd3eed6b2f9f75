"""What a new user meets first: default axes and layouts, CI gates that say why, the Python
API called the obvious ways, and consistent output options."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from conftest import run_bn

import bncli
from bncli import api


@pytest.fixture
def nchw(tmp_path):
    values = np.random.default_rng(0).standard_normal((6, 5, 4, 4)) * np.arange(1, 6)[
        None, :, None, None] + np.arange(5)[None, :, None, None]
    np.save(tmp_path / "nchw.npy", values)
    return tmp_path / "nchw.npy", values


def test_layout_nchw_keeps_axis_1_and_the_default_gives_a_hint(nchw):
    path, values = nchw
    result = run_bn("stats", path, "--layout", "nchw", "--format", "json")
    assert result.returncode == 0 and result.stderr == b""
    document = json.loads(result.stdout)
    assert document["axes"] == [0, 2, 3]
    np.testing.assert_allclose(document["mean"], values.mean(axis=(0, 2, 3)), rtol=1e-13)
    default = run_bn("stats", path, "--format", "table")
    assert default.stderr.decode() == (
        "bn: hint: 6x5x4x4 was reduced to its last axis (4 channels), but its last two axes "
        "are equal, as spatial axes are; if it is NCHW, use --layout nchw\n")
    assert run_bn("stats", path, "--format", "json").stderr == b""  # piped JSON: no hint
    wrong_rank = run_bn("stats", path, "--layout", "ndhwc")
    assert wrong_rank.returncode == 2
    assert b"layout ndhwc is 5-D, but" in wrong_rank.stderr
    both = run_bn("stats", path, "--layout", "nchw", "--axes", "0")
    assert both.returncode == 2 and b"give one of axes, a channel axis and a layout" in both.stderr


def test_a_1d_input_is_one_channel_over_axis_0(tmp_path):
    values = np.random.default_rng(1).standard_normal(1000)
    np.save(tmp_path / "x.npy", values)
    document = json.loads(run_bn("stats", tmp_path / "x.npy", "--format", "json").stdout)
    assert document["axes"] == [0] and document["channel_shape"] == []
    assert document["count"] == 1000 and document["findings"] == []
    np.testing.assert_allclose(document["variance"], values.var(), rtol=1e-13)


def test_fail_on_says_which_findings_and_channels_failed(tmp_path):
    values = np.random.default_rng(2).standard_normal((200, 20))
    values[:, [3, 5, 6, 7, 8, 9, 10, 11, 12, 13]] = 1.5  # ten dead channels
    np.save(tmp_path / "x.npy", values)
    result = run_bn("stats", tmp_path / "x.npy", "--fail-on", "dead,nan", "--format", "json")
    assert result.returncode == 3
    assert result.stderr.decode() == (
        "bn: --fail-on: dead in 10 channels: 3, 5, 6, 7, 8, 9, 10, 11, ... (+2 more)\n")
    assert run_bn("stats", tmp_path / "x.npy", "--fail-on", "nan", "--format",
                  "json").stderr == b""


def test_the_python_api_takes_one_path_a_pathlib_path_and_an_int_axis(tmp_path):
    values = np.random.default_rng(3).standard_normal((50, 4))
    np.save(tmp_path / "x.npy", values)
    for given in (str(tmp_path / "x.npy"), tmp_path / "x.npy", [pathlib.Path(tmp_path, "x.npy")]):
        np.testing.assert_allclose(api.stats(given).values()["mean"], values.mean(0),
                                   rtol=1e-13)
    mean, variance = bncli.moments(values, axes=0)
    np.testing.assert_allclose(variance, values.var(0), rtol=1e-13)
    with pytest.raises(bncli.UsageError, match="give one of axes, a channel axis and a layout"):
        api.stats(tmp_path / "x.npy", axes=0, layout="nc")
