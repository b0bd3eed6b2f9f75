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


@pytest.fixture
def with_nan(tmp_path):
    values = np.random.default_rng(4).standard_normal((30, 3))
    values[4, 1] = np.nan
    np.save(tmp_path / "x.npy", values)
    return tmp_path / "x.npy", values


def test_nan_as_null_for_jq_and_pandas_and_load_stats_reads_numbers(tmp_path, with_nan):
    path, values = with_nan
    result = run_bn("stats", path, "--format", "json", "--nan-as", "null")
    document = json.loads(result.stdout)
    assert document["mean"][1] is None and document["variance"][1] is None
    assert document["bn_version"] == bncli.__version__
    default = json.loads(run_bn("stats", path, "--format", "json").stdout)
    assert default["mean"][1] == "NaN"  # exact round trips stay the default
    for nan_as in ("null", "string"):
        target = tmp_path / f"s-{nan_as}.json"
        assert run_bn("stats", path, "-o", target, "-q", "--nan-as", nan_as).returncode == 0
        loaded = bncli.load_stats(target)
        assert loaded["mean"].dtype == np.float64 and np.isnan(loaded["mean"][1])
        np.testing.assert_allclose(loaded["mean"][[0, 2]], values[:, [0, 2]].mean(0),
                                   rtol=1e-13)
        assert loaded["axes"] == (0,) and loaded["channel_shape"] == (3,)


def test_indent_gives_the_same_document_pretty(with_nan):
    path, _ = with_nan
    flat = run_bn("stats", path, "--format", "json").stdout.decode()
    pretty = run_bn("stats", path, "--format", "json", "--indent", "2").stdout.decode()
    assert "\n" not in flat.rstrip("\n") and pretty.count("\n") > 20
    assert json.loads(pretty) == json.loads(flat)


def test_merge_prints_like_stats_and_refuses_the_same_data_twice(tmp_path):
    rng = np.random.default_rng(5)
    shards = [rng.standard_normal((40, 3)) for _ in range(2)]
    for index, shard in enumerate(shards):
        np.save(tmp_path / f"s{index}.npy", shard)
        run_bn("stats", tmp_path / f"s{index}.npy", "-o", tmp_path / f"s{index}.json", "-q")
    both = np.concatenate(shards)
    printed = run_bn("merge", tmp_path / "s0.json", tmp_path / "s1.json")  # no -o: printed
    assert printed.returncode == 0, printed.stderr
    np.testing.assert_allclose(json.loads(printed.stdout)["mean"], both.mean(0), rtol=1e-13)
    dashed = run_bn("merge", tmp_path / "s0.json", tmp_path / "s1.json", "-o", "-")
    assert json.loads(dashed.stdout)["count"] == [80, 80, 80]
    table = run_bn("merge", tmp_path / "s0.json", tmp_path / "s1.json", "--format", "table")
    assert b"channel  count" in table.stdout
    twice = run_bn("merge", tmp_path / "s0.json", tmp_path / "s0.json", "-o", tmp_path / "m.json")
    assert twice.returncode == 2 and not (tmp_path / "m.json").exists()
    assert twice.stderr.decode().endswith("s0.json: is given twice: its values would count "
                                          "twice (use --allow-duplicates if that is meant)\n")
    (tmp_path / "copy.json").write_bytes((tmp_path / "s0.json").read_bytes())
    copied = run_bn("merge", tmp_path / "s0.json", tmp_path / "copy.json", tmp_path / "s1.json")
    assert copied.returncode == 2
    assert b"copy.json: holds the same statistics of the same inputs as" in copied.stderr
    # shards that only share a file name (each part.npy in its own directory) are fine
    for index, shard in enumerate(shards):
        (tmp_path / f"d{index}").mkdir()
        np.save(tmp_path / f"d{index}" / "part.npy", shard)
        run_bn("stats", "part.npy", "-o", f"../p{index}.json", "-q", cwd=tmp_path / f"d{index}")
    same_name = run_bn("merge", tmp_path / "p0.json", tmp_path / "p1.json")
    assert same_name.returncode == 0, same_name.stderr
    assert json.loads(same_name.stdout)["count"] == [80, 80, 80]
    allowed = run_bn("stats", tmp_path / "s0.npy", tmp_path / "s0.npy", "--allow-duplicates",
                     "--format", "json")
    assert json.loads(allowed.stdout)["count"] == [80, 80, 80]
    refused = run_bn("stats", tmp_path / "s0.npy", tmp_path / "s0.npy")
    assert refused.returncode == 2 and b"s0.npy: is given twice" in refused.stderr


def test_info_takes_format_and_quiet(tmp_path, with_nan):
    path, _ = with_nan
    as_json = run_bn("info", path, "--format", "json")
    assert json.loads(as_json.stdout) == json.loads(run_bn("info", path, "--json").stdout)
    quiet = run_bn("info", path, "-q")
    assert quiet.returncode == 0 and quiet.stdout == b"" and quiet.stderr == b""
    (tmp_path / "bad.npy").write_bytes(b"not a npy file at all")
    bad = run_bn("info", tmp_path / "bad.npy", "-q")
    assert bad.returncode == 1 and bad.stderr.startswith(b"bn: error: ")


def test_color_is_chosen_by_flag_and_environment(with_nan):
    path, _ = with_nan
    piped = run_bn("stats", path, "--format", "table")
    assert b"\x1b[" not in piped.stdout
    assert b"\x1b[" in run_bn("stats", path, "--format", "table", "--color", "always").stdout
    assert b"\x1b[" in run_bn("stats", path, "--format", "table",
                              env={"FORCE_COLOR": "1"}).stdout
    from conftest import run_on_terminal

    _, seen, _ = run_on_terminal(["stats", str(path), "--color", "never", "--no-progress"],
                                 stdout_tty=True)
    assert b"channel" in seen and b"\x1b[1m" not in seen
    _, seen, _ = run_on_terminal(["stats", str(path), "--no-progress"], stdout_tty=True)
    assert b"\x1b[1m" in seen


def test_binary_output_to_a_terminal_is_a_usage_error_however_asked(with_nan, tmp_path):
    from conftest import run_on_terminal

    path, _ = with_nan
    for args in (["normalize", str(path)], ["normalize", str(path), "-o", "-"]):
        code, seen, _ = run_on_terminal(args, stdout_tty=True)
        assert code == 2, seen
        assert b"bn: error:" in seen and b"binary" in seen


@pytest.mark.parametrize("text, size", [
    ("64M", 64 * 2**20), ("64MiB", 64 * 2**20), ("64MB", 64 * 10**6), ("1G", 2**30),
    ("1GB", 10**9), ("512k", 512 * 1024), ("100", 100),
])
def test_sizes_are_binary_with_k_m_g_and_decimal_with_kb_mb_gb(text, size):
    from bncli.cli.options import parse_size

    assert parse_size(text) == size


def test_small_things_of_the_command_line(tmp_path):
    import h5py

    assert b"[default: 16M]" in run_bn("stats", "--help").stdout
    np.save(tmp_path / "x.npy", np.zeros((4, 3)))
    repeated = run_bn("stats", tmp_path / "x.npy", "--axes", "0", "--axes", "1")
    assert repeated.returncode == 2
    assert repeated.stderr == (b"bn: error: Invalid value for '--axes': given more than once "
                               b"(see bn stats --help)\n")
    with h5py.File(tmp_path / "two.h5", "w") as h5file:
        h5file.create_dataset("a", data=np.zeros((8, 4)), chunks=(4, 4), compression="gzip")
        h5file.create_dataset("b", data=np.zeros((8, 4)))
    listing = run_bn("info", tmp_path / "two.h5").stdout.decode().splitlines()
    assert listing[1:] == ["  dataset  /a  8x4 float64  chunks 4x4 gzip",
                           "  dataset  /b  8x4 float64  contiguous"]


@pytest.fixture
def small_numbers(tmp_path):
    values = np.random.default_rng(6).standard_normal((50, 300)) * 1e-7
    np.save(tmp_path / "w.npy", values)
    return tmp_path / "w.npy", values


@pytest.mark.parametrize("columns", [60, 45, 30])
def test_narrow_terminals_drop_columns_or_stack_but_never_cut_a_number(small_numbers,
                                                                       columns):
    from conftest import run_on_terminal

    from bncli.cli.report import number

    path, values = small_numbers
    code, seen, _ = run_on_terminal(["stats", str(path), "--no-progress", "--color", "never"],
                                    stdout_tty=True, columns=columns)
    text = seen.decode()
    assert code == 0 and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= columns
    for channel in (0, 1, 299):  # shown whole, in a column or a stacked block
        assert number(values[:, channel].mean()) in text
        assert number(values[:, channel].std()) in text
    if columns == 30:
        assert "channel 299\n" in text.replace("\r", "")
    else:
        assert "not shown at this width; --format csv has every column" in " ".join(
            text.split())


def test_table_rows_sorted_flagged_or_chosen(tmp_path):
    values = np.random.default_rng(7).standard_normal((100, 40)) * np.linspace(1, 2, 40)
    values[:, 12] = 3.0
    values[:, 30] *= 100
    np.save(tmp_path / "x.npy", values)

    def channels_of(*args):
        out = run_bn("stats", tmp_path / "x.npy", "--format", "table", *args).stdout.decode()
        table = out.split("findings")[0].splitlines()[4:]  # after the header and column names
        return [line.split()[0] for line in table if line.strip() and "not shown" not in line
                and (line.split()[0].isdigit() or line.split()[0] == "...")]

    from bncli.cli.report import EDGE_ROWS

    std = values.std(0)
    by_std = channels_of("--sort", "std")  # the largest first, as many as the edges show
    assert by_std[:-1] == [str(c) for c in np.argsort(-std)[:2 * EDGE_ROWS]]
    assert by_std[-1] == "..." and 2 * EDGE_ROWS < 40
    assert channels_of("--only-flagged") == ["12", "30"]
    assert channels_of("--channels", "3,5-7,39") == ["3", "5", "6", "7", "39"]
    assert channels_of("--sort", "std", "--channels", "0-3") == [
        str(c) for c in np.argsort(-std[:4])]
    bad = run_bn("stats", tmp_path / "x.npy", "--format", "table", "--channels", "40")
    assert bad.returncode == 2 and bad.stdout == b""
    assert b"channel 40 is not among the 40 channels" in bad.stderr


def test_plot_without_matplotlib_is_one_line_with_the_install_command(tmp_path):
    # a directory first on the path where "import matplotlib" fails, as when it is absent
    (tmp_path / "blocked" / "matplotlib").mkdir(parents=True)
    (tmp_path / "blocked" / "matplotlib" / "__init__.py").write_text(
        "raise ImportError('No module named matplotlib')\n")
    np.save(tmp_path / "x.npy", np.zeros((4, 3)))
    result = run_bn("stats", tmp_path / "x.npy", "--plot", tmp_path / "p.png",
                    env={"PYTHONPATH": str(tmp_path / "blocked")})
    assert result.returncode == 1 and not (tmp_path / "p.png").exists()
    assert result.stderr == b"bn: error: --plot needs matplotlib: pip install 'bncli[plot]'\n"


def test_shell_completion_completes_commands():
    result = run_bn("", env={"_BN_COMPLETE": "bash_complete", "COMP_WORDS": "bn st",
                             "COMP_CWORD": "1"})
    assert result.stdout.decode().split() == ["plain,stats"]
