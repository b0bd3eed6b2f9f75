"""Coverage-guided fuzzing of the HDF5 opening path (h5py, dataset lookup, checks, reads).

Run for as long as you like (atheris is not a dependency of bncli)::

    pip install atheris
    python tests/fuzz/fuzz_hdf5.py -max_total_time=600 tests/fuzz/corpus_hdf5

Every input is written to a file and given to ``bn info`` and ``bn stats`` (the file alone,
and two named datasets) in-process; any outcome other than success or a
:class:`bncli.errors.BnError` is a crash that atheris reports with its input. A crash inside
the HDF5 C library itself ends the run with the input saved, which is as useful.
"""

from __future__ import annotations

import io
import os
import tempfile

import atheris
import h5py
import numpy as np
from harness import main, run_all

with atheris.instrument_imports():
    from bncli import api
    from bncli.errors import BnError

WORKDIR = tempfile.mkdtemp(prefix="bn-fuzz-hdf5-")
PATH = os.path.join(WORKDIR, "input.h5")


def seed_corpus(directory: str) -> None:
    """Write a few valid files as the starting corpus."""
    os.makedirs(directory, exist_ok=True)
    for index, (chunks, compression) in enumerate([(None, None), ((5, 4, 3), "gzip"),
                                                   ((2, 4, 6), "lzf")]):
        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as h5file:
            h5file.create_dataset("g/x", data=np.arange(240, dtype="<f4").reshape(10, 4, 6),
                                  chunks=chunks, compression=compression)
            h5file.create_dataset("y", data=np.arange(12.0).reshape(4, 3))
            h5file["link"] = h5py.SoftLink("/g/x")
        with open(os.path.join(directory, f"seed{index}.h5"), "wb") as seed:
            seed.write(buffer.getvalue())


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as handle:
        handle.write(data)
    run_all((lambda: api.info([PATH]),
             lambda: api.stats([PATH], chunk_bytes=64, threads=1),
             lambda: api.stats([PATH + ":/g/x"], chunk_bytes=64, threads=1),
             lambda: api.stats([PATH + ":/link"], chunk_bytes=256, threads=2)), BnError)


if __name__ == "__main__":
    main(test_one_input, seed_corpus)
