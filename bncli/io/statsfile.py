"""The statistics file: per-channel moments with what they were computed over.

JSON (strict: non-finite numbers are the strings ``"NaN"``, ``"Infinity"``,
``"-Infinity"``; float64 values are written by ``repr`` so they read back bit for bit)::

    {"schema": "bncli.stats/2", "inputs": [...], "axes": [...], "channel_shape": [...],
     "ddof": 0, "ignore_nan": false, "keepdims": false,
     "count": [...], "mean": [...], "variance": [...], "std": [...], "min": [...],
     "max": [...], "m2": [...], "nan_count": [...], "inf_count": [...],
     "shift": [...], "shifted_mean": [...]}

Arrays are nested lists of ``channel_shape`` (or of the input's rank with reduced axes of
size 1 when ``keepdims``). ``.npz`` holds the same arrays under the same names, plus ``meta``,
a JSON string of the other fields. ``count``, ``m2``, ``shift`` and ``shifted_mean`` make
files mergeable: ``shift`` is a value of the channel's data that every value was centred on,
``shifted_mean`` the mean of ``x - shift``, so that merging never rounds a mean at the data's
offset. ``mean`` is ``shift + shifted_mean``, rounded once. Version 1 files (without the
shift) are read as centred on their mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO, TypeVar

import numpy as np

from bncli.core import histogram as _histogram  # noqa: F401 - registers the histogram partial
from bncli.core import moments as _moments  # noqa: F401 - registers the moments partial
from bncli.core.drift import Drift
from bncli.core.findings import to_document as findings_document
from bncli.core.moments import extreme_dtype
from bncli.core.partials import KINDS, Partials, Reduction
from bncli.core.statistics import Statistics
from bncli.errors import InputError, StatsFileError
from bncli.io.source import open_file

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

_T = TypeVar("_T")

SCHEMA = "bncli.stats/2"
SCHEMAS = ("bncli.stats/1", SCHEMA)  # the versions read
# Fields of the document that are per-channel arrays, besides those of the partials.
VALUE_FIELDS = ("count", "mean", "variance", "std", "min", "max", "m2", "nan_count",
                "inf_count", "shift", "shifted_mean", "m3", "m4", "skewness", "kurtosis",
                "zero_count", "min_count", "max_count")
# Fields written from the histogram's quantiles, recomputed (not read) when a file is loaded.
QUANTILE_FIELDS = ("quantiles", "quantile_levels")
# Values of a long flat list of whole numbers turned into JSON text at once.
JSON_RUN = 2**16
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _version() -> str:
    from bncli._version import __version__

    return __version__


def json_array(array: np.ndarray, nan_as: str = "string") -> object:
    """Nested lists of `array` for strict JSON: non-finite floats as ``"NaN"`` (or null with
    `nan_as` ``null``), ``"Infinity"`` and ``"-Infinity"``."""
    values = array.tolist()
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        values = _to_json_values(values, nan_as)
    return values


def _to_json_values(value: object, nan_as: str = "string") -> object:
    if isinstance(value, list):
        return [_to_json_values(item, nan_as) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return None if nan_as == "null" else "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _from_json_values(value: object, name: str, key: str) -> object:
    if isinstance(value, list):
        return [_from_json_values(item, name, key) for item in value]
    if value is None:  # written with NaN as null
        return math.nan
    if isinstance(value, str):
        if value in _NONFINITE:
            return _NONFINITE[value]
        raise StatsFileError(f"{name}: {key} holds the string {value!r}, not a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StatsFileError(f"{name}: {key} holds {value!r}, not a number")
    return value


def _numbers(value: ArrayLike, integers: bool) -> np.ndarray:
    """The array of a field: float64, or with `integers` (the extremes) int64 or uint64
    where every value is a whole number of an integer type (exact past 2**53)."""
    if integers:
        array = np.asarray(value)
        if array.dtype.kind in "iu":
            return array.astype(extreme_dtype(array.dtype))
    return np.asarray(value, dtype=np.float64)


def _array_keys(document: dict) -> list:
    """The keys of a document that hold per-channel arrays: the known ones, and any other
    key that a registered partial kind stores."""
    return [key for key, value in document.items() if isinstance(value, list) and key not in (
        "inputs", "axes", "channel_shape", "partials", "findings")]


def dumps(statistics: Statistics) -> str:
    """Return the strict JSON text of a statistics document (with a final newline)."""
    return "".join(iter_json(statistics))


def iter_json(statistics: Statistics, *, indent: int | None = None,
              nan_as: str = "string") -> Iterator[str]:
    """Yield the strict JSON text of a statistics document in parts, one field at a time,
    so that a document of millions of channels is never held whole as text or lists.

    Parameters
    ----------
    statistics : Statistics
    indent : int, optional
        Indent nested values by this many spaces, one field per line (default: one line).
    nan_as : str
        ``string`` (``"NaN"``, read back exactly) or ``null`` (for jq and pandas); infinities
        are ``"Infinity"`` and ``"-Infinity"`` either way.
    """
    encode = json.JSONEncoder(allow_nan=False, indent=indent).encode
    if indent is None:
        first, separator, close = "{", ", ", "}\n"
    else:
        pad = " " * indent
        first, separator, close = "{\n" + pad, ",\n" + pad, "\n}\n"

    def field(key, value):
        text = encode(value)
        return f"{encode(key)}: {text if indent is None else text.replace(chr(10), chr(10) + pad)}"

    lead = first
    for key, value in document_meta(statistics).items():
        yield lead + field(key, value)
        lead = separator
    for key, array in document_arrays(statistics).items():
        if array.ndim == 1 and array.dtype.kind in "iu" and array.size > JSON_RUN:
            # a long flat list of counts (a histogram's): written a run at a time
            yield lead + f"{encode(key)}: ["
            for start in range(0, array.size, JSON_RUN):
                yield (", " if start else "") + ", ".join(
                    map(str, array[start:start + JSON_RUN].tolist()))
            yield "]"
            continue
        yield lead + field(key, json_array(array, nan_as))
    quantiles = quantile_document(statistics, nan_as)
    if quantiles is not None:
        yield lead + field("quantiles", quantiles)
    yield close


def write(statistics: Statistics, stream: BinaryIO, *, fmt: str, indent: int | None = None,
          nan_as: str = "string") -> None:
    """Write statistics to an open binary stream as ``json`` or ``npz`` (see
    :func:`iter_json` for `indent` and `nan_as`)."""
    if fmt == "json":
        for part in iter_json(statistics, indent=indent, nan_as=nan_as):
            stream.write(part.encode())
        return
    np.savez(stream, meta=np.array(json.dumps(document_meta(statistics), allow_nan=False)),
             **document_arrays(statistics), **quantile_arrays(statistics))


def format_for_path(path: str) -> str:
    """Return ``json`` or ``npz`` from a file name."""
    lowered = path.lower()
    if lowered.endswith(".npz"):
        return "npz"
    if lowered.endswith(".json"):
        return "json"
    raise StatsFileError(f"{path}: a statistics file must end in .json or .npz")


def _require(document: dict, key: str, kind: type[_T], name: str) -> _T:
    if key not in document:
        raise StatsFileError(f"{name}: missing field {key!r}")
    value = document[key]
    if type(value) is not kind:
        raise StatsFileError(f"{name}: field {key!r} is {value!r:.60}, of the wrong type")
    return value


# Every field checked in the order of the document, each with its message: kept whole.
def from_document(document: object, arrays: dict, name: str) -> Statistics:
    """Build :class:`Statistics` from a parsed document and its arrays, validating both."""
    if not isinstance(document, dict):
        raise StatsFileError(f"{name}: not a statistics document (top level is not an object)")
    schema = document.get("schema")
    if schema not in SCHEMAS:
        raise StatsFileError(f"{name}: schema is {schema!r}, expected {SCHEMA!r}")
    axes = _require(document, "axes", list, name)
    channel_shape = _require(document, "channel_shape", list, name)
    # optional, for files another tool wrote with only mean and variance
    ddof = _require(document, "ddof", int, name) if "ddof" in document else 0
    ignore_nan = (_require(document, "ignore_nan", bool, name) if "ignore_nan" in document
                  else False)
    inputs = document.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(item, dict) for item in inputs):
        raise StatsFileError(f"{name}: field 'inputs' is {inputs!r:.60}, not a list of objects")
    keepdims = document.get("keepdims", False)
    if type(keepdims) is not bool:
        raise StatsFileError(f"{name}: field 'keepdims' is {keepdims!r:.60}, not true or false")
    for key, values in (("axes", axes), ("channel_shape", channel_shape)):
        if not all(type(item) is int and item >= 0 for item in values):
            raise StatsFileError(f"{name}: {key} {values!r:.60} is not a list of sizes")
    if ddof < 0:
        raise StatsFileError(f"{name}: ddof {ddof} is negative")
    rank = len(axes) + len(channel_shape)
    if sorted(set(axes)) != axes:
        raise StatsFileError(f"{name}: axes {axes!r} are not distinct and in increasing order")
    if axes and axes[-1] >= rank:
        raise StatsFileError(f"{name}: axes {axes!r} do not fit a rank-{rank} input")
    statistics = Statistics(inputs=inputs, axes=tuple(axes), channel_shape=tuple(channel_shape),
                            partials=None, ddof=ddof, keepdims=bool(keepdims),
                            ignore_nan=ignore_nan)
    loaded = {}
    flat_keys = {key for kind in KINDS.values() for key in kind.FLAT}
    for key, value in arrays.items():
        if key in QUANTILE_FIELDS:  # recomputed from the histogram
            continue
        if key in flat_keys:
            try:
                loaded[key] = np.asarray(value).reshape(-1)
            except (TypeError, ValueError):
                raise StatsFileError(f"{name}: {key} is not a list of numbers") from None
            if loaded[key].dtype.kind not in "biuf":
                raise StatsFileError(f"{name}: {key} is not a list of numbers")
            continue
        if isinstance(value, np.ndarray) and value.dtype.kind not in "biuf":
            raise StatsFileError(f"{name}: {key} holds {value.dtype.name} values, not real "
                                 "numbers")
        try:
            array = _numbers(value, integers=key in ("min", "max"))
        except (TypeError, ValueError, OverflowError):
            raise StatsFileError(f"{name}: {key} is not an array of numbers in range") from None
        if array.shape[:len(channel_shape)] != tuple(channel_shape) and array.shape[
                :rank] != statistics.array_shape and not (array.shape == () and not channel_shape):
            raise StatsFileError(
                f"{name}: {key} has shape {list(array.shape)}, expected channel_shape "
                f"{channel_shape}")
        extra = array.shape[rank:] if statistics.keepdims and array.shape[
            :rank] == statistics.array_shape else array.shape[len(channel_shape):]
        loaded[key] = array.reshape(tuple(channel_shape) + tuple(extra))
    kinds = document.get("partials", ["moments"])
    if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
        raise StatsFileError(f"{name}: partials {kinds!r:.60} is not a list of names")
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise StatsFileError(f"{name}: holds statistics of kind {unknown[0]!r}, which this "
                             "version of bn does not know")
    order = 4 if "m3" in loaded and "m4" in loaded else 2
    options = {kind: document[kind] for kind in kinds if isinstance(document.get(kind), dict)}
    reduction = Reduction(kinds=tuple(kinds), ignore_nan=ignore_nan, order=order,
                          options=options)
    members = {}
    for kind in reduction.classes():
        part = kind.from_file(loaded, tuple(channel_shape), reduction, name)
        if part is not None:
            members[kind.name] = part
    if "moments" in members:
        statistics.partials = Partials(members)
        statistics.order = order
    elif not ("mean" in loaded and "variance" in loaded):
        raise StatsFileError(f"{name}: holds neither count and m2 nor mean and variance")
    for key in ("mean", "variance"):
        if key in loaded:
            if loaded[key].shape != tuple(channel_shape):
                raise StatsFileError(f"{name}: {key} has shape {list(loaded[key].shape)}, "
                                     f"expected channel_shape {channel_shape}")
            statistics.given[key] = loaded[key]
    if "variance" in statistics.given and np.any(statistics.given["variance"] < 0):
        raise StatsFileError(f"{name}: variance holds a negative value")
    return statistics


# Statistics files hold at most this many channels; a file bigger than such a file can be
# (about 24 arrays of numbers written in at most 32 characters each) is refused unread.
MAX_CHANNELS = 2**22
MAX_FILE_BYTES = MAX_CHANNELS * 24 * 32


def _check_bounds(path: str) -> None:
    """Refuse what is not a regular file, or is larger than any statistics file can be."""
    import os

    try:
        with open_file(path, path) as stream:
            size = os.fstat(stream.fileno()).st_size
    except InputError as exc:
        raise StatsFileError(str(exc)) from None
    if size > MAX_FILE_BYTES:
        raise StatsFileError(f"{path}: is {size:,} bytes, more than a statistics file "
                             f"of {MAX_CHANNELS:,} channels can be")


# The widest histogram window of one channel and sign: every finite bucket of the finest grid.
MAX_HISTOGRAM_WIDTH = 2047 << 13
# The most bytes of a .npz statistics file's ``meta`` (its JSON fields, not its arrays).
MAX_META_BYTES = 2**22


def _load_npz(path: str) -> tuple[object, dict]:
    """The ``meta`` document and the arrays of a ``.npz`` statistics file, each array's
    declared size checked against what the channels and the histogram grid justify before
    it is inflated: the channel arrays hold a few values per channel, the histograms' counts
    exactly what their lengths add up to."""
    from bncli.io import npz

    members = npz.directory(path, path)
    if "meta" not in members:
        raise StatsFileError(f"{path}: not a statistics file: it has no 'meta' member "
                             "(an archive of arrays is an INPUT, as FILE.npz:MEMBER)")
    headers = {key: npz.member_header(path, member, f"{path}:{key}")
               for key, member in members.items()}
    meta = headers["meta"]
    if meta.dtype.kind != "U" or meta.shape != () or meta.data_bytes > MAX_META_BYTES:
        raise StatsFileError(f"{path}: meta is not one string of at most "
                             f"{MAX_META_BYTES:,} bytes")
    with np.load(path, allow_pickle=False) as archive:
        try:
            document = json.loads(str(archive["meta"]))
        except ValueError as exc:
            raise StatsFileError(f"{path}: meta is not valid JSON ({exc})") from None
        shape = document.get("channel_shape") if isinstance(document, dict) else None
        if not isinstance(shape, list) or not all(type(dim) is int and 0 <= dim <= MAX_CHANNELS
                                                  for dim in shape):
            raise StatsFileError(f"{path}: channel_shape {shape!r:.60} is not a list of sizes")
        channels = math.prod(shape)
        if channels > MAX_CHANNELS:
            raise StatsFileError(f"{path}: declares {channels:,} channels, more than the "
                                 f"{MAX_CHANNELS:,} a statistics file may hold")
        histogram = document.get("histogram")
        levels = histogram.get("levels") if isinstance(histogram, dict) else None
        per_channel = max(8, len(levels) if isinstance(levels, list) else 0)
        arrays = {}
        counts = [key for key in headers if key.startswith("histogram_")
                  and key.endswith("_counts")]
        for key in [key for key in headers if key != "meta" and key not in counts]:
            elements = math.prod(headers[key].shape)
            if elements > max(channels, 1) * per_channel:
                raise StatsFileError(f"{path}: {key} declares {elements:,} values, more than "
                                     f"{per_channel} for each of its {channels:,} channels")
            arrays[key] = archive[key]
        for key in counts:
            lengths = arrays.get(key[:-len("counts")] + "length")
            if isinstance(lengths, np.ndarray) and lengths.size and lengths.dtype.kind in "iu" \
                    and int(lengths.max()) > MAX_HISTOGRAM_WIDTH:
                raise StatsFileError(f"{path}: {key[:-len('counts')]}length holds a window "
                                     f"wider than the {MAX_HISTOGRAM_WIDTH:,} buckets of the "
                                     "finest grid")
            declared = math.prod(headers[key].shape)
            stored = int(np.sum(lengths, dtype=np.int64)) if isinstance(
                lengths, np.ndarray) and lengths.dtype.kind in "iu" else -1
            if declared != stored:
                raise StatsFileError(f"{path}: {key} declares {declared:,} counts where its "
                                     "lengths add up to "
                                     + (f"{stored:,}" if stored >= 0 else "no number"))
            arrays[key] = archive[key]
    return document, arrays


def load(path: str) -> Statistics:
    """Read a ``.json`` or ``.npz`` statistics file.

    Parameters
    ----------
    path : str

    Returns
    -------
    Statistics
    """
    import zipfile
    import zlib

    fmt = format_for_path(path)
    try:
        _check_bounds(path)
        if fmt == "json":
            with open_file(path, path) as stream:
                text = stream.read(MAX_FILE_BYTES + 1)
            if len(text) > MAX_FILE_BYTES:  # grew since it was checked
                raise StatsFileError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes")
            try:
                document = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise StatsFileError(f"{path}: not valid JSON ({exc})") from None
            arrays = {}
            if isinstance(document, dict):
                try:
                    arrays = {key: _from_json_values(document[key], path, key)
                              for key in _array_keys(document)}
                except RecursionError:
                    raise StatsFileError(f"{path}: arrays nested too deeply") from None
            return from_document(document, arrays, path)
        try:
            document, arrays = _load_npz(path)
        except InputError as exc:
            raise StatsFileError(str(exc)) from None
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, NotImplementedError,
                RuntimeError, zlib.error) as exc:  # zipfile's, for what it does not read
            raise StatsFileError(f"{path}: not a valid .npz statistics file ({exc})") from None
        return from_document(document, arrays, path)
    except FileNotFoundError:
        raise StatsFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise StatsFileError(f"{path}: is a directory") from None
    except OSError as exc:
        raise StatsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def document_meta(statistics: Statistics) -> dict:
    """The document's fields that are not per-channel arrays."""
    return {
        "schema": SCHEMA,
        "bn_version": _version(),
        "inputs": statistics.inputs,
        "axes": list(statistics.axes),
        "channel_shape": list(statistics.channel_shape),
        "ddof": statistics.ddof,
        "ignore_nan": statistics.ignore_nan,
        "keepdims": statistics.keepdims,
        "partials": [] if statistics.partials is None else list(statistics.partials.members),
        **{name: meta for name, part in (
            {} if statistics.partials is None else statistics.partials.members).items()
           if (meta := part.file_meta()) is not None},
        "findings": findings_document(statistics.findings(), tuple(statistics.channel_shape)),
    }

def document_arrays(statistics: Statistics) -> dict:
    """The per-channel arrays of the document, in the written shape (and the flat
    arrays of partials that store lists of their own length)."""
    arrays = dict(statistics.values())
    arrays.pop("quantiles", None)
    flat = {}
    if statistics.partials is not None:
        for part in statistics.partials.members.values():
            stored = part.file_arrays()
            flat.update({key: stored.pop(key) for key in part.FLAT if key in stored})
            arrays.update(stored)
    shaped = {key: np.asarray(array).reshape(statistics.array_shape + np.shape(array)[
        len(statistics.channel_shape):]) for key, array in arrays.items()}
    return {**shaped, **flat}

def quantile_document(statistics: Statistics, nan_as: str = "string") -> dict | None:
    """The document's ``quantiles`` field, ``{"levels": [...], "values": [...]}``, or
    None without a histogram."""
    quantiles = quantile_arrays(statistics)
    if not quantiles:
        return None
    return {"levels": quantiles["quantile_levels"].tolist(),
            "values": json_array(quantiles["quantiles"], nan_as)}

def quantile_arrays(statistics: Statistics) -> dict:
    """``quantile_levels`` and ``quantiles`` (one array of the written shape per level),
    or nothing without a histogram."""
    if statistics.histogram is None:
        return {}
    values = np.moveaxis(statistics.values()["quantiles"], -1, 0)
    return {"quantile_levels": np.array(statistics.histogram.levels, np.float64),
            "quantiles": values.reshape((len(values),) + statistics.array_shape)}

def to_document(statistics: Statistics) -> dict:
    """The JSON-ready document of `statistics` (non-finite floats as strings)."""
    document = document_meta(statistics)
    for key, array in document_arrays(statistics).items():
        document[key] = json_array(array)
    quantiles = quantile_document(statistics)
    if quantiles is not None:
        document["quantiles"] = quantiles
    return document


def drift_document(result: Drift, base: Statistics, new: Statistics,
                   nan_as: str = "string") -> dict:
    """The JSON-ready document of a drift (channel lists as flat indices); NaN written as
    `nan_as` says (see :func:`json_array`)."""
    shape = tuple(result.channel_shape)

    def arrays(values):
        return json_array(np.asarray(values, np.float64).reshape(shape), nan_as)

    document = {
        "schema": "bncli.diff/1",
        "base": base.inputs, "new": new.inputs,
        "axes": list(base.axes), "channel_shape": list(shape),
        "max_shift": result.max_shift, "max_psi": result.max_psi,
        "mean_shift": arrays(result.mean_shift), "std_ratio": arrays(result.std_ratio),
    }
    if result.psi is not None:
        document["psi"] = arrays(result.psi)
        document["outside"] = arrays(result.outside)
    document["drift"] = np.flatnonzero(result.drifted).tolist()
    document["became"] = {name: np.flatnonzero(mask).tolist()
                          for name, mask in result.became.items()}
    return document
