"""The optional compiled kernel; everything else is in pyproject.toml.

The extension is plain C against the Python API only (no NumPy headers), built with -O3 and
no -march, so the wheel runs on any CPU of its architecture. ``optional=True``: without a
C compiler the build skips it and bn runs on its NumPy kernel.
"""

import sys

from setuptools import Extension, setup

# -ffp-contract=off: no fused multiply-add, so normalize rounds as NumPy does, bit for bit
arguments = [] if sys.platform == "win32" else ["-O3", "-std=c99", "-ffp-contract=off"]
setup(ext_modules=[Extension("bncli.core._kernel", ["bncli/core/_kernel.c"], optional=True,
                             extra_compile_args=arguments)])
