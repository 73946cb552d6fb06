"""The helpers a step talks to: read from their NodeHelpers, checked ready, host keys pinned."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from ferry_api.nodehelper import NodeHelper
from ferry_api.runtime import Runtime
from ferry_wire import Peer

from . import validation
from .kube import Kube
from .policy import Refusal


@dataclass(frozen=True)
class Cluster:
    """The nodes and their helpers, read once per step."""

    nodes: list[str]
    helpers: dict[str, NodeHelper]

    @classmethod
    async def read(cls, kube: Kube) -> Cluster:
        return cls(nodes=await kube.node_names(), helpers=await kube.node_helpers())


def peer_of(helper: NodeHelper) -> Peer:
    """Where to reach ``helper``, with the host key it published."""
    status = helper.status
    if not (status.address and status.ssh_port and status.ssh_host_key):
        raise Refusal(
            reason="HelperNotReady",
            message=f"the helper on {helper.metadata.name} published no address",
        )
    return Peer(
        node=helper.metadata.name or "",
        address=status.address,
        port=status.ssh_port,
        host_key=status.ssh_host_key,
    )


def ready_helper(
    cluster: Cluster,
    node: str,
    role: str,
    *,
    stale_seconds: float,
    now: datetime.datetime,
    runtime: Runtime | None = None,
) -> tuple[NodeHelper, Peer]:
    """The node's helper, ready; with ``runtime`` (when known) among the node's runtimes.

    ``role`` ("Source", "Target", "Checkpoint") begins the refusal's reason.
    """
    if node not in cluster.nodes:
        raise Refusal(
            reason=f"{role}NodeNotFound",
            message=f"there is no node {node!r}; nodes: {', '.join(sorted(cluster.nodes))}",
        )
    helper = cluster.helpers.get(node)
    problem = validation.helper_problem(
        helper, node=node, runtime=None, now=now, stale_seconds=stale_seconds
    )
    if problem or helper is None:
        raise Refusal(reason=f"{role}NotReady", message=problem or "no helper")
    if runtime is not None and runtime not in {r.name for r in helper.status.runtimes}:
        raise Refusal(
            reason="IncompatibleRuntime",
            message=f"the checkpoint was made by {runtime.value}, and node {node} has no "
            f"{runtime.value}: a checkpoint restores only into the runtime that made it",
        )
    return helper, peer_of(helper)
