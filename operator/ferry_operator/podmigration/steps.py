"""A pod migration's steps, one per phase, and its rollback; each records what it saw.

The source pod's containers are frozen and checkpointed by the source helper
through its kubelet; the bundle of archives is streamed to the target helper
(the same ``send``/``receive`` a container's archive takes), which makes a
checkpoint image of each container in its containerd; the replacement pod
restores from them. Only once it is Running and Ready does it take the
source's labels (its ReplicaSet adopts it) and the source go.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

from ferry_api import constants
from ferry_api.conditions import ConditionStatus
from ferry_api.migration import Archive, Progress, Timings
from ferry_api.podmigration import PodMigration, PodMigrationSpec, PodMigrationStatus
from ferry_wire import Peer, RemoteError
from ferry_wire.migration import CleanupRequest, SendRequest
from ferry_wire.pods import PodCheckpointRequest, PodImagesRequest, PodThawRequest
from ferry_wire.pods import PodContainer as WireContainer

from .. import metrics, validation
from ..governing import governing
from ..helperclient import HelperClient
from ..kube import Kube
from ..peers import peer_of
from ..phases import COND_SUCCEEDED, COND_VALIDATED
from ..policy import Failure, Refusal
from ..progress import ProgressWrites
from ..settings import Settings
from ..slots import NodeSlots
from ..status import Clock, Events, StatusRecorder
from . import capacity, placement, replacement

log = logging.getLogger(__name__)

COND_CHECKPOINTED = "Checkpointed"
COND_TRANSFERRED = "Transferred"
COND_RESTORED = "Restored"
CONDITIONS = (COND_VALIDATED, COND_CHECKPOINTED, COND_TRANSFERRED, COND_RESTORED, COND_SUCCEEDED)
#: How often the replacement pod is looked at while it starts.
POLL_SECONDS = 0.2
#: CRIU's words for a connection it will not dump without --tcp-established, and what to do.
TCP_REFUSED = "Connected TCP socket"
TCP_REMEDY = (
    "The pod holds an established TCP connection: the replacement gets a new address on "
    "another node, so the connection cannot follow it (and the kubelet's checkpoint takes no "
    "--tcp-established). Close it, or have its peer reconnect, before moving the pod; the "
    "pod runs on where it was"
)
#: Longest a kubelet checkpoint of one container may take.
KUBELET_TIMEOUT_SECONDS = 120


@dataclass(kw_only=True)
class PodContext:
    resource: PodMigration
    record: StatusRecorder[PodMigrationStatus]
    kube: Kube
    helpers: HelperClient
    settings: Settings
    slots: NodeSlots
    events: Events
    clock: Clock
    #: Learnt at validation, asked again after a restart.
    peer_pair: tuple[Peer, Peer] | None = None
    source_pod: dict[str, Any] | None = None
    containers: tuple[WireContainer, ...] = ()
    #: The labels the source's ReplicaSet selects on (empty for a bare pod).
    selector: dict[str, str] = field(default_factory=dict)
    credential: str | None = None
    frozen_at: datetime.datetime | None = None

    @property
    def spec(self) -> PodMigrationSpec:
        return self.resource.spec

    @property
    def status(self) -> PodMigrationStatus:
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
    def pod(self) -> str:
        return self.spec.pod_name

    def freeze_time(self) -> datetime.datetime | None:
        return self.frozen_at or self.status.freeze_time

    async def peers(self) -> tuple[Peer, Peer]:
        if self.peer_pair is None:
            helpers = await self.kube.node_helpers()
            source = helpers.get(self.status.source_node or "")
            target = helpers.get(self.status.target_node or "")
            if source is None or target is None:
                raise Failure(
                    reason="HelperGone", message="a node-helper of this migration disappeared"
                )
            self.peer_pair = (peer_of(source), peer_of(target))
        return self.peer_pair

    async def source(self) -> tuple[dict[str, Any], tuple[WireContainer, ...]]:
        """The source pod (the one with the UID validation saw) and its containers."""
        if self.source_pod is None or not self.containers:
            pod = await self.kube.pod(self.namespace, self.pod)
            if pod is None or pod["metadata"]["uid"] != self.status.moved_pod_uid:
                raise Failure(reason="SourcePodGone", message=f"pod {self.pod} is gone")
            return (await self.learn(pod)).body, self.containers
        return self.source_pod, self.containers

    async def learn(self, pod: dict[str, Any] | None) -> placement.MovablePod:
        """Check the pod and keep what the steps need of it: its containers, its owner's
        selector."""
        movable = placement.check_pod(pod, namespace=self.namespace, name=self.pod)
        self.source_pod = movable.body
        self.containers = tuple(
            WireContainer(name=c.name, container_id=c.container_id) for c in movable.containers
        )
        if movable.owner is not None:
            owner = await self.kube.replica_set(self.namespace, movable.owner)
            selector = ((owner or {}).get("spec") or {}).get("selector") or {}
            self.selector = dict(selector.get("matchLabels") or {})
            for expression in selector.get("matchExpressions") or []:
                key = expression["key"]
                labels = movable.body["metadata"].get("labels") or {}
                if key in labels:
                    self.selector[key] = labels[key]
        return movable

    async def grant(self, target: Peer) -> str:
        return await self.helpers.grant_stream(
            target, uid=self.uid, ttl_seconds=self.spec.timeout_seconds
        )


class PodSteps:
    def __init__(self, context: PodContext) -> None:
        self.c = context

    def _timings(self, **changes: float) -> None:
        current = self.c.status.timings or Timings()
        self.c.record.update(timings=current.model_copy(update=changes))

    # -- Validating ------------------------------------------------------------------

    async def validate(self) -> None:
        """The pod, its node, the target and both helpers, checked before anything freezes."""
        c = self.c
        pod, nodes, helpers, running = await asyncio.gather(
            c.kube.pod(c.namespace, c.pod),
            c.kube.nodes(),
            c.kube.node_helpers(),
            c.kube.running_pods(),
        )
        movable = await c.learn(pod)
        now, stale = c.clock(), c.settings.helper_stale_seconds
        source = movable.node
        problem = validation.helper_problem(
            helpers.get(source), node=source, runtime=None, now=now, stale_seconds=stale, pods=True
        ) or placement.cri_problem(helpers.get(source), source)
        if problem is not None:
            raise Refusal(reason="SourceNotReady", message=problem)
        target = placement.choose_target(
            movable.body,
            source=source,
            asked=c.spec.target.node if c.spec.target else None,
            nodes=nodes,
            helpers=helpers,
            now=now,
            stale_seconds=stale,
            used=capacity.used_by_node(running),
        )
        validation.check_compatible(helpers[source], helpers[target])
        c.peer_pair = (peer_of(helpers[source]), peer_of(helpers[target]))
        names = tuple(x.name for x in movable.containers)
        labels = (movable.body.get("metadata") or {}).get("labels") or {}
        c.record.update(
            source_node=source,
            source_pod_uid=movable.uid,
            target_node=target,
            containers=names,
            policy=await governing(c.kube, namespace=c.namespace, labels=labels, memory_bytes=None),
        )
        owner = f"ReplicaSet {movable.owner}" if movable.owner else "no owner"
        c.record.condition(
            COND_VALIDATED,
            ConditionStatus.TRUE,
            "Validated",
            f"pod {c.pod} ({', '.join(names)}; {owner}) on {source} -> {target}",
        )

    # -- Checkpointing -----------------------------------------------------------------

    async def prepare_checkpoint(self) -> None:
        _, target = await self.c.peers()
        self.c.credential = await self.c.grant(target)

    async def checkpoint(self) -> None:
        c = self.c
        source, target = await c.peers()
        _, containers = await c.source()
        if c.credential is None:
            c.credential = await c.grant(target)
        c.frozen_at = c.clock()
        c.record.update(freeze_time=c.frozen_at)
        request = PodCheckpointRequest(
            uid=c.uid,
            namespace=c.namespace,
            pod=c.pod,
            containers=containers,
            timeout_seconds=min(c.spec.timeout_seconds, KUBELET_TIMEOUT_SECONDS),
        )
        try:
            result = await c.helpers.call(source, request)
        except RemoteError as error:
            if TCP_REFUSED not in error.message:
                raise
            raise RemoteError(error.reason, f"{error.message}. {TCP_REMEDY}") from None
        self._timings(checkpoint_seconds=round(result.seconds, 3))
        c.record.update(
            archive=Archive(bytes=result.size_bytes, sha256=result.sha256),
            criu_statistics=result.statistics,
            progress=Progress(bytes_sent=0, bytes_total=result.size_bytes),
        )
        c.record.condition(
            COND_CHECKPOINTED,
            ConditionStatus.TRUE,
            "Checkpointed",
            f"{len(containers)} container(s) frozen and checkpointed by the kubelet on "
            f"{source.node}: {result.size_bytes} bytes",
        )

    # -- Transferring ------------------------------------------------------------------

    async def transfer(self) -> None:
        c = self.c
        source, target = await c.peers()
        credential = c.credential or await c.grant(target)
        result = await c.helpers.call(
            source,
            SendRequest(
                uid=c.uid,
                target=target,
                credential=credential,
                bandwidth_bytes_per_second=(
                    c.status.policy.bandwidth_bytes_per_second if c.status.policy else None
                ),
            ),
            on_progress=ProgressWrites(c.record),
        )
        metrics.BYTES.inc(result.bytes)
        self._timings(transfer_seconds=round(result.seconds, 3))
        if result.bytes_per_second is not None:
            self._timings(transfer_bytes_per_second=round(result.bytes_per_second))
        c.record.update(progress=Progress(bytes_sent=result.bytes, bytes_total=result.bytes))
        c.record.condition(
            COND_TRANSFERRED,
            ConditionStatus.TRUE,
            "ChecksumVerified",
            f"{result.bytes} bytes received by {target.node}, sha256 verified",
        )

    # -- Restoring ---------------------------------------------------------------------

    async def restore(self) -> None:
        """Checkpoint images on the target, and the replacement pod made from them."""
        c = self.c
        _, target = await c.peers()
        pod, containers = await c.source()
        made = await c.helpers.call(
            target,
            PodImagesRequest(
                uid=c.uid,
                namespace=c.namespace,
                pod=c.pod,
                containers=tuple(x.name for x in containers),
            ),
        )
        body = replacement.replacement_pod(
            pod,
            uid=c.uid,
            migration=c.name,
            target=target.node,
            images=made.images,
            selector=c.selector,
        )
        name = body["metadata"]["name"]
        # Named in status before it exists: a rollback after an operator restart finds it.
        c.record.update(target_pod=name)
        await c.record.write()
        started = c.clock()
        if not await c.kube.create_pod(c.namespace, body):
            existing = await c.kube.pod(c.namespace, name)
            labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
            if labels.get(constants.POD_MIGRATION_UID_LABEL) != c.uid:
                raise Failure(
                    reason="ReplacementNameTaken",
                    message=f"a pod named {name} exists and was not made by this migration",
                )
        self._timings(restore_seconds=round(made.seconds, 3))
        c.events.normal(
            "Restoring",
            f"checkpoint images made on {target.node} in {made.seconds:.2f}s; "
            f"replacement pod {name} created",
        )
        await self._wait_ready(name)
        self._timings(
            restore_seconds=round(made.seconds + (c.clock() - started).total_seconds(), 3)
        )
        frozen = c.freeze_time()
        if frozen is not None:
            downtime = (c.clock() - frozen).total_seconds()
            self._timings(downtime_seconds=round(downtime, 3))
            metrics.DOWNTIME.observe(downtime)
        c.record.condition(
            COND_RESTORED,
            ConditionStatus.TRUE,
            "Restored",
            f"pod {name} runs and is Ready on {target.node}",
        )

    async def _wait_ready(self, name: str) -> None:
        c = self.c
        while True:
            pod = await c.kube.pod(c.namespace, name)
            if replacement.ready(pod):
                return
            if (why := replacement.broken(pod)) is not None:
                raise Failure(reason="ReplacementNotRunning", message=why)
            await asyncio.sleep(POLL_SECONDS)

    # -- Verifying ---------------------------------------------------------------------

    async def hand_over(self) -> None:
        """The replacement runs: it takes the source's labels (and owner), the source goes."""
        c = self.c
        source, target = await c.peers()
        name = c.status.target_pod or ""
        await c.record.written()
        made = await c.kube.pod(c.namespace, name)
        if made is None or not replacement.ready(made):
            raise Failure(
                reason="ReplacementNotRunning",
                message=replacement.broken(made) or f"pod {name} is no longer Ready",
            )
        labels = replacement.adoption_labels(made)
        try:
            _, containers = await c.source()
        except Failure:  # deleted already: by this step before an operator restart, or a user
            containers, gone = c.containers, True
        else:
            gone = False
            if labels:
                # Cheapest to delete first: once the replacement carries its labels the
                # ReplicaSet has one pod too many and removes the source, never the copy.
                await c.kube.patch_pod_metadata(
                    c.namespace,
                    c.pod,
                    annotations={replacement.DELETION_COST: replacement.DELETE_FIRST},
                )
        if labels:
            # Before the source goes: a ReplicaSet that saw neither would start a fresh pod.
            await c.kube.patch_pod_metadata(
                c.namespace, name, labels=labels, annotations={replacement.ADOPT_LABELS: None}
            )
        if not gone:
            try:
                await c.kube.delete_pod(c.namespace, c.pod, uid=c.status.moved_pod_uid or "")
            except Exception as error:
                if not labels:
                    raise  # nothing adopted the replacement: a rollback is still whole
                # Adopted: its ReplicaSet, one pod over, deletes the source (cheapest) itself.
                self._left_behind(name, f"deleting pod {c.pod}: {error}")
                containers = ()  # not terminating: killed now, its kubelet would restart it
        # Past this point nothing rolls back: the source is going. What is left is tidying
        # up, and a failure there is reported, not undone.
        try:
            if containers:
                # The pod is terminating (its kubelet starts nothing again): end the frozen
                # processes now rather than after its grace period.
                await c.helpers.call(
                    source, PodThawRequest(uid=c.uid, containers=containers, kill=True)
                )
            await c.helpers.call(target, CleanupRequest(uid=c.uid, remove_restored=False))
        except Exception as error:  # the move is done; say what was left behind
            self._left_behind(name, str(error))
        total = (c.clock() - self.started()).total_seconds()
        self._timings(total_seconds=round(total, 3))
        c.record.condition(
            COND_SUCCEEDED, ConditionStatus.TRUE, "Succeeded", f"pod {name} runs on {target.node}"
        )
        c.record.update(completion_time=c.clock().replace(microsecond=0))
        metrics.MIGRATIONS.labels("succeeded", "Succeeded").inc()
        metrics.DURATION.observe(total)

    def _left_behind(self, name: str, what: str) -> None:
        c = self.c
        text = f"pod {name} runs, but cleaning up after the move failed: {what}"
        log.warning("%s/%s: %s", c.namespace, c.name, text)
        c.events.warning("CleanupIncomplete", text)

    def started(self) -> datetime.datetime:
        transitions = self.c.status.phase_transitions
        return transitions[0].time if transitions else self.c.status.start_time or self.c.clock()

    def summary(self) -> str:
        c = self.c
        downtime = c.status.timings.downtime_seconds if c.status.timings else None
        text = (
            f"pod {c.pod} moved {c.status.source_node} -> {c.status.target_node} "
            f"as {c.status.target_pod}"
        )
        return text + (f", downtime {downtime:.2f}s" if downtime is not None else "")

    # -- rolling back ------------------------------------------------------------------

    async def roll_back(self) -> None:
        """The replacement (if any) removed first, then the source thawed: one copy runs.

        Never when the source pod is gone or going (a user deleted it mid-move): the
        replacement is then the only copy, and it is kept.
        """
        c = self.c
        source, target = await c.peers()
        pod = await c.kube.pod(c.namespace, c.pod)
        meta = (pod or {}).get("metadata") or {}
        if meta.get("uid") != c.status.moved_pod_uid or meta.get("deletionTimestamp"):
            kept = f"; pod {c.status.target_pod} is kept" if c.status.target_pod else ""
            raise Failure(
                reason="SourcePodGone",
                message=f"pod {c.pod} was deleted during the move, nothing to bring back{kept}",
            )
        if c.status.target_pod:
            made = await c.kube.pod(c.namespace, c.status.target_pod)
            labels = ((made or {}).get("metadata") or {}).get("labels") or {}
            if made is not None and labels.get(constants.POD_MIGRATION_UID_LABEL) == c.uid:
                await c.kube.delete_pod(
                    c.namespace, c.status.target_pod, uid=made["metadata"]["uid"], grace_seconds=0
                )
        await c.helpers.call(target, CleanupRequest(uid=c.uid, remove_restored=True))
        pod, containers = await c.source()
        if (pod["metadata"].get("annotations") or {}).get(replacement.DELETION_COST):
            await c.kube.patch_pod_metadata(
                c.namespace, c.pod, annotations={replacement.DELETION_COST: None}
            )
        thawed = await c.helpers.call(source, PodThawRequest(uid=c.uid, containers=containers))
        c.events.normal(
            "RolledBack",
            f"pod {c.pod} runs on {source.node} again"
            + (f" ({', '.join(thawed.resumed)} resumed)" if thawed.resumed else ""),
        )
