"""The worked example of a new format (docs/ARCHITECTURE.md) runs through the real command:
a format is one module and one registry line."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
from conftest import assert_close, doc_example, reference_moments

from bncli.io import registry


@pytest.fixture
def bnraw(monkeypatch):
    """The example format as the module bncli.io.bnraw, registered as its one registry line
    would."""
    example = doc_example("format")
    module = types.ModuleType("bncli.io.bnraw")
    module.__dict__.update(example)
    monkeypatch.setitem(sys.modules, "bncli.io.bnraw", module)
    monkeypatch.setattr(registry, "FORMATS", registry.FORMATS + ("bnraw",))
    registry.formats.cache_clear()
    yield example
    registry.formats.cache_clear()


def write_bnraw(path, values, magic):
    path.write_bytes(magic + struct.pack("<I", values.ndim)
                     + struct.pack(f"<{values.ndim}Q", *values.shape)
                     + values.astype("<f4").tobytes())


@pytest.mark.parametrize("chunk_bytes, threads", [("4K", 1), ("4K", 2), ("64M", 2)])
def test_a_new_format_is_one_module_and_one_registry_line(tmp_path, invoke, bnraw, rng,
                                                            chunk_bytes, threads):
    values = (rng.standard_normal((60, 9, 5)) * 3 + 1e4).astype(np.float32)
    path = tmp_path / "acts.bnraw"
    write_bnraw(path, values, bnraw["MAGIC"])
    result = invoke("stats", path, "--axes", "0,2", "--format", "json",
                    "--chunk-bytes", chunk_bytes, "--threads", threads)
    found = json.loads(result.output)
    mean, variance = reference_moments(values, (0, 2))
    assert found["channel_shape"] == [9]
    assert_close(found["mean"], mean, rtol=1e-14)
    assert_close(found["variance"], variance, rtol=1e-11)
    assert found["min"] == values.min(axis=(0, 2)).astype(np.float64).tolist()
    info = json.loads(invoke("info", path, "--format", "json").output)
    assert info[0]["format"] == "bnraw" and info[0]["shape"] == [60, 9, 5]


def test_the_new_format_refuses_what_it_must(tmp_path, invoke, bnraw):
    path = tmp_path / "short.bnraw"
    write_bnraw(path, np.zeros((4, 3), np.float32), bnraw["MAGIC"])
    path.write_bytes(path.read_bytes()[:-4])
    result = invoke("stats", path)
    assert result.exit_code == 1
    assert f"bn: error: {path}: holds other than the declared data" in result.stderr


def test_a_command_imports_only_the_libraries_of_the_formats_it_reads(tmp_path, rng):
    """h5py, zarr, dask and matplotlib are imported by the commands that use them, not by
    every one: a format's library costs nothing to a command that reads none of its files."""
    np.save(tmp_path / "x.npy", rng.standard_normal((8, 3)))
    code = (
        "import sys\n"
        "from bncli.cli.main import main\n"
        "try:\n"
        f"    main(['stats', {str(tmp_path / 'x.npy')!r}, '--format', 'json'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "loaded = [name for name in ('h5py', 'zarr', 'dask', 'distributed', 'matplotlib',\n"
        "                            'hdf5plugin', 'numcodecs', 'scipy')\n"
        "          if type(sys.modules.get(name)).__name__ == 'module']\n"
        "sys.stderr.write('loaded: %s' % loaded)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("loaded: []"), done.stderr


def test_threads_that_first_open_hdf5_files_together(tmp_path):
    """h5py and hdf5plugin's filters are loaded when a file is first opened: worker threads
    that all open one at the same moment each find them loaded and registered."""
    hdf5plugin = pytest.importorskip("hdf5plugin")
    import h5py

    with h5py.File(tmp_path / "z.h5", "w") as h5file:
        h5file.create_dataset("x", data=np.arange(4096.0).reshape(64, 64), chunks=(16, 16),
                              **hdf5plugin.Zstd())
    code = (
        "import sys, threading\n"
        "from bncli.io.registry import open_source\n"
        "barrier, errors = threading.Barrier(4), []\n"
        "def read():\n"
        "    barrier.wait()\n"
        "    try:\n"
        "        with open_source(sys.argv[1]) as source:\n"
        "            assert source.read((slice(0, 64), slice(0, 64))).sum() == 4095 * 2048\n"
        "    except BaseException as error:\n"
        "        errors.append(repr(error))\n"
        "threads = [threading.Thread(target=read) for _ in range(4)]\n"
        "[thread.start() for thread in threads]\n"
        "[thread.join() for thread in threads]\n"
        "sys.stderr.write('errors: %s' % errors)\n")
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", code, f"{tmp_path / 'z.h5'}:/x"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stderr.endswith("errors: []"), done.stderr
