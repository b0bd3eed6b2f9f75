"""Benchmarks of bn against the read speed and the alternatives, measured in one invocation.

    python bench/run.py                 # the 1 GiB file of the figures in the README
    python bench/run.py --gib 0.25      # a quicker run on a smaller file
    python bench/run.py --only stats    # one group: stats, normalize, layouts, hdf5, linear,
                                        # startup, dask, cluster

The test files are made under bench/data/ (not committed) on first use: float32 NHWC
activations of shape (N, 32, 32, 64), and an HDF5 copy chunked (64, 32, 32, 64) with gzip.
Each command runs --repeat times after one warm-up run (so files are read from the page
cache); the median wall time, the throughput over the input size and the peak resident memory
(from wait4, so pages of a memory-mapped input count) are printed, with ratios against the
baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
PYTHON = sys.executable
BN = [PYTHON, "-m", "bncli"]
TIME = "/usr/bin/time"  # GNU time (Debian package "time") for the peak resident memory

NUMPY_STATS = """
import sys, numpy as np
x = np.load(sys.argv[1])
m = x.mean(axis=(0, 1, 2), dtype=np.float64)
v = x.var(axis=(0, 1, 2), dtype=np.float64)
print(m[:2], v[:2])
"""
NUMPY_NORMALIZE = """
import sys, numpy as np
x = np.load(sys.argv[1])
m = x.mean(axis=(0, 1, 2), dtype=np.float64)
v = x.var(axis=(0, 1, 2), dtype=np.float64)
np.save(sys.argv[2], ((x - m) / np.sqrt(v + 1e-3)).astype(np.float32))
"""
DASK_STATS = """
import sys, numpy as np, dask, dask.array as da
x = np.load(sys.argv[1], mmap_mode="r")
d = da.from_array(x, chunks=(64, 32, 32, 64))
m, v = dask.compute(d.mean(axis=(0, 1, 2), dtype=np.float64),
                    d.var(axis=(0, 1, 2), dtype=np.float64))
print(m[:2], v[:2])
"""
H5PY_READ = """
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    d = f["acts"]
    out = np.empty(d.chunks, d.dtype)
    total = 0
    for i in range(0, d.shape[0], d.chunks[0]):
        block = d[i:i + d.chunks[0]]
        total += block.size
print(total)
"""


def make_npy(path: Path, samples: int) -> None:
    if path.exists() and path.stat().st_size > samples * 32 * 32 * 64 * 4:
        return
    # in a child process, so that this one stays small
    subprocess.run([PYTHON, __file__, "--make-npy", str(path), str(samples)], check=True)


def _make_npy(path: Path, samples: int) -> None:
    DATA.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                    shape=(samples, 32, 32, 64))
    scale = np.geomspace(0.1, 10, 64).astype(np.float32)
    for start in range(0, samples, 256):
        stop = min(start + 256, samples)
        out[start:stop] = rng.standard_normal((stop - start, 32, 32, 64),
                                              dtype=np.float32) * scale + 100
    out.flush()
    del out


def make_h5(path: Path, source: Path) -> None:
    if path.exists():
        return
    subprocess.run([PYTHON, __file__, "--make-h5", str(path), str(source)], check=True)


def _make_h5(path: Path, source: Path) -> None:
    import h5py

    x = np.load(source, mmap_mode="r")
    with h5py.File(path, "w") as h5file:
        dataset = h5file.create_dataset("acts", shape=x.shape, dtype=x.dtype,
                                        chunks=(64, 32, 32, 64), compression="gzip",
                                        compression_opts=1)
        for start in range(0, x.shape[0], 64):
            dataset[start:start + 64] = x[start:start + 64]


def run_once(command, shell=False) -> tuple:
    """Run a command; return its wall time and peak RSS in MB as GNU time reports it.

    GNU time, a small process, forks the command, so the peak is the command's own (a
    child forked from this Python process would start with this process's pages counted).
    """
    if shell:
        command = ["/bin/bash", "-c", command]
    started = time.perf_counter()
    result = subprocess.run([TIME, "-f", "%M"] + list(command), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr}")
    return elapsed, int(result.stderr.strip().splitlines()[-1]) / 1024


def measure(label, command, nbytes, repeat, shell=False, before=None) -> dict:
    if before:
        before()
    run_once(command, shell)  # warm-up: page cache, imports
    times, peaks = [], []
    for _ in range(repeat):
        if before:
            before()
        elapsed, peak = run_once(command, shell)
        times.append(elapsed)
        peaks.append(peak)
    median = statistics.median(times)
    row = {"label": label, "seconds": median, "gbps": nbytes / median / 1e9 if nbytes else None,
           "peak_mb": max(peaks)}
    gbps = f"{row['gbps']:6.2f} GB/s" if nbytes else " " * 11
    print(f"  {label:44s} {median:8.3f} s {gbps} {row['peak_mb']:8.0f} MB", flush=True)
    return row


def ratio(text, value, target=None):
    verdict = ""
    if target is not None:
        verdict = "  (target " + target[0] + ", " + ("met" if target[1](value) else "NOT met") + ")"
    print(f"    {text:58s} {value:7.2f}{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the main file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", default=None)
    args = parser.parse_args()
    groups = set(args.only or ["stats", "normalize", "layouts", "hdf5", "linear", "startup",
                               "dask", "cluster"])
    samples = max(64, int(args.gib * 2**30 / (32 * 32 * 64 * 4)))
    main_file = DATA / f"acts_{samples}.npy"
    make_npy(main_file, samples)
    nbytes = main_file.stat().st_size
    scratch = Path(tempfile.mkdtemp(prefix="bn-bench-", dir=DATA))
    out = scratch / "out.npy"

    def clear_out():
        if out.exists():
            out.unlink()

    print(f"file {main_file.name}: {samples}x32x32x64 float32, {nbytes / 2**30:.2f} GiB; "
          f"median of {args.repeat}; {os.cpu_count()} cores")
    try:
        cat = measure("cat file > /dev/null", f"cat {main_file} > /dev/null", nbytes,
                      args.repeat, shell=True)
        if "stats" in groups:
            print("stats (axes 0,1,2)")
            numpy_stats = measure("numpy float64 mean+var script",
                                  [PYTHON, "-c", NUMPY_STATS, str(main_file)], nbytes, args.repeat)
            bn_stats = measure("bn stats", BN + ["stats", str(main_file), "--format", "json"],
                               nbytes, args.repeat)
            ratio("bn stats GB/s", bn_stats["gbps"], (">= 3", lambda v: v >= 3))
            floor = measure("python -c 'import numpy' (start-up floor)",
                            [PYTHON, "-c", "import numpy"], 0, args.repeat)
            ratio("bn stats GB/s once python and numpy have started",
                  nbytes / max(bn_stats["seconds"] - floor["seconds"], 1e-9) / 1e9)
            ratio("numpy script time / bn stats time",
                  numpy_stats["seconds"] / bn_stats["seconds"], (">= 6", lambda v: v >= 6))
            ratio("bn stats speed / cat speed",
                  cat["seconds"] / bn_stats["seconds"], (">= 0.4", lambda v: v >= 0.4))
            ratio("bn stats peak MB", bn_stats["peak_mb"], ("< 300", lambda v: v < 300))
            one = measure("bn stats --threads 1",
                          BN + ["stats", str(main_file), "--format", "json", "--threads", "1"],
                          nbytes, args.repeat)
            ratio("threads 1 time / threads 2 time", one["seconds"] / bn_stats["seconds"])
        if "dask" in groups:
            try:
                import dask  # noqa: F401
            except ImportError:
                print("dask: not installed, skipped")
            else:
                print("dask.array (float64 mean and var, 64-sample chunks)")
                dask_stats = measure("dask.array mean+var",
                                     [PYTHON, "-c", DASK_STATS, str(main_file)], nbytes,
                                     args.repeat)
                bn_stats = measure("bn stats", BN + ["stats", str(main_file), "--format", "json"],
                                   nbytes, args.repeat)
                ratio("dask time / bn stats time", dask_stats["seconds"] / bn_stats["seconds"],
                      (">= 6", lambda v: v >= 6))
        if "normalize" in groups:
            print("normalize (axes 0,1,2, float32 out)")
            copy = measure("cp file", ["cp", str(main_file), str(out)], nbytes, args.repeat,
                           before=clear_out)
            numpy_norm = measure("numpy normalize script",
                                 [PYTHON, "-c", NUMPY_NORMALIZE, str(main_file), str(out)],
                                 nbytes, args.repeat, before=clear_out)
            bn_norm = measure("bn normalize",
                              BN + ["normalize", str(main_file), "-o", str(out), "-q"],
                              nbytes, args.repeat, before=clear_out)
            ratio("numpy script time / bn normalize time",
                  numpy_norm["seconds"] / bn_norm["seconds"], (">= 4", lambda v: v >= 4))
            ratio("bn normalize time / cp time", bn_norm["seconds"] / copy["seconds"],
                  ("<= 2", lambda v: v <= 2))
            ratio("bn normalize peak MB", bn_norm["peak_mb"], ("< 400", lambda v: v < 400))
            clear_out()
        if "layouts" in groups:
            print("other reductions of the same file")
            last = measure("bn stats (channels last)",
                           BN + ["stats", str(main_file), "--format", "json"], nbytes,
                           args.repeat)
            for label, options in (("bn stats --axes 1,2,3 (per sample)", ["--axes", "1,2,3"]),
                                   ("bn stats --channel-axis 1", ["--channel-axis", "1"])):
                row = measure(label, BN + ["stats", str(main_file), "--format", "json"]
                              + options, nbytes, args.repeat)
                ratio(f"{options[0]} time / channels-last time",
                      row["seconds"] / last["seconds"], ("<= 2", lambda v: v <= 2))
        if "hdf5" in groups:
            h5_file = DATA / f"acts_{samples}_gzip.h5"
            make_h5(h5_file, main_file)
            print(f"HDF5, chunks 64x32x32x64, gzip ({h5_file.stat().st_size / 2**20:.0f} MiB "
                  "stored)")
            read = measure("h5py read of every chunk", [PYTHON, "-c", H5PY_READ, str(h5_file)],
                           nbytes, args.repeat)
            bn_h5 = measure("bn stats on the HDF5 dataset",
                            BN + ["stats", f"{h5_file}:/acts", "--format", "json"], nbytes,
                            args.repeat)
            ratio("bn stats time / h5py read time", bn_h5["seconds"] / read["seconds"],
                  ("<= 1.1", lambda v: v <= 1.1))
        if "linear" in groups:
            big_file = DATA / f"acts_{samples * 4}.npy"
            make_npy(big_file, samples * 4)
            print(f"linearity: a 4x larger file ({big_file.stat().st_size / 2**30:.2f} GiB)")
            small = measure("bn stats, 1x file", BN + ["stats", str(main_file), "--format",
                                                       "json"], nbytes, args.repeat)
            large = measure("bn stats, 4x file", BN + ["stats", str(big_file), "--format",
                                                       "json"], 4 * nbytes, args.repeat)
            ratio("4x file time / (4 * 1x file time)", large["seconds"] / (4 * small["seconds"]),
                  ("within 0.85..1.15", lambda v: 0.85 <= v <= 1.15))
            ratio("4x file peak MB / 1x file peak MB", large["peak_mb"] / small["peak_mb"])
        if "cluster" in groups:
            try:
                import distributed  # noqa: F401
            except ImportError:
                print("cluster: bncli[dask] not installed, skipped")
            else:
                print("dask.distributed: --scheduler local (a LocalCluster of 2 worker "
                      "processes, started by each run)")
                single = measure("bn stats (one process, 2 threads)",
                                 BN + ["stats", str(main_file), "--format", "json"], nbytes,
                                 args.repeat)
                clustered = measure("bn stats --scheduler local",
                                    BN + ["stats", str(main_file), "--format", "json",
                                          "--scheduler", "local"], nbytes, args.repeat)
                ratio("cluster time / single-process time",
                      clustered["seconds"] / single["seconds"])
                local_norm = measure("bn normalize (one process)",
                                     BN + ["normalize", str(main_file), "-o", str(out), "-q"],
                                     nbytes, args.repeat, before=clear_out)
                cluster_norm = measure("bn normalize --scheduler local",
                                       BN + ["normalize", str(main_file), "-o", str(out), "-q",
                                             "--scheduler", "local"], nbytes, args.repeat,
                                       before=clear_out)
                ratio("cluster time / single-process time",
                      cluster_norm["seconds"] / local_norm["seconds"])
                clear_out()
        if "startup" in groups:
            print("start-up")
            helped = measure("bn --help", BN + ["--help"], 0, max(args.repeat, 5))
            ratio("bn --help seconds", helped["seconds"], ("< 0.3", lambda v: v < 0.3))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-npy"]:
        _make_npy(Path(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--make-h5"]:
        _make_h5(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
