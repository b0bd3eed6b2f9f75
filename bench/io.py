"""Bytes read per byte of input: how many times each command reads its file.

    python bench/io.py                        # a 256 MiB .npy file
    python bench/io.py --mib 64 --against /path/to/other/venv/bin/python

Each command runs ``bn`` in a process that reports its own ``rchar`` (``/proc/self/io``: the
bytes its read and pread calls returned, every thread included) as it exits; the ratio to
the file's size is what the command read per byte of input. Files are made under
bench/data/ on first use: float32 NHWC activations, and the same with one NaN in every
block of the default --chunk-bytes (16 MiB). With ``--against``, the same commands run by
another interpreter (another checkout's environment) print beside them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RUN = """
import atexit, sys
def report():
    with open("/proc/self/io") as stats:
        fields = dict(line.split(": ") for line in stats.read().splitlines())
    sys.stderr.write("rchar %s\\n" % fields["rchar"].strip())
atexit.register(report)
sys.argv[0] = "bn"
from bncli.__main__ import main
main()
"""
BLOCK = 16 * 2**20  # the default --chunk-bytes


def make(path: Path, mib: int, nan: bool) -> None:
    if path.exists():
        return
    rows = mib * 2**20 // (32 * 32 * 64 * 4)
    values = np.lib.format.open_memmap(path, "w+", np.float32, (rows, 32, 32, 64))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 16):
        values[start:start + 16] = rng.standard_normal((min(16, rows - start), 32, 32, 64))
    if nan:
        flat = values.reshape(-1)
        flat[BLOCK // 8::BLOCK // 4] = np.nan  # one NaN in every block
    values.flush()
    del values


def rchar(python: str, args: list) -> int:
    # run away from any checkout: `python -c` imports from the working directory first
    done = subprocess.run([python, "-c", RUN, *args], capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    lines = [line for line in done.stderr.splitlines() if line.startswith("rchar ")]
    if done.returncode not in (0, 3) or not lines:
        raise SystemExit(f"{args}: exit {done.returncode}: {done.stderr[-2000:]}")
    return int(lines[-1].split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--against", help="another interpreter to run the same commands")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    plain, nans = DATA / f"io_{args.mib}m.npy", DATA / f"io_{args.mib}m_nan.npy"
    make(plain, args.mib, nan=False)
    make(nans, args.mib, nan=True)
    out = DATA / "io_out.npy"
    cases = [
        ("bn stats", ["stats", plain, "--format", "json"], plain),
        ("bn stats --quantiles", ["stats", plain, "--quantiles", "--format", "json"], plain),
        ("bn stats, NaN in every block", ["stats", nans, "--format", "json"], nans),
        ("bn stats --channel-axis 3 --quantiles", ["stats", plain, "--channel-axis", "3",
                                                   "--quantiles", "--format", "json"], plain),
        ("bn normalize", ["normalize", plain, "-o", out, "--force", "-q"], plain),
    ]
    pythons = [("this", sys.executable)] + ([("against", args.against)] if args.against else [])
    print(f"{'command':40} " + " ".join(f"{name + ' (x file)':>16}" for name, _ in pythons))
    for label, command, path in cases:
        size = path.stat().st_size
        ratios = [rchar(python, [str(part) for part in command]) / size
                  for _, python in pythons]
        print(f"{label:40} " + " ".join(f"{ratio:16.3f}" for ratio in ratios))
    out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
