"""Every format bn reads, in the order they are recognised, and the dispatch to them.

This is the only module that names every format. Adding a format is its own module (an
object ``FORMAT`` with ``name``, ``suffixes``, ``matches``, ``open`` and ``entries``, see
:class:`bncli.io.source.Format`), one line in :data:`FORMATS` and its tests. A format's
module is imported when a file is first tried against it: ``bn stats x.npy`` imports none
of the others.

``FILE:NAME`` names an entry of a container (:func:`parse_input`): an argument that exists
as a path is that path; else the text is split at the first ``:`` whose left side is an
existing file (or store directory), else at the first ``:`` that follows a container's
suffix (``.h5``, ``.npz``, ``.safetensors``, ``.zarr``...). Everything after that ``:`` is
the entry's name as it is, ``:`` and ``/`` included.
"""

from __future__ import annotations

import functools
import importlib
import os
import re

from bncli.errors import InputError
from bncli.io import npy
from bncli.io.source import (
    Format,
    InputSpec,
    OpenOptions,
    Source,
    foreign_format,
    is_stream,
    sniff,
    unknown_format,
)

# The modules of bncli.io tried in this order on a file's first bytes (a zarr store, which
# may be a directory, first).
FORMATS = ("zarr", "hdf5", "npz", "safetensors")
# What a file is when none of them claims it.
DEFAULT: Format = npy.FORMAT


@functools.cache
def formats() -> tuple[Format, ...]:
    """The formats of :data:`FORMATS`, imported."""
    return tuple(importlib.import_module(f"bncli.io.{name}").FORMAT for name in FORMATS)


@functools.cache
def _container_suffix() -> re.Pattern:
    """The names of containers of named arrays (HDF5's included), ending a path."""
    suffixes = [suffix for fmt in formats() for suffix in fmt.suffixes]
    return re.compile(r"\.(?:" + "|".join(map(re.escape, suffixes)) + r")/*$", re.IGNORECASE)


def _is_container(path: str) -> bool:
    """An existing file, or a directory named as a store, that a ``:NAME`` may follow."""
    return os.path.isfile(path) or (os.path.isdir(path)
                                    and _container_suffix().search(path) is not None)


def parse_input(text: str) -> InputSpec:
    """Split ``FILE:NAME`` into the file and the entry it names.

    The text is a path when it exists (or is ``-``, stdin). Else it is split at the first
    ``:`` whose left side is an existing file or store, else at the first ``:`` that follows
    a container's suffix; the name is everything after that ``:``, verbatim, so
    ``model.safetensors:a:b`` names the tensor ``a:b`` and ``x.h5:/g/a:b`` the dataset
    ``/g/a:b``. An empty name (``x.h5:``) is no name.
    """
    if text == "-" or os.path.lexists(text):
        return InputSpec(text)
    colons = [index for index, char in enumerate(text) if char == ":"]
    index = next((i for i in colons if _is_container(text[:i])), None)
    if index is None:
        index = next((i for i in colons if _container_suffix().search(text[:i])), None)
    if index is None:
        return InputSpec(text)
    path = text[:index].rstrip("/") or text[:index]
    return InputSpec(path, text[index + 1:] or None)


def _by_content(spec: InputSpec) -> tuple[Format | None, bytes]:
    """The format whose content the file has, and the file's first bytes."""
    head = None
    if not os.path.isdir(spec.path):  # a directory (a zarr store) has no first bytes
        head = sniff(spec.path, spec.display)
        if (spec.dataset is None and spec.path.lower().endswith(".npy")
                and DEFAULT.matches(spec.path, head)):
            return DEFAULT, head  # the common case: no other format claims such a file
    zarr, *by_signature = formats()
    if zarr.matches(spec.path, b""):
        return zarr, b""
    if head is None:  # a directory that is no zarr store: sniff says so
        head = sniff(spec.path, spec.display)
    return next((fmt for fmt in by_signature if fmt.matches(spec.path, head)), None), head


def recognise(spec: InputSpec) -> Format:
    """The format of a file (not a stream): by its content, else by its name."""
    found, head = _by_content(spec)
    if found is not None:
        return found
    if foreign_format(head) is not None:  # a format bn does not read, whatever its name
        raise InputError(unknown_format(spec.display, head))
    if spec.dataset is not None and DEFAULT.matches(spec.path, head):
        raise InputError(f"{spec.display}: {spec.path} is a .npy file, which holds one array "
                         "and no named entries; give it without ':NAME'")
    from bncli.io import hdf5

    if spec.dataset is not None or (hdf5.HDF5_SUFFIX.match(spec.path)
                                    and not DEFAULT.matches(spec.path, head)):
        return hdf5.FORMAT  # a named entry or an HDF5 name: HDF5 says what is wrong with it
    return DEFAULT


def open_source(spec: InputSpec | str, options: OpenOptions | None = None) -> Source:
    """Open an input and check what it declares.

    Parameters
    ----------
    spec : InputSpec or str
        ``file.npy``, ``file.h5[:/dataset]``, ``archive.npz:member``... or ``-``.
    options : OpenOptions, optional

    Returns
    -------
    Source
    """
    if isinstance(spec, str):
        spec = parse_input(spec)
    if spec.path == "-":
        return npy.open_stdin()
    if spec.dataset is None and is_stream(spec.path):
        # a FIFO or <(process substitution): read once, in order, as stdin is; sniffing its
        # first bytes would consume them
        return npy.open_npy(spec.path, spec.display, seekable=False)
    return recognise(spec).open(spec, options or OpenOptions())


def list_entries(spec: InputSpec) -> list | None:
    """Every array of a container given without a name (a list of
    :class:`~bncli.io.source.Entry`), or None for an input that is one array."""
    if spec.path == "-" or spec.dataset is not None or is_stream(spec.path):
        return None
    found, _ = _by_content(spec)
    return None if found is None else found.entries(spec.path, spec.display)
