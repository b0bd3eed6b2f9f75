"""bn on a real dask.distributed cluster: a scheduler and workers as processes on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import assert_close, run_bn, run_on_terminal, stats_json

pytest.importorskip("distributed", reason="the bncli[dask] extra (dask.distributed) is "
                                          "not installed")
from distributed import Client  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_worker(address, directory, nthreads=1, name=None):
    return subprocess.Popen(
        [sys.executable, "-m", "dask", "worker", address, "--nthreads", str(nthreads),
         "--no-nanny", "--no-dashboard", "--local-directory", str(directory), "--name",
         name or f"w{time.monotonic_ns()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until_busy(address, name, timeout=120):
    """Wait until the worker called `name` is computing a task; False if the time runs out."""
    with Client(address, timeout=30) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = {info["name"]: worker for worker, info in
                       client.scheduler_info()["workers"].items()}
            if name in workers and client.processing(workers=[workers[name]])[workers[name]]:
                return True
            time.sleep(0.02)
    return False


def wait_for_workers(address, count, timeout=60):
    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(count, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers, each its own process."""
    directory = tmp_path_factory.mktemp("dask")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = [start_worker(address, directory) for _ in range(2)]
    try:
        wait_for_workers(address, 2)
        yield address, directory
    finally:
        for process in workers + [scheduler]:
            process.terminate()
        for process in workers + [scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(11)
    values = (rng.standard_normal((96, 8, 8, 12)) * np.arange(1, 13) + 1e3).astype(np.float32)
    np.save(tmp_path / "acts.npy", values)
    return tmp_path / "acts.npy", values


def local_and_cluster(address, *args):
    local = run_bn("stats", *args, "--format", "json")
    remote = run_bn("stats", *args, "--format", "json", "--scheduler", address)
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    return stats_json(local.stdout), stats_json(remote.stdout)


def assert_same_statistics(local, remote):
    # the same blocks merged in the same tree: equal to the last bit, not only within 1e-12
    for key in ("count", "nan_count", "inf_count", "min", "max", "mean", "variance", "m2",
                "std"):
        assert local[key] == remote[key], key


@pytest.mark.parametrize("options", [[], ["--axes", "1,2,3"], ["--channel-axis", "1"]])
def test_stats_on_the_cluster_equal_the_local_engine_bit_for_bit(cluster, data, options):
    address, _ = cluster
    path, _ = data
    local, remote = local_and_cluster(address, path, "--chunk-bytes", "20K", *options)
    assert_same_statistics(local, remote)


def test_many_shards_and_layouts_spread_over_workers(cluster, tmp_path, rng):
    address, _ = cluster
    paths = []
    for index in range(5):
        values = rng.standard_normal((7 + index, 6, 5)).astype(np.float64) * (index + 1)
        if index % 2:
            values = np.asfortranarray(values.astype(">f4"))
        paths.append(tmp_path / f"shard_{index}.npy")
        np.save(paths[-1], values)
    with h5py.File(tmp_path / "more.h5", "w") as h5file:
        h5file.create_dataset("x", data=rng.standard_normal((9, 6, 5)), chunks=(2, 6, 5),
                              compression="gzip")
    local, remote = local_and_cluster(address, *paths, f"{tmp_path / 'more.h5'}:/x",
                                      "--chunk-bytes", "300", "--axes", "0,1")
    assert_same_statistics(local, remote)
    assert remote["count"] == [6 * sum(7 + index for index in range(5)) + 54] * 5


def test_environment_variable_names_the_scheduler(cluster, data):
    address, _ = cluster
    path, values = data
    result = run_bn("stats", path, "--format", "json", env={"BN_SCHEDULER": address})
    assert result.returncode == 0
    assert_close(stats_json(result.stdout)["mean"],
                 values.astype(np.float64).mean(axis=(0, 1, 2)), rtol=1e-12)


def test_normalize_on_the_cluster_is_bit_identical(cluster, data, tmp_path):
    address, _ = cluster
    path, _ = data
    local = run_bn("normalize", path, "-o", tmp_path / "local.npy", "-q", "--chunk-bytes", "7K")
    remote = run_bn("normalize", path, "-o", tmp_path / "remote.npy", "-q", "--chunk-bytes",
                    "7K", "--scheduler", address, "--dtype", "float32")
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    assert (tmp_path / "local.npy").read_bytes() == (tmp_path / "remote.npy").read_bytes()
    assert not list(tmp_path.glob(".*.bn-tmp"))


def test_normalize_fortran_input_and_hdf5_output_on_the_cluster(cluster, tmp_path, rng):
    address, _ = cluster
    values = np.asfortranarray(rng.standard_normal((20, 6, 4)))
    np.save(tmp_path / "f.npy", values)
    for suffix in ("npy", "h5:/out"):
        local = run_bn("normalize", tmp_path / "f.npy", "-o", f"{tmp_path}/l.{suffix}", "-q",
                       "--chunk-bytes", "200")
        remote = run_bn("normalize", tmp_path / "f.npy", "-o", f"{tmp_path}/r.{suffix}", "-q",
                        "--chunk-bytes", "200", "--scheduler", address)
        assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    assert (tmp_path / "l.npy").read_bytes() == (tmp_path / "r.npy").read_bytes()
    with h5py.File(tmp_path / "l.h5") as left, h5py.File(tmp_path / "r.h5") as right:
        assert np.array_equal(left["out"][()], right["out"][()])


def test_a_worker_killed_mid_run_is_survived(cluster, tmp_path, rng):
    address, directory = cluster
    name = f"doomed{time.monotonic_ns()}"
    extra = start_worker(address, directory, name=name)
    wait_for_workers(address, 3)
    values = rng.standard_normal((4096, 256)).astype(np.float32) + 5
    np.save(tmp_path / "big.npy", values)
    local = run_bn("stats", tmp_path / "big.npy", "--format", "json", "--chunk-bytes", "8K")
    run = subprocess.Popen([sys.executable, "-m", "bncli", "stats", str(tmp_path / "big.npy"),
                            "--format", "json", "--chunk-bytes", "8K", "--scheduler", address],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # killed while it is computing one of this run's tasks, however fast the machine
    busy = wait_until_busy(address, name)
    extra.send_signal(signal.SIGKILL)
    extra.wait(timeout=30)
    stdout, stderr = run.communicate(timeout=180)
    assert busy, "the extra worker was never given a task"
    assert run.returncode == 0, stderr
    assert_same_statistics(stats_json(local.stdout), stats_json(stdout))


def test_workers_with_several_threads_share_no_open_file(cluster, tmp_path, rng):
    address, directory = cluster
    worker = start_worker(address, directory, nthreads=4)
    try:
        wait_for_workers(address, 3)
        paths = []
        for index in range(70):  # more files than a worker keeps open: some are closed
            paths.append(tmp_path / f"s{index:02d}.npy")
            np.save(paths[-1], rng.standard_normal((40, 30)).astype(np.float32) + index)
        local, remote = local_and_cluster(address, *paths, "--chunk-bytes", "600")
        assert_same_statistics(local, remote)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_higher_moments_and_tiles_are_bit_identical_on_the_cluster(cluster, tmp_path, rng):
    address, _ = cluster
    np.save(tmp_path / "wide.npy", rng.standard_normal((40, 6000)).astype(np.float32) + 3)
    local, remote = local_and_cluster(address, tmp_path / "wide.npy", "--moments", "4",
                                      "--chunk-bytes", "64K")
    assert_same_statistics(local, remote)
    assert local["skewness"] == remote["skewness"] and local["kurtosis"] == remote["kurtosis"]


def test_unreachable_scheduler_is_a_clear_error_within_the_timeout(data):
    path, _ = data
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_bn("stats", path, "--scheduler", address,
                    env={"BN_SCHEDULER_TIMEOUT": "2"})
    assert result.returncode == 1
    assert result.stderr.decode().startswith(
        f"bn: error: {address}: cannot reach the dask scheduler within 2 s")
    assert time.monotonic() - started < 30


def test_scheduler_local_starts_a_cluster_on_this_machine(data):
    path, values = data
    result = run_bn("stats", path, "--format", "json", "--scheduler", "local")
    assert result.returncode == 0, result.stderr
    assert_close(stats_json(result.stdout)["mean"],
                 values.astype(np.float64).mean(axis=(0, 1, 2)), rtol=1e-12)


def test_without_the_extra_scheduler_says_how_to_install_it(data, tmp_path):
    path, _ = data
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    # a module that fails to import, first on the path, stands for a missing package
    (blocker / "distributed.py").write_text("raise ImportError('not installed')\n")
    result = run_bn("stats", path, "--scheduler", "local",
                    env={"PYTHONPATH": str(blocker)})
    assert result.returncode == 2
    assert result.stderr == b"bn: error: running on a cluster needs the dask extra: " \
                            b"pip install 'bncli[dask]'\n"


def test_progress_on_the_terminal_while_the_cluster_works(cluster, tmp_path):
    address, _ = cluster
    np.save(tmp_path / "big.npy", np.ones((2048, 1024), np.float32))
    code, terminal, piped = run_on_terminal(
        ["stats", tmp_path / "big.npy", "--format", "json", "--chunk-bytes", "64K",
         "--scheduler", address])
    assert code == 0
    assert "━" in terminal.decode(errors="replace")
    assert stats_json(piped)["count"][0] == 2048


def test_cluster_keeps_the_variance_exact_at_offset_1e8(cluster, tmp_path):
    from test_exactness import exact_moments, relative_errors, ulp_errors

    address, _ = cluster
    values = 1e8 + np.random.default_rng(21).standard_normal((80, 6, 3))
    np.save(tmp_path / "far.npy", values)
    result = run_bn("stats", tmp_path / "far.npy", "--chunk-bytes", "2K", "--format", "json",
                    "--scheduler", address)
    assert result.returncode == 0, result.stderr
    document = stats_json(result.stdout)
    means, variances = exact_moments(values, (0, 1))
    assert max(relative_errors(document["variance"], variances)) <= 1e-13
    assert max(ulp_errors(document["mean"], means)) <= 2


def test_histograms_and_quantiles_are_bit_identical_on_the_cluster(cluster, tmp_path, rng):
    address, _ = cluster
    values = rng.standard_normal((40, 6, 7)).astype(np.float32)
    values[:, :, 3] = np.maximum(values[:, :, 3], 0)
    np.save(tmp_path / "x.npy", values)
    local, remote = local_and_cluster(address, tmp_path / "x.npy", "--quantiles",
                                      "--chunk-bytes", "900")
    assert_same_statistics(local, remote)
    for key in ("quantiles", "zero_count", "min_count", "max_count", "histogram_special",
                "histogram_pos_start", "histogram_pos_counts", "histogram_neg_counts"):
        assert local[key] == remote[key], key


def test_safetensors_npz_and_zarr_inputs_are_read_by_the_workers(cluster, tmp_path, rng):
    address, _ = cluster
    values = (rng.standard_normal((256, 4, 4, 6)) * 3 + 10).astype(np.float32)
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    zarr = pytest.importorskip("zarr")
    safetensors_numpy.save_file({"acts": values, "other": values[:2]},
                                str(tmp_path / "m.safetensors"))
    np.savez(tmp_path / "a.npz", acts=values)
    zarr.create_array(str(tmp_path / "a.zarr"), shape=values.shape, chunks=(32, 4, 4, 6),
                      dtype=values.dtype)[...] = values
    for spec in (f"{tmp_path}/m.safetensors:acts", f"{tmp_path}/a.npz:acts",
                 tmp_path / "a.zarr"):
        local, remote = local_and_cluster(address, spec, "--chunk-bytes", "24K")
        assert_same_statistics(local, remote)
        assert remote["inputs"][0]["shape"] == [256, 4, 4, 6]


def test_normalize_into_a_zarr_store_on_the_cluster(cluster, tmp_path, rng):
    address, _ = cluster
    zarr = pytest.importorskip("zarr")
    values = (rng.standard_normal((128, 4, 4, 6)) * 3 + 10).astype(np.float32)
    np.save(tmp_path / "x.npy", values)
    fortran = np.asfortranarray(values)
    np.save(tmp_path / "f.npy", fortran)
    assert run_bn("normalize", tmp_path / "x.npy", "-o", tmp_path / "ref.npy",
                  "-q").returncode == 0
    expected = np.load(tmp_path / "ref.npy")
    for name, extra in (("x.npy", []), ("f.npy", ["--axes", "0,1,2"]), ("x.npy", ["--chunks",
                                                                                  "5,4,4,6"])):
        result = run_bn("normalize", tmp_path / name, "-o", tmp_path / "out.zarr", "-q",
                        "--force", "--chunk-bytes", "12K", "--scheduler", address, *extra)
        assert result.returncode == 0, result.stderr
        np.testing.assert_array_equal(zarr.open(str(tmp_path / "out.zarr"), mode="r")[...],
                                      expected)


def test_calibration_on_the_cluster_equals_the_local_one(cluster, tmp_path, rng):
    address, _ = cluster
    values = np.maximum(rng.standard_normal((512, 4, 4, 6)) * np.arange(1, 7), 0)
    np.save(tmp_path / "acts.npy", values.astype(np.float32))
    results = []
    for extra in ([], ["--scheduler", address]):
        result = run_bn("calibrate", tmp_path / "acts.npy", "--method", "entropy",
                        "--per-channel", "--to", "json", "--chunk-bytes", "16K", *extra)
        assert result.returncode == 0, result.stderr
        results.append(json.loads(result.stdout))
    assert results[0] == results[1]
