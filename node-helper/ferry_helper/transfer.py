"""Node-to-node streaming of archives over SSH, with the target's host key pinned.

The source helper connects to the target helper as the ``peer`` user and
writes one JSON header line and then the archive's bytes into a receiving
operation; the target hashes while it writes and accepts the archive only if
size and sha256 match the header. Nothing is buffered whole in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh

from .archive_check import StreamingCheck, UnsafeArchive
from .protocol import (
    CONNECT_TIMEOUT_SECONDS,
    PEER_USER,
    Peer,
    RemoteError,
    decode,
    keepalive_options,
    stream_options,
)

CHUNK = 1 << 20
ProgressCallback = Callable[[int, int], Awaitable[None]]


def known_hosts(host_key: str) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[Any]]:
    """A known_hosts value trusting exactly ``host_key`` (an OpenSSH public key line)."""
    return ([asyncssh.import_public_key(host_key)], [], [])


async def read_result(
    reader: asyncssh.SSHReader[bytes],
    on_progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Read JSON-lines events until the final one; raise RemoteError on ``error``."""
    while True:
        line = await reader.readline()
        if not line:
            raise RemoteError("HelperDisconnected", "the helper closed the stream before a result")
        event = decode(line.decode())
        if event.type == "progress":
            if on_progress is not None:
                await on_progress(event.data)
            continue
        if event.type == "error":
            raise RemoteError(event.reason or "HelperError", event.message)
        return event.data


@contextlib.asynccontextmanager
async def connect_as_peer(
    peer: Peer, client_key: asyncssh.SSHKey
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An SSH connection to ``peer``'s helper as ``peer``, sized for streaming archives."""
    async with asyncssh.connect(
        peer.address,
        peer.port,
        username=PEER_USER,
        client_keys=[client_key],
        known_hosts=known_hosts(peer.host_key),
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        **keepalive_options(),
        **stream_options(),
        # aes128-gcm is the fastest cipher asyncssh offers on hardware with AES-NI.
        encryption_algs=["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"],
    ) as conn:
        yield conn


async def stream_file(
    *,
    peer: Peer,
    client_key: asyncssh.SSHKey,
    operation: str,
    header: dict[str, Any],
    path: Path,
    on_progress: ProgressCallback | None = None,
    finish_seconds: float = 600,
) -> dict[str, Any]:
    """Send ``path`` into ``operation`` on ``peer``; return the peer's result."""
    total = (await asyncio.to_thread(path.stat)).st_size
    async with connect_as_peer(peer, client_key) as conn:
        process = await conn.create_process(operation, encoding=None, **stream_options())
        process.stdin.write(json.dumps(header).encode() + b"\n")
        sent = 0
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                process.stdin.write(chunk)
                await process.stdin.drain()
                sent += len(chunk)
                if on_progress is not None:
                    await on_progress(sent, total)
        process.stdin.write_eof()
        result = await read_result(process.stdout)
        await process.wait(timeout=finish_seconds)
        return result


async def receive_file(
    reader: asyncssh.SSHReader[bytes],
    out: Path,
    *,
    size: int,
    sha256: str,
    check: StreamingCheck | None = None,
) -> None:
    """Write the rest of ``reader`` to ``out`` (0600), checked against size and sha256.

    With ``check``, the bytes are also checked as a checkpoint archive while
    they arrive (see :mod:`.archive_check`); an unsafe one is refused.
    """
    tmp = out.with_suffix(".partial")
    digest = hashlib.sha256()
    received = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            while chunk := await reader.read(CHUNK):
                handle.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if received > size:
                    raise RemoteError(
                        "SizeMismatch", f"received more than the {size} bytes announced"
                    )
                if check is not None:
                    await check.feed(chunk)
        if received != size:
            raise RemoteError("SizeMismatch", f"received {received} of {size} bytes")
        if digest.hexdigest() != sha256:
            raise RemoteError(
                "ChecksumMismatch",
                f"sha256 {digest.hexdigest()} does not match the sender's {sha256}",
            )
        if check is not None:
            await check.finish()
    except UnsafeArchive as error:
        tmp.unlink(missing_ok=True)
        raise RemoteError("UnsafeArchive", str(error)) from None
    except asyncssh.Error as error:  # the sender's link died (keepalive) or it hung up
        tmp.unlink(missing_ok=True)
        message = f"the sender's connection ended: {error}"
        raise RemoteError("TransferInterrupted", message) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if check is not None:
            with contextlib.suppress(UnsafeArchive):
                await check.finish()
    tmp.replace(out)
