"""A checkpoint's archive on its source node: the container claimed, dumped, and sent on.

A migration's ``checkpoint`` and a ContainerCheckpoint's ``store-checkpoint``
dump the same way (:meth:`Archives.dump`): the container is claimed for the
request's UID first, so one dump at a time holds it, whoever asks; the archive
goes to the migrations' staging or to the checkpoint store. A migration's
``send`` and a stored checkpoint's ``send-stored`` stream it the same way
(:meth:`Archives.send`), to the target helper as a peer, under the grant the
operator made for that UID.

A migration's bandwidth limit holds both to its rate (see
:mod:`ferry_helper.pacing`): a send's archive, and a page-server dump's memory
(through a relay, see :mod:`ferry_helper.pagerelay`). Each reply says the
average rate measured.
"""

from __future__ import annotations

import time

from ferry_api.runtime import Runtime
from ferry_wire import Peer, Reason, RemoteError
from ferry_wire.migration import (
    Checkpointed,
    DumpOptions,
    PageServerLink,
    ReceiveRequest,
    Sent,
)

from ..drivers.errors import RuntimeCommandError
from ..drivers.records import CheckpointOptions, CheckpointResult
from ..pacing import Pacer
from ..staging import Staging
from ..transfer import credential, failing_as, stream_file
from .context import Channel, NodeContext
from .pages import PageSteps


class Archives:
    def __init__(self, context: NodeContext, pages: PageSteps) -> None:
        self.context = context
        self.pages = pages

    async def container_id(self, container: str, runtime: Runtime) -> str:
        """The ID of ``container`` in ``runtime``; ``ContainerNotFound`` if there is none."""
        info = await self.context.driver(runtime).inspect(container)
        if info is None:
            raise RemoteError(
                Reason.CONTAINER_NOT_FOUND,
                f"no container {container!r} on node {self.context.node}",
            )
        return info.id

    def claim(self, request: DumpOptions, container_id: str) -> CheckpointOptions:
        """Claim the container for the request's UID; the options of its dump.

        Claims live in the migrations' staging area, whoever dumps: one dump at
        a time per container, by a migration or a ContainerCheckpoint.
        """
        if (holder := self.context.staging.claim(container_id, request.uid)) is not None:
            raise RemoteError(
                Reason.CONTAINER_BUSY,
                f"container {request.container!r} is being migrated by migration {holder}; "
                "wait for it to finish",
            )
        return CheckpointOptions(
            leave_running=request.leave_running,
            tcp_established=request.tcp_established,
            file_locks=request.file_locks,
            compression=request.compression,
        )

    async def dump(
        self,
        request: DumpOptions,
        container_id: str,
        into: Staging,
        *,
        page_server: PageServerLink | None = None,
        bandwidth: int | None = None,
    ) -> Checkpointed:
        """Checkpoint the container into ``into``'s archive of the request's UID (claimed),
        its memory to ``page_server`` when there is one, at most ``bandwidth`` bytes per
        second then."""
        if page_server is not None:
            self.context.page_server(request.runtime)  # refused before the claim
        options = self.claim(request, container_id)
        archive = into.archive(request.uid)
        pacer = Pacer(bandwidth) if page_server is not None and bandwidth is not None else None
        try:
            result: CheckpointResult
            if page_server is not None:
                result = await self.pages.dump(
                    uid=request.uid,
                    container=request.container,
                    runtime=request.runtime,
                    link=page_server,
                    container_id=container_id,
                    archive=archive,
                    options=options,
                    pacer=pacer,
                )
            else:
                async with self.context.criu_runs.shared():
                    result = await self.context.driver(request.runtime).checkpoint(
                        request.container, archive, options
                    )
        except RuntimeCommandError as error:
            raise self.context.failed(
                Reason.CHECKPOINT_FAILED, request.uid, "checkpoint", error
            ) from None
        return Checkpointed(
            size_bytes=result.size_bytes,
            sha256=result.sha256,
            seconds=result.seconds,
            statistics=result.statistics.reported(),
            container_id=container_id,
            page_server=page_server is not None,
            bytes_per_second=pacer.measured() if pacer is not None else None,
        )

    async def send(
        self,
        source: Staging,
        uid: str,
        *,
        into: str,
        target: Peer,
        key: str,
        channel: Channel,
        bandwidth: int | None = None,
    ) -> Sent:
        """Stream the checkpoint of ``uid`` in ``source`` into ``into`` on ``target``,
        as a peer holding the private ``key`` granted there, at most ``bandwidth`` bytes
        per second."""
        checkpoint = source.recorded_model(uid, "checkpoint", Checkpointed)
        archive = source.archive(uid)
        if checkpoint is None or not archive.exists():
            raise RemoteError(Reason.NO_CHECKPOINT, f"no checkpoint {uid} here")
        client_key = credential(key)
        pacer = Pacer(bandwidth)
        started = time.monotonic()
        with failing_as(Reason.TRANSFER_FAILED, f"streaming to {target.node}"):
            await stream_file(
                peer=target,
                client_key=client_key,
                header=ReceiveRequest(
                    uid=into, size_bytes=checkpoint.size_bytes, sha256=checkpoint.sha256
                ),
                path=archive,
                on_progress=channel.progress("archive"),
                pacer=pacer,
            )
        return Sent(
            seconds=time.monotonic() - started,
            bytes=checkpoint.size_bytes,
            bytes_per_second=pacer.measured(),
        )
