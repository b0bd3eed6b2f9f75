"""Statistics in the form each framework takes them, with its conventions.

- ``torchvision``: ``mean`` and ``std`` for ``transforms.Normalize``, which sees images
  already scaled to [0, 1]: statistics of integer images are divided by the type's maximum
  (255 for uint8).
- ``torch-bn``: the state of one ``BatchNorm`` layer: ``weight`` 1, ``bias`` 0,
  ``running_mean``, ``running_var`` (PyTorch keeps the *unbiased* variance, ddof 1) and
  ``num_batches_tracked``, as float32 (int64 for the counter) for a safetensors file.
- ``keras``: ``mean`` and ``variance`` (population, ddof 0) shaped for
  ``keras.layers.Normalization(axis=..., mean=..., variance=...)``: the kept axes of the
  input, as its ``axis``.

Each function takes a :class:`~bncli.core.statistics.Statistics` and returns plain values; the
``*_snippet`` functions give Python source that can be pasted.
"""

from __future__ import annotations

import math

import numpy as np

from bncli.core.statistics import Statistics
from bncli.errors import StatsFileError

FORMATS = ("torchvision", "torch-bn", "keras", "json", "npz")


def _population(statistics: Statistics, name: str) -> tuple:
    """``(mean, population variance, count)`` of every channel."""
    values = statistics.values()
    if statistics.moments is None:
        if statistics.ddof != 0:
            raise StatsFileError(f"{name}: gives mean and variance with ddof "
                                 f"{statistics.ddof} but no counts to undo it")
        return values["mean"], values["variance"], None
    count = values["count"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return values["mean"], values["m2"] / count, count


def integer_maximum(statistics: Statistics) -> int | None:
    """The largest value of the inputs' integer type (255 for uint8), or None for floats."""
    kinds = {np.dtype(entry["dtype"]) for entry in statistics.inputs
             if entry.get("dtype") in np.sctypeDict}
    integers = [dtype for dtype in kinds if dtype.kind in "iu"]
    if not integers or len(kinds) != len(integers):
        return None
    return max(int(np.iinfo(dtype).max) for dtype in integers)


def torchvision(statistics: Statistics, *, rescale: bool = True,
                name: str = "statistics") -> dict:
    """``mean`` and ``std`` lists for ``torchvision.transforms.Normalize``.

    Parameters
    ----------
    statistics : Statistics
        Of one channel axis (images reduced over all axes but the colour one).
    rescale : bool
        Divide statistics of integer inputs by the type's maximum, as ``ToTensor`` and
        ``ConvertImageDtype`` scale images to [0, 1].
    name : str
        For messages.

    Returns
    -------
    dict
        ``mean``, ``std`` (lists of float) and ``divided_by`` (the divisor, or 1).
    """
    _one_axis(statistics, name, "torchvision")
    values = statistics.values()
    divisor = (integer_maximum(statistics) or 1) if rescale else 1
    return {"mean": (values["mean"] / divisor).tolist(),
            "std": (values["std"] / divisor).tolist(), "divided_by": divisor}


def torch_batchnorm(statistics: Statistics, *, prefix: str = "",
                    name: str = "statistics") -> dict:
    """The ``state_dict`` of one ``torch.nn.BatchNorm{1,2,3}d`` of the channel count.

    Returns
    -------
    dict of str to ndarray
        ``weight`` (ones), ``bias`` (zeros), ``running_mean``, ``running_var`` (unbiased,
        ddof 1, as PyTorch keeps it) as float32, and ``num_batches_tracked`` (int64 0, as a
        new layer has), each key led by `prefix`.
    """
    _one_axis(statistics, name, "torch-bn")
    mean, population, count = _population(statistics, name)
    if count is None:
        raise StatsFileError(f"{name}: has no counts; PyTorch's running_var is the unbiased "
                             "variance, which needs them")
    with np.errstate(invalid="ignore", divide="ignore"):
        unbiased = population * count / (count - 1)
    channels = mean.size
    state = {"weight": np.ones(channels, np.float32), "bias": np.zeros(channels, np.float32),
             "running_mean": mean.astype(np.float32).reshape(-1),
             "running_var": unbiased.astype(np.float32).reshape(-1),
             "num_batches_tracked": np.array(0, np.int64)}
    return {prefix + key: value for key, value in state.items()}


def keras(statistics: Statistics, *, name: str = "statistics") -> dict:
    """``axis``, ``mean`` and ``variance`` for ``keras.layers.Normalization``.

    Returns
    -------
    dict
        ``axis``: the input's kept axes (negative, counted from the end, as Keras takes
        them for inputs with any batch size); ``mean`` and ``variance`` (population): nested
        lists of the channel shape.
    """
    mean, population, _ = _population(statistics, name)
    rank = statistics.rank
    kept = [axis - rank for axis in range(rank) if axis not in statistics.axes]
    return {"axis": kept[0] if len(kept) == 1 else kept, "mean": mean.tolist(),
            "variance": population.tolist()}


def _one_axis(statistics: Statistics, name: str, target: str) -> None:
    if len(statistics.channel_shape) != 1:
        raise StatsFileError(f"{name}: has channel shape {list(statistics.channel_shape)}; "
                             f"{target} takes one channel axis")


def _number(value: float) -> str:
    """A float as Python source that runs: ``float("nan")`` and ``float("inf")`` where
    ``repr`` would give the bare names ``nan`` and ``inf``."""
    value = float(value)
    return repr(value) if math.isfinite(value) else f'float("{value!r}")'


def _numbers(values: list) -> str:
    return "[" + ", ".join(map(_number, values)) + "]"


def torchvision_snippet(exported: dict) -> str:
    """Python source of the ``Normalize`` transform."""
    note = (f"  # statistics divided by {exported['divided_by']}: inputs scaled to [0, 1]"
            if exported["divided_by"] != 1 else "")
    return ("from torchvision import transforms\n\n"
            f"normalize = transforms.Normalize(\n    mean={_numbers(exported['mean'])},\n"
            f"    std={_numbers(exported['std'])},\n){note}\n")


def keras_snippet(exported: dict) -> str:
    """Python source of the ``Normalization`` layer."""
    return ("import numpy as np\nimport keras\n\n"
            f"normalization = keras.layers.Normalization(\n    axis={exported['axis']!r},\n"
            f"    mean=np.array({_numbers(exported['mean'])}),\n"
            f"    variance=np.array({_numbers(exported['variance'])}),\n)\n")
