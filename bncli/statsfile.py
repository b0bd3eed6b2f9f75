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
import zipfile
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import StatsFileError
from .reduction import Moments

SCHEMA = "bncli.stats/2"
SCHEMAS = ("bncli.stats/1", SCHEMA)  # the versions read
ARRAY_FIELDS = ("count", "mean", "variance", "std", "min", "max", "m2", "nan_count", "inf_count",
                "shift", "shifted_mean")
INT_FIELDS = ("count", "nan_count", "inf_count")
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@dataclass
class Statistics:
    """Moments of a dataset, with the axes, inputs and options that produced them.

    Attributes
    ----------
    inputs : list of dict
        ``path``, ``dataset``, ``shape``, ``dtype`` of each input.
    axes : tuple of int
        Reduced axes (non-negative).
    channel_shape : tuple of int
    moments : Moments
        Arrays of shape `channel_shape`.
    ddof : int
    keepdims : bool
        Whether arrays are written with the input's rank.
    """

    inputs: list
    axes: tuple
    channel_shape: tuple
    moments: Moments
    ddof: int = 0
    keepdims: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def ignore_nan(self) -> bool:
        """Whether NaNs were left out."""
        return self.moments.ignore_nan

    @property
    def rank(self) -> int:
        """Rank of the inputs."""
        return len(self.channel_shape) + len(self.axes)

    @property
    def array_shape(self) -> tuple:
        """Shape of the arrays as written: `channel_shape`, or keepdims-shaped."""
        if not self.keepdims:
            return tuple(self.channel_shape)
        dims = iter(self.channel_shape)
        return tuple(1 if axis in self.axes else next(dims) for axis in range(self.rank))

    def values(self) -> dict:
        """Return the finalized statistics (see :meth:`Moments.finalize`), channel-shaped."""
        return self.moments.finalize(self.ddof)

    def merge(self, other: Statistics, name: str = "statistics") -> Statistics:
        """Combine with the statistics of other data of the same channels, axes and ddof."""
        for label, mine, theirs in (
            ("channel shape", tuple(self.channel_shape), tuple(other.channel_shape)),
            ("axes", tuple(self.axes), tuple(other.axes)),
            ("ddof", self.ddof, other.ddof),
            ("ignore_nan", self.ignore_nan, other.ignore_nan),
        ):
            if mine != theirs:
                raise StatsFileError(f"{name}: {label} {theirs!r} does not match {mine!r}")
        return replace(self, inputs=self.inputs + other.inputs,
                       moments=self.moments.merge(other.moments))

    def meta(self) -> dict:
        """Return the document's fields that are not per-channel arrays."""
        document = {
            "schema": SCHEMA,
            "inputs": self.inputs,
            "axes": list(self.axes),
            "channel_shape": list(self.channel_shape),
            "ddof": self.ddof,
            "ignore_nan": self.ignore_nan,
            "keepdims": self.keepdims,
        }
        document.update(self.extra)
        return document

    def to_document(self) -> dict:
        """Return the JSON-ready document (non-finite floats as strings)."""
        document = self.meta()
        for key, array in self.values().items():
            document[key] = _to_json_values(array.reshape(self.array_shape).tolist())
        return document


def _to_json_values(value):
    if isinstance(value, list):
        return [_to_json_values(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _from_json_values(value, name: str, key: str):
    if isinstance(value, list):
        return [_from_json_values(item, name, key) for item in value]
    if isinstance(value, str):
        if value in _NONFINITE:
            return _NONFINITE[value]
        raise StatsFileError(f"{name}: {key} holds the string {value!r}, not a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StatsFileError(f"{name}: {key} holds {value!r}, not a number")
    return value


def dumps(statistics: Statistics) -> str:
    """Return the strict JSON text of a statistics document (with a final newline)."""
    return json.dumps(statistics.to_document(), allow_nan=False, indent=None) + "\n"


def write(statistics: Statistics, stream, *, fmt: str) -> None:
    """Write statistics to an open binary stream as ``json`` or ``npz``."""
    if fmt == "json":
        stream.write(dumps(statistics).encode())
        return
    arrays = {key: array.reshape(statistics.array_shape)
              for key, array in statistics.values().items()}
    np.savez(stream, meta=np.array(json.dumps(statistics.meta(), allow_nan=False)), **arrays)


def format_for_path(path: str) -> str:
    """Return ``json`` or ``npz`` from a file name."""
    lowered = path.lower()
    if lowered.endswith(".npz"):
        return "npz"
    if lowered.endswith(".json"):
        return "json"
    raise StatsFileError(f"{path}: a statistics file must end in .json or .npz")


def _require(document: dict, key: str, kind: type, name: str):
    if key not in document:
        raise StatsFileError(f"{name}: missing field {key!r}")
    value = document[key]
    if type(value) is not kind:
        raise StatsFileError(f"{name}: field {key!r} is {value!r:.60}, of the wrong type")
    return value


def from_document(document, arrays: dict, name: str) -> Statistics:
    """Build :class:`Statistics` from a parsed document and its arrays, validating both."""
    if not isinstance(document, dict):
        raise StatsFileError(f"{name}: not a statistics document (top level is not an object)")
    schema = document.get("schema")
    if schema not in SCHEMAS:
        raise StatsFileError(f"{name}: schema is {schema!r}, expected {SCHEMA!r}")
    axes = _require(document, "axes", list, name)
    channel_shape = _require(document, "channel_shape", list, name)
    ddof = _require(document, "ddof", int, name)
    ignore_nan = _require(document, "ignore_nan", bool, name)
    inputs = _require(document, "inputs", list, name)
    keepdims = document.get("keepdims", False)
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
                            moments=Moments.empty(channel_shape), ddof=ddof,
                            keepdims=bool(keepdims))
    loaded = {}
    shifted = "shift" in arrays and "shifted_mean" in arrays
    for key in ("count", "mean", "m2", "min", "max", "nan_count", "inf_count") + (
            ("shift", "shifted_mean") if shifted else ()):
        if key not in arrays:
            raise StatsFileError(f"{name}: missing field {key!r}")
        try:
            array = np.asarray(arrays[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise StatsFileError(f"{name}: {key} is not an array of numbers") from None
        if array.shape not in (tuple(channel_shape), statistics.array_shape, ()) or (
                array.shape == () and channel_shape):
            raise StatsFileError(
                f"{name}: {key} has shape {list(array.shape)}, expected channel_shape "
                f"{channel_shape}")
        array = array.reshape(channel_shape)
        if key in INT_FIELDS:
            if not np.all(np.isfinite(array)) or np.any(array != np.round(array)) or np.any(
                    array < 0):
                raise StatsFileError(f"{name}: {key} is not a list of counts")
            array = array.astype(np.int64)
        loaded[key] = array
    mean = loaded.pop("mean")
    if not shifted:  # centred on the mean as written
        finite = np.isfinite(mean)
        loaded["shift"] = np.where(finite, mean, 0.0)
        loaded["shifted_mean"] = np.where(finite, 0.0, mean)
    elif np.any(~np.isfinite(loaded["shift"])):
        raise StatsFileError(f"{name}: shift holds a value that is not finite")
    statistics.moments = Moments(ignore_nan=ignore_nan, **loaded)
    return statistics


def load(path: str) -> Statistics:
    """Read a ``.json`` or ``.npz`` statistics file.

    Parameters
    ----------
    path : str

    Returns
    -------
    Statistics
    """
    fmt = format_for_path(path)
    try:
        if fmt == "json":
            with open(path, "rb") as stream:
                text = stream.read()
            try:
                document = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise StatsFileError(f"{path}: not valid JSON ({exc})") from None
            arrays = {}
            if isinstance(document, dict):
                arrays = {key: _from_json_values(document[key], path, key)
                          for key in ARRAY_FIELDS if key in document}
            return from_document(document, arrays, path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise StatsFileError(f"{path}: not a valid .npz statistics file ({exc})") from None
        if "meta" not in arrays:
            raise StatsFileError(f"{path}: missing field 'meta'")
        try:
            document = json.loads(str(arrays.pop("meta")))
        except ValueError as exc:
            raise StatsFileError(f"{path}: meta is not valid JSON ({exc})") from None
        return from_document(document, arrays, path)
    except FileNotFoundError:
        raise StatsFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise StatsFileError(f"{path}: is a directory") from None
    except OSError as exc:
        raise StatsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
