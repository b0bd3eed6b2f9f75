"""Coverage-guided fuzzing of the .npy reader and the statistics pass with atheris.

Run for as long as you like (atheris is not a dependency of bncli)::

    pip install atheris
    python tests/fuzz/fuzz_npy.py -max_total_time=600 tests/fuzz/corpus

Every input is written to a file and given to ``bn stats`` and ``bn info`` in-process; any
outcome other than success or a :class:`bncli.errors.BnError` (a clear one-line error) is a
crash that atheris reports with the input that caused it.
"""

from __future__ import annotations

import io
import os
import tempfile

import atheris
import numpy as np
from harness import main, run_all

with atheris.instrument_imports():
    from bncli import api
    from bncli.errors import BnError

WORKDIR = tempfile.mkdtemp(prefix="bn-fuzz-")
PATH = os.path.join(WORKDIR, "input.npy")


def seed_corpus(directory: str) -> None:
    """Write a few valid files as the starting corpus."""
    os.makedirs(directory, exist_ok=True)
    for index, array in enumerate([
        np.arange(24, dtype="<f4").reshape(2, 3, 4),
        np.asfortranarray(np.ones((3, 5), ">f8")),
        np.zeros((4, 2), np.uint8),
    ]):
        buffer = io.BytesIO()
        np.save(buffer, array)
        with open(os.path.join(directory, f"seed{index}.npy"), "wb") as seed:
            seed.write(buffer.getvalue())


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as handle:
        handle.write(data)
    run_all((lambda: api.info([PATH]), lambda: api.stats([PATH], chunk_bytes=64, threads=1)),
            BnError)


if __name__ == "__main__":
    main(test_one_input, seed_corpus)
