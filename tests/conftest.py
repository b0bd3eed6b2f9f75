"""Shared helpers: independent NumPy float64 references and ways to run ``bn``."""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

from bncli.cli import cli

ROOT = Path(__file__).resolve().parent.parent

# Hypothesis: `ci` (the default) runs each property's examples from a fixed seed, so that a
# run is repeatable and a failure reproduces; `nightly` draws new ones, ten times as many
# (HYPOTHESIS_PROFILE=nightly python -m pytest -m slow).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
EXAMPLES_FACTOR = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "nightly" else 1


def examples(count: int) -> int:
    """A property's number of examples: as written, ten times more in the nightly profile."""
    return count * EXAMPLES_FACTOR


# The second step of CI (``-m slow``): tests that start real processes (pipes, signals,
# terminals, the command as a user runs it), the dask cluster, the README tour, and the
# properties of 100 examples or more. ``python -m pytest`` runs both steps.
SLOW_MODULES = {"test_distributed.py", "test_readme.py", "test_pipes.py", "test_reads.py"}
SLOW_CALLS = ("run_bn(", "run_bn_peak(", "run_on_terminal(", "subprocess.", "bytes_read(")


def pytest_collection_modifyitems(items):
    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        big_property = any(f"max_examples=examples({count}" in source
                           for count in range(100, 1000))
        if (item.path.name in SLOW_MODULES or big_property
                or any(call in source for call in SLOW_CALLS)):
            item.add_marker(pytest.mark.slow)


def reference_moments(x, axes, ddof=0):
    """Two-pass float64 mean and variance, straight from NumPy."""
    values = np.asarray(x, dtype=np.float64)
    axes = tuple(axes)
    mean = values.mean(axis=axes)
    deviation = values - values.mean(axis=axes, keepdims=True)
    count = values.size // max(mean.size, 1)
    with np.errstate(all="ignore"):
        variance = (deviation * deviation).sum(axis=axes) / (count - ddof)
    return mean, variance


def assert_close(actual, expected, rtol=1e-12, atol=0.0):
    """Elementwise relative closeness with NaN equal to NaN."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol, equal_nan=True)


def run_bn(*args, input=None, env=None, cwd=None, timeout=120):
    """Run ``python -m bncli`` as a real subprocess; returns CompletedProcess (bytes)."""
    full_env = dict(os.environ)
    full_env.pop("BN_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bncli", *map(str, args)], input=input,
                          capture_output=True, env=full_env, cwd=cwd, timeout=timeout)


_PEAK_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def run_bn_peak(*args, env=None, cwd=None, timeout=120):
    """Run ``bn`` as :func:`run_bn` does; returns ``(CompletedProcess, peak_mib)``, the peak
    resident memory of the ``bn`` process in MiB (its stderr without the measurement)."""
    full_env = dict(os.environ)
    full_env.pop("BN_DEBUG", None)
    full_env.update(env or {})
    done = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, sys.executable, "-m", "bncli",
                           *map(str, args)], capture_output=True, env=full_env, cwd=cwd,
                          timeout=timeout)
    *lines, peak = done.stderr.rstrip(b"\n").split(b"\n")
    done.stderr = b"".join(line + b"\n" for line in lines)
    return done, int(peak) / 1024


def run_on_terminal(args, *, stdout_tty=False, columns=120, env=None):
    """Run bn with stderr (and optionally stdout) on a pseudo-terminal; return its bytes."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full_env = {key: value for key, value in os.environ.items()
                if key not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    full_env.update({"TERM": "xterm-256color"}, **(env or {}))
    process = subprocess.Popen([sys.executable, "-m", "bncli", *map(str, args)],
                               stdout=follower if stdout_tty else subprocess.PIPE,
                               stderr=follower, env=full_env)
    os.close(follower)
    seen, piped = b"", b""
    streams = [leader] + ([process.stdout.fileno()] if process.stdout else [])
    deadline = time.monotonic() + 120
    # both the terminal and the pipe are drained as the program writes: a pipe left unread
    # would fill and stall it
    while streams and time.monotonic() < deadline:
        ready, _, _ = select.select(streams, [], [], 0.1)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                streams.remove(fd)
            elif fd == leader:
                seen += chunk
            else:
                piped += chunk
        if not ready and process.poll() is not None and leader not in streams:
            break
    os.close(leader)
    if process.stdout:
        piped += process.stdout.read()
    process.wait(timeout=60)
    return process.returncode, seen, piped


@pytest.fixture
def invoke():
    """Run ``bn`` in-process through click's CliRunner; returns the Result."""
    runner = CliRunner()

    def call(*args, input=None):
        return runner.invoke(cli, [str(arg) for arg in args], input=input,
                             catch_exceptions=False)

    return call


def doc_example(name: str) -> dict:
    """Run the Python block after ``<!-- example: NAME -->`` in docs/ARCHITECTURE.md and
    return its namespace: the worked examples there are code that runs."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    marker = f"<!-- example: {name} -->\n```python\n"
    start = text.index(marker) + len(marker)
    code = text[start:text.index("\n```", start)]
    namespace = {"__name__": f"architecture_{name}"}
    exec(compile(code, f"docs/ARCHITECTURE.md ({name})", "exec"), namespace)  # noqa: S102
    return namespace


def stats_json(result_stdout) -> dict:
    """Parse ``bn stats --format json`` output strictly (no NaN literals)."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(result_stdout, parse_constant=refuse)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# The block kernels a test can run on: the compiled one (where built) and NumPy's.
KERNELS = ["compiled", "numpy"]


@contextlib.contextmanager
def using_kernel(name):
    """Run the block reductions on kernel `name` (``compiled`` is skipped where not built)."""
    from bncli.core import histogram, kernel, normalize
    from bncli.core import moments as reduction

    if name == "compiled" and kernel.COMPILED is None:
        pytest.skip("the compiled kernel is not built")
    modules = (reduction, histogram, normalize)
    saved = [module.type_code for module in modules]
    if name == "numpy":
        for module in modules:
            module.type_code = lambda dtype: None
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.type_code = original


def every_path(directory, values, split, h5_chunks):
    """Write `values` as each kind of input bn reads the same data from, and return
    ``{name: bn stats arguments}``: one block, small chunks, one thread, Fortran order, a
    chunked gzip HDF5 dataset, and two files split at row `split`."""
    import h5py

    np.save(directory / "c.npy", values)
    np.save(directory / "f.npy", np.asfortranarray(values))
    np.save(directory / "a.npy", values[:split])
    np.save(directory / "b.npy", values[split:])
    with h5py.File(directory / "h.h5", "w") as h5file:
        h5file.create_dataset("x", data=values, chunks=h5_chunks, compression="gzip")
    return {
        "one block": ["c.npy"],
        "small chunks": ["c.npy", "--chunk-bytes", "1K"],
        "one thread": ["c.npy", "--chunk-bytes", "3K", "--threads", "1"],
        "fortran": ["f.npy", "--chunk-bytes", "2K"],
        "hdf5 chunks": ["h.h5:/x", "--chunk-bytes", "2K"],
        "two files": ["a.npy", "b.npy", "--chunk-bytes", "5K"],
    }
