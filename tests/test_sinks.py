"""Every way an output can fail: one clear line, exit status 1, no temporary file left."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_bn

from bncli.errors import OutputError
from bncli.io.sinks import TEMP_SUFFIX, AtomicFile


@pytest.fixture
def data(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((64, 32, 32))
            .astype(np.float32))
    return tmp_path / "x.npy"


def leftovers(directory) -> list:
    return [name for name in os.listdir(directory) if name.endswith(TEMP_SUFFIX)]


def one_error_line(result, text: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("bn: error: "), stderr
    assert text in stderr
    assert "Traceback" not in stderr


def _becomes_a_directory(target):
    (target / "inside").mkdir(parents=True)
    return lambda: (target / "inside").is_dir()


def _is_written_by_another(target):
    target.write_text("theirs")
    return lambda: target.read_text() == "theirs"


@pytest.mark.parametrize("force, appears, message", [
    (True, _becomes_a_directory, "cannot put the output in place"),
    (False, _is_written_by_another, "already exists"),
])
def test_a_commit_that_fails_removes_the_temporary_file(tmp_path, force, appears, message):
    target = tmp_path / "out.json"
    with pytest.raises(OutputError, match=message):
        with AtomicFile(str(target), force=force) as atomic:
            with open(atomic.temp_path, "w") as stream:
                stream.write("{}")
            untouched = appears(target)  # during the run, something takes the target's place
    assert leftovers(tmp_path) == []
    assert untouched()


def test_a_dangling_symlink_target_is_refused_before_computing(tmp_path, data):
    (tmp_path / "link.json").symlink_to(tmp_path / "nowhere.json")
    result = run_bn("stats", data, "-o", tmp_path / "link.json", "--format", "csv")
    one_error_line(result, "already exists as a symbolic link to a missing file")
    assert leftovers(tmp_path) == [] and os.path.islink(tmp_path / "link.json")
    forced = run_bn("stats", data, "-o", tmp_path / "link.json", "--format", "csv", "--force")
    assert forced.returncode == 0, forced.stderr
    assert not os.path.islink(tmp_path / "link.json")
    assert leftovers(tmp_path) == []


def test_hdf5_output_past_the_file_size_limit_fails_cleanly(tmp_path, data):
    command = (f"ulimit -f 100; exec {sys.executable} -m bncli normalize {data} "
               f"-o {tmp_path / 'out.h5'}:/y -q")
    result = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120)
    one_error_line(result, "file size limit exceeded while writing")
    assert not (tmp_path / "out.h5").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("target, message", [
    ("missing_dir/out.npy", "does not exist"),
    ("a_directory.json", "is a directory"),
    ("n" * 300 + ".npy", "File name too long"),
    ("m" * 245 + ".npy", "File name too long"),  # the name fits, its temporary file not
])
def test_targets_that_cannot_be_written(tmp_path, data, target, message):
    (tmp_path / "a_directory.json").mkdir()
    if target == "a_directory.json":
        result = run_bn("stats", data, "-o", target, "--format", "csv", cwd=tmp_path)
    else:
        result = run_bn("normalize", data, "-o", target, "-q", cwd=tmp_path)
    one_error_line(result, message)
    assert leftovers(tmp_path) == []


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: every output bigger than that fails with ENOSPC (needs root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("command", [
    ["normalize", "{data}", "-o", "{disk}/out.npy", "-q"],
    ["normalize", "{data}", "-o", "{disk}/out.h5:/y", "-q"],
    ["stats", "{wide}", "-o", "{disk}/s.json", "--format", "csv"],
    ["stats", "{wide}", "-o", "{disk}/s.npz", "--format", "csv"],
])
def test_a_full_disk_is_one_clear_error(tmp_path, data, full_disk, command):
    # enough channels that the statistics file does not fit in 64 KiB either
    np.save(tmp_path / "wide.npy", np.ones((2, 4096)))
    args = [part.format(data=data, disk=full_disk, wide=tmp_path / "wide.npy")
            for part in command]
    result = run_bn(*args)
    one_error_line(result, "no space left on device")
    assert os.listdir(full_disk) == []
