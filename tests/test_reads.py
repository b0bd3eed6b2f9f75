"""Each block's bytes are read once: the bytes a real ``bn`` process reads (its ``rchar``,
every thread included) against the file's size, with the start-up's own reads (the
modules) measured on a tiny file and taken off."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bncli.core import kernel

REPORT = """
import atexit, sys
def report():
    with open("/proc/self/io") as stats:
        fields = dict(line.split(": ") for line in stats.read().splitlines())
    sys.stderr.write("rchar %s\\n" % fields["rchar"].strip())
atexit.register(report)
from bncli.__main__ import main
main()
"""
CHUNK = 16 * 2**20  # the default: blocks of 16 pieces of 1 MiB

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs /proc")


def bytes_read(*args, env=None) -> int:
    done = subprocess.run([sys.executable, "-c", REPORT, *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.split("rchar ")[-1])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reads")
    rng = np.random.default_rng(3)
    values = rng.standard_normal((32768, 2, 2, 64)).astype(np.float32)  # 32 MiB, 2 blocks
    np.save(folder / "x.npy", values)
    flat = values.reshape(-1)
    flat[CHUNK // 8::CHUNK // 4] = np.nan  # one NaN in every block
    flat[CHUNK // 8 + 1] = np.inf  # beside one of them
    np.save(folder / "nan.npy", values)
    np.save(folder / "tiny.npy", values[:2])
    return folder


@pytest.mark.parametrize("case, extra", [
    ("x.npy", ["--quantiles"]),
    ("x.npy", ["--channel-axis", "3", "--quantiles", "--moments", "4"]),
    ("nan.npy", []),
])
def test_every_block_is_read_once(files, case, extra):
    """--quantiles computes the moments and the histogram from one read of each block, and
    a block holding NaN or Inf reads again only the pieces that hold them."""
    if kernel.COMPILED is None and case == "nan.npy":
        pytest.skip("the NumPy kernel reduces a block with NaN again from a second read")
    options = ["--chunk-bytes", CHUNK, "--format", "json", *extra]
    start_up = bytes_read("stats", files / "tiny.npy", *options)
    size = os.path.getsize(files / case)
    ratio = (bytes_read("stats", files / case, *options) - start_up) / size
    assert ratio < 1.1, f"read {ratio:.3f} times the file"
