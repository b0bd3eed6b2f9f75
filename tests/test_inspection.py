"""Dataset inspection: findings, table, csv/json flags, --fail-on, plot, progress on a terminal."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_on_terminal, stats_json

from bncli.core.findings import near_constant


@pytest.fixture
def flagged(tmp_path):
    """64 channels of unit noise with one of each problem."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal((500, 64)) * rng.uniform(0.8, 1.2, 64) + rng.uniform(-.5, .5, 64)
    values[:, 3] = 0.25                                   # dead
    values[17, 9] = np.nan                                # NaN
    values[4, 11] = np.inf                                # Inf
    values[:, 20] *= 100                                  # 100x larger scale
    values[:, 30] += 40                                   # mean far from the rest
    values[:, 41] = 1e4 + rng.standard_normal(500) * 0.5  # |mean| / std of 2e4
    path = tmp_path / "flagged.npy"
    np.save(path, values.astype(np.float32))
    return path


def findings_of(document):
    return {entry["kind"]: entry["channels"] for entry in document["findings"]}


def test_each_finding_on_a_file_built_to_contain_it(invoke, flagged):
    result = invoke("stats", flagged, "--format", "json")
    assert result.exit_code == 0
    found = findings_of(stats_json(result.stdout))
    assert found["dead"] == [3]
    assert found["nan"] == [9]
    assert found["inf"] == [11]
    assert found["outlier_std"] == [20]
    assert 30 in found["outlier_mean"] and 41 in found["outlier_mean"]
    assert found["precision"] == [41]
    assert set(found) == {"dead", "nan", "inf", "outlier_std", "outlier_mean", "precision"}


def test_clean_data_has_no_findings(invoke, tmp_path):
    rng = np.random.default_rng(8)
    np.save(tmp_path / "clean.npy", rng.standard_normal((400, 32)))
    document = stats_json(invoke("stats", tmp_path / "clean.npy").stdout)
    assert document["findings"] == []
    assert "findings: none" in invoke("stats", tmp_path / "clean.npy", "--format",
                                      "table").stdout


def test_dead_uses_scikit_learns_near_constant_bound():
    # two values one ulp apart: variance far below n*eps*var + (n*mean*eps)**2
    eps = np.finfo(np.float64).eps
    tiny = np.var([1.0, 1.0 + eps])
    small = np.var([1.0, 1.0 + 1e-6])
    assert near_constant(np.array([tiny, small, 0.0]), np.array([1.0, 1.0, 5.0]),
                         np.array([2, 2, 9])).tolist() == [True, False, True]
    bound = 2 * eps * tiny + (2 * 1.0 * eps) ** 2
    assert tiny <= bound


def test_csv_names_each_channels_findings_in_one_flags_column(invoke, flagged):
    lines = invoke("stats", flagged, "--format", "csv").stdout.splitlines()
    header = lines[0].split(",")
    assert header[-6:] == ["nan_count", "inf_count", "zero_count", "min_count", "max_count",
                           "flags"]  # one NaN column, one flags
    rows = {int(line.split(",")[0]): dict(zip(header, line.split(","))) for line in lines[1:]}
    assert rows[3]["flags"] == "dead" and rows[4]["flags"] == ""
    assert rows[9]["flags"] == "nan" and rows[11]["flags"] == "inf"
    assert "outlier_std" in rows[20]["flags"].split() and "precision" in rows[41]["flags"].split()


@pytest.mark.parametrize("fail_on, code", [
    ("dead", 3), ("nonfinite", 3), ("dead,nonfinite", 3), ("precision", 3), ("any", 3)])
def test_fail_on_exits_3_when_findings_exist(invoke, flagged, fail_on, code):
    result = invoke("stats", flagged, "--fail-on", fail_on, "--format", "json")
    assert result.exit_code == code
    assert stats_json(result.stdout)["findings"]  # the report is still printed


def test_fail_on_passes_clean_data_and_refuses_unknown_kinds(invoke, tmp_path):
    np.save(tmp_path / "clean.npy", np.random.default_rng(1).standard_normal((100, 8)))
    assert invoke("stats", tmp_path / "clean.npy", "--fail-on", "dead,nonfinite").exit_code == 0
    result = invoke("stats", tmp_path / "clean.npy", "--fail-on", "deadish")
    assert result.exit_code == 2 and "unknown finding 'deadish'" in result.stderr


def test_many_channels_show_flagged_rows_and_the_edges(invoke, tmp_path):
    rng = np.random.default_rng(9)
    values = rng.standard_normal((50, 2048))
    values[:, 1000] = 3.0
    np.save(tmp_path / "wide.npy", values)
    out = invoke("stats", tmp_path / "wide.npy", "--format", "table").stdout
    rows = [line.split()[0] for line in out.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert rows == [str(i) for i in range(16)] + ["1000"] + [str(i) for i in range(2032, 2048)]
    assert "2015 of 2048 channels not shown (--all shows every one)" in out
    assert re.search(r"^\s+1000 .* dead$", out, re.MULTILINE)
    every = invoke("stats", tmp_path / "wide.npy", "--format", "table", "--all").stdout
    assert len([line for line in every.splitlines() if re.match(r"^\s+\d+\s", line)]) == 2048


def test_multi_dimensional_channels_show_index_tuples(invoke, tmp_path):
    values = np.random.default_rng(10).standard_normal((30, 3, 4))
    values[:, 1, 2] = 7.0
    np.save(tmp_path / "grid.npy", values)
    out = invoke("stats", tmp_path / "grid.npy", "--axes", "0", "--format", "table").stdout
    assert re.search(r"^\s+\(1,2\) .* dead outlier_mean$", out, re.MULTILINE)
    assert "dead         1 channel: (1,2)" in out
    document = stats_json(invoke("stats", tmp_path / "grid.npy", "--axes", "0").stdout)
    assert findings_of(document)["dead"] == [[1, 2]]
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(invoke(
        "stats", tmp_path / "grid.npy", "--axes", "0", "--format", "csv").stdout)))
    assert [row["channel"] for row in rows[5:7]] == ["(1,1)", "(1,2)"]
    assert rows[6]["flags"] == "dead outlier_mean" and float(rows[6]["mean"]) == 7.0


def test_numbers_are_readable(invoke, tmp_path):
    np.save(tmp_path / "x.npy", np.array([[1 / 3, 2e-9], [2 / 3, 4e-9]]))
    out = invoke("stats", tmp_path / "x.npy", "--format", "table").stdout
    assert "0.5" in out and "3e-09" in out
    assert "0.3333333333333333" not in out


def test_normalize_prints_the_compact_summary(invoke, flagged, tmp_path):
    result = invoke("normalize", flagged, "-o", tmp_path / "n.npy")
    assert result.exit_code == 0
    assert "bn: normalized 500x64 over axes [0]" in result.stderr
    assert "dead         1 channel: 3" in result.stderr
    assert invoke("normalize", flagged, "-o", tmp_path / "m.npy", "-q").stderr == ""


def test_plot_is_a_png_of_sensible_size(invoke, flagged, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs the bncli[plot] extra")
    plot = tmp_path / "stats.png"
    result = invoke("stats", flagged, "--plot", plot, "--format", "json")
    assert result.exit_code == 0, result.output
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 600 <= width <= 2000 and 300 <= height <= 1200
    assert 10_000 < len(data) < 2_000_000
    assert not list(tmp_path.glob("*.bn-tmp"))
    result = invoke("stats", flagged, "--plot", plot)
    assert result.exit_code == 1 and "already exists" in result.stderr


@pytest.fixture
def slow_input(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.ones((4096, 1024), np.float32))  # 16 MiB
    return path


def test_progress_bar_on_a_terminal(slow_input):
    code, terminal, piped = run_on_terminal(
        ["stats", slow_input, "--format", "json", "--chunk-bytes", "64K", "--threads", "1"])
    assert code == 0
    text = terminal.decode(errors="replace")
    assert "stats" in text and "━" in text and "MB" in text
    assert stats_json(piped)["count"][0] == 4096


def test_no_progress_bar_with_no_progress(slow_input):
    code, terminal, _ = run_on_terminal(
        ["stats", slow_input, "--format", "json", "--chunk-bytes", "64K", "--no-progress"])
    assert code == 0 and terminal == b""


def test_pipes_get_no_progress_bar_and_no_colour(flagged):
    result = subprocess.run([sys.executable, "-m", "bncli", "stats", str(flagged), "--format",
                             "table"], capture_output=True, timeout=120,
                            env={**os.environ, "TERM": "xterm-256color"})
    assert result.returncode == 0
    assert b"\x1b" not in result.stdout and result.stderr == b""
    assert b"findings" in result.stdout


def test_table_on_a_terminal_is_coloured_unless_no_color(flagged):
    _, coloured, _ = run_on_terminal(["stats", flagged, "--format", "table"], stdout_tty=True)
    assert re.search(rb"\x1b\[[0-9;]*3[0-9]m", coloured)
    _, plain, _ = run_on_terminal(["stats", flagged, "--format", "table"], stdout_tty=True,
                                   env={"NO_COLOR": "1"})
    assert not re.search(rb"\x1b\[[0-9;]*3[0-9]m", plain)
    assert b"findings" in plain


def test_narrow_terminal_is_respected(flagged):
    _, narrow, _ = run_on_terminal(["stats", flagged, "--format", "table", "--no-progress"],
                                    stdout_tty=True,
                                    columns=60, env={"NO_COLOR": "1"})
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", narrow.decode(errors="replace"))
    lines = [line for line in text.replace("\r", "").split("\n") if line.strip()]
    assert lines and max(len(line) for line in lines) <= 60


def _realistic_layer(kind: str, channels: int, seed: int, rows: int = 2048) -> np.ndarray:
    """Activations as layers give them: channel scales spread log-normally, means spread
    with them, then the layer's nonlinearity."""
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0.0, 0.35, channels)
    x = rng.standard_normal((rows, channels)) * scale + rng.normal(0.0, 0.6, channels) * scale
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "gelu":  # the tanh form
        return 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))
    if kind == "batchnorm":
        return ((x - x.mean(0)) / x.std(0)) * rng.normal(1.0, 0.2, channels) + rng.normal(
            0.0, 0.2, channels)
    return np.clip(rng.normal(120, 55, (rows, channels)) + rng.normal(0, 10, channels), 0,
                   255).round()  # raw image pixels


@pytest.mark.parametrize("kind, channels", [
    ("relu", 512), ("relu", 2048), ("gelu", 512), ("gelu", 2048), ("batchnorm", 2048),
    ("image", 3)])
def test_realistic_layers_give_no_outlier_finding(kind, channels):
    from bncli.core.findings import find

    for seed in range(3):
        x = _realistic_layer(kind, channels, seed)
        count = np.full(channels, x.shape[0])
        values = {"count": count, "mean": x.mean(0), "std": x.std(0), "variance": x.var(0),
                  "m2": x.var(0) * count, "nan_count": np.zeros(channels, np.int64),
                  "inf_count": np.zeros(channels, np.int64)}
        assert [finding.kind for finding in find(values)] == [], (kind, channels, seed)


def test_a_channel_20x_off_in_a_relu_layer_is_still_found():
    from bncli.core.findings import find

    x = _realistic_layer("relu", 512, seed=9)
    x[:, 100] *= 30
    x[:, 200] += 60 * x.std(0).mean()
    count = np.full(512, x.shape[0])
    values = {"count": count, "mean": x.mean(0), "std": x.std(0), "variance": x.var(0),
              "m2": x.var(0) * count, "nan_count": np.zeros(512, np.int64),
              "inf_count": np.zeros(512, np.int64)}
    found = {finding.kind: finding.channels for finding in find(values)}
    assert found == {"outlier_std": [100], "outlier_mean": [200]}


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_plot_takes_svg_and_pdf(invoke, flagged, tmp_path, suffix, magic):
    pytest.importorskip("matplotlib", reason="--plot needs the bncli[plot] extra")
    result = invoke("stats", flagged, "-q", "--plot", tmp_path / f"stats{suffix}")
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"stats{suffix}").read_bytes().startswith(magic)
    assert invoke("stats", flagged, "--plot", tmp_path / "s.gif").exit_code == 2


def test_plot_y_range_is_robust_to_one_outlier_and_holds_close_channels():
    from bncli.cli.plot import _y_range

    rng = np.random.default_rng(11)
    low, high = -rng.uniform(2, 4, 2048), rng.uniform(2, 4, 2048)
    high[700] = 500.0  # one channel far off
    bottom, top = _y_range(low, high)
    assert 4 < top < 20 and -20 < bottom < -4  # the others fill the picture
    bottom, top = _y_range(np.array([0.0, 1.0, 2.0]), np.array([10.0, 11.0, 255.0]))
    assert bottom <= 0.0 and top >= 255.0  # three channels: all of them, ends included


def test_plot_marks_std_outliers_at_the_top_of_their_band(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs the bncli[plot] extra")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from bncli import api
    from bncli.cli.plot import plot_statistics

    values = np.random.default_rng(12).standard_normal((400, 32))
    values[:, 5] *= 100  # zero mean, 100x the scale
    np.save(tmp_path / "x.npy", values)
    statistics = api.stats(tmp_path / "x.npy")
    drawn = {}
    original = pyplot.Axes.scatter

    def record(self, x, y, *args, **kwargs):
        drawn[kwargs.get("label", "").split(" (")[0]] = (np.asarray(x), np.asarray(y))
        return original(self, x, y, *args, **kwargs)

    pyplot.Axes.scatter = record
    try:
        plot_statistics(statistics, statistics.findings(), str(tmp_path / "p.png"))
    finally:
        pyplot.Axes.scatter = original
    x, y = drawn["std outlier"]
    # at the top of its band (here clipped to the top of the robust range), not at its mean 0
    assert x.tolist() == [5] and y[0] > 3 * values[:, :5].std()


def test_a_realistic_relu_layer_file_gives_no_finding_through_the_command(tmp_path):
    from conftest import run_bn

    np.save(tmp_path / "relu.npy", _realistic_layer("relu", 2048, seed=4, rows=512).astype(
        np.float32))
    result = run_bn("stats", tmp_path / "relu.npy", "--format", "json", "--fail-on", "any")
    assert result.returncode == 0, result.stderr
    assert stats_json(result.stdout)["findings"] == []
