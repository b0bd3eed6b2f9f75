"""What one NumPy pass costs on this machine, for the piece sizes bn works in.

    python bench/passes.py

bn reduces every piece of a block with the exact two-pass of the numerics contract:
min and max (in the input's dtype), a float64 copy, a sum, the centring subtraction and a
square-sum. Each is one NumPy call over the piece. This script times each call on a piece
of the default size (1 MiB of float32, 2 MiB as float64, in cache) and on one thread, and
prints the sum: the floor for a kernel written as NumPy calls, against which the throughput
of ``bn stats`` (see run.py) can be read. It also times the same passes with the piece read
from memory (cold), as a whole block is.
"""

from __future__ import annotations

import time

import numpy as np

ROWS, WIDTH = 256, 1024  # a piece: 256 rows of 16 channels-last rows of 64 side by side


def per_element(func, items: int, repeat: int = 200) -> float:
    """Best-of-three mean time of `func` in ns per element."""
    func()
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            func()
        best = min(best, (time.perf_counter() - started) / repeat)
    return best * 1e9 / items


def main() -> None:
    rng = np.random.default_rng(0)
    piece = rng.standard_normal((ROWS, WIDTH), dtype=np.float32) + 100
    values = np.empty((ROWS, WIDTH))
    np.copyto(values, piece)
    mean = values.mean(axis=0)
    out = np.empty((ROWS, WIDTH), np.float32)
    stats_passes = {
        "min (float32)": lambda: np.minimum.reduce(piece, axis=0),
        "max (float32)": lambda: np.maximum.reduce(piece, axis=0),
        "copy to float64": lambda: np.copyto(values, piece),
        "sum": lambda: np.add.reduce(values, axis=0),
        "centre (subtract the mean)": lambda: np.subtract(values, mean, out=values),
        "square-sum (einsum)": lambda: np.einsum("ij,ij->j", values, values),
    }
    normalize_passes = {
        "copy to float64": lambda: np.copyto(values, piece),
        "subtract the mean": lambda: np.subtract(values, mean, out=values),
        "multiply by the factor": lambda: np.multiply(values, mean, out=values),
        "round to float32": lambda: np.copyto(out, values, casting="same_kind"),
    }
    print(f"one thread, a {ROWS}x{WIDTH} piece in cache (ns per element)")
    with np.errstate(all="ignore"):
        for title, passes in (("stats", stats_passes), ("normalize", normalize_passes)):
            total = 0.0
            for label, func in passes.items():
                cost = per_element(func, piece.size)
                total += cost
                print(f"  {title:9s} {label:28s} {cost:6.2f}")
            print(f"  {title:9s} {'all passes':28s} {total:6.2f}  -> at most "
                  f"{4 / total:.2f} GB/s of float32 per core")
        cold = rng.standard_normal((64 * ROWS, WIDTH), dtype=np.float32)  # 64 MiB
        buffer = np.empty((ROWS, WIDTH))

        def from_memory():
            for start in range(0, cold.shape[0], ROWS):
                part = cold[start:start + ROWS]
                np.minimum.reduce(part, axis=0)
                np.maximum.reduce(part, axis=0)
                np.copyto(buffer, part)
                total = np.add.reduce(buffer, axis=0)
                np.subtract(buffer, total / ROWS, out=buffer)
                np.einsum("ij,ij->j", buffer, buffer)

        cost = per_element(from_memory, cold.size, repeat=3)
        print(f"  stats, pieces read from memory (a 64 MiB array)  {cost:6.2f}  -> at most "
              f"{4 / cost:.2f} GB/s per core")


if __name__ == "__main__":
    main()
