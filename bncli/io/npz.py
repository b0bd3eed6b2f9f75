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
from bncli.io.npy import NpyHeader, RawSource, npy_source, read_header
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
    crc: int = 0


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
                              offset, info.file_size, info.compress_size, info.CRC)
    spans.sort()
    for before, after in zip(spans, spans[1:]):
        if after[0] < before[1]:
            raise InputError(f"{name}: members {before[2]!r} and {after[2]!r} share bytes "
                             "(a zip bomb?)")
    return members


# The directories of the archives read last, by the file's identity: `bn stats --each` opens
# every member of one archive, and must not read its directory once per member.
_DIRECTORIES: dict[tuple, dict] = {}
_KEPT_DIRECTORIES = 4


def directory(path: str, name: str) -> dict:
    """The checked members of the archive at `path` (:func:`read_members`), read once for
    as long as the file is unchanged (same device, inode, size and modification time)."""
    with open_file(path, name) as stream:
        status = os.fstat(stream.fileno())
        key = (os.path.realpath(path), status.st_dev, status.st_ino, status.st_size,
               status.st_mtime_ns)
        members = _DIRECTORIES.get(key)
        if members is None:
            members = read_members(stream, status.st_size, name)
            while len(_DIRECTORIES) >= _KEPT_DIRECTORIES:
                _DIRECTORIES.pop(next(iter(_DIRECTORIES)), None)
            _DIRECTORIES[key] = members
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
    """A deflated member's ``.npy`` bytes, inflated as they are read: never more than the
    size the directory declares, from no more than the bytes it declares stored, and checked
    against its CRC at the end; errors are :class:`InputError`. The archive's directory is
    not read again (it was, by :func:`read_members`)."""

    def __init__(self, stream: BinaryIO, member: Member, name: str):
        self._stream = stream
        self._member = member
        self._name = name
        self._inflate = zlib.decompressobj(-15)
        self._left_in = member.stored_size  # compressed bytes not yet read
        self._left_out = member.size  # inflated bytes not yet given
        self._crc = 0
        self._pending = b""  # compressed bytes read but not yet inflated
        stream.seek(member.offset)

    def _fail(self, problem: str) -> InputError:
        return InputError(f"{self._name}: member data is corrupt: {problem}")

    def read(self, count: int = -1) -> bytes:
        """Up to `count` inflated bytes (fewer only at the end)."""
        if count < 0 or count > self._left_out:
            count = self._left_out
        pieces: list[bytes] = []
        wanted = count
        try:
            while wanted:
                if not self._pending and not self._inflate.unconsumed_tail:
                    if not self._left_in:
                        break
                    self._pending = self._stream.read(min(self._left_in, 1 << 20))
                    if not self._pending:
                        raise self._fail("the archive ends inside it")
                    self._left_in -= len(self._pending)
                source = self._inflate.unconsumed_tail or self._pending
                self._pending = b""
                piece = self._inflate.decompress(source, wanted)
                pieces.append(piece)
                wanted -= len(piece)
                if self._inflate.eof:
                    break
        except zlib.error as exc:
            raise self._fail(str(exc)) from None
        except OSError as exc:
            raise InputError(f"{self._name}: cannot read the archive: {exc}") from None
        data = b"".join(pieces)
        self._crc = zlib.crc32(data, self._crc)
        self._left_out -= len(data)
        if len(data) < count:
            raise self._fail(f"it inflates to {self._member.size - self._left_out} of the "
                             f"{self._member.size} bytes the archive declares")
        if not self._left_out and self._crc != self._member.crc:
            raise self._fail("its CRC does not match")
        return data

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
        """Close the archive."""
        self._stream.close()


def open_member(path: str, member: Member, name: str) -> RawSource:
    """An ``.npz`` member: a stored one read at any offset, a deflated one as a stream."""
    details = {"archive_member": member.filename,
               "compression": "deflate" if member.compressed else None,
               "stored_bytes": member.stored_size}
    stream: MemberStream | BinaryIO
    if member.compressed:
        stream = MemberStream(open_file(path, name), member, name)
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



def member_header(path: str, member: Member, name: str) -> NpyHeader:
    """The ``.npy`` header of a member, whatever its element type, its data left unread."""
    raw = open_file(path, name)
    stream: MemberStream | BinaryIO = MemberStream(raw, member, name) if member.compressed \
        else raw
    try:
        if not member.compressed:
            raw.seek(member.offset)
        return read_header(stream, name, check_type=False)
    finally:
        stream.close()


def _declared(path: str, member: Member, name: str) -> tuple[tuple | None, str | None]:
    """The shape and dtype a refused member's header declares, where it can be read."""
    try:
        header = member_header(path, member, name)
    except InputError:
        return None, None
    return header.shape, header.dtype.name


class NpzFormat:
    """``.npz`` archives: a zip of ``.npy`` members, named ``FILE.npz:MEMBER``."""

    name = "npz"
    suffixes = ("npz",)

    def matches(self, path: str, head: bytes) -> bool:
        return head.startswith((ZIP_SIGNATURE, EMPTY_ZIP_SIGNATURE))

    def open(self, spec: InputSpec, options: OpenOptions) -> Source:
        name = spec.display
        members = directory(spec.path, name)
        member = choose(members, None if spec.dataset is None else member_name(spec.dataset),
                        name, "member")
        return open_member(spec.path, member, f"{spec.path}:{member.name}")

    def entries(self, path: str, name: str) -> list | None:
        members = directory(path, name)
        listing = []
        for member in members.values():
            try:
                with open_member(path, member, f"{name}:{member.name}") as source:
                    listing.append(Entry("member", member.name, source.shape,
                                         source.dtype_name,
                                         compression=source.details.get("compression"),
                                         stored_bytes=source.details.get("stored_bytes")))
            except InputError as exc:
                shape, dtype = _declared(path, member, f"{name}:{member.name}")
                listing.append(Entry("member", member.name, shape, dtype,
                                     problem=str(exc).split(": ", 1)[-1],
                                     compression="deflate" if member.compressed else None,
                                     stored_bytes=member.stored_size))
        return listing


FORMAT = NpzFormat()
