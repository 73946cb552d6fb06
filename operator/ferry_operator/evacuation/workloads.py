"""What runs on a node that an evacuation may move, and where it may go.

Containers: the running podman and docker containers carrying
``ferry.dev/namespace`` (their migration goes into that namespace), as the
node's helper lists them. Pods: the pods bound to the node and annotated
``ferry.dev/evacuation: migrate`` or ``migrate-or-evict`` (a pod opts in:
Ferry never moves one unasked). Targets: every other node whose helper is Ready and which is not
cordoned; each migration's own validation then checks the workload fits.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from ferry_api import constants
from ferry_api.evacuation import EvacuatedWorkload, WorkloadKind, WorkloadState
from ferry_wire.containers import ListContainersRequest

from ..helperclient import HelperClient
from ..kube import Kube
from ..peers import Cluster, ready_helper
from ..policy import Refusal


async def containers(
    kube: Kube, helpers: HelperClient, node: str, *, stale_seconds: float, now: datetime.datetime
) -> list[EvacuatedWorkload]:
    _, peer = ready_helper(
        await Cluster.read(kube), node, "Source", stale_seconds=stale_seconds, now=now
    )
    listed = await helpers.call(peer, ListContainersRequest(label=constants.NAMESPACE_LABEL))
    return [
        EvacuatedWorkload(
            kind=WorkloadKind.CONTAINER,
            namespace=container.labels[constants.NAMESPACE_LABEL],
            name=container.name,
            state=WorkloadState.PENDING,
        )
        for container in sorted(listed.containers, key=lambda c: c.name)
        if container.labels.get(constants.NAMESPACE_LABEL)
    ]


def opted_in(pod: Mapping[str, Any], node: str) -> bool:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    annotations = meta.get("annotations") or {}
    return (
        spec.get("nodeName") == node
        and annotations.get(constants.EVACUATION_ANNOTATION) in constants.EVACUATION_CHOICES
        and meta.get("deletionTimestamp") is None
    )


async def pods(kube: Kube, node: str) -> list[EvacuatedWorkload]:
    found = [p for p in await kube.running_pods() if opted_in(p, node)]
    return [
        EvacuatedWorkload(
            kind=WorkloadKind.POD,
            namespace=p["metadata"]["namespace"],
            name=p["metadata"]["name"],
            state=WorkloadState.PENDING,
        )
        for p in sorted(found, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
    ]


async def targets(
    kube: Kube, source: str, *, stale_seconds: float, now: datetime.datetime
) -> list[str]:
    """Nodes a workload may be sent to: Ready helper, not cordoned, not the source."""
    nodes = await kube.nodes()  # read once: the names and the cordons
    cluster = Cluster(
        nodes=[n["metadata"]["name"] for n in nodes], helpers=await kube.node_helpers()
    )
    schedulable = {
        n["metadata"]["name"] for n in nodes if not (n.get("spec") or {}).get("unschedulable")
    }
    fit = []
    for node in sorted(schedulable - {source}):
        try:
            ready_helper(cluster, node, "Target", stale_seconds=stale_seconds, now=now)
        except Refusal:  # no ready helper there: no target
            continue
        fit.append(node)
    return fit
