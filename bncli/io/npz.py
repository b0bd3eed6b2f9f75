"""``.npz`` archives (``np.savez``, ``np.savez_compressed``): their members, checked.

An ``.npz`` file is a zip archive of ``.npy`` files. A member stored without compression is
a ``.npy`` file at an offset of the archive, read at any offset like one; a deflated member is
inflated as a stream, in order, in bounded memory. Before anything is read, the archive's
directory is checked against what a zip bomb does: members whose bytes overlap, sizes that
deflate cannot produce (more than :data:`MAX_DEFLATE_RATIO` times the compressed size),
members that lie outside the archive, encrypted members and other compression methods.
Members are never unpickled (the ``.npy`` reader refuses object arrays).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from bncli.errors import InputError
from bncli.io.npy import RawSource, npy_source
from bncli.io.source import Entry, InputSpec, OpenOptions, Source, choose, lazy_import, open_file

if TYPE_CHECKING:
    import zipfile
else:  # imported when an archive is first read, not by every command
    zipfile = lazy_import("zipfile")

if TYPE_CHECKING:
    from typing_extensions import Buffer

ZIP_SIGNATURE = b"PK\x03\x04"
EMPTY_ZIP_SIGNATURE = b"PK\x05\x06"  # an archive with no member

# deflate cannot expand data by more than about 1032:1; a directory claiming more lies
MAX_DEFLATE_RATIO = 1100
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


@dataclass(frozen=True)
class Member:
    """One ``.npy`` member of an archive.

    Attributes
    ----------
    name : str
        Without the ``.npy`` suffix, as ``np.load`` names it.
    filename : str
        As stored in the archive.
    compressed : bool
        Deflated (else stored).
    offset : int
        Byte offset of the member's data (its ``.npy`` header) in the archive.
    size : int
        Bytes of the ``.npy`` file it holds.
    stored_size : int
        Bytes it takes in the archive.
    """

    name: str
    filename: str
    compressed: bool
    offset: int
    size: int
    stored_size: int


def member_name(filename: str) -> str:
    """The name ``np.load`` gives a member: its file name without ``.npy``."""
    return filename[:-4] if filename.endswith(".npy") else filename


def read_members(stream: BinaryIO, size: int, name: str) -> dict:
    """Read and check the directory of an ``.npz`` archive.

    Parameters
    ----------
    stream : binary file object
        The archive, seekable.
    size : int
        Its size in bytes.
    name : str
        For messages.

    Returns
    -------
    dict
        Member name to :class:`Member`, in archive order.
    """
    try:
        with zipfile.ZipFile(stream) as archive:  # the directory only; `stream` stays open
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
            struct.error, UnicodeDecodeError, NotImplementedError) as exc:
        raise InputError(f"{name}: not a readable .npz (zip) archive: {exc}") from None
    members, spans = {}, []
    for info in infos:
        where = f"{name}: member {info.filename!r}"
        if not info.filename:
            raise InputError(f"{name}: a member has an empty name")
        if info.filename.endswith("/"):  # a directory
            continue
        if info.flag_bits & 0x1:
            raise InputError(f"{where}: is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InputError(f"{where}: compression method {info.compress_type} is not "
                             "stored or deflate")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise InputError(f"{where}: stored member declares {info.file_size} bytes but "
                             f"takes {info.compress_size}")
        if info.file_size > MAX_DEFLATE_RATIO * max(info.compress_size, 1):
            raise InputError(f"{where}: declares {info.file_size} bytes from "
                             f"{info.compress_size} compressed, more than deflate can "
                             "produce (a zip bomb?)")
        offset = _data_offset(stream, info, size, where)
        if offset + info.compress_size > size:
            raise InputError(f"{where}: its {info.compress_size} bytes run past the end of "
                             "the archive")
        spans.append((info.header_offset, offset + info.compress_size, info.filename))
        key = member_name(info.filename)
        if key in members:
            raise InputError(f"{where}: the archive holds {key!r} twice")
        members[key] = Member(key, info.filename, info.compress_type == zipfile.ZIP_DEFLATED,
                              offset, info.file_size, info.compress_size)
    spans.sort()
    for before, after in zip(spans, spans[1:]):
        if after[0] < before[1]:
            raise InputError(f"{name}: members {before[2]!r} and {after[2]!r} share bytes "
                             "(a zip bomb?)")
    return members


def _data_offset(stream: BinaryIO, info: zipfile.ZipInfo, size: int, where: str) -> int:
    """Where a member's data starts: after its local header, whose name and extra field
    lengths may differ from the directory's."""
    if not 0 <= info.header_offset <= size - _LOCAL_HEADER.size:
        raise InputError(f"{where}: local header lies outside the archive")
    stream.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(stream.read(_LOCAL_HEADER.size))
    if fields[0] != ZIP_SIGNATURE:
        raise InputError(f"{where}: no local header where the directory points")
    return info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]


class MemberStream:
    """A deflated member's ``.npy`` bytes, inflated as they are read (by :mod:`zipfile`,
    which stops at the size the directory declares and checks the CRC at the end), with its
    errors as :class:`InputError`."""

    def __init__(self, archive: zipfile.ZipFile, member: Member, name: str):
        self._archive = archive
        self._name = name
        try:
            self._stream = archive.open(member.filename)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError,
                NotImplementedError) as exc:
            raise InputError(f"{name}: cannot open the member: {exc}") from None

    def read(self, count: int = -1) -> bytes:
        """Up to `count` inflated bytes (fewer only at the end)."""
        try:
            return self._stream.read(count)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
            raise InputError(f"{self._name}: member data is corrupt: {exc}") from None

    def readinto(self, buffer: Buffer) -> int:
        """Fill `buffer` as far as the member goes; return the bytes read."""
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            data = self.read(min(len(view) - done, 1 << 24))
            if not data:
                break
            view[done:done + len(data)] = data
            done += len(data)
        return done

    def close(self) -> None:
        """Close the member and the archive."""
        self._stream.close()
        self._archive.close()


def open_member(path: str, member: Member, name: str) -> RawSource:
    """An ``.npz`` member: a stored one read at any offset, a deflated one as a stream."""
    details = {"archive_member": member.filename,
               "compression": "deflate" if member.compressed else None,
               "stored_bytes": member.stored_size}
    stream: MemberStream | BinaryIO
    if member.compressed:
        stream = MemberStream(zipfile.ZipFile(open_file(path, name)), member, name)
        seekable = False
    else:
        stream = open_file(path, name)
        stream.seek(member.offset)
        seekable = True
    try:
        if _peek_nested(stream, seekable, member):
            raise InputError(f"{name}: is a zip archive inside the archive, not a .npy "
                             "array; nested archives are refused")
        return npy_source(stream, name, path, seekable=seekable, base=member.offset
                          if seekable else 0, size=member.size, details=details,
                          dataset=member.name)
    except BaseException:
        stream.close()
        raise



def _peek_nested(stream: MemberStream | BinaryIO, seekable: bool, member: Member) -> bool:
    if not seekable:
        return False  # the .npy reader refuses its magic all the same
    assert not isinstance(stream, MemberStream)  # seekable: a stored member, in the file
    head = stream.read(4)
    stream.seek(member.offset)
    return head in (ZIP_SIGNATURE, EMPTY_ZIP_SIGNATURE)



class NpzFormat:
    """``.npz`` archives: a zip of ``.npy`` members, named ``FILE.npz:MEMBER``."""

    name = "npz"
    suffixes = ("npz",)

    def matches(self, path: str, head: bytes) -> bool:
        return head.startswith((ZIP_SIGNATURE, EMPTY_ZIP_SIGNATURE))

    def open(self, spec: InputSpec, options: OpenOptions) -> Source:
        name = spec.display
        with open_file(spec.path, name) as stream:
            members = read_members(stream, os.fstat(stream.fileno()).st_size, name)
        member = choose(members, None if spec.dataset is None else member_name(spec.dataset),
                        name, "member")
        return open_member(spec.path, member, f"{spec.path}:{member.name}")

    def entries(self, path: str, name: str) -> list | None:
        with open_file(path, name) as stream:
            members = read_members(stream, os.fstat(stream.fileno()).st_size, name)
        listing = []
        for member in members.values():
            try:
                with open_member(path, member, f"{name}:{member.name}") as source:
                    listing.append(Entry("member", member.name, source.shape,
                                         source.dtype_name,
                                         compression=source.details.get("compression"),
                                         stored_bytes=source.details.get("stored_bytes")))
            except InputError as exc:
                listing.append(Entry("member", member.name, None, None,
                                     problem=str(exc).split(": ", 1)[-1]))
        return listing


FORMAT = NpzFormat()
