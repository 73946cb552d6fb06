"""What every operation works with: the node's drivers and state, and its SSH channel.

A handler gets its typed request and a :class:`Channel` (progress out, and the
raw bytes in or out for the streaming operations), and reaches the node through
one :class:`NodeContext`: the drivers of the runtimes the node has, the
staging area and its journal, the checkpoint store, the kept logs of failed
steps, the peer grants and the CRIU runs in flight. The context also answers
the questions every concern asks the same way: which driver serves this
runtime, and does it have the capability the request needs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncssh
from ferry_api.runtime import Runtime
from ferry_wire import Reason, RemoteError, WireModel
from ferry_wire.migration import TransferProgress

from ..checkpoint_keys import KeyDirectory
from ..cri import Ctr
from ..criu_runs import CriuRuns
from ..drivers.capabilities import CheckpointImageCapable, Driver, PageServerCapable
from ..drivers.errors import RuntimeCommandError
from ..failure_logs import FailureLogs
from ..grants import PeerGrants
from ..kubelet import Kubelet
from ..staging import Staging
from ..transfer import ProgressCallback

#: How often a stream reports its progress, at most.
PROGRESS_INTERVAL = 0.5

Emit = Callable[[WireModel], Awaitable[None]]


async def _silent(_: WireModel) -> None:
    return None


@dataclass(frozen=True, kw_only=True)
class Channel:
    """What an operation may use of its SSH channel besides its request."""

    #: Send a ``progress`` event (a client that left just hears nothing).
    emit: Emit = _silent
    #: The raw bytes after the request line (``receive``, ``image-receive``).
    stdin: asyncssh.SSHReader[bytes] | None = None
    #: Where ``pages-out`` writes the pages, before its reply.
    stdout: asyncssh.SSHWriter[bytes] | None = None

    def progress(self, what: str) -> ProgressCallback:
        """A stream's progress callback, reporting ``what`` at most every PROGRESS_INTERVAL."""
        last = 0.0

        async def report(sent: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL or sent == total:
                last = now
                await self.emit(TransferProgress(what=what, bytes_sent=sent, bytes_total=total))

        return report

    def reader(self, operation: str) -> asyncssh.SSHReader[bytes]:
        if self.stdin is None:
            raise RemoteError(Reason.BAD_REQUEST, f"{operation} needs a stream to read from")
        return self.stdin

    def writer(self, operation: str) -> asyncssh.SSHWriter[bytes]:
        if self.stdout is None:
            raise RemoteError(Reason.BAD_REQUEST, f"{operation} needs a stream to write to")
        return self.stdout


@dataclass(frozen=True, kw_only=True)
class NodeContext:
    """This node as the operations see it."""

    node: str
    #: Where this node's page servers listen: the address its helper serves SSH on.
    address: str
    #: One driver per runtime the node has (podman, docker, or both): each container is
    #: driven by the runtime it is in.
    drivers: Mapping[Runtime, Driver]
    #: Migrations' transient archives and journals, and the claims on containers.
    staging: Staging
    #: ContainerCheckpoints' archives, kept until their resource is deleted.
    store: Staging
    #: The full logs of failed steps, kept for the operator to fetch.
    logs: FailureLogs
    #: Which migration each peer key may stream into (see :mod:`ferry_helper.grants`).
    grants: PeerGrants
    #: Every CRIU run of this helper goes through it (see :mod:`ferry_helper.criu_runs`).
    criu_runs: CriuRuns
    #: podman's --authfile for registries (a Secret the chart mounts), if there is one.
    registry_authfile: Path | None = None
    #: The node's CRI containerd (the kubelet's), for pods' containers; None: not driven.
    cri: Ctr | None = None
    #: The node's kubelet (its checkpoint API), for pods' containers.
    kubelet: Kubelet | None = None
    #: The keys that seal stored checkpoints (``checkpoints.encryption``); None: kept in clear.
    checkpoint_keys: KeyDirectory | None = None

    def driver(self, runtime: Runtime) -> Driver:
        """The driver of ``runtime``; ``RuntimeUnavailable`` if this node has none."""
        driver = self.drivers.get(runtime)
        if driver is None:
            has = ", ".join(sorted(self.drivers)) or "no container runtime"
            raise RemoteError(
                Reason.RUNTIME_UNAVAILABLE, f"node {self.node} has no {runtime} (it has {has})"
            )
        return driver

    def page_server(self, runtime: Runtime) -> PageServerCapable:
        """The driver of ``runtime`` if its dumps can go to a page server;
        ``PageServerNeedsPodman`` otherwise."""
        driver = self.driver(runtime)
        if not isinstance(driver, PageServerCapable):
            raise RemoteError(
                Reason.PAGE_SERVER_NEEDS_PODMAN,
                f"{runtime} on node {self.node} cannot send memory to a page server (only "
                "podman's containers can): use memoryTransfer: Archive for this container",
            )
        return driver

    def checkpoint_images(self, runtime: Runtime) -> CheckpointImageCapable:
        """The driver of ``runtime`` if it makes checkpoint images; ``RegistryNeedsPodman``
        otherwise."""
        driver = self.driver(runtime)
        if not isinstance(driver, CheckpointImageCapable):
            raise RemoteError(
                Reason.REGISTRY_NEEDS_PODMAN,
                f"{runtime} on node {self.node} makes no checkpoint images (only podman "
                "does): store this container's checkpoint on its node, without an image "
                "reference",
            )
        return driver

    def failed(
        self, reason: Reason, uid: str, step: str, error: RuntimeCommandError
    ) -> RemoteError:
        """The error for a failed runtime step, its full logs kept for ``fetch-logs``."""
        self.logs.keep(uid, step, error)
        return RemoteError(reason, str(error))

    def close(self, uid: str) -> None:
        """End migration ``uid`` here: later steps for it are refused, its grants revoked."""
        self.staging.close(uid)
        self.grants.revoke(uid)
