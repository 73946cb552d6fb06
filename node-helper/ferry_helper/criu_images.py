"""What a checkpoint holds, read from CRIU's image files in the archive: no crit needed.

CRIU's images are a magic number (two for most images) and then entries, each
a little-endian 32-bit length and a protobuf message. Two images tell most of
what a user wants to know before restoring: ``pstree.img`` (one entry per
process, its threads listed in field 5) and ``files.img`` (one entry per open
file description, its kind in field 1 and, for an inet socket, family, type,
protocol and state in the message of field 4). Memory is the size of the raw
``pages-*.img`` files. Field numbers are CRIU's (images/pstree.proto,
fdinfo.proto, sk-inet.proto), stable since CRIU 3.

Reading stops at the first entry that does not parse: a summary is a report,
and a damaged image is for the restore to refuse.
"""

from __future__ import annotations

import io
import re
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .archive_check import decompressed

IMG_COMMON_MAGIC = 0x54564319
IMG_SERVICE_MAGIC = 0x55105940

# files.img: FileEntry.type (fd_types)
FD_INETSK = 4
FD_UNIXSK = 5
FD_PACKETSK = 10
FD_NETLINKSK = 13
# InetSkEntry fields and values
IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_LISTEN = 10

_PAGES = re.compile(r"(^|/)pages-\d+\.img$")
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5


class _Truncated(ValueError):
    """An entry ends before its length says."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise _Truncated("varint runs past the end")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a protobuf message: ints and raw bytes."""
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == _WIRE_VARINT:
            value, pos = _varint(message, pos)
            yield number, value
        elif wire == _WIRE_BYTES:
            size, pos = _varint(message, pos)
            if pos + size > len(message):
                raise _Truncated("field runs past the end")
            yield number, message[pos : pos + size]
            pos += size
        elif wire in (_WIRE_FIXED64, _WIRE_FIXED32):
            pos += 8 if wire == _WIRE_FIXED64 else 4
        else:
            raise _Truncated(f"unknown wire type {wire}")


def entries(image: bytes) -> Iterator[bytes]:
    """The protobuf messages of one CRIU image file."""
    pos = 4
    if len(image) < 4:
        return
    (first,) = struct.unpack_from("<I", image, 0)
    if first in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC):
        pos = 8  # the image's own magic follows
    while pos + 4 <= len(image):
        (size,) = struct.unpack_from("<I", image, pos)
        pos += 4
        if pos + size > len(image):
            return
        yield image[pos : pos + size]
        pos += size


@dataclass
class Contents:
    """What the images say; field names match the API's CheckpointSummary."""

    processes: int = 0
    threads: int = 0
    memory_bytes: int = 0
    open_files: int = 0
    sockets: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("tcpListening", "tcpEstablished", "udp", "unix", "other"), 0
        )
    )

    def add_pstree(self, image: bytes) -> None:
        try:
            for entry in entries(image):
                self.processes += 1
                for number, value in fields(entry):
                    if number == 5:  # threads: unpacked varints, or packed bytes
                        self.threads += 1 if isinstance(value, int) else _count_varints(value)
        except _Truncated:
            return

    def add_files(self, image: bytes) -> None:
        try:
            for entry in entries(image):
                self.open_files += 1
                kind = self._socket_kind(dict(fields(entry)))
                if kind is not None:
                    self.sockets[kind] += 1
        except _Truncated:
            return

    @staticmethod
    def _socket_kind(entry: dict[int, int | bytes]) -> str | None:
        fd_type = entry.get(1)
        if fd_type == FD_UNIXSK:
            return "unix"
        if fd_type in (FD_PACKETSK, FD_NETLINKSK):
            return "other"
        if fd_type != FD_INETSK:
            return None
        inet = entry.get(4)
        sk = dict(fields(inet)) if isinstance(inet, bytes) else {}
        if sk.get(5) == IPPROTO_UDP:
            return "udp"
        if sk.get(5) == IPPROTO_TCP:
            return "tcpListening" if sk.get(6) == TCP_LISTEN else "tcpEstablished"
        return "other"


def _count_varints(packed: bytes) -> int:
    return sum(1 for byte in packed if not byte & 0x80)


def summarize_stream(raw: io.BufferedReader) -> Contents:
    """The :class:`Contents` of a checkpoint archive (none, gzip or zstd), read in one pass."""
    contents = Contents()
    with decompressed(raw) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not member.isfile():
                continue
            if _PAGES.search(name):
                contents.memory_bytes += member.size
            elif name.endswith(("pstree.img", "files.img")):
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if name.endswith("pstree.img"):
                    contents.add_pstree(data)
                else:
                    contents.add_files(data)
    return contents


def summarize_archive(path: Path) -> Contents:
    """:func:`summarize_stream` of the archive at ``path``."""
    with path.open("rb") as raw:
        return summarize_stream(raw)


def summarize_tree(root: Path) -> Contents:
    """The :class:`Contents` of a checkpoint laid out as files (a mounted checkpoint image)."""
    contents = Contents()
    images = root / "checkpoint"
    for path in images.glob("pages-*.img"):
        contents.memory_bytes += path.stat().st_size
    if (pstree := images / "pstree.img").is_file():
        contents.add_pstree(pstree.read_bytes())
    if (files := images / "files.img").is_file():
        contents.add_files(files.read_bytes())
    return contents
