"""Bad input gets one clear error and loses nothing; mutated files never crash or hang."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bncli.cli import cli


def test_directory_input(invoke, tmp_path):
    result = invoke("stats", tmp_path)
    assert result.exit_code == 1
    assert result.stderr == f"bn: error: {tmp_path}: is a directory, not a file\n"


def test_missing_input(invoke, tmp_path):
    result = invoke("info", tmp_path / "nope.npy")
    assert result.exit_code == 1
    assert result.stderr == f"bn: error: {tmp_path / 'nope.npy'}: no such file\n"


def _without_root_file_powers() -> list:
    """A command prefix under which even root gets "Permission denied" on a mode-000 file."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv to drop the file-access capabilities")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_input(tmp_path):
    path = tmp_path / "secret.npy"
    np.save(path, np.zeros(3))
    path.chmod(0)
    result = subprocess.run(_without_root_file_powers() + [sys.executable, "-m", "bncli",
                                                           "stats", str(path)],
                            capture_output=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.decode() == f"bn: error: {path}: cannot read: Permission denied\n"


def test_hard_link_to_the_input_is_refused(invoke, tmp_path):
    source = tmp_path / "x.npy"
    np.save(source, np.arange(12.0).reshape(4, 3))
    os.link(source, tmp_path / "alias.npy")
    result = invoke("normalize", source, "-o", tmp_path / "alias.npy", "--force")
    assert result.exit_code == 1
    assert "is the input file" in result.stderr
    assert np.array_equal(np.load(source), np.arange(12.0).reshape(4, 3))


def test_failed_run_keeps_existing_output_and_leaves_no_temp(invoke, tmp_path):
    source = tmp_path / "x.npy"
    np.save(source, np.arange(12.0).reshape(4, 3))
    out = tmp_path / "out.npy"
    out.write_bytes(b"keep me")
    result = invoke("normalize", source, "-o", out, "--force", "--scale", "1,2")
    assert result.exit_code == 2
    assert out.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy", "x.npy"]


def test_chunked_dataset_with_nothing_written_is_refused(invoke, tmp_path):
    path = tmp_path / "empty_chunks.h5"
    with h5py.File(path, "w") as h5file:
        h5file.create_dataset("x", shape=(64, 4), dtype="f4", chunks=(8, 4))
    result = invoke("stats", f"{path}:/x")
    assert result.exit_code == 1
    assert "declares shape 64x4 but no data was ever written to it" in result.stderr


@pytest.fixture
def good_stats(tmp_path, invoke):
    np.save(tmp_path / "x.npy", np.arange(24.0).reshape(8, 3))
    invoke("stats", tmp_path / "x.npy", "-o", tmp_path / "s.json")
    return tmp_path / "x.npy", json.loads((tmp_path / "s.json").read_text())


@pytest.mark.parametrize("mutate, message", [
    (lambda d: "not json at all {", "not valid JSON"),
    (lambda d: [1, 2], "not a statistics document"),
    (lambda d: {**d, "schema": "other/9"}, "schema is 'other/9', expected 'bncli.stats/2'"),
    (lambda d: {k: v for k, v in d.items() if k != "m2"}, "missing field 'm2'"),
    (lambda d: {k: v for k, v in d.items() if k != "axes"}, "missing field 'axes'"),
    (lambda d: {**d, "mean": [1.0, 2.0]}, "mean has shape [2], expected channel_shape [3]"),
    (lambda d: {**d, "count": [1.5, 2, 3]}, "count is not a list of counts"),
    (lambda d: {**d, "mean": ["x", 1, 2]}, "mean holds the string 'x', not a number"),
    (lambda d: {**d, "ddof": "0"}, "field 'ddof' is '0', of the wrong type"),
    (lambda d: {**d, "axes": [0, 0]}, "axes [0, 0] are not distinct and in increasing order"),
    (lambda d: {**d, "axes": [5]}, "axes [5] do not fit a rank-2 input"),
])
@pytest.mark.parametrize("command", ["merge", "normalize"])
def test_bad_statistics_files(invoke, tmp_path, good_stats, mutate, message, command):
    source, document = good_stats
    bad = tmp_path / "bad.json"
    mutated = mutate(document)
    bad.write_text(mutated if isinstance(mutated, str) else json.dumps(mutated))
    if command == "merge":
        result = invoke("merge", bad, "-o", tmp_path / "m.json")
    else:
        result = invoke("normalize", source, "--stats", bad, "-o", tmp_path / "m.npy")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"bn: error: {bad}: ")
    assert message in result.stderr
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "m.npy").exists()


def test_statistics_file_with_other_axes_is_refused(invoke, tmp_path, good_stats):
    source, _ = good_stats
    invoke("stats", source, "--axes", "1", "-o", tmp_path / "per_row.json")
    result = invoke("normalize", source, "--stats", tmp_path / "per_row.json", "--axes", "0",
                    "-o", tmp_path / "o.npy")
    assert result.exit_code == 1
    assert "per_row.json: channel shape 8 does not match" in result.stderr


def _valid_npy() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, (np.arange(60, dtype="<f4") - 20).reshape(3, 4, 5))
    return buffer.getvalue()


VALID = _valid_npy()


def assert_success_or_documented_error(result) -> None:
    """A run on a mutated file succeeds, or fails with one clear line and status 1 or 2."""
    if result.exit_code == 0:
        assert result.exception is None
        return
    assert result.exit_code in (1, 2), (result.exit_code, repr(result.exception))
    assert result.stderr.startswith("bn: error: "), repr(result.exception)
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr


@settings(max_examples=examples(250), deadline=5000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID) + 8), st.binary(min_size=0, max_size=6),
                                st.integers(0, 6)), min_size=1, max_size=4),
       header_only=st.booleans(), command=st.sampled_from(["stats", "info"]))
def test_mutated_npy_files_end_in_success_or_the_documented_error(tmp_path, edits, header_only,
                                                                  command):
    data = bytearray(VALID)
    for position, insert, delete in edits:
        if header_only:
            position = position % 128  # the magic, version, length and header dict
        del data[position:position + delete]
        data[position:position] = insert
    path = tmp_path / "fuzz.npy"
    path.write_bytes(bytes(data))
    # catch_exceptions=True: an unexpected exception shows up as result.exception
    result = CliRunner().invoke(cli, [command, str(path)])
    assert_success_or_documented_error(result)


def _valid_hdf5() -> bytes:
    import io

    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5file:
        h5file.create_dataset("g/x", data=np.arange(240, dtype="<f4").reshape(10, 4, 6),
                              chunks=(5, 4, 3), compression="gzip", shuffle=True)
        h5file.create_dataset("y", data=np.arange(12.0).reshape(4, 3))
        h5file["g"].attrs["note"] = "seed"
    return buffer.getvalue()


VALID_HDF5 = _valid_hdf5()


@settings(max_examples=examples(150), deadline=10000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID_HDF5) - 1),
                                st.binary(min_size=0, max_size=8), st.integers(0, 8)),
                      min_size=1, max_size=4),
       command=st.sampled_from([["info", "{path}"], ["stats", "{path}:/g/x"],
                                ["stats", "{path}:/y"], ["stats", "{path}"]]))
def test_mutated_hdf5_files_end_in_success_or_the_documented_error(tmp_path, edits, command):
    data = bytearray(VALID_HDF5)
    for position, insert, delete in edits:
        del data[position:position + delete]
        data[position:position] = insert
    path = tmp_path / "fuzz.h5"
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, [part.format(path=path) for part in command])
    assert_success_or_documented_error(result)


@settings(max_examples=examples(60), deadline=10000, derandomize=True)
@given(cut=st.integers(0, len(VALID) - 1))
def test_truncated_streams_on_stdin_end_in_the_documented_error(cut):
    result = CliRunner().invoke(cli, ["stats", "-"], input=VALID[:cut])
    assert result.exit_code == 1, repr(result.exception)
    assert result.stderr.startswith("bn: error: <stdin>: ")


def _valid_containers() -> dict:
    import io
    import json
    import struct

    header = json.dumps({"a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
                         "b": {"dtype": "BF16", "shape": [4], "data_offsets": [48, 56]},
                         "__metadata__": {"k": "v"}}).encode()
    safetensors = struct.pack("<Q", len(header)) + header + np.arange(14, dtype="<f4").tobytes()
    archives = {}
    for save in (np.savez, np.savez_compressed):
        buffer = io.BytesIO()
        save(buffer, a=np.arange(12.0).reshape(3, 4), b=np.ones(4, np.uint8))
        archives[save.__name__] = buffer.getvalue()
    return {"fuzz.safetensors": safetensors, "fuzz.npz": archives["savez"],
            "fuzz_deflated.npz": archives["savez_compressed"]}


VALID_CONTAINERS = _valid_containers()


@settings(max_examples=examples(200), deadline=10000, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(VALID_CONTAINERS)),
       edits=st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=0, max_size=8),
                                st.integers(0, 8)), min_size=1, max_size=4),
       command=st.sampled_from([["info", "{path}"], ["stats", "{path}:a"],
                                ["stats", "{path}", "--each"]]))
def test_mutated_safetensors_and_npz_files_end_in_success_or_the_documented_error(
        tmp_path, name, edits, command):
    data = bytearray(VALID_CONTAINERS[name])
    for position, insert, delete in edits:
        position %= len(data) + 1
        del data[position:position + delete]
        data[position:position] = insert
    path = tmp_path / name
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, [part.format(path=path) for part in command])
    assert_success_or_documented_error(result)
