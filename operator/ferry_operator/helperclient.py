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

    async def inspect(
        self, peer: Peer, container: str, *, runtime: str | None = None, memory: bool = False
    ) -> dict[str, Any] | None:
        """The container as ``peer``'s helper sees it, in ``runtime`` (None: in any; the
        answer's ``runtime`` says which); None if it has none of that name. ``memory``:
        with the memory it uses (``memoryBytes``, None if the runtime does not say)."""
        request: dict[str, Any] = {"container": container, "runtime": runtime}
        if memory:
            request["memory"] = True
        try:
            return await self.call(peer, Operation.INSPECT, request)
        except RemoteError as error:
            if memory and error.reason == "BadRequest" and "memory" in error.message:
                # A helper older than this operator (an upgrade under way): no memory asked.
                return await self.inspect(peer, container, runtime=runtime)
            if error.reason != "ContainerNotFound":
                raise
            return None

    async def grant_stream(self, target: Peer, *, uid: str, ttl_seconds: int) -> str:
        """A fresh key pair for one migration or restore: its public half granted on ``target``.

        Returns the private half (OpenSSH) for the helper that streams. The
        grant allows streaming into ``uid`` only, for ``ttl_seconds`` at most;
        the target drops it when ``uid`` ends there.
        """
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"ferry-{uid}")
        await self.call(
            target,
            Operation.AUTHORIZE_PEER,
            {
                "uid": uid,
                "public_key": key.export_public_key().decode(),
                "ttl_seconds": ttl_seconds,
            },
        )
        return key.export_private_key().decode()

    async def send_image(
        self,
        source: Peer,
        target: Peer,
        *,
        uid: str,
        image_id: str,
        image_name: str,
        credential: str,
        runtime: str = "podman",
    ) -> dict[str, Any]:
        """Ship an image from ``source`` to ``target`` under ``uid``'s grant (same image ID)."""
        return await self.call(
            source,
            Operation.IMAGE_SEND,
            {
                "uid": uid,
                "image_id": image_id,
                "image_name": image_name,
                "target": target.model_dump(),
                "credential": credential,
                "runtime": runtime,
            },
        )
