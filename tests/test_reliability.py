"""Hostile conditions through the real command: closed and full streams, outputs onto inputs,
unbounded statistics files, huge findings tables, and failures that must leave no output."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import run_bn, run_on_terminal

BN = [sys.executable, "-m", "bncli"]


@pytest.fixture
def wide(tmp_path):
    """3000 channels: enough text that a pipe closes while bn is still writing."""
    values = np.random.default_rng(0).standard_normal((50, 3000)).astype(np.float32)
    np.save(tmp_path / "wide.npy", values)
    return tmp_path / "wide.npy"


def shell(command: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, cwd=cwd, timeout=120)


def bn(*args) -> str:
    return " ".join([*BN, *map(str, args)])


def assert_one_line(stderr: bytes, text: str) -> None:
    message = stderr.decode()
    assert message.count("\n") == 1 and message.startswith("bn: error: "), message
    assert text in message and "Traceback" not in message


@pytest.mark.parametrize("command", [
    ["stats", "{wide}", "--format", "table"],
    ["stats", "{wide}", "--format", "json"],
    ["info", "{wide}"],
    ["normalize", "{wide}", "-q"],
])
def test_a_closed_stdout_is_one_error_line(tmp_path, wide, command):
    args = [part.format(wide=wide) for part in command]
    result = shell(f"{bn(*args)} >&-", tmp_path)
    assert result.returncode == 1
    assert_one_line(result.stderr, "<stdout>: standard output is closed")


@pytest.mark.parametrize("fmt", ["csv", "table", "json"])
def test_a_pipe_closed_after_text_ends_quietly_with_141(tmp_path, wide, fmt):
    result = shell(f"{bn('stats', wide, '--format', fmt, '--all')} | head -c 10 > /dev/null; "
                   "echo ${PIPESTATUS[0]}", tmp_path)
    assert result.stdout.strip() == b"141"
    assert result.stderr == b""


@pytest.mark.parametrize("command", [
    ["stats", "{wide}", "--format", "csv"],
    ["stats", "{wide}", "--format", "table"],
    ["info", "{wide}"],
])
def test_text_to_a_full_device_names_stdout(tmp_path, wide, command):
    args = [part.format(wide=wide) for part in command]
    result = shell(f"{bn(*args)} > /dev/full", tmp_path)
    assert result.returncode == 1
    assert_one_line(result.stderr, "<stdout>: no space left on device while writing")


def test_stdout_appending_to_the_input_is_refused(tmp_path, wide):
    before = wide.read_bytes()
    result = shell(f"{bn('normalize', wide, '--quiet')} >> {wide}", tmp_path)
    assert result.returncode == 1
    assert_one_line(result.stderr, f"<stdout>: is the input file {wide}; refused")
    assert wide.read_bytes() == before


def test_output_onto_a_scale_or_statistics_file_is_refused(tmp_path, wide):
    np.save(tmp_path / "scale.npy", np.ones(3000))
    scale_before = (tmp_path / "scale.npy").read_bytes()
    result = run_bn("normalize", wide, "--scale", tmp_path / "scale.npy", "-o",
                    tmp_path / "scale.npy", "--force", "-q")
    assert result.returncode == 1
    assert_one_line(result.stderr, "is the input file")
    assert (tmp_path / "scale.npy").read_bytes() == scale_before
    assert run_bn("stats", wide, "-o", tmp_path / "s.npz", "-q").returncode == 0
    stats_before = (tmp_path / "s.npz").read_bytes()
    piped = shell(f"{bn('normalize', wide, '--stats', tmp_path / 's.npz', '-q')} >> "
                  f"{tmp_path / 's.npz'}", tmp_path)
    assert piped.returncode == 1
    assert (tmp_path / "s.npz").read_bytes() == stats_before


def test_a_statistics_file_that_is_a_device_is_refused_unread(tmp_path):
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    result = run_bn("merge", tmp_path / "zero.json", "-o", tmp_path / "m.json", timeout=30)
    assert result.returncode == 1
    assert_one_line(result.stderr, "zero.json: is a character device, not a regular file")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    result = run_bn("normalize", tmp_path / "zero.json", "--stats", fifo, "-o",
                    tmp_path / "o.npy", timeout=30)
    assert result.returncode == 1 and b"is a FIFO (named pipe), not a regular file" in result.stderr


def test_an_npz_whose_members_declare_too_much_is_refused(tmp_path):
    from bncli.io.statsfile import MAX_FILE_BYTES

    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as archive:
        archive.writestr("meta.npy", b"x")
    # rewrite the declared size in the central directory (little-endian at offset 24)
    data = bytearray((tmp_path / "bomb.npz").read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = (min(MAX_FILE_BYTES + 1, 2**32 - 1)).to_bytes(4, "little")
    (tmp_path / "bomb.npz").write_bytes(bytes(data))
    result = run_bn("merge", tmp_path / "bomb.npz", "-o", tmp_path / "m.json", timeout=30)
    assert result.returncode == 1
    assert_one_line(result.stderr, "bomb.npz: member 'meta.npy': stored member declares")


def test_a_findings_table_of_a_million_flagged_channels_is_shown_in_part(tmp_path):
    values = np.ones((4, 2**20), np.float32)  # every channel dead
    values[:, ::7] = np.random.default_rng(1).random((4, len(range(0, 2**20, 7))))
    np.save(tmp_path / "dead.npy", values)
    code, screen, _ = run_on_terminal(["stats", tmp_path / "dead.npy", "--axes", "0",
                                       "--format", "table", "--no-progress"], stdout_tty=True)
    text = screen.decode(errors="replace")
    assert code == 0
    assert "channels not shown (--all shows every one)" in text
    assert "dead" in text and f"{2**20 - len(range(0, 2**20, 7))} channels" in text
    assert text.count("\n") < 400  # the edges and at most 200 flagged rows


@contextlib.contextmanager
def tiny_disk(tmp_path, size: str):
    """A tmpfs of `size` mounted at tmp_path/tiny (skips where it cannot be mounted)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_save_stats_that_fails_leaves_no_output_either(tmp_path, wide):
    with tiny_disk(tmp_path, "16k") as mount:
        result = run_bn("normalize", wide, "-o", tmp_path / "out.npy", "--save-stats",
                        mount / "s.json", "-q")
        assert result.returncode == 1
        assert_one_line(result.stderr, "no space left on device")
        assert not (tmp_path / "out.npy").exists()
        assert os.listdir(mount) == []
        assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


def good_document() -> dict:
    return {"schema": "bncli.stats/2", "inputs": [], "axes": [0], "channel_shape": [2],
            "ddof": 0, "ignore_nan": False, "keepdims": False, "count": [3, 3],
            "mean": [1.0, 2.0], "m2": [2.0, 2.0], "min": [0.0, 1.0], "max": [2.0, 3.0],
            "nan_count": [0, 0], "inf_count": [0, 0], "variance": [0.66, 0.66]}


@pytest.mark.parametrize("field, value, message", [
    ("count", [2.5, 3], "count is not a list of counts"),
    ("count", ["Infinity", 3], "count is not a list of counts"),
    ("count", [2**53 + 2, 3], "count is not a list of counts"),
    ("m2", [-1.0, 2.0], "m2 holds a negative value"),
    ("keepdims", "yes", "field 'keepdims' is 'yes', not true or false"),
    ("inputs", ["a.npy"], "field 'inputs' is ['a.npy'], not a list of objects"),
])
def test_statistics_files_with_impossible_fields_are_refused(tmp_path, field, value, message):
    import json

    document = good_document()
    document[field] = value
    (tmp_path / "bad.json").write_text(json.dumps(document))
    result = run_bn("merge", tmp_path / "bad.json", "-o", tmp_path / "m.json")
    assert result.returncode == 1
    assert_one_line(result.stderr, f"bad.json: {message}")
    assert not (tmp_path / "m.json").exists()


def test_an_npz_statistics_file_with_a_complex_mean_is_refused(tmp_path):
    import json

    document = good_document()
    arrays = {key: np.asarray(document.pop(key)) for key in (
        "count", "mean", "m2", "min", "max", "nan_count", "inf_count", "variance")}
    arrays["mean"] = arrays["mean"] + 1j
    np.savez(tmp_path / "bad.npz", meta=np.array(json.dumps(document)), **arrays)
    result = run_bn("merge", tmp_path / "bad.npz", "-o", tmp_path / "m.json")
    assert result.returncode == 1
    assert_one_line(result.stderr, "bad.npz: mean holds complex128 values, not real numbers")


def test_merge_never_writes_a_count_bn_would_refuse(tmp_path):
    import json

    document = good_document()
    document["count"] = [2**52 + 2**51, 3]
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
    result = run_bn("merge", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "m.json",
                    "--allow-duplicates")  # the same counts twice, on purpose
    assert result.returncode == 1
    assert_one_line(result.stderr, "the merged count would pass 2**53")
    assert not (tmp_path / "m.json").exists()


def test_process_substitution_and_named_pipes_are_read_as_streams(tmp_path):
    values = np.random.default_rng(9).standard_normal((60, 3))
    np.save(tmp_path / "p.npy", values)
    result = shell(f"{bn('stats', '<(cat p.npy)', '--format', 'json')}", tmp_path)
    assert result.returncode == 0, result.stderr
    import json

    document = json.loads(result.stdout)
    np.testing.assert_allclose(document["mean"], values.mean(0), rtol=1e-13)
    os.mkfifo(tmp_path / "fifo.npy")
    writer = subprocess.Popen(["bash", "-c", "cat p.npy > fifo.npy"], cwd=tmp_path)
    normalized = run_bn("normalize", tmp_path / "fifo.npy", "-o", tmp_path / "n.npy", "-q",
                        timeout=60)
    writer.wait(timeout=30)
    assert normalized.returncode == 0, normalized.stderr
    expected = (values - values.mean(0)) / np.sqrt(values.var(0) + 1e-3)
    np.testing.assert_allclose(np.load(tmp_path / "n.npy"), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("args, message", [
    (["stats", "--bogus", "x.npy"], "bn: error: No such option '--bogus'. (see bn stats --help)"),
    (["merge"], "bn: error: Missing argument 'STATSFILE...'. (see bn merge --help)"),
    (["frobnicate"], "bn: error: No such command 'frobnicate'. (see bn --help)"),
])
def test_click_usage_errors_are_one_line_with_exit_2(tmp_path, args, message):
    result = run_bn(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.decode() == message + "\n"


def test_no_numpy_warning_reaches_stderr(tmp_path):
    values = np.random.default_rng(2).standard_normal((20, 4)).astype(np.float32)
    values[:, 1] = np.nan  # an all-NaN channel: "All-NaN slice" in nanmin/nanmax
    # signaling NaNs: "invalid value encountered in cast" when widened
    values.view(np.uint32)[:, 2] = 0x7FA00000
    values[3, 3] = np.inf
    np.save(tmp_path / "x.npy", values)
    for args in (["stats", "x.npy", "--format", "table"], ["stats", "x.npy", "--ignore-nan",
                                                           "--moments", "4", "--format", "csv"],
                 ["normalize", "x.npy", "-o", "y.npy", "--force"],
                 ["normalize", "x.npy", "-o", "y.npy", "--force", "--ignore-nan", "-q"]):
        result = run_bn(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert b"Warning" not in result.stderr and b"warn" not in result.stderr, args


def test_a_closed_stdin_is_one_error_line(tmp_path):
    result = shell(f"{bn('stats', '-')} <&-", tmp_path)
    assert result.returncode == 1
    assert_one_line(result.stderr, "<stdin>: standard input is closed")


def test_hdf5_paths_with_dot_components_are_refused_and_a_trailing_slash_is_fine(tmp_path):
    import h5py

    with h5py.File(tmp_path / "d.h5", "w") as h5file:
        h5file.create_dataset("g/x", data=np.arange(12.0).reshape(4, 3))
    result = run_bn("stats", f"{tmp_path / 'd.h5'}:/g/./x")
    assert result.returncode == 1
    assert_one_line(result.stderr, "'/g/./x' has a '.' component")
    result = run_bn("stats", f"{tmp_path / 'd.h5'}:/g/x/", "--format", "json")
    assert result.returncode == 0, result.stderr
    import json

    assert json.loads(result.stdout)["mean"] == [4.5, 5.5, 6.5]


def _extreme_integers(dtype, shape, seed):
    """Values that float64 cannot hold: the type's ends and odd numbers past 2**53."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    values = rng.integers(2**53, 2**60, size=shape, dtype=np.int64).astype(dtype) | 1
    flat = values.reshape(-1)
    flat[rng.integers(0, flat.size)] = info.max
    flat[rng.integers(0, flat.size)] = info.min if dtype == np.int64 else 2**53 + 1
    return values


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("args", [
    ["--axes", "0,1"],                                       # rows of channels
    ["--axes", "0,2"],                                       # (A, K, B) slabs
    ["--axes", "0,1", "--ignore-nan"],                       # the general path
    ["--axes", "0,1", "--chunk-bytes", "96", "--threads", "2"],  # merged over many blocks
])
def test_64_bit_integer_extremes_are_exact_in_json_npz_and_merge(tmp_path, dtype, args):
    import json

    values = _extreme_integers(dtype, (40, 6, 5), seed=3)
    np.save(tmp_path / "x.npy", values)
    axes = tuple(int(axis) for axis in args[1].split(","))
    expected_min = [int(v) for v in values.min(axis=axes).reshape(-1)]
    expected_max = [int(v) for v in values.max(axis=axes).reshape(-1)]
    result = run_bn("stats", tmp_path / "x.npy", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["min"], document["max"]) == (expected_min, expected_max)
    # shards written as .json and .npz merge back to the same integers
    for name, part in (("a.json", values[:25]), ("b.npz", values[25:])):
        np.save(tmp_path / f"{name}.npy", part)
        assert run_bn("stats", tmp_path / f"{name}.npy", *args, "-o", tmp_path / name,
                      "-q").returncode == 0
    with np.load(tmp_path / "b.npz") as archive:
        assert archive["min"].dtype == np.dtype(dtype)
    result = run_bn("merge", tmp_path / "a.json", tmp_path / "b.npz", "-o", tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    merged = json.loads((tmp_path / "m.json").read_text())
    assert (merged["min"], merged["max"]) == (expected_min, expected_max)
    csv = run_bn("stats", tmp_path / "x.npy", *args, "--format", "csv").stdout.decode()
    assert f",{expected_max[0]}," in csv.splitlines()[1]


def test_integer_extremes_of_several_inputs_of_one_type_stay_exact(tmp_path):
    import json

    first = _extreme_integers(np.int64, (30, 4), seed=5)
    second = _extreme_integers(np.int64, (30, 4), seed=6)
    np.save(tmp_path / "a.npy", first)
    np.save(tmp_path / "b.npy", second)
    result = run_bn("stats", tmp_path / "a.npy", tmp_path / "b.npy", "--format", "json")
    assert result.returncode == 0, result.stderr
    both = np.concatenate([first, second])
    document = json.loads(result.stdout)
    assert document["min"] == [int(v) for v in both.min(0)]
    assert document["max"] == [int(v) for v in both.max(0)]


def test_finite_values_whose_sums_overflow_are_an_overflow_finding_not_a_wrong_inf(tmp_path):
    import json

    rng = np.random.default_rng(4)
    near_max = rng.uniform(1e307, 1.7e308, (500, 2))       # the mean's sums overflow
    wide = rng.uniform(-1.0, 1.0, (500, 2)) * 1e200          # the squares overflow
    ordinary = rng.standard_normal((500, 1))
    np.save(tmp_path / "x.npy", np.concatenate([near_max, wide, ordinary], axis=1))
    result = run_bn("stats", tmp_path / "x.npy", "--format", "json", "--fail-on", "overflow")
    assert result.returncode == 3
    document = json.loads(result.stdout)
    assert document["mean"][:2] == ["NaN", "NaN"]  # was -Infinity for positive data
    # the mean of the wide channels is still right: compared in scaled units
    np.testing.assert_allclose(np.array(document["mean"][2:4]) / 1e200,
                               (wide / 1e200).mean(0), rtol=1e-12)
    assert document["variance"][:4] == ["NaN"] * 4 and document["std"][:4] == ["NaN"] * 4
    np.testing.assert_allclose(document["variance"][4], ordinary.var(), rtol=1e-13)
    found = {item["kind"]: item["channels"] for item in document["findings"]}
    assert found == {"overflow": [0, 1, 2, 3]}
    table = run_bn("stats", tmp_path / "x.npy", "--format", "table").stdout.decode()
    assert "overflow     4 channels: 0, 1, 2, 3" in table


def test_an_hdf5_fill_value_bomb_is_refused_at_once_and_allowed_on_request(tmp_path,
                                                                           monkeypatch):
    import h5py

    import bncli
    from bncli import api
    from bncli.io import hdf5

    with h5py.File(tmp_path / "bomb.h5", "w") as h5file:  # 4 PiB declared, 16 chunks written
        dataset = h5file.create_dataset("x", shape=(2**40, 2**10), dtype="f4", chunks=(1024, 64))
        dataset[0:10] = 1.0
    assert (tmp_path / "bomb.h5").stat().st_size < 5 * 2**20
    result = run_bn("stats", f"{tmp_path / 'bomb.h5'}:/x", timeout=30)
    assert result.returncode == 1
    assert_one_line(result.stderr, "bomb.h5:/x: 16 of its 17,179,869,184 chunks were ever "
                    "written; the other 4.0 PiB would be read as its fill value 0.0 (use "
                    "--allow-sparse")
    info = run_bn("info", f"{tmp_path / 'bomb.h5'}:/x").stdout.decode()
    assert "written      16 of 17,179,869,184 chunks" in info
    # A sparse dataset under the limit is read, its unwritten chunks as the fill value; over
    # it, --allow-sparse reads it too.
    with h5py.File(tmp_path / "sparse.h5", "w") as h5file:
        dataset = h5file.create_dataset("x", shape=(4096, 8), dtype="f8", chunks=(64, 8),
                                        fillvalue=-1.0)
        dataset[100:130] = np.arange(240.0).reshape(30, 8)
    expected = np.full((4096, 8), -1.0)
    expected[100:130] = np.arange(240.0).reshape(30, 8)
    statistics = api.stats([f"{tmp_path / 'sparse.h5'}:/x"]).values()
    np.testing.assert_allclose(statistics["mean"], expected.mean(0), rtol=1e-14)
    monkeypatch.setattr(hdf5, "MAX_UNWRITTEN_BYTES", 2**16)
    with pytest.raises(bncli.InputError, match="2 of its 64 chunks were ever written"):
        api.stats([f"{tmp_path / 'sparse.h5'}:/x"])
    allowed = api.stats([f"{tmp_path / 'sparse.h5'}:/x"], allow_sparse=True).values()
    np.testing.assert_allclose(allowed["variance"], expected.var(0), rtol=1e-13)


def test_an_optional_hdf5_filter_that_is_not_installed_is_skipped(tmp_path):
    import h5py

    values = np.arange(400.0).reshape(100, 4)
    with h5py.File(tmp_path / "opt.h5", "w") as h5file:
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_chunk((10, 4))
        plist.set_filter(32099, h5py.h5z.FLAG_OPTIONAL, (1,))  # no such filter is installed
        dataset = h5py.Dataset(h5py.h5d.create(h5file.id, b"x", h5py.h5t.NATIVE_DOUBLE,
                                               h5py.h5s.create_simple((100, 4)), plist))
        dataset[...] = values
    result = run_bn("normalize", f"{tmp_path / 'opt.h5'}:/x", "-o", tmp_path / "n.npy", "-q",
                    "--epsilon", "0")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "n.npy"),
                               (values - values.mean(0)) / values.std(0), rtol=1e-12)


def test_a_full_disk_while_spooling_stdin_is_one_error_line_and_leaves_nothing(tmp_path):
    with tiny_disk(tmp_path, "64k") as mount:
        np.save(tmp_path / "big.npy", np.random.default_rng(1).standard_normal((20000, 8)))
        result = shell(f"cat big.npy | TMPDIR={mount} {bn('normalize', '-', '-o', 'out.npy')}",
                       tmp_path)
        assert result.returncode == 1
        assert_one_line(result.stderr, f"<stdin>: cannot keep a copy for the second pass in "
                        f"{mount}: No space left on device (set TMPDIR to a directory with "
                        "room)")
        assert os.listdir(mount) == [] and not (tmp_path / "out.npy").exists()


def test_hdf5_names_that_are_not_utf8_are_listed_and_opened(tmp_path):
    import h5py

    with h5py.File(tmp_path / "names.h5", "w") as h5file:
        h5file.create_dataset(b"\xff\xfe", data=np.arange(12.0).reshape(4, 3))
        h5file.create_dataset("y", data=np.zeros((4, 3)))
    result = run_bn("stats", tmp_path / "names.h5")
    assert result.returncode == 1
    assert_one_line(result.stderr, "holds 2 numeric datasets (/\\xff\\xfe, /y)")
    listing = run_bn("info", tmp_path / "names.h5").stdout.decode()
    assert "dataset  /\\xff\\xfe  4x3 float64" in listing
    raw_name = os.fsencode(tmp_path / "names.h5") + b":/\xff\xfe"
    opened = subprocess.run([*BN, "stats", raw_name, "--format", "json"], capture_output=True)
    assert opened.returncode == 0, opened.stderr
    import json

    assert json.loads(opened.stdout)["mean"] == [4.5, 5.5, 6.5]


@pytest.mark.parametrize("text, message", [
    ('"mean": [' + "[" * 5000 + "]" * 5000 + "]", "not valid JSON"),
    ('"mean": ' + "[" * 900 + "1" + "]" * 900, "arrays nested too deeply"),
    ('"mean": [1' + "0" * 400 + ", 2]", "mean is not an array of numbers in range"),
])
def test_huge_and_deeply_nested_numbers_in_statistics_files_are_refused(tmp_path, text,
                                                                         message):
    import json

    document = good_document()
    key = text.split('"')[1]
    document.pop(key)
    body = json.dumps(document)[:-1] + ", " + text + "}"
    (tmp_path / "bad.json").write_text(body)
    result = run_bn("merge", tmp_path / "bad.json", "-o", tmp_path / "m.json")
    assert result.returncode == 1
    assert_one_line(result.stderr, f"bad.json: {message}")


def test_hdf5_with_a_damaged_chunk_index_is_one_error_line(tmp_path):
    import h5py

    with h5py.File(tmp_path / "d.h5", "w", libver="earliest") as h5file:
        h5file.create_dataset("x", data=np.arange(240.0).reshape(10, 24), chunks=(5, 6))
    data = (tmp_path / "d.h5").read_bytes()
    assert data.count(b"TREE") >= 2  # the group's B-tree and the chunk index
    (tmp_path / "d.h5").write_bytes(data[:data.rindex(b"TREE")] + b"TREX"
                                    + data[data.rindex(b"TREE") + 4:])
    for args in (["stats", f"{tmp_path / 'd.h5'}:/x"], ["info", f"{tmp_path / 'd.h5'}:/x"]):
        result = run_bn(*args)
        assert result.returncode == 1
        assert_one_line(result.stderr, "d.h5:/x: damaged HDF5 file (wrong B-tree signature)")
