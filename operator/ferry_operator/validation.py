"""Validation before anything on a node is touched: pure decisions over observed facts.

The operator gathers facts (Node objects, NodeHelpers, the container as the
source helper sees it) and these functions decide. Each refusal carries a
CamelCase reason and a message that says what to change.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Protocol

from ferry_api import constants
from ferry_api.conditions import ConditionStatus, find_condition
from ferry_api.migration import (
    ContainerMigrationSpec,
    SourceRef,
)
from ferry_api.nodehelper import CgroupVersion, NodeHelper
from ferry_api.runtime import Runtime
from ferry_api.transfer import AUTO_PAGE_SERVER_MIN_BYTES, MemoryTransfer
from ferry_wire import MIN_PROTOCOL_VERSION
from ferry_wire.containers import Container

from .policy import Refusal


class SourceSpec(Protocol):
    """What validation reads of a spec: the container, its node, its runtime."""

    @property
    def source(self) -> SourceRef: ...

    @property
    def runtime(self) -> Runtime | None: ...


def _version(text: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (text or "").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def helper_problem(
    helper: NodeHelper | None,
    *,
    node: str,
    runtime: Runtime | None,
    now: datetime.datetime,
    stale_seconds: float,
    pods: bool = False,
) -> str | None:
    """Why ``helper`` cannot take part in a migration now, or None when it can.

    ``runtime`` None: any container runtime will do (it is not known yet).
    ``pods``: for a pod's migration, which needs the node's CRI runtime (checked
    apart), not podman or docker.
    """
    if helper is None:
        return f"no node-helper runs on node {node} (no NodeHelper {node!r})"
    status = helper.status
    ready = find_condition(status.conditions, constants.CONDITION_READY)
    if ready is None or ready.status != ConditionStatus.TRUE:
        return f"the node-helper on {node} is not Ready"
    if status.heartbeat_time is None or (
        (now - status.heartbeat_time).total_seconds() > stale_seconds
    ):
        return f"the node-helper on {node} has not reported for over {stale_seconds:.0f}s"
    if not (status.address and status.ssh_port and status.ssh_host_key):
        return f"the node-helper on {node} has not published its address and host key"
    if (spoken := status.protocol_version or 1) < MIN_PROTOCOL_VERSION:
        return (
            f"the node-helper on {node} speaks protocol {spoken} and this operator needs "
            f"{MIN_PROTOCOL_VERSION} or newer: upgrade the node-helper DaemonSet to the "
            "operator's version"
        )
    if runtime is not None and runtime not in {r.name for r in status.runtimes}:
        return f"node {node} has no {runtime.value} runtime"
    if not status.runtimes and not pods:
        return f"node {node} has no container runtime the helper can drive"
    if status.criu is None or not status.criu.version:
        return f"node {node} has no CRIU"
    return None


def _runtimes(helper: NodeHelper | None) -> str:
    found = (
        [f"{r.name.value} {r.version or ''}".strip() for r in helper.status.runtimes]
        if helper
        else []
    )
    return ", ".join(found) or "no runtime"


def choose_target(
    spec: ContainerMigrationSpec,
    *,
    runtime: Runtime,
    nodes: Sequence[str],
    helpers: Mapping[str, NodeHelper],
    now: datetime.datetime,
    stale_seconds: float,
) -> str:
    """The target node: the one asked for, checked; or the first eligible by name.

    ``runtime`` is the one the container runs in: a checkpoint restores only
    into the runtime that made it.
    """
    source = spec.source.node
    asked = spec.target.node if spec.target else None
    if asked:
        if asked == source:
            raise Refusal(
                reason="SameNode",
                message=(
                    f"target.node {asked} is the source node: name another node or leave it empty"
                ),
            )
        if asked not in nodes:
            raise Refusal(
                reason="TargetNodeNotFound",
                message=(f"there is no node {asked!r}; nodes: {', '.join(sorted(nodes))}"),
            )
        helper = helpers.get(asked)
        problem = helper_problem(
            helper, node=asked, runtime=None, now=now, stale_seconds=stale_seconds
        )
        if problem:
            raise Refusal(reason="TargetNotReady", message=problem)
        if helper_problem(
            helper, node=asked, runtime=runtime, now=now, stale_seconds=stale_seconds
        ):
            raise Refusal(
                reason="IncompatibleRuntime",
                message=(
                    f"the container runs in {runtime.value} on {source}, and node {asked} has "
                    f"no {runtime.value} ({_runtimes(helper)}): a checkpoint restores only into "
                    "the runtime that made it; pick a target with "
                    f"{runtime.value}"
                ),
            )
        return asked
    eligible = [
        n
        for n in sorted(nodes)
        if n != source
        and helper_problem(
            helpers.get(n), node=n, runtime=runtime, now=now, stale_seconds=stale_seconds
        )
        is None
    ]
    if not eligible:
        raise Refusal(
            reason="NoEligibleTarget",
            message=(
                "no other node has a ready node-helper with "
                f"{runtime.value} and CRIU; see `kubectl get nodehelpers`"
            ),
        )
    return eligible[0]


def check_source(
    spec: SourceSpec,
    *,
    nodes: Sequence[str],
    helpers: Mapping[str, NodeHelper],
    now: datetime.datetime,
    stale_seconds: float,
) -> None:
    source = spec.source.node
    if source not in nodes:
        raise Refusal(
            reason="SourceNodeNotFound",
            message=(f"there is no node {source!r}; nodes: {', '.join(sorted(nodes))}"),
        )
    problem = helper_problem(
        helpers.get(source),
        node=source,
        runtime=Runtime(spec.runtime.value) if spec.runtime else None,
        now=now,
        stale_seconds=stale_seconds,
    )
    if problem:
        raise Refusal(reason="SourceNotReady", message=problem)


def _v2(layout: CgroupVersion) -> bool:
    return layout == CgroupVersion.V2


def check_compatible(source: NodeHelper, target: NodeHelper) -> None:
    """The target must restore what the source dumps, as far as the helpers' reports tell.

    CRIU no older than the source's; the same cgroup layout (CRIU restores a
    container's cgroups as they were dumped); and every CPU feature flag of
    the source, since a process may use any of them (what ``criu cpuinfo
    check`` verifies, decided here from the published flags so that nothing
    runs on a node before the refusal).
    """
    source_name, target_name = source.metadata.name, target.metadata.name
    source_criu = source.status.criu.version if source.status.criu else None
    target_criu = target.status.criu.version if target.status.criu else None
    if _version(target_criu) < _version(source_criu):
        raise Refusal(
            reason="IncompatibleCriu",
            message=(
                f"node {target_name} has CRIU {target_criu}, older than the source's "
                f"{source_criu}; upgrade CRIU there or pick another target"
            ),
        )
    source_cgroups, target_cgroups = source.status.cgroup_version, target.status.cgroup_version
    # Hybrid hosts run containers under the v1 controllers, as v1 hosts do.
    if source_cgroups and target_cgroups and _v2(source_cgroups) != _v2(target_cgroups):
        raise Refusal(
            reason="IncompatibleCgroups",
            message=(
                f"node {source_name} runs cgroup {source_cgroups} and node {target_name} "
                f"cgroup {target_cgroups}; a container restores only into the same layout"
            ),
        )
    source_flags = set(source.status.cpu.flags) if source.status.cpu else set()
    target_flags = set(target.status.cpu.flags) if target.status.cpu else set()
    if source_flags and target_flags and (missing := sorted(source_flags - target_flags)):
        shown = " ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise Refusal(
            reason="IncompatibleCpu",
            message=(
                f"node {target_name}'s CPU lacks features node {source_name}'s has: {shown}; "
                "the process may use them, so pick a target with the same or a newer CPU"
            ),
        )


def check_target_free(container: str, target: str, existing: Container | None) -> None:
    """The target must not already hold a container of the name the restore will use."""
    if existing is not None:
        raise Refusal(
            reason="TargetNameTaken",
            message=(
                f"node {target} already has a container named {container!r} "
                f"({existing.state or 'unknown state'}); "
                "remove it there or pick another target"
            ),
        )


def choose_memory_transfer(
    spec: ContainerMigrationSpec,
    runtime: Runtime,
    memory_bytes: int | None,
    *,
    policy_default: MemoryTransfer | None = None,
) -> MemoryTransfer:
    """How the memory moves: as asked, else as the governing policy says, else Archive;
    for Auto by the container's memory.

    Below ``AUTO_PAGE_SERVER_MIN_BYTES`` the archive is quicker (the page
    server's set-up costs more than the memory's copy, ``make bench``); above,
    the page server's single write of the memory wins by far. Auto keeps the
    archive for docker, for a checkpoint to keep, and when the runtime did not
    say how much memory the container uses. A policy's default is not a demand:
    where the migration cannot use the page server it is Archive, not a refusal.
    """
    check_memory_transfer(spec, runtime)
    pages_possible = runtime == Runtime.PODMAN and not spec.keep_checkpoint
    asked = spec.memory_transfer
    if asked is None:
        asked = policy_default or MemoryTransfer.ARCHIVE
        if asked == MemoryTransfer.PAGE_SERVER and not pages_possible:
            return MemoryTransfer.ARCHIVE
    if asked != MemoryTransfer.AUTO:
        return asked
    if not pages_possible or memory_bytes is None:
        return MemoryTransfer.ARCHIVE
    if memory_bytes >= AUTO_PAGE_SERVER_MIN_BYTES:
        return MemoryTransfer.PAGE_SERVER
    return MemoryTransfer.ARCHIVE


def check_tcp_established(spec: ContainerMigrationSpec, target: str) -> None:
    """Established connections move only where the container's address is.

    A restored connection is bound back to the container's address; on another node
    the container gets another one (each node's network is its own), and CRIU's
    restore fails: ``Can't bind inet socket back: Cannot assign requested address``.
    """
    if not spec.tcp_established:
        return
    raise Refusal(
        reason="TCPEstablishedAcrossNodes",
        message=(
            f"tcpEstablished cannot keep {spec.source.container!r}'s TCP connections on "
            f"{target}: its address stays on {spec.source.node}'s network, so CRIU could not "
            "bind them back there. Connections survive only a checkpoint restored on the "
            "same node (ContainerCheckpoint and ContainerRestore, or a rollback). Leave "
            "tcpEstablished off and close the connections or let the peers reconnect"
        ),
    )


def check_memory_transfer(spec: ContainerMigrationSpec, runtime: Runtime) -> None:
    """A page-server migration must be of a podman container."""
    if spec.memory_transfer == MemoryTransfer.PAGE_SERVER and runtime != Runtime.PODMAN:
        raise Refusal(
            reason="PageServerNeedsPodman",
            message=(
                f"container {spec.source.container!r} runs in {runtime.value}, and "
                "memoryTransfer: PageServer moves the memory of podman containers only; "
                "set memoryTransfer: Archive (the default) to move it"
            ),
        )


def check_target_id_free(container_id: str, target: str, existing: Container | None) -> None:
    """With a page server, the restored copy keeps the source's ID: the target must lack it."""
    if existing is not None:
        raise Refusal(
            reason="TargetIdTaken",
            message=(
                f"node {target} already has a container with ID {container_id[:12]} "
                f"({existing.name}, {existing.state or 'unknown state'}), and "
                "with memoryTransfer: PageServer the restored copy keeps the source's ID; "
                "remove it there, pick another target or use memoryTransfer: Archive"
            ),
        )


def check_container(
    spec: SourceSpec,
    info: Container | None,
    *,
    namespace: str,
    allow_any_namespace: bool,
    uid: str = "",
) -> Container:
    """The container as the source helper reported it, if this migration may take it.

    ``uid`` is this migration's: the container may already be claimed by it
    (a resumed migration), never by another.
    """
    container = spec.source.container
    if info is None:
        raise Refusal(
            reason="ContainerNotFound",
            message=(
                f"node {spec.source.node} has no container {container!r}; check source.container"
            ),
        )
    if not allow_any_namespace and info.labels.get(constants.NAMESPACE_LABEL) != namespace:
        raise Refusal(
            reason="NamespaceNotPermitted",
            message=(
                f"container {container!r} may not be migrated from namespace {namespace!r}: "
                f"it must carry the label {constants.NAMESPACE_LABEL}={namespace}"
            ),
        )
    holder = info.migrating_by
    if holder and holder != uid:
        raise Refusal(
            reason="ContainerBusy",
            message=(
                f"container {container!r} is being migrated by another ContainerMigration "
                f"(uid {holder}); wait for it to finish, then create a new one"
            ),
        )
    if not info.running:
        raise Refusal(
            reason="ContainerNotRunning",
            message=(
                f"container {container!r} on {spec.source.node} is {info.state}, "
                "not running; only a running container can be migrated"
            ),
        )
    return info
