"""HDF5 outputs into existing files: one dataset added or replaced, everything else kept
bit for bit, even when the write fails or the process is killed in the middle."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import run_bn


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(path) -> dict:
    """Every dataset of a file with its bytes and attributes."""
    found = {}
    with h5py.File(path, "r") as h5file:
        h5file.visititems(lambda name, item: found.__setitem__(name, (
            item[()].tobytes(), dict(item.attrs)) if isinstance(item, h5py.Dataset) else None))
    return found


@pytest.fixture
def keras_file(tmp_path):
    """A file of several datasets, as a Keras user keeps activations and labels."""
    rng = np.random.default_rng(0)
    path = tmp_path / "k2.h5"
    with h5py.File(path, "w") as h5file:
        h5file["labels"] = np.arange(1000)
        h5file["model/conv2d_1/activations"] = rng.standard_normal((64, 8, 8, 4))
        h5file["model/dense_1/normed"] = np.zeros(3)
        h5file["model/dense_1/normed"].attrs["note"] = "old"
    return path


@pytest.fixture
def activations(tmp_path):
    values = np.random.default_rng(1).standard_normal((400, 32)).astype(np.float32) * 3 + 1
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as h5file:
        h5file["model/dense_1/activations"] = values
    return path, values


def test_force_replaces_only_the_named_dataset(keras_file, activations):
    source, values = activations
    before = contents(keras_file)
    target = f"{keras_file}:/model/dense_1/normed"
    refused = run_bn("normalize", f"{source}:/model/dense_1/activations", "-o", target)
    assert refused.returncode == 1
    assert b"already exists (use --force to replace it; the rest of the file is kept)" in (
        refused.stderr)
    result = run_bn("normalize", f"{source}:/model/dense_1/activations", "-o", target,
                    "--force", "-q", "--compression", "gzip", "--chunks", "50,32")
    assert result.returncode == 0, result.stderr
    after = contents(keras_file)
    for name in ("labels", "model/conv2d_1/activations"):
        assert after[name][0] == before[name][0]
    with h5py.File(keras_file, "r") as h5file:
        normed = h5file["model/dense_1/normed"]
        assert normed.compression == "gzip" and normed.chunks == (50, 32)
        assert "note" not in normed.attrs
        x = values.astype(np.float64)
        np.testing.assert_allclose(normed[()], (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3),
                                   rtol=1e-6, atol=1e-6)


def test_a_new_dataset_is_added_without_force_and_the_input_file_may_gain_one(
        keras_file, activations):
    source, values = activations
    before = contents(keras_file)
    result = run_bn("normalize", f"{source}:/model/dense_1/activations", "-o",
                    f"{keras_file}:/model/dense_2/normed", "-q")
    assert result.returncode == 0, result.stderr
    after = contents(keras_file)
    assert {name: after[name] for name in before} == before
    assert "model/dense_2/normed" in after
    # the file being read gains the normalized copy beside its input
    result = run_bn("normalize", f"{source}:/model/dense_1/activations", "-o",
                    f"{source}:/model/dense_1/normed", "-q")
    assert result.returncode == 0, result.stderr
    with h5py.File(source, "r") as h5file:
        assert np.array_equal(h5file["model/dense_1/activations"][()], values)
        assert h5file["model/dense_1/normed"].shape == values.shape
    again = run_bn("normalize", f"{source}:/model/dense_1/activations", "-o",
                   f"{source}:/model/dense_1/activations", "--force", "-q")
    assert again.returncode == 1 and b"is the input dataset; refused" in again.stderr


@pytest.mark.parametrize("target, message", [
    ("/model", "k2.h5:/model: is a group of"),
    ("/labels/x", "k2.h5:/labels/x: /labels is a dataset, not a group"),
])
def test_targets_that_cannot_be_a_dataset_are_refused(keras_file, activations, target, message):
    source, _ = activations
    result = run_bn("normalize", f"{source}:/model/dense_1/activations", "-o",
                    f"{keras_file}:{target}", "--force")
    assert result.returncode == 1 and message in result.stderr.decode()


def test_a_failed_write_leaves_the_file_bit_identical(tmp_path, keras_file):
    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(2).standard_normal((4000, 256)))  # 8 MB of output
    before = digest(keras_file)
    limit_kb = (keras_file.stat().st_size + 2**20) // 1024  # the copy fits, the data not
    command = (f"ulimit -f {limit_kb}; {sys.executable} -m bncli normalize {big} "
               f"-o {keras_file}:/model/dense_1/normed --force -q")
    result = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert b"file size limit exceeded while writing" in result.stderr
    assert digest(keras_file) == before
    assert sorted(os.listdir(tmp_path)) == ["big.npy", "k2.h5"]


def test_a_killed_write_leaves_the_file_bit_identical(tmp_path, keras_file):
    big = tmp_path / "big.npy"
    np.save(big, np.random.default_rng(3).standard_normal((16000, 1024)).astype(np.float32))
    before = digest(keras_file)
    process = subprocess.Popen([sys.executable, "-m", "bncli", "normalize", str(big), "-o",
                                f"{keras_file}:/model/dense_1/normed", "--force", "-q",
                                "--compression", "gzip"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            name.endswith(".bn-tmp") for name in os.listdir(tmp_path)):
        time.sleep(0.01)
    time.sleep(0.3)  # into the write
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL  # killed, not finished
    assert digest(keras_file) == before


def test_a_symlinked_hdf5_file_gains_the_dataset_and_stays_a_link(tmp_path, keras_file,
                                                                  activations):
    source, _ = activations
    (tmp_path / "link.h5").symlink_to(keras_file)
    before = contents(keras_file)
    result = run_bn("normalize", f"{source}:/model/dense_1/activations", "-o",
                    f"{tmp_path / 'link.h5'}:/added", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "link.h5").is_symlink()
    after = contents(keras_file)
    assert "added" in after and {name: after[name] for name in before} == before
