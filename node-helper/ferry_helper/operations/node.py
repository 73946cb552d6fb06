"""The node itself: what it can do, the logs it kept, and who may stream into it.

``probe`` answers with the NodeHelper status this helper would publish now
(the runtimes it has, CRIU and its features, kernel, cgroups, CPU, and the
protocol version it speaks). ``fetch-logs`` gives the full logs of a
resource's failed steps, compressed to fit a ConfigMap. ``authorize-peer``
grants a migration's public key the right to stream into that migration here,
for a while (see :mod:`ferry_helper.grants`).
"""

from __future__ import annotations

import asyncio
import base64

import asyncssh
from ferry_wire import Reason, RemoteError
from ferry_wire.node import (
    AuthorizePeerReply,
    AuthorizePeerRequest,
    FetchLogsReply,
    FetchLogsRequest,
    LogFile,
    ProbeReply,
    ProbeRequest,
)

from .. import probe
from .context import Channel, NodeContext


class NodeSteps:
    def __init__(self, context: NodeContext) -> None:
        self.context = context

    async def probe(self, _: ProbeRequest, __: Channel) -> ProbeReply:
        return ProbeReply(status=await probe.probe(self.context.drivers, cri=self.context.cri))

    async def fetch_logs(self, request: FetchLogsRequest, _: Channel) -> FetchLogsReply:
        """The kept logs of ``uid``'s failed steps, gzipped, within the request's budget."""
        files = await asyncio.to_thread(
            self.context.logs.read, request.uid, budget_bytes=request.budget_bytes
        )
        return FetchLogsReply(
            node=self.context.node,
            files=tuple(
                LogFile(
                    name=f.name,
                    gzip_base64=base64.b64encode(f.gzipped).decode(),
                    size_bytes=f.size_bytes,
                    truncated=f.truncated,
                )
                for f in files
            ),
        )

    async def authorize_peer(self, request: AuthorizePeerRequest, _: Channel) -> AuthorizePeerReply:
        try:
            key = asyncssh.import_public_key(request.public_key)
        except (asyncssh.KeyImportError, ValueError):
            raise RemoteError(Reason.BAD_REQUEST, "public_key is no OpenSSH public key") from None
        self.context.grants.authorize(request.uid, key, request.ttl_seconds)
        return AuthorizePeerReply(granted=key.get_fingerprint(), ttl_seconds=request.ttl_seconds)
