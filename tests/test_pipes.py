"""The real command in real processes: pipes, stdin streams, closed pipes and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import assert_close, reference_moments, run_bn, stats_json

from bncli.io.npy import make_header


@pytest.fixture
def acts(tmp_path, rng):
    values = (rng.standard_normal((64, 6, 6, 8)) * 3 + 50).astype(np.float32)
    path = tmp_path / "acts.npy"
    np.save(path, values)
    return path, values


def test_python_m_bncli_is_bn(acts):
    path, values = acts
    result = run_bn("stats", path)
    assert result.returncode == 0 and result.stderr == b""
    mean, _ = reference_moments(values, (0, 1, 2))
    assert_close(stats_json(result.stdout)["mean"], mean)


def test_stats_reads_a_stream_on_stdin(acts):
    path, values = acts
    for order in ("C", "F"):
        data = path.read_bytes() if order == "C" else (
            make_header(values.shape, values.dtype, True) + values.tobytes(order="F"))
        result = run_bn("stats", "-", "--chunk-bytes", "1000", input=data)
        assert result.returncode == 0, result.stderr
        document = stats_json(result.stdout)
        mean, variance = reference_moments(values, (0, 1, 2))
        assert_close(document["mean"], mean)
        assert_close(document["variance"], variance, rtol=1e-12)
        assert document["inputs"][0]["path"] == "-"


def test_pipeline_normalize_stdin_to_stdout_then_stats(acts, tmp_path):
    path, values = acts
    with open(path, "rb") as source:
        first = subprocess.Popen([sys.executable, "-m", "bncli", "normalize", "-", "-q"],
                                 stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        second = subprocess.run([sys.executable, "-m", "bncli", "stats", "-"],
                                stdin=first.stdout, capture_output=True, timeout=120)
        first.stdout.close()
        assert first.wait(timeout=120) == 0, first.stderr.read()
    assert second.returncode == 0, second.stderr
    document = stats_json(second.stdout)
    expected = (values - values.astype(np.float64).mean((0, 1, 2))) / np.sqrt(
        values.astype(np.float64).var((0, 1, 2)) + 1e-3)
    assert_close(document["mean"], expected.astype(np.float32).astype(np.float64).mean((0, 1, 2)),
                 rtol=1e-9, atol=1e-9)
    assert not list(tmp_path.glob("*.bn-tmp"))


def test_stdout_is_default_output_when_piped(acts, tmp_path):
    path, values = acts
    result = run_bn("normalize", path, "--dtype", "float64")
    assert result.returncode == 0
    (tmp_path / "piped.npy").write_bytes(result.stdout)
    normed = np.load(tmp_path / "piped.npy")
    assert normed.shape == values.shape and normed.dtype == np.float64
    assert b"bn: normalized" in result.stderr


def test_stream_ending_early_is_a_clear_error(acts):
    path, _ = acts
    data = path.read_bytes()
    for command in (["stats", "-"], ["normalize", "-", "-o", "-"]):
        result = run_bn(*command, input=data[:5000])
        assert result.returncode == 1
        assert result.stderr.decode().startswith("bn: error: <stdin>: ")
        assert b"Traceback" not in result.stderr


def test_stream_with_trailing_data_is_an_error(acts):
    path, _ = acts
    result = run_bn("stats", "-", input=path.read_bytes() + b"extra")
    assert result.returncode == 1
    assert b"<stdin>: more data follows" in result.stderr


def test_closed_pipe_ends_quietly(tmp_path):
    big = tmp_path / "big.npy"
    np.save(big, np.zeros((512, 256, 64), np.float32))  # 32 MiB
    result = subprocess.run(
        f"{sys.executable} -m bncli normalize {big} -q | head -c 100 > /dev/null; "
        "echo ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True,
        timeout=120)
    assert result.stdout.strip() == b"141"
    assert result.stderr == b""


def _start_stalled_normalize(tmp_path, target, fraction=0.5, options=(), stdout=None):
    """A normalize from a pipe that stops sending at `fraction` of its bytes, the pipe held
    open: the run is mid-write, waiting, however fast the machine."""
    values = np.ones((2048, 64, 16), np.float32)
    np.save(tmp_path / "src.npy", values)
    stats = subprocess.run([sys.executable, "-m", "bncli", "stats", str(tmp_path / "src.npy"),
                            "-o", str(tmp_path / "s.json"), "-q"], capture_output=True)
    assert stats.returncode == 0, stats.stderr
    output = ["-o", str(target), "--force"] if target is not None else []
    process = subprocess.Popen(
        [sys.executable, "-m", "bncli", "normalize", "-", "--stats", str(tmp_path / "s.json"),
         *output, "--chunk-bytes", "64K", "-q", *options],
        stdin=subprocess.PIPE, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE)
    data = (tmp_path / "src.npy").read_bytes()
    process.stdin.write(data[:int(len(data) * fraction)])
    process.stdin.flush()
    return process


def _wait_for_temp(directory, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(directory.glob(".*.bn-tmp")) and process.poll() is None:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_leaves_no_temp_and_old_file(tmp_path, signum, code):
    target = tmp_path / "out.npy"
    target.write_bytes(b"old contents")
    process = _start_stalled_normalize(tmp_path, target)
    assert _wait_for_temp(tmp_path, process), "no temporary output appeared"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    assert b"Traceback" not in stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.npy", "s.json", "src.npy"]
    assert target.read_bytes() == b"old contents"


def _tree(path):
    """Every file under `path` (or `path` itself) with its bytes."""
    if path.is_dir():
        return {item.relative_to(path): item.read_bytes() for item in sorted(path.rglob("*"))
                if item.is_file()}
    return path.read_bytes() if path.exists() else None


@pytest.mark.parametrize("kind", ["npy", "hdf5 new", "hdf5 existing", "zarr", "stdout"])
@pytest.mark.parametrize("fraction, signum, code", [(0.25, signal.SIGTERM, 143),
                                                    (0.75, signal.SIGINT, 130),
                                                    (0.999, signal.SIGTERM, 143)])
def test_a_signal_in_the_output_phase_leaves_the_target_as_it_was(tmp_path, kind, fraction,
                                                                  signum, code):
    """At any moment of the writing, a signal ends the run with 130/143, the target byte
    for byte as before and no temporary file; a run that completes exits 0 with its output
    in place. (HDF5 outputs ignored Ctrl-C and SIGTERM: the signal's exception was raised
    inside a finalizer of the HDF5 library's objects and lost.)"""
    import h5py

    options: tuple = ()
    if kind == "npy":
        target = tmp_path / "out.npy"
        target.write_bytes(b"old contents")
    elif kind == "hdf5 new":
        target = tmp_path / "out.h5"
        options = ("--compression", "gzip")
    elif kind == "hdf5 existing":
        target = tmp_path / "out.h5"
        with h5py.File(target, "w") as h5:
            h5["keep"] = np.arange(10.0)
        options = ("--compression", "gzip")
    elif kind == "zarr":
        pytest.importorskip("zarr")
        target = tmp_path / "out.zarr"
    else:
        target = None
    path = None if target is None else target
    before = None if path is None else _tree(path)
    with open(tmp_path / "stdout.npy", "wb") as stdout:
        process = _start_stalled_normalize(
            tmp_path, None if target is None else (f"{target}:/n" if kind == "hdf5 existing"
                                                   else target), fraction, options,
            stdout=stdout if target is None else None)
    if target is not None:
        assert _wait_for_temp(tmp_path, process), "no temporary output appeared"
    time.sleep(0.2)  # the run waits for the rest of its input
    process.send_signal(signum)
    stderr = process.stderr.read()  # to its end: the run has ended, its input still open
    process.wait(timeout=60)
    process.stdin.close()
    if target is None:
        assert (tmp_path / "stdout.npy").stat().st_size > 0  # it was writing to stdout
    else:
        process.stdout.close()
    assert process.returncode == code, stderr
    assert b"Traceback" not in stderr
    assert not list(tmp_path.glob(".*bn-tmp*")) and not list(tmp_path.glob("*.old.*"))
    if path is not None:
        assert _tree(path) == before


def test_a_run_that_completes_under_signals_puts_its_output_in_place(tmp_path):
    """The other side: the data all sent, the output put in place and exit 0."""
    import h5py

    target = tmp_path / "out.h5"
    process = _start_stalled_normalize(tmp_path, target, 1.0, ("--compression", "gzip"))
    process.stdin.close()
    process.wait(timeout=60)
    assert process.returncode == 0
    with h5py.File(target) as h5:
        shapes = [h5[name].shape for name in h5]
    assert shapes == [(2048, 64, 16)]
    assert not list(tmp_path.glob(".*bn-tmp*"))


def test_sigkill_leaves_target_absent(tmp_path):
    target = tmp_path / "out.npy"
    process = _start_stalled_normalize(tmp_path, target)
    assert _wait_for_temp(tmp_path, process)
    process.kill()
    process.wait(timeout=60)
    process.stdin.close()
    assert not target.exists()


def test_binary_output_to_a_terminal_is_refused(acts, tmp_path):
    path, _ = acts
    pty = pytest.importorskip("pty")
    leader, follower = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "bncli", "normalize", str(path)],
                                stdout=follower, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 2
    assert b"refusing to write binary .npy to a terminal" in result.stderr


def test_file_size_limit_is_a_clear_error(acts, tmp_path):
    path, _ = acts
    target = tmp_path / "out.npy"
    result = subprocess.run(
        f"ulimit -f 16; exec {sys.executable} -m bncli normalize {path} -o {target} -q",
        shell=True, executable="/bin/bash", capture_output=True, timeout=120)
    assert result.returncode == 1
    message = f"bn: error: {target}: file size limit exceeded while writing\n"
    assert result.stderr.decode() == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.npy"]


def test_full_device_on_stdout_is_a_clear_error(acts):
    path, _ = acts
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "bncli", "normalize", str(path), "-q"],
                                stdout=full, stderr=subprocess.PIPE, timeout=120)
    assert result.returncode == 1
    assert result.stderr == b"bn: error: <stdout>: no space left on device while writing\n"
