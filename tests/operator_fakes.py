"""Fakes at the operator's two boundaries, for unit tests of its logic without root.

``FakeHelpers`` is the real :class:`HelperClient` with only ``call`` replaced:
it answers each typed request from a table (a reply, an exception, or a
function of the request), and records every call, so tests assert what a
user would check (which steps ran on which node, in which order). ``FakeKube``
keeps every status patch and serves nodes and NodeHelpers. ``Clock`` is a
clock tests move by hand.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from ferry_api.migration import ContainerMigration, parse_container_migration
from ferry_api.nodehelper import NodeHelper, parse_node_helper
from ferry_api.runtime import Runtime
from ferry_operator.helperclient import HelperClient, OnProgress
from ferry_operator.policy import ApiError
from ferry_operator.settings import Settings
from ferry_wire import PROTOCOL_VERSION, Peer, Reason, RemoteError, Reply, Request
from ferry_wire.containers import Container, ImageHasRequest, ImagePresence, InspectRequest
from ferry_wire.migration import (
    Checkpointed,
    CheckpointRequest,
    CleanedUp,
    CleanupRequest,
    FinishSourceRequest,
    Restored,
    RestoreRequest,
    RollbackRequest,
    RolledBack,
    SendRequest,
    Sent,
    SourceFinished,
)
from ferry_wire.node import (
    AuthorizePeerReply,
    AuthorizePeerRequest,
    FetchLogsReply,
    FetchLogsRequest,
)

ReplyT = TypeVar("ReplyT", bound=Reply)

UID = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
NAMESPACE = "team-a"
CONTAINER_ID = "c" * 64
RESTORED_ID = "d" * 64
IMAGE_ID = "e" * 64
T0 = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVp helper"
SETTINGS = Settings(
    ssh_key=Path("/nonexistent"),
    allow_any_namespace=False,
    helper_stale_seconds=60,
    metrics_port=0,
)


class Clock:
    """A clock that moves only when told."""

    def __init__(self, now: datetime.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def node_helper(
    name: str, *, now: datetime.datetime, protocol: int = PROTOCOL_VERSION
) -> NodeHelper:
    return parse_node_helper(
        {
            "metadata": {"name": name},
            "status": {
                "nodeName": name,
                "address": f"10.0.0.{ord(name[-1]) - ord('a') + 1}",
                "sshPort": 7022,
                "sshHostKey": HOST_KEY,
                "heartbeatTime": now.isoformat(),
                "protocolVersion": protocol,
                "runtimes": [{"name": "podman", "version": "5.4.2"}],
                "criu": {"version": "4.2.1"},
                "cgroupVersion": "hybrid",
                "cpu": {"model": "Test CPU", "flags": ["fpu", "sse2"]},
                "conditions": [{"type": "Ready", "status": "True", "reason": "HelperRunning"}],
            },
        }
    )


def migration(
    *, spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None
) -> ContainerMigration:
    return parse_container_migration(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ContainerMigration",
            "metadata": {"name": "move", "namespace": NAMESPACE, "uid": UID, "generation": 1},
            "spec": {
                "source": {"node": "node-a", "container": "web"},
                "target": {"node": "node-b"},
                **(spec or {}),
            },
            "status": status or {},
        }
    )


def container(*, running: bool = True, name: str = "web", id_: str = CONTAINER_ID) -> Container:
    return Container(
        id=id_,
        name=name,
        image_id=IMAGE_ID,
        image_name="localhost/busybox:latest",
        state="running" if running else "exited",
        running=running,
        labels={"ferry.dev/namespace": NAMESPACE},
        runtime=Runtime.PODMAN,
        memory_bytes=1 << 20,
    )


Answer = Reply | BaseException | Callable[[Peer, Any], Reply]


@dataclass
class Call:
    node: str
    request: Request[Any]

    @property
    def operation(self) -> str:
        return self.request.operation.value


class FakeHelpers(HelperClient):
    """The operator's helper client with the network replaced by a table of answers."""

    def __init__(self) -> None:
        super().__init__(asyncssh.generate_private_key("ssh-ed25519"))
        self.calls: list[Call] = []
        #: Answers by request type, and by (node, request type) where both nodes differ.
        self.answers: dict[Any, Answer | list[Answer]] = {
            ("node-a", InspectRequest): container(),
            ("node-b", InspectRequest): self._target_inspect,
            ImageHasRequest: ImagePresence(present=True),
            AuthorizePeerRequest: AuthorizePeerReply(granted="SHA256:x", ttl_seconds=300),
            CheckpointRequest: Checkpointed(
                size_bytes=1000, sha256="a" * 64, seconds=0.2, container_id=CONTAINER_ID
            ),
            SendRequest: Sent(seconds=0.1, bytes=1000),
            RestoreRequest: self._restore,
            FinishSourceRequest: SourceFinished(removed_container=True),
            CleanupRequest: CleanedUp(),
            RollbackRequest: RolledBack(container_id=CONTAINER_ID, seconds=0.1),
            FetchLogsRequest: FetchLogsReply(node="x"),
        }
        self.restored = False
        #: Called before each restore answer (a test's clock moves here).
        self.on_restore: Callable[[], None] = lambda: None

    def _target_inspect(self, _: Peer, request: InspectRequest) -> Reply:
        if self.restored and request.container == "web":
            return container(id_=RESTORED_ID)
        raise RemoteError(Reason.CONTAINER_NOT_FOUND, f"no container {request.container!r}")

    def _restore(self, _: Peer, __: RestoreRequest) -> Reply:
        self.on_restore()
        self.restored = True
        return Restored(container_id=RESTORED_ID, name="web", seconds=0.15)

    def ops(self, node: str | None = None) -> list[str]:
        """The operations asked, in order (on ``node``); fetching logs is no step, left out."""
        return [
            c.operation
            for c in self.calls
            if (node is None or c.node == node) and c.operation != "fetch-logs"
        ]

    async def call(
        self, peer: Peer, request: Request[ReplyT], *, on_progress: OnProgress | None = None
    ) -> ReplyT:
        self.calls.append(Call(peer.node, request))
        answer = self.answers.get((peer.node, type(request)), self.answers.get(type(request)))
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if answer is None:
            raise AssertionError(f"no answer for {type(request).__name__} on {peer.node}")
        if isinstance(answer, BaseException):
            raise answer
        reply = answer(peer, request) if callable(answer) else answer
        return request.parse_reply(reply.to_json())


@dataclass
class FakeKube:
    """Nodes, NodeHelpers and every status written, in memory."""

    clock: Clock
    node_list: list[str] = field(default_factory=lambda: ["node-a", "node-b", "node-c"])
    statuses: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: Errors the next status patches raise, one each.
    patch_errors: list[BaseException] = field(default_factory=list)
    protocol: int = PROTOCOL_VERSION
    #: What list_everywhere returns, by plural (MigrationPolicies, say).
    listed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    namespace_label_values: dict[str, str] = field(default_factory=dict)

    async def nodes(self) -> list[dict[str, Any]]:
        return [{"metadata": {"name": n, "labels": {}}, "spec": {}} for n in self.node_list]

    async def node_names(self) -> list[str]:
        return list(self.node_list)

    async def node_helpers(self) -> dict[str, NodeHelper]:
        return {n: node_helper(n, now=self.clock(), protocol=self.protocol) for n in self.node_list}

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        if self.patch_errors:
            raise self.patch_errors.pop(0)
        self.statuses.append(status)

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        self.deleted.append(name)

    async def list_everywhere(self, plural: str) -> list[dict[str, Any]]:
        return list(self.listed.get(plural, []))

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        return dict(self.namespace_label_values)

    async def put_config_map(self, *args: Any, **kwargs: Any) -> None:
        raise ApiError(500, "not in this test")

    @property
    def phases(self) -> list[str]:
        seen: list[str] = []
        for status in self.statuses:
            phase = status.get("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
        return seen

    @property
    def last(self) -> dict[str, Any]:
        return self.statuses[-1]


@dataclass
class FakeEvents:
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def normal(self, reason: str, message: str) -> None:
        self.seen.append(("Normal", reason, message))

    def warning(self, reason: str, message: str) -> None:
        self.seen.append(("Warning", reason, message))

    def reasons(self, kind: str = "Warning") -> list[str]:
        return [reason for type_, reason, _ in self.seen if type_ == kind]
