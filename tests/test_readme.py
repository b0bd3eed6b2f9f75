"""Every command of the README's tour runs and prints what the README shows."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys

from conftest import ROOT

# Lines that change from run to run: the timing line of the table.
VOLATILE = re.compile(r"^time \S+ s")


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def same_line(got: str, want: str) -> bool:
    """Equal text; numbers may differ in the last digits (other CPUs round sums differently)."""
    if got == want:
        return True
    if NUMBER.sub("#", got) != NUMBER.sub("#", want):
        return False
    return all(math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
               for a, b in zip(NUMBER.findall(got), NUMBER.findall(want)))


def tour_commands():
    commands, current, in_console = [], None, False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```console"):
            in_console = True
        elif line.startswith("```"):
            in_console, current = False, None
        elif in_console and line.startswith("$ "):
            current = (line[2:], [])
            commands.append(current)
        elif in_console and current is not None:
            current[1].append(line)
    return commands


def to_shell(command: str) -> str:
    command = re.sub(r"(^|\| |&& )bn ", rf"\1{sys.executable} -m bncli ", command)
    return re.sub(r"(^|\| |&& )python ", rf"\1{sys.executable} ", command)


def test_readme_has_a_tour():
    commands = [command for command, _ in tour_commands()]
    for needed in ("bn info", "bn stats", "bn normalize", "bn merge", "| bn normalize -"):
        assert any(needed in command for command in commands), needed


def test_readme_tour_commands_print_what_is_shown(tmp_path):
    shutil.copytree(ROOT / "sample_data", tmp_path / "sample_data")
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "BN_DEBUG")}
    for command, shown in tour_commands():
        result = subprocess.run(["bash", "-c", to_shell(command)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        printed = (result.stdout + result.stderr).rstrip("\n").splitlines()
        expected_error = any(line.startswith("bn: error:") for line in shown)
        assert (result.returncode != 0) == expected_error, (command, result.stderr)
        assert len(printed) == len(shown), (command, printed)
        for got, want in zip(printed, shown):
            if VOLATILE.match(want):
                assert VOLATILE.match(got), (command, got)
            else:
                assert same_line(got, want), (command, got, want)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    head = (ROOT / "README.md").read_text().split("## ", 1)[0]
    assert "pip install -e . && bn stats sample_data/acts_nhwc.npy" in head
    assert "pip install -e '.[test,plot,dask,zarr,isal,hdf5plugin]' && python -m pytest" in head
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[test,plot,dask,zarr,isal,hdf5plugin]'" in ci
    assert "\npython -m pytest" in ci


def test_readme_images_exist_and_are_png():
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", target
