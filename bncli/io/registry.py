"""Every format bn reads, in the order they are recognised, and the dispatch to them.

This is the only module that names every format. Adding a format is its own module (an
object ``FORMAT`` with ``name``, ``suffixes``, ``matches``, ``open`` and ``entries``, see
:class:`bncli.io.source.Format`), one line in :data:`FORMATS` and its tests. A format's
module is imported when a file is first tried against it: ``bn stats x.npy`` imports none
of the others.

``FILE:NAME`` names an entry of a container. An argument that exists as a path is that
path (a file whose name holds ``:``); else the text is split after a container's name
(``.h5``, ``.npz``, ``.safetensors``, ``.zarr``...) or, for an existing HDF5 file of any
name, at the first ``:`` that ends that file's path.
"""

from __future__ import annotations

import functools
import importlib
import os
import re

from bncli.io import npy
from bncli.io.source import Format, InputSpec, OpenOptions, Source, is_stream, sniff

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
    """Archives of named arrays: FILE.npz[:member], FILE.safetensors[:tensor],
    STORE.zarr[:array] (HDF5's names have a pattern of their own)."""
    suffixes = [suffix for fmt in formats() if fmt.name != "hdf5" for suffix in fmt.suffixes]
    return re.compile(r"^(?P<path>.*?\.(?:" + "|".join(map(re.escape, suffixes))
                      + r"))/*(?::(?P<dataset>.*))?$", re.IGNORECASE)


def parse_input(text: str) -> InputSpec:
    """Split ``file.h5:/group/dataset``; other text is a path (``-`` is stdin)."""
    if text == "-" or os.path.lexists(text):
        return InputSpec(text)
    from bncli.io import hdf5

    for suffix in (hdf5.HDF5_SUFFIX, _container_suffix()):
        match = suffix.match(text)
        if match and match.group("dataset") is not None:
            return InputSpec(match.group("path"), match.group("dataset") or None)
    return InputSpec(*(hdf5.split_hdf5_file(text) or (text,)))


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
