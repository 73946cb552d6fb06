"""The operator's side of the helper protocol: one SSH exec per operation.

Host keys are pinned to what each helper published in its NodeHelper status;
the operator authenticates as the ``operator`` user with its own key.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
from ferry_helper.protocol import (
    CONNECT_TIMEOUT_SECONDS,
    OPERATOR_USER,
    Operation,
    Peer,
    RemoteError,
    keepalive_options,
)
from ferry_helper.transfer import known_hosts, read_result

ProgressHandler = Callable[[dict[str, Any]], Awaitable[None]]


class HelperClient:
    def __init__(self, key: asyncssh.SSHKey) -> None:
        self.key = key

    async def call(
        self,
        peer: Peer,
        operation: Operation,
        request: dict[str, Any],
        *,
        on_progress: ProgressHandler | None = None,
    ) -> dict[str, Any]:
        """Run ``operation`` on ``peer``'s helper; raise RemoteError on failure."""
        try:
            async with asyncssh.connect(
                peer.address,
                peer.port,
                username=OPERATOR_USER,
                client_keys=[self.key],
                known_hosts=known_hosts(peer.host_key),
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                **keepalive_options(),
            ) as conn:
                process = await conn.create_process(operation.value, encoding=None)
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.write_eof()
                result = await read_result(process.stdout, on_progress)
                await process.wait()
                return result
        except (OSError, asyncssh.Error, TimeoutError) as error:
            raise RemoteError(
                "HelperUnreachable",
                f"the helper on {peer.node} ({peer.address}:{peer.port}) could not be reached: "
                f"{error}",
            ) from None
