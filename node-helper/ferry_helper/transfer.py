"""Node-to-node streaming of archives over SSH, with the target's host key pinned.

The source helper connects to the target helper as the ``peer`` user
(:func:`ferry_wire.ssh.connect`: the host key the target publishes, nothing
else) and writes the receiving operation's typed header (a ``ReceiveRequest``
or an ``ImageReceiveRequest``) as its request line, then the archive's bytes;
the target hashes while it writes and accepts the archive only if size and
sha256 match the header. Nothing is buffered whole in memory.

A broken stream is the step's own failure, not its helper's: what the source's
client decides about the target (unreachable, disconnected, a refused key,
another host key) becomes the stream's reason (:func:`failing_as`), so the
operator never reads "the helper was not heard" from a helper it did hear.
What the target decided (``ChecksumMismatch``, ``UnsafeArchive``, ...) passes
through as the target said it.

A migration's bandwidth limit holds the source's writes to its rate: given a
:class:`~.pacing.Pacer` with one, :func:`stream_file` writes pieces of the
pacer's burst and waits for each (see :mod:`.pacing`); without one it writes
whole chunks as fast as the link drains. Either way the pacer measures the
average from the first byte to the target's reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncssh
from ferry_wire import PEER_USER, Peer, Reason, RemoteError, Reply, Request, framing, ssh
from ferry_wire.errors import TRANSIENT, UNTRUSTED

from .archive_check import ArchiveCheck, UnsafeArchive
from .pacing import Pacer

CHUNK = 1 << 20
ProgressCallback = Callable[[int, int], Awaitable[None]]
ReplyT = TypeVar("ReplyT", bound=Reply)

#: What a client decides about its peer: the stream broke, whatever the step was.
TRANSPORT_REASONS = TRANSIENT | UNTRUSTED


def credential(text: str) -> asyncssh.SSHKey:
    """A migration's private peer key, from a request (never echoed back)."""
    try:
        return asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError):
        raise RemoteError(Reason.BAD_REQUEST, "credential is no OpenSSH private key") from None


@contextlib.contextmanager
def failing_as(reason: Reason, doing: str) -> Iterator[None]:
    """Turn a broken stream (a socket or SSH error, or a transport RemoteError) into
    ``reason``, its message starting with ``doing``; the peer's own errors pass."""
    try:
        yield
    except RemoteError as error:
        if error.reason not in TRANSPORT_REASONS:
            raise
        raise RemoteError(reason, f"{doing}: {error}") from None
    except (OSError, asyncssh.Error, asyncio.IncompleteReadError) as error:
        raise RemoteError(reason, f"{doing}: {error}") from None


async def stream_file(
    *,
    peer: Peer,
    client_key: asyncssh.SSHKey,
    header: Request[ReplyT],
    path: Path,
    on_progress: ProgressCallback | None = None,
    finish_seconds: float = 600,
    pacer: Pacer | None = None,
) -> ReplyT:
    """Send ``path`` into the operation ``header`` asks for on ``peer``; the peer's reply.

    With ``pacer`` the archive's bytes go at its rate (if it has one), and it
    measures them until the peer's reply.
    """
    total = (await asyncio.to_thread(path.stat)).st_size
    size = pacer.piece if pacer is not None and pacer.limited else CHUNK
    async with ssh.connect(peer, username=PEER_USER, client_key=client_key, streaming=True) as conn:
        process = await conn.create_process(
            header.operation.value, encoding=None, **ssh.stream_options()
        )
        process.stdin.write(framing.request_line(header))
        sent = 0
        with path.open("rb") as handle:
            while chunk := handle.read(size):
                if pacer is not None:
                    await pacer.spend(len(chunk))
                process.stdin.write(chunk)
                await process.stdin.drain()
                sent += len(chunk)
                if on_progress is not None:
                    await on_progress(sent, total)
        process.stdin.write_eof()
        reply = await framing.read_reply(process.stdout, header, node=peer.node)
        if pacer is not None:
            pacer.finish()
        await process.wait(timeout=finish_seconds)
        return reply


async def receive_file(
    reader: asyncssh.SSHReader[bytes],
    out: Path,
    *,
    size: int,
    sha256: str,
    check: ArchiveCheck | None = None,
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
                        Reason.SIZE_MISMATCH, f"received more than the {size} bytes announced"
                    )
                if check is not None:
                    await check.feed(chunk)
        if received != size:
            raise RemoteError(Reason.SIZE_MISMATCH, f"received {received} of {size} bytes")
        if digest.hexdigest() != sha256:
            raise RemoteError(
                Reason.CHECKSUM_MISMATCH,
                f"sha256 {digest.hexdigest()} does not match the sender's {sha256}",
            )
        if check is not None:
            await check.finish()
    except UnsafeArchive as error:
        tmp.unlink(missing_ok=True)
        raise RemoteError(Reason.UNSAFE_ARCHIVE, str(error)) from None
    except asyncssh.Error as error:  # the sender's link died (keepalive) or it hung up
        tmp.unlink(missing_ok=True)
        message = f"the sender's connection ended: {error}"
        raise RemoteError(Reason.TRANSFER_INTERRUPTED, message) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if check is not None:
            with contextlib.suppress(UnsafeArchive):
                await check.finish()
    tmp.replace(out)
