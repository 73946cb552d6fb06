"""Refuse a checkpoint archive that could write outside where podman unpacks it.

A received archive comes from another node. Its checksum proves only that it
arrived as sent, not that the sender meant well: a helper whose peer key was
stolen could send a tar that, unpacked, writes through ``../``, an absolute
path, a symlink or a hardlink, or creates device nodes. podman unpacks
checkpoints with its own care, and this is the second line: every member is
read (streaming, whatever the compression, which is told by magic bytes and
not by what the sender claims) before the archive is accepted.

The checkpoint archive's own members are plain files and directories, and
nothing else is allowed there. The container's changed files
(``rootfs-diff.tar``) may hold symlinks, since a container's filesystem does,
but neither device nodes nor names that leave the tree; hardlinks must point
inside it. (A kubelet's checkpoint, made by containerd, has the same
layout, its ``rootfs-diff.tar`` gzipped.)

A stored checkpoint sent to another node may be sealed (:mod:`.sealing`): its
bytes are ciphertext, so :class:`UnlessSealed` lets it in unread, and the
plaintext is checked here once it is opened, before anything restores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Protocol, cast

import zstandard

from .sealing import MAGIC as SEALED_MAGIC

#: The file podman writes the container's changed files into.
ROOTFS_DIFF = "rootfs-diff.tar"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class UnsafeArchive(ValueError):
    """The archive holds a member that could reach outside its tree."""


@contextmanager
def decompressed(raw: io.BufferedReader) -> Iterator[IO[bytes]]:
    magic = raw.peek(4)[:4]
    if magic.startswith(GZIP_MAGIC):
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield cast(IO[bytes], stream)
    elif magic == ZSTD_MAGIC:
        decompressor = zstandard.ZstdDecompressor()
        with decompressor.stream_reader(raw, read_across_frames=True, closefd=False) as stream:
            yield stream
    else:
        yield raw


def _safe_name(name: str, where: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute():
        raise UnsafeArchive(f"{where}: absolute path {name!r}")
    if ".." in path.parts:
        raise UnsafeArchive(f"{where}: {name!r} climbs out with '..'")
    return path


def _check_rootfs_diff(stream: IO[bytes]) -> int:
    members = 0
    # podman's is a plain tar; containerd's (a kubelet's checkpoint) is gzipped.
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            members += 1
            _safe_name(member.name, ROOTFS_DIFF)
            if member.isdev():
                raise UnsafeArchive(f"{ROOTFS_DIFF}: device node {member.name!r}")
            if member.islnk():
                _safe_name(member.linkname, f"{ROOTFS_DIFF}: hardlink {member.name!r}")
    return members


def check_checkpoint_stream(raw: io.BufferedReader) -> int:
    """Read every member of the checkpoint archive in ``raw``; the count of members.

    Raises :class:`UnsafeArchive` naming the first member that is not allowed,
    and ``tarfile.TarError`` if the bytes are no tar archive at all.
    """
    members = 0
    with decompressed(raw) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            members += 1
            name = _safe_name(member.name, "archive")
            if not (member.isfile() or member.isdir()):
                kind = "symlink" if member.issym() else "hardlink" if member.islnk() else "special"
                raise UnsafeArchive(f"archive: {kind} member {member.name!r} is not allowed")
            if name == PurePosixPath(ROOTFS_DIFF) and member.isfile():
                diff = tar.extractfile(member)
                if diff is not None:
                    members += _check_rootfs_diff(diff)
    return members


def check_checkpoint_archive(path: Path) -> int:
    """:func:`check_checkpoint_stream` of the file at ``path``."""
    with path.open("rb") as raw:
        return check_checkpoint_stream(raw)


class StreamingCheck:
    """Checks an archive from its bytes as they arrive, in a thread of its own.

    The receiver feeds each chunk it writes to disk, so the check ends with
    the transfer and adds nothing to the downtime. After a failed check the
    thread still reads (and drops) the rest, so the receiver never blocks and
    can report what it finds first, such as a checksum that does not match.
    """

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb")
        self._writer = os.fdopen(write_fd, "wb", buffering=0)
        self._members = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="archive-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._members = check_checkpoint_stream(self._reader)
        except BaseException as error:  # reported by finish()
            self._error = error
        finally:
            with contextlib.suppress(OSError, ValueError):
                while self._reader.read(1 << 20):
                    pass
            self._reader.close()

    async def feed(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._write_all, chunk)

    def _write_all(self, chunk: bytes) -> None:
        # A raw write to a pipe may take only part of the chunk (a signal can
        # interrupt it once some bytes are in); the rest must follow, or the
        # check reads a stream with a hole in it.
        view = memoryview(chunk)
        while view:
            written = self._writer.write(view)
            view = view[written or 0 :]

    async def finish(self) -> int:
        """Wait for the check; the count of members, or :class:`UnsafeArchive`."""
        if not self._writer.closed:
            self._writer.close()
        await asyncio.to_thread(self._thread.join)
        if isinstance(self._error, UnsafeArchive):
            raise self._error
        if self._error is not None:
            raise UnsafeArchive(f"not a checkpoint archive: {self._error}")
        return self._members


class ArchiveCheck(Protocol):
    """What checks an archive while it arrives (see ``transfer.receive_file``)."""

    async def feed(self, chunk: bytes) -> None: ...

    async def finish(self) -> int: ...


class UnlessSealed:
    """The :class:`StreamingCheck` of a plain archive; none for a sealed one.

    A sealed archive is told by its first bytes; the ciphertext is not checked
    (it could not be), its plaintext is, once it authenticated and before it is
    restored (:func:`check_checkpoint_archive`).
    """

    def __init__(self) -> None:
        self._head = b""
        self._check: StreamingCheck | None = None
        #: The archive arriving is sealed.
        self.sealed = False

    async def feed(self, chunk: bytes) -> None:
        if self.sealed:
            return
        if self._check is None:
            self._head += chunk
            if len(self._head) < len(SEALED_MAGIC):
                return
            chunk, self._head = self._head, b""
            if chunk.startswith(SEALED_MAGIC):
                self.sealed = True
                return
            self._check = StreamingCheck()
        await self._check.feed(chunk)

    async def finish(self) -> int:
        if self.sealed:
            return 0
        if self._check is None:  # shorter than the magic: no sealed archive
            self._check = StreamingCheck()
            head, self._head = self._head, b""
            if head:
                await self._check.feed(head)
        return await self._check.finish()
