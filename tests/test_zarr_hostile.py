"""Hostile zarr stores and pathological zarr outputs, through the real command.

Every store here is made by hand (or by the zarr package, then changed by hand): chunks and
metadata that are symbolic links to a device, to a FIFO or to a file outside the store,
metadata files of gigabytes, zip stores whose members inflate past what they may hold, a
few hundred bytes declaring terabytes of chunks never stored, and outputs cut into millions
of chunks. Each run is checked for its exit status, its one line on stderr naming the file,
its peak memory (under a cap of :data:`MEMORY_CAP` of address space, so that a run that
regresses fails instead of taking the machine), its time, and the directory afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

pytestmark = pytest.mark.slow  # every test here runs the command as a process

TESTS = Path(__file__).resolve().parent
MEMORY_CAP = 4 * 2**30  # address space of a run: a read of /dev/zero stops here
PEAK_MIB = 300  # what a refused run may use at most (bn with zarr loaded takes about 60)

# Runs bn through conftest.run_bn in a fresh process, so that the peak resident memory of
# its one child is bn's own, under an address-space cap that bn inherits.
_MEASURED = r"""
import json, resource, subprocess, sys
cap, timeout, tests, *args = sys.argv[1:]
resource.setrlimit(resource.RLIMIT_AS, (int(cap), int(cap)))
sys.path.insert(0, tests)
from conftest import run_bn
try:
    done = run_bn(*args, timeout=float(timeout))
    report = {"returncode": done.returncode, "stdout": done.stdout.decode(errors="replace"),
              "stderr": done.stderr.decode(errors="replace")}
except subprocess.TimeoutExpired:
    report = {"returncode": None, "stdout": "", "stderr": "timed out"}
report["peak_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(report))
"""


def run_bn_measured(*args, timeout: float = 60) -> dict:
    """Run ``bn ARGS`` (by :func:`conftest.run_bn`) under :data:`MEMORY_CAP`; return its
    ``returncode`` (None if it ran past `timeout` seconds and was killed), ``stdout``,
    ``stderr`` and ``peak_mib``."""
    done = subprocess.run([sys.executable, "-c", _MEASURED, str(MEMORY_CAP), str(timeout),
                           str(TESTS), *map(str, args)], capture_output=True,
                          timeout=timeout + 60, cwd=TESTS.parent)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def refused(report: dict, status: int, *fragments: str, peak_mib: float | None = PEAK_MIB,
            ) -> str:
    """The one ``bn: error:`` line of a refused run, checked for `status` and `fragments`
    and for a peak memory under `peak_mib` (None: not checked)."""
    message = report["stderr"]
    assert report["returncode"] == status, report
    assert message.count("\n") == 1 and message.startswith("bn: error: "), message
    assert "Traceback" not in message and "unexpected" not in message.lower(), message
    for fragment in fragments:
        assert fragment in message, message
    assert peak_mib is None or report["peak_mib"] < peak_mib, report
    return message


def listing(directory: Path) -> list:
    """Every path under `directory` (symbolic links not followed), relative to it."""
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def values() -> np.ndarray:
    return np.arange(64 * 8, dtype=np.float32).reshape(64, 8)


def make_store(directory: Path, fmt: int, name: str = "s.zarr") -> Path:
    """An uncompressed (64, 8) float32 store of chunks (16, 8): four chunk files."""
    path = directory / name
    array = zarr.create_array(str(path), shape=(64, 8), chunks=(16, 8), dtype="f4",
                              compressors=None, zarr_format=fmt)
    array[...] = values()
    return path


def first_chunk(store: Path, fmt: int) -> tuple[Path, str]:
    """The file of the chunk of rows 0-15, and its key."""
    key = "c/0/0" if fmt == 3 else "0.0"
    return store.joinpath(*key.split("/")), key


def replace_with(path: Path, kind: str, outside: Path) -> None:
    """Make `path` a symbolic link to /dev/zero, a FIFO, or a symbolic link to `outside`."""
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero" if kind == "dev-zero" else outside)


# ---------------------------------------------------------------- files of a store


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "outside"])
def test_a_chunk_that_is_no_regular_file_of_the_store_is_refused(tmp_path, fmt, kind):
    store = make_store(tmp_path, fmt)
    secret = tmp_path / "secret.bin"
    np.full(16 * 8, 1e6, np.float32).tofile(secret)  # a chunk's worth of another file
    chunk, key = first_chunk(store, fmt)
    replace_with(chunk, kind, secret)
    before = listing(tmp_path)
    what = {"dev-zero": "a symbolic link to /dev/zero, a character device, not a regular file",
            "fifo": "is a FIFO (named pipe), not a regular file",
            "outside": f"a symbolic link to {secret}, outside the store"}[kind]
    report = run_bn_measured("stats", store)
    message = refused(report, 1, f"{store}: chunk {key} ", what, "refused")
    assert ("--allow-external" in message) == (kind == "outside")
    allowed = run_bn_measured("stats", store, "--allow-external", "--format", "json")
    if kind == "outside":  # allowed, it reads that file as the chunk
        assert allowed["returncode"] == 0, allowed
        expected = values()
        expected[:16] = 1e6
        np.testing.assert_allclose(json.loads(allowed["stdout"])["mean"], expected.mean(axis=0))
    else:  # a device or a FIFO is never read
        refused(allowed, 1, f"{store}: chunk {key} ", what)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_chunk_linked_to_another_file_of_the_store_is_read(tmp_path, fmt):
    store = make_store(tmp_path, fmt)
    chunk, _ = first_chunk(store, fmt)
    chunk.unlink()
    # rows 16-31 are read in place of rows 0-15
    chunk.symlink_to("../1/0" if fmt == 3 else "1.0")
    report = run_bn_measured("stats", store, "--format", "json")
    assert report["returncode"] == 0, report
    expected = values()
    expected[:16] = expected[16:32]
    np.testing.assert_allclose(json.loads(report["stdout"])["mean"], expected.mean(axis=0))


@pytest.mark.parametrize(("fmt", "meta", "kind"), [
    (3, "zarr.json", "dev-zero"), (3, "x/zarr.json", "fifo"), (2, "x/.zarray", "fifo"),
    (2, "x/.zattrs", "outside"), (2, ".zgroup", "dev-zero"), (2, ".zmetadata", "dev-zero")])
def test_metadata_that_is_no_regular_file_of_the_store_is_refused(tmp_path, fmt, meta, kind):
    store = tmp_path / "g.zarr"
    group = zarr.open_group(str(store), mode="w", zarr_format=fmt)
    group.create_array("x", shape=(64, 8), chunks=(16, 8), dtype="f4")[...] = values()
    if meta == ".zmetadata":
        zarr.consolidate_metadata(str(store))
    outside = tmp_path / "attributes.json"
    outside.write_text('{"mean": 1}')
    replace_with(store.joinpath(*meta.split("/")), kind, outside)
    before = listing(tmp_path)
    what = {"dev-zero": "a symbolic link to /dev/zero, a character device",
            "fifo": "is a FIFO (named pipe), not a regular file",
            "outside": f"a symbolic link to {outside}, outside the store"}[kind]
    report = run_bn_measured("stats", f"{store}:/x")
    refused(report, 1, str(store), f"metadata file {meta} ", what, "refused")
    assert listing(tmp_path) == before


def test_metadata_of_gigabytes_is_refused_unread(tmp_path):
    store = make_store(tmp_path, 3)
    with open(store / "zarr.json", "r+b") as meta:  # 3 GiB, sparse on disk
        meta.truncate(3 * 2**30)
    report = run_bn_measured("stats", store, timeout=30)
    refused(report, 1, f"{store}: metadata file zarr.json holds 3,221,225,472 bytes, more "
            "than the 268,435,456 a zarr metadata file may hold; refused")


def test_metadata_whose_json_would_take_gigabytes_to_parse_is_refused(tmp_path):
    store = make_store(tmp_path, 3)
    document = json.loads((store / "zarr.json").read_text())
    text = json.dumps({**document, "attributes": {}})
    count = 20 * 2**20  # empty objects: 3 bytes of text, some 70 parsed
    with open(store / "zarr.json", "w") as meta:
        meta.write(text[:-3] + "{\"x\": [" + "{}," * count + "{}]}}")
    report = run_bn_measured("stats", store)
    refused(report, 1, f"{store}: metadata file zarr.json holds ", "of JSON that would take",
            "more than 1.0 GiB; refused")


def test_zip_store_chunks_are_held_to_their_bound(tmp_path):
    make_store(tmp_path, 3, "plain.zarr")
    bomb = tmp_path / "bomb.zarr.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(tmp_path / "plain.zarr" / "zarr.json", "zarr.json")
        for key in ("c/1/0", "c/2/0", "c/3/0"):
            archive.write(tmp_path / "plain.zarr" / key, key)
        with archive.open("c/0/0", "w", force_zip64=True) as member:  # 64 MiB of zeros
            for _ in range(64):
                member.write(bytes(2**20))
    assert bomb.stat().st_size < 2**20
    report = run_bn_measured("stats", bomb)
    refused(report, 1, f"{bomb}: chunk c/0/0 holds 67,108,864 bytes, more than the ",
            "a chunk of this array can take; refused")


def test_zip_store_metadata_is_held_to_its_bound(tmp_path):
    metadata = tmp_path / "metadata.zarr.zip"
    with zipfile.ZipFile(metadata, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("zarr.json", "w", force_zip64=True) as member:
        for _ in range(300):  # 300 MiB of spaces
            member.write(b" " * 2**20)
    report = run_bn_measured("stats", metadata)
    refused(report, 1, f"{metadata}: metadata file zarr.json holds 314,572,800 bytes")


# ---------------------------------------------------------------- chunks never stored


def sparse_store(directory: Path, layout: str) -> Path:
    """A store of a few hundred bytes declaring 6e12 float32 values (21.8 TiB) in chunks of
    a million, none of them stored."""
    if layout == "v2":
        path = directory / "sparse.zarr"
        path.mkdir()
        (path / ".zarray").write_text(json.dumps({
            "zarr_format": 2, "shape": [6 * 10**12], "chunks": [10**6], "dtype": "<f4",
            "compressor": None, "fill_value": 0.0, "order": "C", "filters": None}))
        return path
    text = json.dumps({
        "zarr_format": 3, "node_type": "array", "shape": [6 * 10**12], "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [10**6]}},
        "chunk_key_encoding": {"name": "default"}, "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]},
        separators=(",", ":"))
    if layout == "zip":
        path = directory / "sparse.zarr.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("zarr.json", text)
        return path
    path = directory / "sparse.zarr"
    path.mkdir()
    (path / "zarr.json").write_text(text)
    return path


@pytest.mark.parametrize("layout", ["v3", "v2", "zip"])
def test_a_store_declaring_terabytes_never_stored_is_refused_at_once(tmp_path, layout):
    store = sparse_store(tmp_path, layout)
    size = sum(path.stat().st_size for path in [store, *store.rglob("*")] if path.is_file())
    assert size < 400
    before = listing(tmp_path)
    report = run_bn_measured("stats", store, timeout=30)
    refused(report, 1, f"{store}: 0 of its 6,000,000 chunks are stored; the other 21.8 TiB "
            "would be read as its fill value 0.0 (use --allow-sparse to read them anyway)")
    described = run_bn_measured("info", store, "--format", "json", timeout=30)
    assert described["returncode"] == 0, described
    assert json.loads(described["stdout"])[0]["chunks_written"] == [0, 6 * 10**6]
    normalized = run_bn_measured("normalize", store, "-o", tmp_path / "out.npy", timeout=30)
    refused(normalized, 1, f"{store}: 0 of its 6,000,000 chunks are stored")
    assert listing(tmp_path) == before


def test_the_bound_is_the_hdf5_one_and_allow_sparse_reads_anyway(tmp_path):
    chunk = 2**24
    store = tmp_path / "b.zarr"
    array = zarr.create_array(str(store), shape=(65 * chunk,), chunks=(chunk,), dtype="u1",
                              fill_value=7)
    # 65 chunks missing: 1,040 MiB of fill values, more than 1 GiB
    refused(run_bn_measured("stats", store), 1, f"{store}: 0 of its 65 chunks are stored; the "
            "other 1.0 GiB would be read as its fill value 7")
    read = run_bn_measured("stats", store, "--allow-sparse", "--format", "json", timeout=300)
    assert read["returncode"] == 0, read
    assert json.loads(read["stdout"])["mean"] == 7.0
    array[:chunk] = 1  # 64 missing: 1 GiB exactly, which is allowed
    read = run_bn_measured("stats", store, "--format", "json", timeout=300)
    assert read["returncode"] == 0, read
    assert json.loads(read["stdout"])["mean"] == pytest.approx((1 + 64 * 7) / 65)


def test_a_sharded_store_counts_the_chunks_its_shards_hold(tmp_path):
    shard, inner = 2**27, 2**20
    store = tmp_path / "sh.zarr"
    array = zarr.create_array(str(store), shape=(16 * shard,), chunks=(inner,), shards=(shard,),
                              dtype="u1")
    for index in range(16):  # every shard stored, each holding one of its 128 chunks
        array[index * shard:index * shard + inner] = 1
    assert len(list((store / "c").iterdir())) == 16
    refused(run_bn_measured("stats", store), 1, f"{store}: 16 of its 2,048 chunks are stored; "
            "the other 2.0 GiB would be read as its fill value 0")


# ---------------------------------------------------------------- outputs of many chunks


def test_a_zarr_output_of_millions_of_chunks_is_refused_before_writing(tmp_path):
    source = tmp_path / "in.npy"
    np.save(source, np.random.default_rng(0).standard_normal((160, 160, 160), np.float32))
    out = tmp_path / "out.zarr"
    before = listing(tmp_path)
    report = run_bn_measured("normalize", source, "-o", out, "--chunks", "1,1,1",
                             "--save-stats", tmp_path / "s.json", timeout=60)
    refused(report, 2, f"{out}: chunks 1,1,1 would cut its shape 160x160x160 into 4,096,000 "
            "chunks, more than the 100,000 an output may have; refused (use --chunks "
            "10,160,160)")
    assert listing(tmp_path) == before
    written = run_bn_measured("normalize", source, "-o", out, "--chunks", "10,160,160", "-q")
    assert written["returncode"] == 0, written
    assert len([path for path in out.rglob("*") if path.is_file()]) == 16 + 1


def test_a_zarr_output_may_not_inherit_millions_of_chunks_either(tmp_path):
    import h5py

    source = tmp_path / "in.h5"
    with h5py.File(source, "w") as h5:  # 160,000 chunks of one row of 8 values
        dataset = h5.create_dataset("x", shape=(400, 400, 8), chunks=(1, 1, 8), dtype="f4")
        for row in range(400):
            dataset[row] = np.full((400, 8), row, np.float32)
    out = tmp_path / "out.zarr"
    before = listing(tmp_path)
    report = run_bn_measured("normalize", f"{source}:/x", "-o", out, timeout=120)
    # refused once the statistics are computed (reading HDF5 chunks this small takes
    # memory of its own), before anything is written
    refused(report, 2, f"{out}: chunks 1,1,8 would cut its shape 400x400x8 into 160,000 "
            "chunks, more than the 100,000", "(use --chunks 81,400,8)", peak_mib=None)
    assert listing(tmp_path) == before
