"""Benchmarks of bn against the read speed and the alternatives, measured in one invocation.

    python bench/run.py                 # the 1 GiB file of the figures in the README
    python bench/run.py --gib 0.25      # a quicker run on a smaller file
    python bench/run.py --only stats    # one group: stats, kernel, moments, quantiles,
                                        # normalize, layouts, wide, hdf5, formats, linear,
                                        # startup, dask, cluster
    python bench/run.py --against ../old/.venv/bin/python   # each bn command beside
                                        # another checkout's, interleaved, with the ratio

The test files are made under bench/data/ (not committed) on first use: float32 NHWC
activations of shape (N, 32, 32, 64), and an HDF5 copy chunked (64, 32, 32, 64) with gzip.
Each command runs --repeat times after one warm-up run (so files are read from the page
cache), the commands compared in a group taking turns so that a slow spell of a shared
machine falls on all of them alike; the median wall time, the throughput over the input
size and the peak resident memory (from wait4, so pages of a memory-mapped input count) are
printed, with ratios against the baselines measured in the same run.
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


def make_wide(path: Path, rows: int, columns: int) -> None:
    if path.exists() and path.stat().st_size >= rows * columns * 4:
        return
    subprocess.run([PYTHON, __file__, "--make-wide", str(path), str(rows), str(columns)],
                   check=True)


def _make_wide(path: Path, rows: int, columns: int) -> None:
    DATA.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, columns))
    for start in range(0, rows, 16):
        out[start:start + 16] = rng.standard_normal((min(16, rows - start), columns),
                                                    dtype=np.float32) + 10
    out.flush()
    del out


def make_layer(path: Path, rows: int, columns: int) -> None:
    if path.exists() and path.stat().st_size >= rows * columns * 4:
        return
    subprocess.run([PYTHON, __file__, "--make-layer", str(path), str(rows), str(columns)],
                   check=True)


def _make_layer(path: Path, rows: int, columns: int) -> None:
    """Activation-like rows of a wide layer: ReLU outputs, channel scales spread
    log-normally, a tenth of the channels pre-activations (both signs)."""
    DATA.mkdir(exist_ok=True)
    rng = np.random.default_rng(2)
    scale = rng.lognormal(0, 1, columns).astype(np.float32)
    bias = rng.normal(0, 1, columns).astype(np.float32)
    linear = np.arange(columns) % 10 == 0
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, columns))
    for start in range(0, rows, 1024):
        block = (rng.standard_normal((min(1024, rows - start), columns), dtype=np.float32)
                 + bias) * scale
        out[start:start + len(block)] = np.where(linear, block, np.maximum(block, 0))
    out.flush()
    del out


def make_h5(path: Path, source: Path) -> None:
    if path.exists():
        return
    subprocess.run([PYTHON, __file__, "--make-h5", str(path), str(source)], check=True)


def _make_h5(path: Path, source: Path) -> None:
    import h5py

    if path.stem.endswith("_zstd"):
        import hdf5plugin

        compression = dict(hdf5plugin.Zstd(clevel=3))
    else:
        compression = {"compression": "gzip", "compression_opts": 1}
    x = np.load(source, mmap_mode="r")
    with h5py.File(path, "w") as h5file:
        dataset = h5file.create_dataset("acts", shape=x.shape, dtype=x.dtype,
                                        chunks=(64, 32, 32, 64), **compression)
        for start in range(0, x.shape[0], 64):
            dataset[start:start + 64] = x[start:start + 64]


def make_formats(safetensors_path: Path, zarr_path: Path, source: Path) -> None:
    if safetensors_path.exists() and zarr_path.exists():
        return
    subprocess.run([PYTHON, __file__, "--make-formats", str(safetensors_path),
                    str(zarr_path), str(source)], check=True)


def _make_formats(safetensors_path: Path, zarr_path: Path, source: Path) -> None:
    """The main file's array as one safetensors tensor and as a zarr array (format 3,
    zarr's default zstd, 4 MiB chunks)."""
    import json
    import struct

    import zarr

    x = np.load(source, mmap_mode="r")
    header = json.dumps({"acts": {"dtype": "F32", "shape": list(x.shape),
                                  "data_offsets": [0, x.nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(safetensors_path, "wb") as out:
        out.write(struct.pack("<Q", len(header)) + header)
        for start in range(0, x.shape[0], 256):
            out.write(np.ascontiguousarray(x[start:start + 256]).tobytes())
    array = zarr.create_array(str(zarr_path), shape=x.shape, dtype=x.dtype,
                              chunks=(16,) + x.shape[1:], overwrite=True)
    for start in range(0, x.shape[0], 256):
        array[start:start + 256] = x[start:start + 256]


ZARR_READ = """
import sys, zarr
x = zarr.open(sys.argv[1], mode="r")[...]
print(float(x[0, 0, 0, 0]))
"""


def run_once(command, shell=False) -> tuple:
    """Run a command; return its wall time and peak RSS in MB as GNU time reports it.

    GNU time, a small process, forks the command, so the peak is the command's own (a
    child forked from this Python process would start with this process's pages counted).
    """
    if shell:
        command = ["/bin/bash", "-c", command]
    started = time.perf_counter()
    # away from any checkout: `python -m` imports from the working directory first
    result = subprocess.run([TIME, "-f", "%M"] + list(command), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr}")
    return elapsed, int(result.stderr.strip().splitlines()[-1]) / 1024


def case(label, command, nbytes, shell=False, before=None) -> dict:
    """A command to measure: `nbytes` is the input size for GB/s (0: none)."""
    return {"label": label, "command": command, "nbytes": nbytes, "shell": shell,
            "before": before}


def measure(cases: list, repeat: int) -> list:
    """Run every case once to warm up, then `repeat` rounds of every case in turn.

    The commands compared in one group run interleaved, so that a slow spell of a shared
    machine falls on all of them alike and their ratios stay meaningful. Returns one row
    per case: the median wall time, GB/s and the peak RSS.
    """
    if AGAINST:
        cases = [twin for item in cases for twin in (item, _against(item)) if twin]
    times = [[] for _ in cases]
    peaks = [[] for _ in cases]
    for round_ in range(repeat + 1):
        for index, item in enumerate(cases):
            if item["before"]:
                item["before"]()
            elapsed, peak = run_once(item["command"], item["shell"])
            if round_:  # round 0 warms up: page cache, imports
                times[index].append(elapsed)
                peaks[index].append(peak)
    rows: list = []
    for item, elapsed, peak in zip(cases, times, peaks):
        median = statistics.median(elapsed)
        nbytes = item["nbytes"]
        row = {"label": item["label"], "seconds": median,
               "gbps": nbytes / median / 1e9 if nbytes else None, "peak_mb": max(peak)}
        gbps = f"{row['gbps']:6.2f} GB/s" if nbytes else " " * 11
        versus = ""
        if item.get("twin") and rows:
            versus = f"  {median / rows[-1]['seconds']:5.2f}x the time of this checkout"
        print(f"  {item['label']:44s} {median:8.3f} s {gbps} {row['peak_mb']:8.0f} MB{versus}",
              flush=True)
        if not item.get("twin"):
            rows.append(row)
    return rows


# Another interpreter (another checkout's environment) whose bn runs beside this one's.
AGAINST: str | None = None


def _against(item: dict) -> dict | None:
    """The same bn command run by the AGAINST interpreter, or None for other commands."""
    command = item["command"]
    if item["shell"] or PYTHON not in command or "-m" not in command:
        return None
    return {**item, "label": "  the same, --against", "twin": True,
            "command": [AGAINST if part == PYTHON else part for part in command]}


def ratio(text, value, target=None):
    verdict = ""
    if target is not None:
        verdict = "  (target " + target[0] + ", " + ("met" if target[1](value) else "NOT met") + ")"
    print(f"    {text:58s} {value:7.2f}{verdict}")


def main() -> None:
    # Modules are compiled once and their bytecode kept, as an installed package's are; a
    # shell that forbids writing bytecode would have every run compile bncli again.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the main file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", default=None)
    parser.add_argument("--against", help="another interpreter (another checkout's venv) "
                        "whose bn runs each bn command too, interleaved, for its time ratio")
    args = parser.parse_args()
    global AGAINST
    AGAINST = args.against
    groups = set(args.only or ["stats", "kernel", "moments", "quantiles", "normalize",
                               "layouts", "wide", "hdf5", "formats", "linear", "startup",
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
          f"median of {args.repeat}, the commands of a group interleaved; "
          f"{os.cpu_count()} cores")
    cat = case("cat file > /dev/null", f"cat {main_file} > /dev/null", nbytes, shell=True)
    bn_stats = case("bn stats", BN + ["stats", str(main_file), "--format", "json"], nbytes)
    try:
        if "stats" in groups:
            print("stats (axes 0,1,2)")
            cat_row, numpy_row, bn_row, floor_row, start_row, one_row = measure([
                cat,
                case("numpy float64 mean+var script", [PYTHON, "-c", NUMPY_STATS,
                                                       str(main_file)], nbytes),
                bn_stats,
                case("python -c 'import numpy' (start-up floor)",
                     [PYTHON, "-c", "import numpy"], 0),
                case("bn's imports (python, numpy, bncli's modules)",
                     [PYTHON, "-c", "import bncli.cli.main, bncli.api, bncli.exec.engine"], 0),
                case("bn stats --threads 1", BN + ["stats", str(main_file), "--format", "json",
                                                   "--threads", "1"], nbytes),
            ], args.repeat)
            ratio("bn stats GB/s", bn_row["gbps"])
            ratio("bn stats GB/s once python and numpy have started",
                  nbytes / max(bn_row["seconds"] - floor_row["seconds"], 1e-9) / 1e9)
            ratio("numpy script time / bn stats time",
                  numpy_row["seconds"] / bn_row["seconds"], (">= 8", lambda v: v >= 8))
            ratio("bn stats speed / cat speed",
                  cat_row["seconds"] / bn_row["seconds"], (">= 0.45", lambda v: v >= 0.45))
            ratio("the same, bn's imports taken off",
                  cat_row["seconds"] / max(bn_row["seconds"] - start_row["seconds"], 1e-9))
            ratio("bn stats peak MB", bn_row["peak_mb"], ("< 300", lambda v: v < 300))
            ratio("threads 1 time / threads 2 time", one_row["seconds"] / bn_row["seconds"])
        if "moments" in groups:
            print("higher moments")
            two_row, four_row = measure([
                bn_stats,
                case("bn stats --moments 4", BN + ["stats", str(main_file), "--format", "json",
                                                   "--moments", "4"], nbytes),
            ], args.repeat)
            ratio("--moments 4 time / --moments 2 time", four_row["seconds"] / two_row["seconds"],
                  ("<= 1.1 to be the default", lambda v: v <= 1.1))
        if "kernel" in groups:
            print("kernels (the compiled one where built, and NumPy's)")
            numpy_kernel = ["env", "BN_KERNEL=numpy"] + BN
            rows = measure([
                bn_stats,
                case("BN_KERNEL=numpy bn stats", numpy_kernel + [
                    "stats", str(main_file), "--format", "json"], nbytes),
                case("bn stats --quantiles", BN + ["stats", str(main_file), "--format", "json",
                                                   "--quantiles"], nbytes),
                case("BN_KERNEL=numpy bn stats --quantiles", numpy_kernel + [
                    "stats", str(main_file), "--format", "json", "--quantiles"], nbytes),
            ], args.repeat)
            ratio("numpy kernel time / compiled kernel time, stats",
                  rows[1]["seconds"] / rows[0]["seconds"])
            ratio("numpy kernel time / compiled kernel time, --quantiles",
                  rows[3]["seconds"] / rows[2]["seconds"])
        if "quantiles" in groups:
            print("distributions (--quantiles: per-channel histograms)")
            two_row, quantile_row = measure([
                bn_stats,
                case("bn stats --quantiles", BN + ["stats", str(main_file), "--format", "json",
                                                   "--quantiles"], nbytes),
            ], args.repeat)
            ratio("--quantiles speed / bn stats speed",
                  two_row["seconds"] / quantile_row["seconds"], (">= 0.5", lambda v: v >= 0.5))
            ratio("bn stats --quantiles peak MB", quantile_row["peak_mb"],
                  ("< 300", lambda v: v < 300))
            layer_file = DATA / f"layer2048_{samples}.npy"
            make_layer(layer_file, nbytes // 4 // 2048, 2048)
            print(f"a layer of 2048 channels, {nbytes // 4 // 2048} rows (ReLU outputs, "
                  "log-normal scales), statistics written to .json")
            plain_json, quantile_json = scratch / "plain.json", scratch / "quantiles.json"

            def clear_json():
                for path in (plain_json, quantile_json):
                    if path.exists():
                        path.unlink()

            plain_row, layer_row = measure([
                case("bn stats -o plain.json", BN + ["stats", str(layer_file), "-o",
                                                     str(plain_json), "-q"], nbytes,
                     before=clear_json),
                case("bn stats --quantiles -o quantiles.json",
                     BN + ["stats", str(layer_file), "--quantiles", "-o", str(quantile_json),
                           "-q"], nbytes, before=clear_json),
            ], args.repeat)
            ratio("2048 channels: --quantiles speed / bn stats speed",
                  plain_row["seconds"] / layer_row["seconds"], (">= 0.5", lambda v: v >= 0.5))
            ratio("2048 channels: bn stats --quantiles peak MB", layer_row["peak_mb"],
                  ("< 300", lambda v: v < 300))
            subprocess.run(BN + ["stats", str(layer_file), "-o", str(plain_json), "-q",
                                 "--force"], check=True)
            subprocess.run(BN + ["stats", str(layer_file), "--quantiles", "-o",
                                 str(quantile_json), "-q", "--force"], check=True)
            ratio("2048 channels: statistics file kB without / with histograms",
                  plain_json.stat().st_size / 1e3)
            ratio("2048 channels: statistics file kB with histograms",
                  quantile_json.stat().st_size / 1e3)
        if "dask" in groups:
            try:
                import dask  # noqa: F401
            except ImportError:
                print("dask: not installed, skipped")
            else:
                print("dask.array (float64 mean and var, 64-sample chunks)")
                dask_row, bn_row = measure([
                    case("dask.array mean+var", [PYTHON, "-c", DASK_STATS, str(main_file)],
                         nbytes),
                    bn_stats,
                ], args.repeat)
                ratio("dask time / bn stats time", dask_row["seconds"] / bn_row["seconds"],
                      (">= 10", lambda v: v >= 10))
        if "normalize" in groups:
            print("normalize (axes 0,1,2, float32 out)")
            copy_row, numpy_row, bn_row = measure([
                case("cp file", ["cp", str(main_file), str(out)], nbytes, before=clear_out),
                case("numpy normalize script",
                     [PYTHON, "-c", NUMPY_NORMALIZE, str(main_file), str(out)], nbytes,
                     before=clear_out),
                case("bn normalize", BN + ["normalize", str(main_file), "-o", str(out), "-q"],
                     nbytes, before=clear_out),
            ], args.repeat)
            ratio("numpy script time / bn normalize time",
                  numpy_row["seconds"] / bn_row["seconds"], (">= 10", lambda v: v >= 10))
            ratio("bn normalize time / cp time", bn_row["seconds"] / copy_row["seconds"],
                  ("<= 2", lambda v: v <= 2))
            ratio("bn normalize peak MB", bn_row["peak_mb"], ("< 400", lambda v: v < 400))
            clear_out()
        if "layouts" in groups:
            print("other reductions of the same file")
            options = (("bn stats --axes 1,2,3 (per sample)", ["--axes", "1,2,3"]),
                       ("bn stats --channel-axis 1", ["--channel-axis", "1"]))
            last_row, *rows = measure([bn_stats] + [
                case(label, BN + ["stats", str(main_file), "--format", "json"] + extra, nbytes)
                for label, extra in options], args.repeat)
            for (_, extra), row in zip(options, rows):
                ratio(f"{extra[0]} time / channels-last time",
                      row["seconds"] / last_row["seconds"], ("<= 2", lambda v: v <= 2))
        if "wide" in groups:
            wide_file = DATA / f"wide_{samples}.npy"
            columns = nbytes // 4 // 256
            make_wide(wide_file, 256, columns)
            print(f"wide channel shapes: a 256x{columns} float32 file of the same size, "
                  "statistics written to .npz")
            npz = scratch / "wide.npz"

            def clear_npz():
                if npz.exists():
                    npz.unlink()

            last_row, wide_row, rows_row = measure([
                bn_stats,
                case(f"bn stats --axes 0 ({columns} channels)",
                     BN + ["stats", str(wide_file), "--axes", "0", "-o", str(npz), "-q"], nbytes,
                     before=clear_npz),
                case("bn stats --axes 1 (256 channels, per row)",
                     BN + ["stats", str(wide_file), "--axes", "1", "-o", str(npz), "-q"], nbytes,
                     before=clear_npz),
            ], args.repeat)
            ratio("many-channel time / channels-last time of the NHWC file",
                  wide_row["seconds"] / last_row["seconds"], ("<= 2", lambda v: v <= 2))
            ratio("per-row time / channels-last time of the NHWC file",
                  rows_row["seconds"] / last_row["seconds"], ("<= 2", lambda v: v <= 2))
            result_mb = columns * 11 * 8 / 2**20
            ratio("many-channel peak MB / result MB (11 float64 arrays)",
                  wide_row["peak_mb"] / result_mb)
            clear_npz()
        if "hdf5" in groups:
            h5_file = DATA / f"acts_{samples}_gzip.h5"
            make_h5(h5_file, main_file)
            print(f"HDF5, chunks 64x32x32x64, gzip ({h5_file.stat().st_size / 2**20:.0f} MiB "
                  "stored)")
            read_row, bn_row = measure([
                case("h5py read of every chunk", [PYTHON, "-c", H5PY_READ, str(h5_file)],
                     nbytes),
                case("bn stats on the HDF5 dataset",
                     BN + ["stats", f"{h5_file}:/acts", "--format", "json"], nbytes),
            ], args.repeat)
            ratio("h5py read time / bn stats time", read_row["seconds"] / bn_row["seconds"],
                  (">= 1.7", lambda v: v >= 1.7))
            try:
                import hdf5plugin  # noqa: F401
                import numcodecs  # noqa: F401
            except ImportError:
                print("HDF5 with zstd: hdf5plugin or numcodecs not installed, skipped")
            else:
                zstd_file = DATA / f"acts_{samples}_zstd.h5"
                make_h5(zstd_file, main_file)
                print(f"HDF5, chunks 64x32x32x64, zstd level 3 (hdf5plugin; "
                      f"{zstd_file.stat().st_size / 2**20:.0f} MiB stored)")
                read_row, bn_row = measure([
                    case("h5py read of every chunk (hdf5plugin)",
                         [PYTHON, "-c", "import hdf5plugin\n" + H5PY_READ, str(zstd_file)],
                         nbytes),
                    case("bn stats on the zstd HDF5 dataset",
                         BN + ["stats", f"{zstd_file}:/acts", "--format", "json"], nbytes),
                ], args.repeat)
                ratio("zstd: h5py read time / bn stats time",
                      read_row["seconds"] / bn_row["seconds"])
        if "formats" in groups:
            safetensors_file = DATA / f"acts_{samples}.safetensors"
            zarr_store = DATA / f"acts_{samples}.zarr"
            make_formats(safetensors_file, zarr_store, main_file)
            stored = sum(path.stat().st_size for path in zarr_store.rglob("*")
                         if path.is_file())
            print(f"other formats: the same array as a safetensors tensor, and as a zarr "
                  f"array (zstd, chunks 16x32x32x64, {stored / 2**20:.0f} MiB stored)")
            npy_row, st_row, zarr_read, zarr_bn = measure([
                bn_stats,
                case("bn stats on the safetensors tensor",
                     BN + ["stats", f"{safetensors_file}:acts", "--format", "json"], nbytes),
                case("zarr read of the whole array into NumPy",
                     [PYTHON, "-c", ZARR_READ, str(zarr_store)], nbytes),
                case("bn stats on the zarr array",
                     BN + ["stats", str(zarr_store), "--format", "json"], nbytes),
            ], args.repeat)
            ratio("safetensors time / .npy time", st_row["seconds"] / npy_row["seconds"],
                  ("<= 1.1", lambda v: v <= 1.1))
            ratio("bn stats on zarr time / zarr read time",
                  zarr_bn["seconds"] / zarr_read["seconds"], ("< 1", lambda v: v < 1))
        if "linear" in groups:
            big_file = DATA / f"acts_{samples * 4}.npy"
            make_npy(big_file, samples * 4)
            print(f"linearity: a 4x larger file ({big_file.stat().st_size / 2**30:.2f} GiB)")
            tiny_file = scratch / "tiny.npy"
            np.save(tiny_file, np.ones((2, 32, 32, 64), np.float32))
            tiny, small, large = measure([
                case("bn stats, a 0.5 MiB file (start-up)",
                     BN + ["stats", str(tiny_file), "--format", "json"], 0),
                case("bn stats, 1x file", bn_stats["command"], nbytes),
                case("bn stats, 4x file", BN + ["stats", str(big_file), "--format", "json"],
                     4 * nbytes),
            ], args.repeat)
            ratio("4x file time / (4 * 1x file time)", large["seconds"] / (4 * small["seconds"]),
                  ("within 0.85..1.15", lambda v: 0.85 <= v <= 1.15))
            ratio("the same, start-up taken off both",
                  (large["seconds"] - tiny["seconds"]) / (4 * (small["seconds"] - tiny["seconds"])),
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
                single, clustered, local_norm, cluster_norm = measure([
                    case("bn stats (one process, 2 threads)", bn_stats["command"], nbytes),
                    case("bn stats --scheduler local",
                         bn_stats["command"] + ["--scheduler", "local"], nbytes),
                    case("bn normalize (one process)",
                         BN + ["normalize", str(main_file), "-o", str(out), "-q"], nbytes,
                         before=clear_out),
                    case("bn normalize --scheduler local",
                         BN + ["normalize", str(main_file), "-o", str(out), "-q",
                               "--scheduler", "local"], nbytes, before=clear_out),
                ], args.repeat)
                ratio("cluster time / single-process time (stats)",
                      clustered["seconds"] / single["seconds"])
                ratio("cluster time / single-process time (normalize)",
                      cluster_norm["seconds"] / local_norm["seconds"])
                clear_out()
        if "startup" in groups:
            print("start-up")
            (helped,) = measure([case("bn --help", BN + ["--help"], 0)], max(args.repeat, 5))
            ratio("bn --help seconds", helped["seconds"], ("< 0.3", lambda v: v < 0.3))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-npy"]:
        _make_npy(Path(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1:2] == ["--make-wide"]:
        _make_wide(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["--make-layer"]:
        _make_layer(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["--make-h5"]:
        _make_h5(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:2] == ["--make-formats"]:
        _make_formats(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
