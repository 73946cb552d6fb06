"""What the steps of one migration share: the resource, its status, the clients, and facts.

Everything a restarted operator needs is in the resource's status (phase, start
and freeze times, chosen target and runtime, memory transfer, the first
failure): a :class:`Context` is built from it alone. What a step learns on the
way and a later step reuses (the helpers' addresses, the container's image and
ID, the stream key) is kept here to save round trips, and asked again when a
restart lost it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from ferry_api.migration import (
    ContainerMigration,
    ContainerMigrationSpec,
    ContainerMigrationStatus,
    MemoryTransfer,
    Phase,
)
from ferry_api.runtime import Runtime
from ferry_wire import Peer
from ferry_wire.containers import InspectRequest

from ..helperclient import HelperClient
from ..kube import Kube
from ..peers import peer_of
from ..policy import Failure
from ..settings import Settings
from ..slots import NodeSlots
from ..status import Clock, Events, StatusRecorder


@dataclass(kw_only=True)
class Context:
    resource: ContainerMigration
    record: StatusRecorder[ContainerMigrationStatus]
    kube: Kube
    helpers: HelperClient
    settings: Settings
    slots: NodeSlots
    events: Events
    clock: Clock
    #: The source and target helpers (host keys pinned), learnt at validation.
    peer_pair: tuple[Peer, Peer] | None = None
    #: The container's image (ID, name), learnt at validation.
    image: tuple[str, str] | None = None
    #: The source container's full ID, learnt at validation.
    container_id: str | None = None
    #: The source's key for streaming into the target, granted before the freeze.
    credential: str | None = None
    #: When this run froze the source (precise; status keeps it too, see freeze_time).
    frozen_at: datetime.datetime | None = field(default=None)

    # -- what the resource says

    @property
    def spec(self) -> ContainerMigrationSpec:
        return self.resource.spec

    @property
    def status(self) -> ContainerMigrationStatus:
        return self.record.status

    @property
    def uid(self) -> str:
        return self.resource.metadata.uid or ""

    @property
    def namespace(self) -> str:
        return self.resource.metadata.namespace or ""

    @property
    def name(self) -> str:
        return self.resource.metadata.name or ""

    @property
    def container(self) -> str:
        return self.spec.source.container

    @property
    def runtime(self) -> Runtime:
        """The runtime the container was found in at validation (podman before that)."""
        return self.status.runtime or Runtime.PODMAN

    @property
    def pages(self) -> bool:
        """Whether the memory goes through the target's page server: as validation chose
        (stored before the freeze), or as asked."""
        chosen = self.status.memory_transfer or self.spec.memory_transfer
        return chosen == MemoryTransfer.PAGE_SERVER

    # -- times that survive a restart

    def deadline(self) -> datetime.datetime:
        """When the migration must be over: its start plus ``spec.timeoutSeconds``."""
        started = self.status.start_time or self.clock()
        return started + datetime.timedelta(seconds=self.spec.timeout_seconds)

    def freeze_time(self) -> datetime.datetime | None:
        """When the source was frozen: this run's own reading, else what status kept, else
        (an operator restarted before writing it) when Checkpointing was entered."""
        if self.frozen_at is not None:
            return self.frozen_at
        if self.status.freeze_time is not None:
            return self.status.freeze_time
        entered = [t.time for t in self.status.phase_transitions if t.phase == Phase.CHECKPOINTING]
        return entered[-1] if entered else None

    def started(self) -> datetime.datetime:
        """When the migration began: its first phase's time (precise), else startTime."""
        transitions = self.status.phase_transitions
        if transitions:
            return transitions[0].time
        return self.status.start_time or self.clock()

    # -- what is asked once and kept

    def bandwidth(self) -> int | None:
        """Bytes per second the migration's MigrationPolicy allows its stream; None: any."""
        applied = self.status.policy
        return applied.bandwidth_bytes_per_second if applied is not None else None

    async def peers(self) -> tuple[Peer, Peer]:
        """Source and target helpers, looked up once: no API round trip during the freeze."""
        if self.peer_pair is None:
            helpers = await self.kube.node_helpers()
            target = self.status.target_node or ""
            source_helper, target_helper = helpers.get(self.spec.source.node), helpers.get(target)
            if source_helper is None or target_helper is None:
                raise Failure(
                    reason="HelperGone", message="a node-helper of this migration disappeared"
                )
            self.peer_pair = (peer_of(source_helper), peer_of(target_helper))
        return self.peer_pair

    async def source_container(self) -> tuple[str, tuple[str, str]]:
        """The source container's ID and image (ID, name): from validation, or asked again."""
        if self.container_id is None or self.image is None:
            source, _ = await self.peers()
            info = await self.helpers.call(
                source, InspectRequest(container=self.container, runtime=self.runtime)
            )
            self.container_id = info.id
            self.image = (info.image_id, info.image_name)
        return self.container_id, self.image

    async def grant(self, target: Peer) -> str:
        """A key for the source to stream into this migration on ``target``, no longer than
        the migration may last."""
        return await self.helpers.grant_stream(
            target, uid=self.uid, ttl_seconds=self.spec.timeout_seconds
        )
