"""Coverage-guided fuzzing of the safetensors header parser and the .npz archive reader.

Run for as long as you like (atheris is not a dependency of bncli)::

    pip install atheris
    python tests/fuzz/fuzz_containers.py -max_total_time=600 tests/fuzz/corpus_containers

Every input is written as a ``.safetensors`` file and as an ``.npz`` file, and each is given
to ``bn info`` and ``bn stats`` (the file alone and one named array) in-process; any outcome
other than success or a :class:`bncli.errors.BnError` is a crash that atheris reports.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile

import atheris
import numpy as np
from harness import main, run_all, write_seeds

with atheris.instrument_imports():
    from bncli import api
    from bncli.errors import BnError

WORKDIR = tempfile.mkdtemp(prefix="bn-fuzz-containers-")
PATHS = [os.path.join(WORKDIR, name) for name in ("input.safetensors", "input.npz")]


def seed_corpus(directory: str) -> None:
    """Write a valid safetensors file and two valid archives as the starting corpus."""
    header = {"__metadata__": {"format": "np"},
              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]}}
    text = json.dumps(header).encode()
    seeds = [struct.pack("<Q", len(text)) + text + np.arange(8, dtype="<f4").tobytes()]
    for save in (np.savez, np.savez_compressed):
        buffer = io.BytesIO()
        save(buffer, a=np.arange(6.0).reshape(2, 3), b=np.ones(4, np.uint8))
        seeds.append(buffer.getvalue())
    write_seeds(directory, seeds)


def test_one_input(data: bytes) -> None:
    for path in PATHS:
        with open(path, "wb") as handle:
            handle.write(data)
        run_all((lambda path=path: api.info([path]),
                 lambda path=path: api.stats([path], chunk_bytes=64, threads=1),
                 lambda path=path: api.stats([path + ":a"], chunk_bytes=64, threads=1)),
                BnError)


if __name__ == "__main__":
    main(test_one_input, seed_corpus)
