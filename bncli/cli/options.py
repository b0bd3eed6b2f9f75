"""The option types and the option groups the commands share: parsed once, into the
values the library takes."""

from __future__ import annotations

import functools
import re
import sys
from typing import TYPE_CHECKING

import click

from bncli.errors import BnError

if TYPE_CHECKING:
    import numpy as np



CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class AxesType(click.ParamType):
    """A comma list of integers, such as ``0,1,2`` or ``-1``."""

    name = "AXES"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(part) for part in str(value).split(",") if part.strip() != "")
        except ValueError:
            self.fail(f"{value!r} is not a comma list of integers (example: 0,1,2)", param, ctx)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?b)?|(b)?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse a byte count: ``65536``, ``512K``, ``64M``, ``1GiB`` in binary units (K = 1024),
    ``64MB`` or ``1GB`` in decimal ones (MB = 10**6), as SI and IEC write them."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 65536, 512K, 64M, 1GiB, 100MB)")
    number, unit, suffix = float(match.group(1)), (match.group(2) or "").lower(), match.group(3)
    base = 1000 if suffix and suffix.lower() == "b" else 1024
    size = int(number * base ** " kmgt".index(unit or " "))
    if size < 1:
        raise ValueError(f"{text!r} is not a positive size")
    return size


class SizeType(click.ParamType):
    """A byte count such as ``65536``, ``512K`` or ``64M``."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class LoadedValues:
    """Values read from a ``.npy`` file, with the file's path (which no output may be)."""

    def __init__(self, path: str, values: np.ndarray):
        self.path, self.values = path, values


class AffineType(click.ParamType):
    """``--scale`` / ``--offset``: a number, a comma list per channel, or a ``.npy`` file."""

    name = "VALUES"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        if value.lower().endswith(".npy"):
            return LoadedValues(value, _load_affine(value, param.opts[0]))
        try:
            values = [float(item) for item in value.split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a number, a comma list or a .npy file", param, ctx)
        return values[0] if len(values) == 1 and "," not in value else values


def _load_affine(path: str, option: str) -> np.ndarray:
    import numpy as np

    from bncli.core.dtypes import check_dtype

    try:
        values = np.load(path, allow_pickle=False)
        check_dtype(values.dtype, path)
    except FileNotFoundError:
        raise BnError(f"{path}: no such file (given to {option})") from None
    except (OSError, ValueError) as exc:
        raise BnError(f"{path}: cannot read {option} values ({exc})") from None
    return values


def _once(ctx, param, value):
    """An option that takes one value, given at most once (click keeps the last silently)."""
    if len(value) > 1:
        raise click.BadParameter("given more than once", ctx=ctx, param=param)
    return value[0] if value else None


def axes_options(func):
    """``--axes``, ``--channel-axis``, ``--layout``, shared by stats and normalize."""
    from bncli.core.layout import LAYOUTS

    func = click.option("--layout", type=click.Choice(list(LAYOUTS), case_sensitive=False),
                        default=None,
                        help="The data's layout: its channel axis is kept, every other "
                             "reduced (nchw: as --channel-axis 1).")(func)
    func = click.option("--channel-axis", type=int, default=None, metavar="K",
                        help="Reduce every axis but K (1 for NCHW). Exclusive with --axes.")(func)
    func = click.option("--axes", type=AxesType(), default=None, multiple=True,
                        callback=_once,
                        help="Axes to reduce, e.g. 0,1,2 (as tf.nn.moments); negative counts "
                             "from the end. Default: every axis but the last (axis 0 of 1-D "
                             "data).")(func)
    return func


def _set_color(ctx, param, value):
    if value is not None:
        from bncli.cli.report import set_color

        set_color(value)
    return value


def color_option(func):
    """``--color auto|always|never``."""
    return click.option("--color", type=click.Choice(["auto", "always", "never"]),
                        default=None, expose_value=False, callback=_set_color,
                        help="Colour tables: auto (a terminal; NO_COLOR and FORCE_COLOR "
                             "are honoured), always or never.")(func)


class ChannelsType(click.ParamType):
    """Flat channel indices: ``3``, ``0,5,9``, ``10-20`` or a mix."""

    name = "LIST"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        chosen = []  # ranges, not every index: 0-100000000 costs nothing until checked
        try:
            for part in (item.strip() for item in value.split(",") if item.strip()):
                start, _, stop = part.partition("-")
                chosen.append(range(int(start), int(stop or start) + 1))
        except ValueError:
            self.fail(f"{value!r} is not a list of channels (example: 0,5,10-20)", param, ctx)
        return chosen


def table_options(func):
    """``--format``; ``--all``, ``--sort``, ``--only-flagged``, ``--channels``: which rows
    the table shows. Shared by stats and merge."""
    from bncli.cli.columns import SORT_KEYS

    func = click.option("--channels", "pick", type=ChannelsType(), default=None,
                        help="Table: only these (flat) channels, e.g. 0,5,10-20.")(func)
    func = click.option("--only-flagged", is_flag=True,
                        help="Table: only the channels with findings.")(func)
    func = click.option("--sort", type=click.Choice(list(SORT_KEYS)), default=None,
                        help="Table: channels ordered by this statistic, largest first.")(func)
    func = click.option("--all", "show_all", is_flag=True,
                        help="Show every channel in the table.")(func)
    func = click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]),
                        default=None,
                        help="Output format (default: table on a terminal, else json).")(func)
    return func


def json_options(func):
    """``--indent``, ``--nan-as``: how statistics are written as JSON."""
    func = click.option("--nan-as", type=click.Choice(["string", "null"]), default="string",
                        show_default=True,
                        help='NaN in JSON: "NaN" strings (read back exactly) or null (for '
                             "jq and pandas).")(func)
    func = click.option("--indent", type=click.IntRange(min=0), default=None, metavar="N",
                        help="Pretty JSON, indented by N spaces.")(func)
    return func


# The options of how a command reads and computes, handed to the library whole as `engine`.
ENGINE_KEYS = ("chunk_bytes", "threads", "allow_sparse", "allow_external", "scheduler")


def engine_options(func):
    """``--chunk-bytes`` (16M, the engine's default), ``--threads``, ``--allow-external``,
    ``--allow-sparse``, ``--scheduler``, gathered into one ``engine`` argument (the library's
    keyword arguments); and ``--progress``."""

    command = func

    @functools.wraps(command)
    def gathered(*args, **kwargs):
        kwargs["engine"] = {key: kwargs.pop(key) for key in ENGINE_KEYS}
        return command(*args, **kwargs)

    func = gathered

    func = click.option("--scheduler", envvar="BN_SCHEDULER", default=None, metavar="ADDRESS",
                        help="Run on a dask.distributed cluster: tcp://host:port, or local "
                             "for one on this machine (needs bncli[dask]; env BN_SCHEDULER). "
                             "Input paths must be on a filesystem every worker shares.")(func)
    func = click.option("--progress/--no-progress", default=None,
                        help="Progress bar on stderr (default: when stderr is a terminal).")(func)
    func = click.option("--allow-external", is_flag=True,
                        help="Allow HDF5 external links, external storage and virtual "
                             "datasets, which read other files.")(func)
    func = click.option("--allow-sparse", is_flag=True,
                        help="Read HDF5 datasets and zarr arrays whose unwritten chunks "
                             "(or a virtual dataset's unmapped elements) would give more "
                             "than 1 GiB of fill values.")(func)
    func = click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="Worker threads (default: available cores).")(func)
    func = click.option("--chunk-bytes", type=SizeType(), default="16M", show_default=True,
                        help="Memory budget of one chunk, e.g. 64M.")(func)
    return func


def progress_factory(progress):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from bncli.cli.report import ProgressBars

    return ProgressBars(sys.stderr)
