"""A migration's memory pages taken back from the target: the ``pages-out`` stream.

After a page-server dump the source keeps every CRIU image but its memory
(``pagemap-*.img``, ``pages-*.img``): those went to the target's page server.
A rollback needs them back in the source container's checkpoint directory
before the in-place restore. The source connects to the target as ``peer``
with a key granted for this migration and runs ``pages-out``; the target
answers with one ``progress`` event naming each file and its size, then the
files' bytes back to back, then a ``result`` carrying the sha256 of all of
them. The source writes each file under a temporary name and renames them
only once the digest matches, so a directory holds either all pages or none
of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import asyncssh
from ferry_wire import PEER_USER, Peer, Reason, RemoteError, framing, ssh
from ferry_wire.pages import PageFile, PageManifest, PagesOutRequest, PagesSent

from .pagestream import PAGE_FILE
from .transfer import failing_as

CHUNK = 1 << 20


def manifest(files: list[Path]) -> list[dict[str, Any]]:
    """Name and size of each file, in the order their bytes follow."""
    return [{"name": path.name, "size": path.stat().st_size} for path in files]


def checked_manifest(data: dict[str, Any]) -> list[tuple[str, int]]:
    """The files a ``pages-out`` event announces, refused unless each is a page image.

    Read from the event's raw data rather than as a :class:`PageManifest`:
    a size must be a number, not a string pydantic would take for one.
    """
    files = data.get("files")
    if not isinstance(files, list):
        raise RemoteError(Reason.BAD_PAGES, "the page list is missing")
    checked: list[tuple[str, int]] = []
    for entry in files:
        name = entry.get("name") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not PAGE_FILE.match(name):
            raise RemoteError(Reason.BAD_PAGES, f"not a page image: {name!r}")
        if not isinstance(size, int) or size < 0:
            raise RemoteError(Reason.BAD_PAGES, f"{name}: not a size: {size!r}")
        checked.append((name, size))
    if len({name for name, _ in checked}) != len(checked):
        raise RemoteError(Reason.BAD_PAGES, "a page image is listed twice")
    return checked


async def send(writer: asyncssh.SSHWriter[bytes], files: list[Path]) -> PagesSent:
    """Write the manifest event and the files' bytes; the reply to answer with."""
    listed = await asyncio.to_thread(manifest, files)
    announced = PageManifest(files=tuple(PageFile(name=f["name"], size=f["size"]) for f in listed))
    writer.write(framing.encode(framing.progress(announced)))
    digest = hashlib.sha256()
    total = 0
    for path, entry in zip(files, listed, strict=True):
        with path.open("rb") as handle:
            remaining = int(entry["size"])
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(CHUNK, remaining))
                if not chunk:
                    raise RemoteError(Reason.PAGES_CHANGED, f"{path.name} shrank while it was sent")
                digest.update(chunk)
                writer.write(chunk)
                await writer.drain()
                remaining -= len(chunk)
                total += len(chunk)
    return PagesSent(sha256=digest.hexdigest(), bytes=total, files=len(files))


def _partial(directory: Path, name: str) -> Path:
    return directory / f".{name}.partial"


async def _receive(
    reader: asyncssh.SSHReader[bytes], directory: Path, files: list[tuple[str, int]]
) -> str:
    """Write the announced files' bytes under temporary names; their sha256."""
    digest = hashlib.sha256()
    for name, size in files:
        fd = os.open(_partial(directory, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            remaining = size
            while remaining > 0:
                chunk = await reader.readexactly(min(CHUNK, remaining))
                digest.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
                remaining -= len(chunk)
    return digest.hexdigest()


async def fetch(
    *, peer: Peer, client_key: asyncssh.SSHKey, uid: str, into: Path
) -> tuple[int, int]:
    """Take migration ``uid``'s page images from ``peer`` into the directory ``into``;
    how many files and bytes came."""
    await asyncio.to_thread(into.mkdir, mode=0o700, parents=True, exist_ok=True)
    request = PagesOutRequest(uid=uid)
    files: list[tuple[str, int]] = []
    try:
        with failing_as(Reason.PAGES_UNREACHABLE, f"taking the memory pages back from {peer.node}"):
            async with ssh.connect(
                peer, username=PEER_USER, client_key=client_key, streaming=True
            ) as conn:
                process = await conn.create_process(
                    request.operation.value, encoding=None, **ssh.stream_options()
                )
                process.stdin.write(framing.request_line(request))
                process.stdin.write_eof()
                line = await process.stdout.readline()
                if not line:
                    raise RemoteError(
                        Reason.PAGES_UNREACHABLE, f"{peer.node} closed the stream at once"
                    )
                event = framing.decode(line)
                if event.type == "error":
                    framing.raise_error(event)
                files = checked_manifest(event.data)
                received = await _receive(process.stdout, into, files)
                sent = await framing.read_reply(process.stdout, request, node=peer.node)
                await process.wait()
    except BaseException:
        _discard(into, files)
        raise
    if sent.sha256 != received:
        _discard(into, files)
        raise RemoteError(
            Reason.CHECKSUM_MISMATCH,
            f"the memory pages from {peer.node} have sha256 {received}, "
            f"not the sender's {sent.sha256}",
        )
    for name, _ in files:
        _partial(into, name).replace(into / name)
    return len(files), sum(size for _, size in files)


def _discard(directory: Path, files: list[tuple[str, int]]) -> None:
    for name, _ in files:
        _partial(directory, name).unlink(missing_ok=True)
