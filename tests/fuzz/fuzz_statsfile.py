"""Coverage-guided fuzzing of the statistics-file readers (``.json`` and ``.npz``).

Run for as long as you like (atheris is not a dependency of bncli)::

    pip install atheris
    python tests/fuzz/fuzz_statsfile.py -max_total_time=600 tests/fuzz/corpus_statsfile

Every input is written as a ``.json`` and as an ``.npz`` statistics file, and each is loaded,
merged with itself, exported and calibrated in-process; any outcome other than success or a
:class:`bncli.errors.BnError` is a crash that atheris reports.
"""

from __future__ import annotations

import os
import tempfile

import atheris
import numpy as np
from harness import main, run_all, write_seeds

with atheris.instrument_imports():
    from bncli import api
    from bncli.errors import BnError

WORKDIR = tempfile.mkdtemp(prefix="bn-fuzz-statsfile-")
PATHS = [os.path.join(WORKDIR, name) for name in ("input.json", "input.npz")]


def seed_corpus(directory: str) -> None:
    """Statistics files bn writes, with and without histograms, as the starting corpus."""
    values = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    values[:, 2] = 0
    np.save(os.path.join(WORKDIR, "values.npy"), values)
    seeds = []
    for options in ({}, {"quantiles": True}):
        statistics = api.stats([os.path.join(WORKDIR, "values.npy")], **options)
        for suffix in (".json", ".npz"):
            path = os.path.join(WORKDIR, "seed" + suffix)
            api.save_statistics(statistics, path, force=True)
            with open(path, "rb") as handle:
                seeds.append(handle.read())
    write_seeds(directory, seeds)


def test_one_input(data: bytes) -> None:
    for path in PATHS:
        with open(path, "wb") as handle:
            handle.write(data)
        run_all((lambda path=path: api.load_statistics(path),
                 lambda path=path: api.merge([path, path], allow_duplicates=True),
                 lambda path=path: api.export(path, "torchvision"),
                 lambda path=path: api.calibrate([path])),
                BnError)


if __name__ == "__main__":
    main(test_one_input, seed_corpus)
