"""The operator's side of the wire protocol: one SSH exec per operation, typed both ways.

``call(peer, CheckpointRequest(...))`` returns a ``Checkpointed``: each request
model names its operation and its reply (:mod:`ferry_wire`). Host keys are
pinned to what each helper published in its NodeHelper status; the operator
authenticates as the ``operator`` user with its own key. Every failure is a
:class:`~ferry_wire.errors.RemoteError` whose reason says whether asking again
can help (see :mod:`.policy`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncssh
from ferry_api.runtime import Runtime
from ferry_wire import OPERATOR_USER, Peer, Reason, RemoteError, Reply, Request
from ferry_wire.containers import Container, ImageHasRequest, ImageSendRequest, InspectRequest
from ferry_wire.framing import read_reply, request_line
from ferry_wire.migration import TransferProgress
from ferry_wire.node import AuthorizePeerRequest
from ferry_wire.ssh import connect

ReplyT = TypeVar("ReplyT", bound=Reply)
OnProgress = Callable[[TransferProgress], Awaitable[None]]


class HelperClient:
    def __init__(self, key: asyncssh.SSHKey) -> None:
        self.key = key

    async def call(
        self, peer: Peer, request: Request[ReplyT], *, on_progress: OnProgress | None = None
    ) -> ReplyT:
        """Run ``request``'s operation on ``peer``'s helper; its reply, or a RemoteError."""

        async def progress(data: dict[str, object]) -> None:
            if on_progress is not None:
                await on_progress(TransferProgress.model_validate(data))

        async with connect(peer, username=OPERATOR_USER, client_key=self.key) as conn:
            try:
                process = await conn.create_process(request.operation.value, encoding=None)
                # A helper that refuses the operation outright answers before reading the
                # request: the refusal is then in the reply, not in a broken pipe.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    process.stdin.write(request_line(request))
                    process.stdin.write_eof()
                reply = await read_reply(
                    process.stdout, request, on_progress=progress, node=f"the helper on {peer.node}"
                )
                await process.wait()
            except (OSError, asyncssh.Error, TimeoutError) as error:
                raise RemoteError(
                    Reason.HELPER_DISCONNECTED,
                    f"the connection to the helper on {peer.node} ended during "
                    f"{request.operation.value}: {error}",
                ) from None
        return reply

    async def inspect(self, peer: Peer, request: InspectRequest) -> Container | None:
        """The container as ``peer``'s helper sees it; None if it has none of that name."""
        try:
            return await self.call(peer, request)
        except RemoteError as error:
            if error.reason != Reason.CONTAINER_NOT_FOUND:
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
            AuthorizePeerRequest(
                uid=uid,
                public_key=key.export_public_key().decode(),
                ttl_seconds=ttl_seconds,
            ),
        )
        return str(key.export_private_key().decode())

    async def ship_image(
        self,
        source: Peer,
        target: Peer,
        *,
        uid: str,
        image_id: str,
        image_name: str,
        runtime: Runtime,
        credential: Callable[[], Awaitable[str]],
    ) -> bool:
        """Ship an image from ``source`` to ``target`` unless it is there already; whether it
        was. It keeps its ID: a restore needs the very image the checkpoint was made on.
        ``credential`` grants the stream's key, asked only when the image must go."""
        present = await self.call(target, ImageHasRequest(image_id=image_id, runtime=runtime))
        if present.present:
            return False
        await self.call(
            source,
            ImageSendRequest(
                uid=uid,
                image_id=image_id,
                image_name=image_name,
                target=target,
                credential=await credential(),
                runtime=runtime,
            ),
        )
        return True
