"""``kubectl drain``, turned into live migration for the pods that opt in.

The API server asks this webhook before it evicts a pod (the ``pods/eviction``
subresource, what ``kubectl drain`` and other eviction clients create). A pod
annotated ``ferry.dev/evacuation: migrate`` (or ``migrate-or-evict``) is not
evicted: the first such eviction on a node starts a NodeEvacuation of that
node's pods, and every eviction is answered ``429 Too Many Requests`` with
where its pod's move is, so ``kubectl drain`` prints that and asks again every
5 s. Once the pod has moved, its PodMigration deletes it and the next eviction
finds nothing to evict: the drain goes on. A pod that could not move keeps
running: ``migrate`` refuses its eviction for good (403, with the reason:
drain stops and says why), ``migrate-or-evict`` lets it be evicted as if Ferry
were not there (KubeVirt's ``LiveMigrate`` and ``LiveMigrateIfPossible``).

Everything else is allowed untouched: pods without the annotation, pods not
bound or already finished or terminating, and dry runs (with a warning).
"""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry_api import constants
from ferry_api.evacuation import (
    EvacuatedWorkload,
    NodeEvacuation,
    WorkloadKind,
    WorkloadState,
    parse_node_evacuation,
)

from ..kube import Kube
from .workloads import opted_in

#: kubectl drain retries an eviction answered 429 every 5 s; any other refusal ends it.
RETRY_LATER = 429
REFUSED = 403
#: A finished evacuation that left the pod where it was answers for it this long (the
#: drain that caused it sees the outcome); an eviction after that tries again.
OUTCOME_SECONDS = 30.0
EVACUATION_NAME_MAX = 253
#: The operator is one process (the Deployment runs one replica, replaced, never two),
#: so this lock is enough to make concurrent evictions of one node share one evacuation.
_LOCK = asyncio.Lock()


@dataclass(frozen=True)
class Verdict:
    """The webhook's answer: allowed, or refused with an HTTP code and a message."""

    allowed: bool
    code: int = 0
    message: str = ""
    #: Start a NodeEvacuation of this node's pods (then refuse with 429).
    evacuate_node: str | None = None
    warnings: tuple[str, ...] = field(default=())


ALLOW = Verdict(allowed=True)


def _created(body: Mapping[str, Any]) -> datetime.datetime | None:
    stamp = (body.get("metadata") or {}).get("creationTimestamp")
    if isinstance(stamp, datetime.datetime):
        return stamp
    return datetime.datetime.fromisoformat(stamp) if isinstance(stamp, str) else None


def _entry(evacuation: NodeEvacuation, namespace: str, name: str) -> EvacuatedWorkload | None:
    return next(
        (
            w
            for w in evacuation.status.workloads
            if w.kind == WorkloadKind.POD and w.namespace == namespace and w.name == name
        ),
        None,
    )


def _final(evacuation: NodeEvacuation) -> bool:
    return evacuation.status.completion_time is not None


def judge(
    pod: Mapping[str, Any] | None,
    evacuations: Iterable[NodeEvacuation],
    *,
    now: datetime.datetime,
    dry_run: bool = False,
) -> Verdict:
    """What to answer an eviction of ``pod`` (None: not found), given every NodeEvacuation."""
    if pod is None:
        return ALLOW  # the API server answers 404 itself
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    node = spec.get("nodeName")
    # The evacuation an eviction starts must find the pod: both ask opted_in.
    if (
        not node
        or not opted_in(pod, node)
        or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
    ):
        return ALLOW
    opt = (meta.get("annotations") or {})[constants.EVACUATION_ANNOTATION]
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    if dry_run:
        return Verdict(
            allowed=True,
            warnings=(f"Ferry would live-migrate pod {namespace}/{name} instead of evicting it",),
        )
    born = _created(pod)
    mine = sorted(
        (
            e
            for e in evacuations
            if e.spec.node_name == node
            and e.spec.pods
            and (born is None or (e.metadata.creation_timestamp or now) >= born)
        ),
        key=lambda e: e.metadata.creation_timestamp or now,
    )
    latest = mine[-1] if mine else None
    if latest is None:
        return _start(node)
    entry = _entry(latest, namespace, name)
    label = f"NodeEvacuation {latest.metadata.name}"
    if not _final(latest):
        if entry is None:
            if latest.status.phase is None:
                return _wait(f"{label} is starting; it moves this pod")
            return _wait(f"{label} began before this pod was on {node}; it is tried when that ends")
        return _in_progress(entry, label)
    if entry is None or entry.state == WorkloadState.MOVED:
        return _start(node)
    ended = latest.status.completion_time or now
    if (now - ended).total_seconds() > OUTCOME_SECONDS:
        return _start(node)  # a new drain: try again
    return _not_moved(entry, label, node, evict_anyway=opt == constants.EVACUATION_MIGRATE_OR_EVICT)


def _start(node: str) -> Verdict:
    return Verdict(
        allowed=False,
        code=RETRY_LATER,
        message=f"Ferry live-migrates this pod instead of evicting it: evacuating {node}'s pods",
        evacuate_node=node,
    )


def _wait(message: str) -> Verdict:
    return Verdict(allowed=False, code=RETRY_LATER, message=f"Ferry: {message}")


def _in_progress(entry: EvacuatedWorkload, label: str) -> Verdict:
    if entry.state == WorkloadState.PENDING:
        return _wait(f"waiting its turn to be live-migrated ({label})")
    if entry.state == WorkloadState.MIGRATING:
        return _wait(
            f"being live-migrated to {entry.target} by PodMigration {entry.migration} ({label})"
        )
    if entry.state == WorkloadState.MOVED:
        return _wait(f"moved to {entry.target}; this pod is being removed ({label})")
    return _wait(f"{entry.state.value.lower()} by {label}, which is still running")


def _not_moved(entry: EvacuatedWorkload, label: str, node: str, *, evict_anyway: bool) -> Verdict:
    why = f"{entry.reason}: {entry.message}" if entry.message else str(entry.reason)
    if evict_anyway:
        return Verdict(
            allowed=True,
            warnings=(
                f"Ferry could not live-migrate this pod ({why}; {label}); "
                f"{constants.EVACUATION_MIGRATE_OR_EVICT}: evicted instead",
            ),
        )
    return Verdict(
        allowed=False,
        code=REFUSED,
        message=(
            f"Ferry could not live-migrate this pod ({why}; {label}); it keeps running on "
            f"{node}. Fix the cause and drain again, or set the annotation "
            f"{constants.EVACUATION_ANNOTATION}={constants.EVACUATION_MIGRATE_OR_EVICT} "
            "(or remove it) to let it be evicted"
        ),
    )


def evacuation_name(node: str, now: datetime.datetime) -> str:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^a-z0-9.-]+", "-", node.lower()).strip("-.")
    return f"drain-{base[: EVACUATION_NAME_MAX - 22]}-{stamp}"


def evacuation_body(node: str, now: datetime.datetime) -> dict[str, Any]:
    """The pods-only NodeEvacuation an eviction starts (drain moves pods, not containers)."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.NODE_EVACUATION_KIND,
        "metadata": {
            "name": evacuation_name(node, now),
            "labels": {constants.EVACUATION_TRIGGER_LABEL: "eviction"},
        },
        "spec": {"nodeName": node, "pods": True, "containers": False},
    }


def operator_leaving(
    node: str,
    pods: Iterable[Mapping[str, Any]],
    evacuations: list[NodeEvacuation],
    *,
    now: datetime.datetime,
) -> Verdict:
    """The operator's own eviction: not while pods on its node wait for it to move them
    (drain evicts every pod at once; without the operator they would be evicted unmoved)."""
    waiting = [
        p
        for p in pods
        if (p.get("spec") or {}).get("nodeName") == node
        and judge(p, evacuations, now=now).code == RETRY_LATER
    ]
    if not waiting:
        return ALLOW
    return _wait(
        f"the operator leaves {node} after the {len(waiting)} pod(s) it live-migrates off it"
    )


async def review(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    now: datetime.datetime,
    dry_run: bool,
    own_pod: tuple[str, str] | None = None,
) -> Verdict:
    """Read the pod and the evacuations, judge, and start an evacuation if that is the answer."""
    async with _LOCK:
        pod = await kube.pod(namespace, name)
        listed = await kube.list_everywhere(constants.NODE_EVACUATION_PLURAL)
        evacuations = [parse_node_evacuation(body) for body in listed]
        if pod is not None and (namespace, name) == own_pod and not dry_run:
            node = (pod.get("spec") or {}).get("nodeName") or ""
            return operator_leaving(node, await kube.running_pods(), evacuations, now=now)
        verdict = judge(pod, evacuations, now=now, dry_run=dry_run)
        if verdict.evacuate_node is not None:
            await kube.create(
                constants.NODE_EVACUATION_PLURAL, "", evacuation_body(verdict.evacuate_node, now)
            )
        return verdict
