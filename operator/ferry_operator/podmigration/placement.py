"""Whether a pod may move, and where: pure decisions over the pod, the nodes and their helpers.

Each refusal carries a CamelCase reason and says what to change. The pod and
the nodes are the API's JSON (camelCase dicts), as :mod:`..kube` reads them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry_api.nodehelper import NodeHelper

from .. import validation
from ..policy import Refusal
from .capacity import Resources, no_room

CRI_PREFIX = "containerd://"
#: Controllers whose pods Ferry moves: none (a bare pod), or a ReplicaSet, which adopts
#: the replacement. Anything else would make its own pod and fight the move.
MOVABLE_OWNERS = frozenset({"ReplicaSet"})
#: Volumes that hold nothing of the node: the target gets the same content.
PORTABLE_VOLUMES = frozenset({"configMap", "secret", "downwardAPI", "projected"})


@dataclass(frozen=True)
class PodContainer:
    name: str
    container_id: str


@dataclass(frozen=True)
class MovablePod:
    """What validation learnt of the pod."""

    node: str
    uid: str
    containers: tuple[PodContainer, ...]
    #: The ReplicaSet that owns it, or None for a bare pod.
    owner: str | None
    #: The pod as the API served it.
    body: dict[str, Any]


def _controller(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def check_pod(pod: Mapping[str, Any] | None, *, namespace: str, name: str) -> MovablePod:
    """The pod, if it can be moved as it is now; else a Refusal that says why."""
    if pod is None:
        raise Refusal(reason="PodNotFound", message=f"there is no pod {name!r} in {namespace}")
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    owner = _controller(pod)
    if owner is not None and owner.get("kind") not in MOVABLE_OWNERS:
        kind = owner.get("kind")
        why = (
            "its identity and volumes are bound to its ordinal; moving StatefulSet pods is "
            "not supported yet"
            if kind == "StatefulSet"
            else "its controller would make a new pod of its own"
        )
        raise Refusal(
            reason="UnsupportedOwner",
            message=f"pod {name} belongs to {kind} {owner.get('name')}: {why}. "
            "Ferry moves bare pods and pods of a ReplicaSet (a Deployment's)",
        )
    for volume in spec.get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        if not set(kinds) <= PORTABLE_VOLUMES:
            raise Refusal(
                reason="VolumeBoundToNode",
                message=f"volume {volume.get('name')!r} ({', '.join(kinds)}) keeps its data on "
                f"{spec.get('nodeName')}: the replacement would start without it. Ferry moves "
                "pods whose volumes are configMap, secret, downwardAPI or projected",
            )
    if status.get("phase") != "Running":
        raise Refusal(
            reason="PodNotRunning",
            message=f"pod {name} is {status.get('phase')}: only a Running pod can be moved",
        )
    if spec.get("hostNetwork"):
        raise Refusal(
            reason="HostNetworkPod",
            message=f"pod {name} uses the node's network: its sockets cannot move to another node",
        )
    containers = []
    for state in status.get("containerStatuses") or []:
        cid = state.get("containerID") or ""
        if not state.get("ready") or "running" not in (state.get("state") or {}):
            raise Refusal(
                reason="ContainerNotReady",
                message=f"container {state.get('name')} of pod {name} is not running and ready",
            )
        if not cid.startswith(CRI_PREFIX):
            raise Refusal(
                reason="UnsupportedRuntime",
                message=f"container {state.get('name')} runs in {cid.split('://')[0]!r}: pods "
                "move through containerd's checkpoint images only",
            )
        containers.append(PodContainer(name=state["name"], container_id=cid[len(CRI_PREFIX) :]))
    declared = {c["name"] for c in spec.get("containers") or []}
    if {c.name for c in containers} != declared or not containers:
        raise Refusal(
            reason="ContainerNotReady",
            message=f"pod {name} does not report every container running yet",
        )
    return MovablePod(
        node=spec.get("nodeName") or "",
        uid=pod["metadata"]["uid"],
        containers=tuple(containers),
        owner=owner.get("name") if owner is not None else None,
        body=dict(pod),
    )


def cri_problem(helper: NodeHelper | None, node: str) -> str | None:
    """Why ``node``'s helper cannot checkpoint or restore pods, or None when it can."""
    cri = helper.status.cri if helper is not None else None
    if cri is None:
        return f"the node-helper on {node} reaches no CRI runtime (nodeHelper.cri.socket)"
    if not cri.checkpoint_images:
        return (
            f"{cri.runtime} {cri.version or '(version unknown)'} on {node} cannot restore a "
            "container from a checkpoint image (containerd 2.1 or newer can)"
        )
    return None


# -- where the pod may run -----------------------------------------------------------


def _tolerated(taint: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]]) -> bool:
    if taint.get("effect") == "PreferNoSchedule":
        return True
    for toleration in tolerations:
        effect = toleration.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        key, operator = toleration.get("key"), toleration.get("operator", "Equal")
        if not key and operator == "Exists":
            return True
        if key != taint.get("key"):
            continue
        if operator == "Exists" or toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def _matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    values = expression.get("values") or []
    match operator:
        case "In":
            return labels.get(key) in values
        case "NotIn":
            return labels.get(key) not in values
        case "Exists":
            return key in labels
        case "DoesNotExist":
            return key not in labels
        case "Gt" | "Lt":
            try:
                have, bound = int(labels.get(key, "")), int(values[0])
            except (ValueError, IndexError):
                return False
            return have > bound if operator == "Gt" else have < bound
    return False


def unfit(pod: Mapping[str, Any], node: Mapping[str, Any]) -> str | None:
    """Why the scheduler would not put ``pod`` on ``node`` (None: it would), as far as
    nodeSelector, required node affinity, taints and cordon go (room: :mod:`.capacity`)."""
    spec = pod.get("spec") or {}
    name = node["metadata"]["name"]
    labels = node["metadata"].get("labels") or {}
    if (node.get("spec") or {}).get("unschedulable"):
        return f"{name} is cordoned"
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return f"{name} lacks the pod's nodeSelector {key}={value}"
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms") or []
    if required and not any(
        all(_matches(e, labels) for e in term.get("matchExpressions") or [])
        and all(_matches(e, {"metadata.name": name}) for e in term.get("matchFields") or [])
        for term in required
    ):
        return f"{name} does not match the pod's required node affinity"
    tolerations = spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if not _tolerated(taint, tolerations):
            return f"{name} has the taint {taint.get('key')}:{taint.get('effect')}"
    return None


def choose_target(
    pod: Mapping[str, Any],
    *,
    source: str,
    asked: str | None,
    nodes: Sequence[Mapping[str, Any]],
    helpers: Mapping[str, NodeHelper],
    now: datetime.datetime,
    stale_seconds: float,
    used: Mapping[str, Resources] | None = None,
) -> str:
    """The node to move the pod to: ``asked`` if it fits, else the first that fits.

    ``used``: the requests of the pods each node runs (none: room is not checked).
    """
    by_name = {n["metadata"]["name"]: n for n in nodes}

    def problem(name: str) -> str | None:
        node = by_name.get(name)
        if node is None:
            return f"there is no node {name!r}"
        if name == source:
            return f"the pod already runs on {name}"
        return (
            unfit(pod, node)
            or (no_room(node, pod, used.get(name)) if used is not None else None)
            or validation.helper_problem(
                helpers.get(name),
                node=name,
                runtime=None,
                now=now,
                stale_seconds=stale_seconds,
                pods=True,
            )
            or cri_problem(helpers.get(name), name)
        )

    if asked is not None:
        why = problem(asked)
        if why is not None:
            reason = "TargetNodeNotFound" if asked not in by_name else "TargetUnfit"
            raise Refusal(reason=reason, message=why)
        return str(asked)
    reasons = []
    for name in sorted(str(n) for n in by_name):
        if (why := problem(name)) is None:
            return name
        reasons.append(why)
    raise Refusal(
        reason="NoEligibleTarget",
        message="no node can take the pod: " + "; ".join(reasons),
    )
