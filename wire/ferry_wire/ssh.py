"""SSH connections between Ferry's components: host keys pinned, failures named.

Every client (the operator, or a helper streaming into another) pins the host
key the target helper published in its NodeHelper: nothing else is trusted,
and there is no known_hosts file. A failure to connect becomes a RemoteError
whose reason says what went wrong, so callers can tell a helper that is down
(retry) from one that refused the key or showed another host key (do not).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncssh

from ferry_wire.base import Peer
from ferry_wire.errors import Reason, RemoteError

#: Every SSH connection, on both ends, sends a keepalive this often and drops
#: the connection after KEEPALIVE_COUNT_MAX unanswered ones: a cut link is
#: noticed within about 15-20 s instead of TCP's many minutes.
KEEPALIVE_SECONDS = 5.0
KEEPALIVE_COUNT_MAX = 3
#: How long opening an SSH connection may take.
CONNECT_TIMEOUT_SECONDS = 15.0
#: SSH channel window and largest packet a side accepts. asyncssh's defaults (2 MiB,
#: 32 KiB) cost a Python round per 32 KiB: measured on loopback with aes128-gcm,
#: 16 MiB and 256 KiB carry 560 MB/s where the defaults carry 290 MB/s.
STREAM_WINDOW = 16 << 20
STREAM_MAX_PACKET = 256 << 10
#: aes128-gcm is the fastest cipher asyncssh offers on hardware with AES-NI.
STREAM_CIPHERS = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com")


def keepalive_options() -> dict[str, float | int]:
    """asyncssh connection options shared by every Ferry client and server."""
    return {"keepalive_interval": KEEPALIVE_SECONDS, "keepalive_count_max": KEEPALIVE_COUNT_MAX}


def stream_options() -> dict[str, int]:
    """asyncssh options for connections and channels that carry archives."""
    return {"window": STREAM_WINDOW, "max_pktsize": STREAM_MAX_PACKET}


def known_hosts(host_key: str) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[Any]]:
    """A known_hosts value trusting exactly ``host_key`` (an OpenSSH public key line)."""
    return ([asyncssh.import_public_key(host_key)], [], [])


def connect_failure(peer: Peer, error: BaseException) -> RemoteError:
    """What a failure to open a connection to ``peer`` means, as a RemoteError."""
    where = f"the helper on {peer.node} ({peer.address}:{peer.port})"
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return RemoteError(
            Reason.HELPER_HOST_KEY_MISMATCH,
            f"{where} presented a host key other than the one its NodeHelper publishes "
            f"({error}): refusing to talk to it; if the helper's state was reset, it "
            "publishes its new key with its next heartbeat",
        )
    if isinstance(error, asyncssh.PermissionDenied):
        return RemoteError(
            Reason.HELPER_AUTHENTICATION_FAILED,
            f"{where} refused this client's key ({error}): the operator's SSH Secret and "
            "the one the helpers read differ, or a stream grant expired",
        )
    return RemoteError(Reason.HELPER_UNREACHABLE, f"{where} could not be reached: {error}")


@contextlib.asynccontextmanager
async def connect(
    peer: Peer, *, username: str, client_key: asyncssh.SSHKey, streaming: bool = False
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An SSH connection to ``peer``'s helper as ``username``, its host key pinned.

    Only opening the connection is translated (see :func:`connect_failure`);
    what the caller does with it raises what it raises.
    """
    options: dict[str, Any] = {**keepalive_options()}
    if streaming:
        options |= {**stream_options(), "encryption_algs": list(STREAM_CIPHERS)}
    try:
        conn = await asyncssh.connect(
            peer.address,
            peer.port,
            username=username,
            client_keys=[client_key],
            known_hosts=known_hosts(peer.host_key),
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            **options,
        )
    except (OSError, asyncssh.Error, TimeoutError) as error:
        raise connect_failure(peer, error) from None
    try:
        yield conn
    finally:
        conn.close()
        with contextlib.suppress(Exception):
            await conn.wait_closed()
