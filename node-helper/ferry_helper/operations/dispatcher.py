"""Which handler serves which request, and the rules every request passes first.

The SSH server (:mod:`ferry_helper.server`) parses a request into its typed
model (``ferry_wire.contract.REQUESTS``) and hands it here. Before a handler
runs, three rules hold for every operation alike:

* One step at a time per UID (:class:`KeyedLocks`): a rollback waits for a
  checkpoint still in flight (its client may have gone), or it would see the
  source running, do nothing, and then watch the checkpoint stop it.
* A migration that ended here stays ended: the steps of an open migration are
  refused with ``MigrationClosed`` once a rollback, finish or cleanup closed
  it, so a request the operator gave up on cannot freeze the source again when
  it arrives late.
* A peer streams only into the migration its key was granted for
  (``Forbidden`` otherwise); which operations a peer may run at all is
  decided by the server, before the request is read.

The handlers live with their concern: :mod:`.node`, :mod:`.containers`,
:mod:`.migration`, :mod:`.pods`, :mod:`.stored` and :mod:`.pages`, sharing :mod:`.archives`
(make and send a checkpoint's archive), :mod:`.restores` and :mod:`.sealed` (archives
sealed at rest, checked and opened before a restore). Each takes its
typed request and returns its typed reply; this module binds each request
model to its handler (:func:`route`), so a request no handler serves is a bug
a unit test finds, not a runtime surprise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ferry_api.runtime import Runtime
from ferry_wire import Operation, Reason, RemoteError, Reply, Request
from ferry_wire.containers import (
    ImageHasRequest,
    ImageReceiveRequest,
    ImageSendRequest,
    InspectRequest,
    ListContainersRequest,
)
from ferry_wire.migration import (
    CheckpointRequest,
    CleanupRequest,
    FinishSourceRequest,
    ReceiveRequest,
    RestoreRequest,
    RollbackRequest,
    SendRequest,
)
from ferry_wire.node import AuthorizePeerRequest, FetchLogsRequest, ProbeRequest
from ferry_wire.pages import (
    PagesFetchRequest,
    PagesIdentityRequest,
    PagesOpenRequest,
    PagesOutRequest,
)
from ferry_wire.pods import PodCheckpointRequest, PodImagesRequest, PodThawRequest
from ferry_wire.stored import (
    DeleteStoredRequest,
    RestoreImageRequest,
    RestoreStoredRequest,
    SendStoredRequest,
    StoreCheckpointRequest,
)

from ..checkpoint_keys import KeyDirectory
from ..cri import Ctr
from ..criu_runs import CriuRuns
from ..drivers.capabilities import Driver
from ..failure_logs import FailureLogs
from ..grants import PeerGrants
from ..kubelet import Kubelet
from ..staging import Staging
from .archives import Archives
from .containers import Containers
from .context import Channel, NodeContext
from .migration import MigrationSteps
from .node import NodeSteps
from .pages import PageSteps
from .pods import PodSteps
from .restores import Restores
from .sealed import SealedArchives
from .stored import StoredCheckpoints

#: Steps that only make sense while a migration is under way on this node.
STEPS_OF_AN_OPEN_MIGRATION = frozenset(
    {
        Operation.CHECKPOINT,
        Operation.SEND,
        Operation.RECEIVE,
        Operation.RESTORE,
        Operation.AUTHORIZE_PEER,
        Operation.PAGES_IDENTITY,
        Operation.PAGES_OPEN,
        Operation.PAGES_OUT,
        Operation.POD_CHECKPOINT,
        Operation.POD_IMAGES,
    }
)
#: Peer operations that stream into (or out of) one migration: only under its grant.
STREAMS_OF_A_GRANT = frozenset({Operation.RECEIVE, Operation.PAGES_OUT})

RequestT = TypeVar("RequestT", bound=Request[Any])
Handler = Callable[[Request[Any], Channel], Awaitable[Reply]]


def route(
    model: type[RequestT], handler: Callable[[RequestT, Channel], Awaitable[Reply]]
) -> tuple[type[Request[Any]], Handler]:
    """``handler`` bound to the request ``model`` it takes (mypy checks that they fit)."""

    async def serve(request: Request[Any], channel: Channel) -> Reply:
        if not isinstance(request, model):  # pragma: no cover - dispatch is by type
            raise TypeError(f"{type(request).__name__} is no {model.__name__}")
        return await handler(request, channel)

    return model, serve


class KeyedLocks:
    """One lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Operations:
    """Every operation a helper serves, on one node."""

    def __init__(
        self,
        *,
        node: str,
        address: str = "127.0.0.1",
        drivers: Mapping[Runtime, Driver],
        staging: Staging,
        store: Staging,
        logs: FailureLogs,
        registry_authfile: Path | None = None,
        cri: Ctr | None = None,
        kubelet: Kubelet | None = None,
        checkpoint_keys: KeyDirectory | None = None,
    ) -> None:
        self.context = NodeContext(
            node=node,
            address=address,
            drivers=dict(drivers),
            staging=staging,
            store=store,
            logs=logs,
            grants=PeerGrants(),
            criu_runs=CriuRuns(),
            registry_authfile=registry_authfile,
            cri=cri,
            kubelet=kubelet,
            checkpoint_keys=checkpoint_keys,
        )
        self.pages = PageSteps(self.context)
        archives = Archives(self.context, self.pages)
        restores = Restores(self.context)
        sealed = SealedArchives(self.context)
        node_steps = NodeSteps(self.context)
        containers = Containers(self.context)
        pods = PodSteps(self.context)
        migration = MigrationSteps(
            self.context,
            archives=archives,
            restores=restores,
            pages=self.pages,
            pods=pods,
            sealed=sealed,
        )
        stored = StoredCheckpoints(
            self.context, archives=archives, restores=restores, sealed=sealed
        )
        self.sealed = sealed
        self._handlers: dict[type[Request[Any]], Handler] = dict(
            [
                route(ProbeRequest, node_steps.probe),
                route(FetchLogsRequest, node_steps.fetch_logs),
                route(AuthorizePeerRequest, node_steps.authorize_peer),
                route(InspectRequest, containers.inspect),
                route(ListContainersRequest, containers.list_containers),
                route(ImageHasRequest, containers.image_has),
                route(ImageSendRequest, containers.image_send),
                route(ImageReceiveRequest, containers.image_receive),
                route(CheckpointRequest, migration.checkpoint),
                route(SendRequest, migration.send),
                route(ReceiveRequest, migration.receive),
                route(RestoreRequest, migration.restore),
                route(RollbackRequest, migration.rollback),
                route(FinishSourceRequest, migration.finish_source),
                route(CleanupRequest, migration.cleanup),
                route(StoreCheckpointRequest, stored.store_checkpoint),
                route(RestoreStoredRequest, stored.restore_stored),
                route(SendStoredRequest, stored.send_stored),
                route(DeleteStoredRequest, stored.delete_stored),
                route(RestoreImageRequest, stored.restore_image),
                route(PagesIdentityRequest, self.pages.identity),
                route(PagesOpenRequest, self.pages.open),
                route(PagesFetchRequest, self.pages.fetch),
                route(PagesOutRequest, self.pages.out),
                route(PodCheckpointRequest, pods.checkpoint),
                route(PodImagesRequest, pods.images),
                route(PodThawRequest, pods.thaw),
            ]
        )
        self._locks = KeyedLocks()

    @property
    def node(self) -> str:
        return self.context.node

    @property
    def drivers(self) -> Mapping[Runtime, Driver]:
        """The driver of each runtime this node has: nothing else is asked of a runtime."""
        return self.context.drivers

    @property
    def grants(self) -> PeerGrants:
        """Which migration each peer key may stream into (the SSH server asks at login)."""
        return self.context.grants

    def serves(self, model: type[Request[Any]]) -> bool:
        """Whether a handler takes requests of ``model``."""
        return model in self._handlers

    async def run(
        self, request: Request[Any], channel: Channel, *, granted_uid: str | None = None
    ) -> Reply:
        """Run ``request``; ``granted_uid``: the migration a peer's key was granted for."""
        handler = self._handlers.get(type(request))
        if handler is None:
            raise RemoteError(
                Reason.UNKNOWN_OPERATION, f"node {self.node} serves no {request.operation}"
            )
        operation = request.operation
        uid = getattr(request, "uid", None)
        lock = self._locks.hold(uid) if isinstance(uid, str) else contextlib.nullcontext()
        async with lock:
            if (
                isinstance(uid, str)
                and operation in STEPS_OF_AN_OPEN_MIGRATION
                and self.context.staging.is_closed(uid)
            ):
                raise RemoteError(
                    Reason.MIGRATION_CLOSED, f"migration {uid} has ended on {self.node}"
                )
            if operation in STREAMS_OF_A_GRANT and uid != granted_uid:
                raise RemoteError(
                    Reason.FORBIDDEN, f"this peer key was not granted for migration {uid}"
                )
            return await handler(request, channel)
