"""What the atheris harnesses share: run each library call on an input, where success or
a :class:`bncli.errors.BnError` is fine and anything else is a crash atheris reports."""

from __future__ import annotations

import os
import sys


def run_all(calls, error_type) -> None:
    """Run every call; let anything but `error_type` escape to the fuzzer."""
    for call in calls:
        try:
            call()
        except error_type:
            pass


def write_seeds(directory: str, seeds: list) -> None:
    """Write each seed (bytes) into the corpus `directory` as ``seed0``, ``seed1``..."""
    os.makedirs(directory, exist_ok=True)
    for index, seed in enumerate(seeds):
        with open(os.path.join(directory, f"seed{index}"), "wb") as handle:
            handle.write(seed)


def main(test_one_input, seed_corpus) -> None:
    """Seed the corpus directory given on the command line, then fuzz."""
    import atheris

    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    if corpus:
        seed_corpus(corpus[0])
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
