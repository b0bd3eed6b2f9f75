"""The compiled kernel's functions called directly with hostile arguments.

Sizes past the address space or negative, buffers too short for what is read or written,
of another item type than the type code says, or sharing memory with an output, histogram
windows that miss values of the data: each call must raise a Python exception before it
touches memory. Each hostile call runs in a child process (this file run as a script with
the case's name), so that a call that crashes the process is a failing test here, not a
dead test run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable

import numpy as np
import pytest

try:
    from bncli.core import _kernel
except ImportError:  # not built: the tests are skipped
    _kernel = None

BIG = 2**62
INT64_MAX = 2**63 - 1
# Bucket keys of the histogram grid with 6 mantissa bits: the key of 1.0 is its float64
# exponent (1023) followed by 6 zero bits.
BITS = 6
KEY_OF_ONE = 1023 << BITS


def moment_outputs(items: int, extremes: str = "float64") -> list:
    """Zeroed outputs of rows_moments or columns_moments, `items` values each, in argument
    order: total, mean, m2, m3 and m4 (None), minimum, maximum, the three counts."""
    total, mean, m2 = (np.zeros(items) for _ in range(3))
    minimum, maximum = (np.zeros(items, extremes) for _ in range(2))
    counts = [np.zeros(items, np.int64) for _ in range(3)]
    return [total, mean, m2, None, None, minimum, maximum, *counts]


def zero_device() -> int:
    """A file descriptor of /dev/zero, which reads any number of bytes at any offset."""
    return os.open("/dev/zero", os.O_RDONLY)


# name: (the exception, a pattern its message holds, the call)
CASES: dict[str, tuple[type[Exception], str, Callable[[], object]]] = {}


def case(exception: type[Exception], pattern: str) -> Callable:
    """Register the decorated function as a hostile call that must raise `exception`."""
    def register(function: Callable[[], object]) -> Callable[[], object]:
        CASES[function.__name__] = (exception, pattern, function)
        return function
    return register


# ---------------------------------------------------------------------- rows_moments

@case(OverflowError, "address space")
def rows_moments_pieces_times_channels_past_the_address_space():
    _kernel.rows_moments(np.zeros(8), "d", BIG, 4, 1, np.zeros(4), *moment_outputs(8))


@case(ValueError, "must be positive")
def rows_moments_negative_rows():
    _kernel.rows_moments(np.zeros(8), "d", -2, 4, 1, np.zeros(4), *moment_outputs(8))


@case(ValueError, "below 2\\*\\*31")
def rows_moments_pieces_of_2_to_the_31_rows():
    _kernel.rows_moments(np.zeros(8), "d", 2, 4, 2**31, np.zeros(4), *moment_outputs(4))


@case(ValueError, "data holds 312 bytes, 320 needed")
def rows_moments_data_shorter_than_its_rows():
    _kernel.rows_moments(np.zeros(39), "d", 10, 4, 10, np.zeros(4), *moment_outputs(4))


@case(ValueError, "mean holds 120 bytes, 128 needed")
def rows_moments_an_output_shorter_than_its_pieces():
    outputs = moment_outputs(16)
    outputs[1] = np.zeros(15)
    _kernel.rows_moments(np.zeros(40), "d", 10, 4, 3, np.zeros(4), *outputs)


@case(ValueError, "shift holds 24 bytes, 32 needed")
def rows_moments_a_shift_short_of_a_channel():
    _kernel.rows_moments(np.zeros(40), "d", 10, 4, 10, np.zeros(3), *moment_outputs(4))


@case(TypeError, "data holds items of format 'f'")
def rows_moments_data_of_another_type_than_its_code():
    _kernel.rows_moments(np.zeros(80, np.float32), "d", 10, 4, 10, np.zeros(4),
                         *moment_outputs(4))


@case(TypeError, "minimum holds items of format 'd'")
def rows_moments_int64_extremes_written_into_float64():
    _kernel.rows_moments(np.zeros(40, np.int64), "q", 10, 4, 10, np.zeros(4),
                         *moment_outputs(4))


@case(TypeError, "zero_count holds items of format 'd'")
def rows_moments_counts_written_into_float64():
    outputs = moment_outputs(4)
    outputs[7] = np.zeros(4)
    _kernel.rows_moments(np.zeros(40), "d", 10, 4, 10, np.zeros(4), *outputs)


@case(ValueError, "data and total share memory")
def rows_moments_an_output_over_the_data():
    data = np.zeros(40)
    outputs = moment_outputs(4)
    outputs[0] = data[:4]
    _kernel.rows_moments(data, "d", 10, 4, 10, np.zeros(4), *outputs)


@case(ValueError, "total and mean share memory")
def rows_moments_two_outputs_in_one_buffer():
    outputs = moment_outputs(4)
    outputs[1] = outputs[0]
    _kernel.rows_moments(np.zeros(40), "d", 10, 4, 10, np.zeros(4), *outputs)


@case(ValueError, "shift is not a value")
def rows_moments_an_int64_shift_past_the_type():
    _kernel.rows_moments(np.zeros(40, np.int64), "q", 10, 4, 10, np.full(4, 1e30),
                         *moment_outputs(4, "int64"))


@case(ValueError, "shift is not a value")
def rows_moments_a_uint64_shift_of_nan():
    _kernel.rows_moments(np.zeros(40, np.uint64), "Q", 10, 4, 10, np.full(4, np.nan),
                         *moment_outputs(4, "uint64"))


@case(OverflowError, "largest file offset")
def rows_moments_a_file_offset_whose_rows_pass_the_largest():
    _kernel.rows_moments(np.zeros(40), "d", 10, 4, 10, np.zeros(4), *moment_outputs(4),
                         zero_device(), INT64_MAX - 100)


@case(ValueError, "no kernel for this type code")
def rows_moments_an_unknown_type_code():
    _kernel.rows_moments(np.zeros(40), "x", 10, 4, 10, np.zeros(4), *moment_outputs(4))


@case(ValueError, "no kernel for this type code")
def rows_moments_a_type_code_of_two_characters():
    _kernel.rows_moments(np.zeros(40), "dd", 10, 4, 10, np.zeros(4), *moment_outputs(4))


# ------------------------------------------------------------------- columns_moments

@case(OverflowError, "address space")
def columns_moments_rows_times_channels_past_the_address_space():
    _kernel.columns_moments(np.zeros(8), "d", 2**31 - 1, 2**40, 1, np.zeros(4),
                            *moment_outputs(4))


@case(ValueError, "below 2\\*\\*31")
def columns_moments_2_to_the_31_rows():
    _kernel.columns_moments(np.zeros(8), "d", 2**31, 4, 1, np.zeros(4), *moment_outputs(4))


@case(ValueError, "data holds 312 bytes, 320 needed")
def columns_moments_data_shorter_than_its_rows():
    _kernel.columns_moments(np.zeros(39), "d", 10, 4, 2, np.zeros(4), *moment_outputs(4))


@case(ValueError, "max_count holds 24 bytes, 32 needed")
def columns_moments_a_count_short_of_a_channel():
    outputs = moment_outputs(4)
    outputs[9] = np.zeros(3, np.int64)
    _kernel.columns_moments(np.zeros(40), "d", 10, 4, 2, np.zeros(4), *outputs)


# ---------------------------------------------------------------------- slab_moments

@case(OverflowError, "address space")
def slab_moments_runs_past_the_address_space():
    _kernel.slab_moments(np.zeros(16), "d", 2**61 + 1, 8, 2, np.zeros(8), False,
                         np.zeros(80))


@case(ValueError, "below 2\\*\\*34")
def slab_moments_runs_of_2_to_the_34_values():
    _kernel.slab_moments(np.zeros(16), "d", 1, 1, 2**34, np.zeros(1), False, np.zeros(10))


@case(ValueError, "out holds 632 bytes, 640 needed")
def slab_moments_out_short_of_a_value():
    _kernel.slab_moments(np.zeros(48), "d", 2, 4, 6, np.zeros(4), True, np.zeros(79))


@case(TypeError, "data holds items of format 'i'")
def slab_moments_data_of_another_type_than_its_code():
    _kernel.slab_moments(np.zeros(48, np.int32), "f", 2, 4, 6, np.zeros(4), True,
                         np.zeros(80))


# ------------------------------------------------------------------ histogram_window

@case(OverflowError, "address space")
def histogram_window_values_past_the_address_space():
    _kernel.histogram_window(np.zeros(8), "d", 2**61, 1, BITS, np.zeros((1, 5), np.int64))


@case(ValueError, "special holds 32 bytes, 40 needed")
def histogram_window_special_short_of_a_count():
    _kernel.histogram_window(np.ones(8), "d", 8, 1, BITS, np.zeros(4, np.int64))


@case(TypeError, "special holds items of format 'd'")
def histogram_window_special_of_float64():
    _kernel.histogram_window(np.ones(8), "d", 8, 1, BITS, np.zeros((1, 5)))


@case(OverflowError, "special count passes int64")
def histogram_window_special_counts_that_pass_int64():
    _kernel.histogram_window(np.zeros(8), "d", 8, 1, BITS, np.full((1, 5), INT64_MAX))


@case(ValueError, "bits")
def histogram_window_21_bits():
    _kernel.histogram_window(np.ones(8), "d", 8, 1, 21, np.zeros((1, 5), np.int64))


# ------------------------------------------------------------------- histogram_count

@case(ValueError, "1 values lie outside the window")
def histogram_count_a_window_that_misses_a_value():
    # 1e300 is many octaves above the window of 1.0's bucket alone
    _kernel.histogram_count(np.array([1.0, 1e300, 1.0, 0.0]), "d", 4, 1, BITS, KEY_OF_ONE,
                            1, np.zeros((1, 2, 1), np.uint16), 2)


@case(ValueError, "2 values lie outside the window")
def histogram_count_an_empty_window():
    _kernel.histogram_count(np.array([1.0, -2.0]), "d", 2, 2, BITS, KEY_OF_ONE, 0,
                            np.zeros((2, 2, 0), np.uint16), 2)


@case(ValueError, "1 values lie outside the window")
def histogram_count_a_float32_value_below_the_window():
    _kernel.histogram_count(np.array([4.0, 1.0], np.float32), "f", 2, 1, BITS,
                            KEY_OF_ONE + (2 << BITS), 1, np.zeros((1, 2, 1), np.uint32), 4)


@case(ValueError, "not within the keys of normal finite values")
def histogram_count_a_window_below_the_normal_keys():
    _kernel.histogram_count(np.ones(2), "d", 2, 1, BITS, 0, 1,
                            np.zeros((1, 2, 1), np.uint16), 2)


@case(ValueError, "not within the keys of normal finite values")
def histogram_count_a_window_past_the_finite_keys():
    _kernel.histogram_count(np.ones(2), "d", 2, 1, BITS, KEY_OF_ONE, 2**40,
                            np.zeros((1, 2, 1), np.uint16), 2)


@case(OverflowError, "negative")
def histogram_count_a_negative_low():
    _kernel.histogram_count(np.ones(2), "d", 2, 1, BITS, -1, 1,
                            np.zeros((1, 2, 1), np.uint16), 2)


@case(OverflowError, "address space")
def histogram_count_cells_past_the_address_space():
    _kernel.histogram_count(np.ones(2), "d", 2**40, 2**40, 20, 1023 << 20, 2**30,
                            np.zeros(4, np.uint16), 2)


@case(TypeError, "counts holds items of format 'I'")
def histogram_count_cells_of_another_width_than_cell_bytes():
    _kernel.histogram_count(np.ones(2), "d", 2, 1, BITS, KEY_OF_ONE, 1,
                            np.zeros((1, 2, 2), np.uint32), 2)


@case(ValueError, "counts holds 6 bytes, 8 needed")
def histogram_count_counts_short_of_a_cell():
    _kernel.histogram_count(np.ones(2), "d", 2, 1, BITS, KEY_OF_ONE, 2,
                            np.zeros(3, np.uint16), 2)


@case(ValueError, "more rows than a cell")
def histogram_count_more_rows_than_a_uint16_cell_counts():
    _kernel.histogram_count(np.ones(70000), "d", 70000, 1, BITS, KEY_OF_ONE, 1,
                            np.zeros((1, 2, 1), np.uint16), 2)


# -------------------------------------------------------------------- normalize_rows

def normalize(data, code, rows, channels, out, out_code, coefficients=4):
    _kernel.normalize_rows(data, code, rows, channels, np.zeros(coefficients),
                           np.ones(coefficients), np.zeros(coefficients), False, out, out_code)


@case(OverflowError, "address space")
def normalize_rows_rows_times_channels_past_the_address_space():
    normalize(np.zeros(8), "d", BIG, 4, np.zeros(8), "d")


@case(ValueError, "out holds 152 bytes, 160 needed")
def normalize_rows_out_short_of_a_value():
    normalize(np.zeros(40, np.float32), "f", 10, 4, np.zeros(38, np.float32), "f")


@case(TypeError, "out holds items of format 'd'")
def normalize_rows_float32_written_into_float64():
    normalize(np.zeros(20, np.float32), "f", 5, 4, np.zeros(20), "f")


@case(ValueError, "mean holds 24 bytes, 32 needed")
def normalize_rows_coefficients_short_of_a_channel():
    normalize(np.zeros(20), "d", 5, 4, np.zeros(20), "d", coefficients=3)


@case(ValueError, "data and out share memory")
def normalize_rows_out_over_its_data():
    data = np.zeros(20)
    normalize(data, "d", 5, 4, data, "d")


@case(TypeError, "data holds items of format 'B'")
def normalize_rows_bytes_as_bools():
    normalize(np.zeros(20, np.uint8), "?", 5, 4, np.zeros(20), "d")


# ------------------------------------------------------------------------ pread_runs

@case(OverflowError, "address space")
def pread_runs_runs_past_the_address_space():
    _kernel.pread_runs(zero_device(), np.zeros(8, np.uint8), np.zeros(4, np.int64), BIG)


@case(ValueError, "out holds 31 bytes, 32 needed")
def pread_runs_out_short_of_a_byte():
    _kernel.pread_runs(zero_device(), np.zeros(31, np.uint8), np.zeros(4, np.int64), 8)


@case(TypeError, "offsets holds items of format 'd'")
def pread_runs_offsets_of_float64():
    _kernel.pread_runs(zero_device(), np.zeros(32, np.uint8), np.zeros(4), 8)


@case(ValueError, "offset is negative")
def pread_runs_a_negative_offset():
    _kernel.pread_runs(zero_device(), np.zeros(32, np.uint8), np.array([0, -8, 0, 0]), 8)


@case(OverflowError, "largest file offset")
def pread_runs_a_run_past_the_largest_offset():
    _kernel.pread_runs(zero_device(), np.zeros(32, np.uint8),
                       np.array([0, INT64_MAX - 4, 0, 0]), 8)


@case(ValueError, "must not be negative")
def pread_runs_a_negative_run_length():
    _kernel.pread_runs(zero_device(), np.zeros(32, np.uint8), np.zeros(4, np.int64), -8)


@case(ValueError, "offsets and out share memory")
def pread_runs_into_its_own_offsets():
    offsets = np.zeros(4, np.int64)
    _kernel.pread_runs(zero_device(), offsets, offsets, 8)


def run_case(name: str) -> subprocess.CompletedProcess:
    """Run the hostile call `name` in a child process; it prints what the call raised."""
    return subprocess.run([sys.executable, __file__, name], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.slow  # a process each
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_hostile_call_raises_a_python_exception(name):
    if _kernel is None:
        pytest.skip("the compiled kernel is not built")
    exception, pattern, _ = CASES[name]
    child = run_case(name)
    assert child.returncode == 0, (f"the call ended its process ({child.returncode}):\n"
                                   f"{child.stderr[-3000:]}")
    raised, _, message = child.stdout.strip().partition(": ")
    assert raised == exception.__name__, child.stdout
    assert re.search(pattern, message), message


def test_the_calls_with_sound_arguments_succeed():
    """The hostile calls' arguments, set right: every function runs and gives the values."""
    if _kernel is None:
        pytest.skip("the compiled kernel is not built")
    data = np.arange(40.0).reshape(10, 4)
    outputs = moment_outputs(4)
    assert _kernel.rows_moments(data, "d", 10, 4, 10, np.zeros(4), *outputs) == (320, 0)
    np.testing.assert_array_equal(outputs[1], data.mean(axis=0))
    np.testing.assert_array_equal(outputs[6], data.max(axis=0))
    outputs = moment_outputs(4, "int64")
    _kernel.rows_moments(data.astype(np.int64), "q", 10, 4, 10, np.zeros(4), *outputs)
    np.testing.assert_array_equal(outputs[5], data.min(axis=0))
    outputs = moment_outputs(4)
    _kernel.columns_moments(data, "d", 10, 4, 3, np.zeros(4), *outputs)
    np.testing.assert_allclose(outputs[2], ((data - data.mean(axis=0)) ** 2).sum(axis=0))
    slabs = np.arange(48.0).reshape(2, 4, 6)
    out = np.zeros((2, 4, 10))
    _kernel.slab_moments(slabs, "d", 2, 4, 6, np.zeros(4), True, out)
    np.testing.assert_array_equal(out[..., 1], slabs.mean(axis=2))
    special = np.zeros((1, 5), np.int64)
    values = np.array([1.0, 1.5, 0.0, -1.0])
    assert _kernel.histogram_window(values, "d", 4, 1, BITS, special) == (
        KEY_OF_ONE, KEY_OF_ONE + 32)
    np.testing.assert_array_equal(special, [[1, 0, 0, 0, 0]])
    counts = np.zeros((1, 2, 33), np.uint16)
    _kernel.histogram_count(values, "d", 4, 1, BITS, KEY_OF_ONE, 33, counts, 2)
    assert (counts[0, 0, 0], counts[0, 0, 32], counts[0, 1, 0], counts.sum()) == (1, 1, 1, 3)
    out = np.zeros(40, np.float32)
    _kernel.normalize_rows(data, "d", 10, 4, np.ones(4), np.full(4, 2.0), np.zeros(4), False,
                           out, "f")
    np.testing.assert_array_equal(out.reshape(10, 4), (data - 1) * 2)
    with tempfile.TemporaryFile() as file:
        file.write(bytes(range(64)))
        file.flush()
        out = np.zeros(16, np.uint8)
        assert _kernel.pread_runs(file.fileno(), out, np.array([8, 40]), 8) == 16
        assert out.tobytes() == bytes(range(8, 16)) + bytes(range(40, 48))


if __name__ == "__main__":  # the child of run_case: one hostile call, what it raised
    try:
        CASES[sys.argv[1]][2]()
    except Exception as error:
        print(f"{type(error).__name__}: {error}")
    else:
        print("nothing raised")
