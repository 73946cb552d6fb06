"""One NodeEvacuation's loop: cordon, find the workloads, move them, a few at a time.

The state lives in status (every workload, its migration, the targets that
refused it), so a restarted operator resumes where the last one was; each
workload's migration is named for its attempt, so a create that was cut short
is found, not made twice. Children are ContainerMigrations and PodMigrations
owned by the evacuation and labelled with its name: everything a migration
guarantees (validation before the freeze, rollback, the source kept) holds for
each of them.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import kopf
from ferry_api import constants
from ferry_api.conditions import ConditionStatus
from ferry_api.evacuation import (
    EvacuatedWorkload,
    EvacuationPhase,
    NodeEvacuation,
    NodeEvacuationStatus,
    WorkloadKind,
    WorkloadState,
)

from ..helperclient import HelperClient
from ..kube import Kube
from ..policy import ApiError, Kind, kind_of
from ..settings import Settings
from ..status import Clock, Events, StatusRecorder, utc_now
from . import plan, workloads

log = logging.getLogger(__name__)

#: How often the children's statuses are read.
POLL_SECONDS = 1.0
#: Migrations out of the node at once when neither the spec nor a policy says.
DEFAULT_MAX_PARALLEL = 2
COND_COMPLETE = "Complete"
ENDED = frozenset({WorkloadState.MOVED, WorkloadState.REFUSED, WorkloadState.FAILED})


class Evacuator:
    def __init__(
        self,
        *,
        resource: NodeEvacuation,
        kube: Kube,
        helpers: HelperClient,
        settings: Settings,
        events: Events,
        clock: Clock = utc_now,
    ) -> None:
        self.resource = resource
        self.kube = kube
        self.helpers = helpers
        self.settings = settings
        self.events = events
        self.clock = clock
        self.name = resource.metadata.name or ""
        self.node = resource.spec.node_name
        self.record = StatusRecorder[NodeEvacuationStatus](
            resource.status,
            kube=kube,
            plural=constants.NODE_EVACUATION_PLURAL,
            namespace="",
            name=self.name,
            generation=resource.metadata.generation,
            clock=clock,
        )

    @property
    def status(self) -> NodeEvacuationStatus:
        return self.record.status

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        if self.status.phase in (EvacuationPhase.SUCCEEDED, EvacuationPhase.INCOMPLETE):
            return
        if self.status.phase is None:
            await self._begin()
        while not stopped:
            if await self.step():
                await self._finish()
                return
            await stopped.wait(POLL_SECONDS)

    async def _begin(self) -> None:
        spec, now = self.resource.spec, self.clock()
        if spec.cordon and await self.kube.cordon(self.node):
            self.events.normal("Cordoned", f"{self.node} is unschedulable")
        found: list[EvacuatedWorkload] = []
        if spec.containers:
            found += await workloads.containers(
                self.kube,
                self.helpers,
                self.node,
                stale_seconds=self.settings.helper_stale_seconds,
                now=now,
            )
        if spec.pods:
            found += await workloads.pods(self.kube, self.node)
        limit = spec.max_parallel or DEFAULT_MAX_PARALLEL
        text = f"{len(found)} workload(s) to move off {self.node}, {limit} at a time"
        self.record.condition(COND_COMPLETE, ConditionStatus.FALSE, "Evacuating", text)
        self.record.update(
            phase=EvacuationPhase.EVACUATING,
            workloads=tuple(found),
            max_parallel=limit,
            start_time=now.replace(microsecond=0),
            observed_generation=self.resource.metadata.generation,
            message=text,
        )
        await self.record.write()
        self.events.normal("Evacuating", text)

    async def step(self) -> bool:
        """Read the children, start what the limit allows; True once every workload ended."""
        before = self.status.workloads
        current = [await self._refreshed(w) for w in before]
        current = await self._started(current)
        if tuple(current) != before:
            counts = Counter(w.state for w in current)
            waiting = sum(1 for w in current if w.state == WorkloadState.PENDING)
            active = counts[WorkloadState.MIGRATING]
            self.record.update(
                workloads=tuple(current),
                moved=counts[WorkloadState.MOVED],
                refused=counts[WorkloadState.REFUSED],
                failed=counts[WorkloadState.FAILED],
                message=f"{counts[WorkloadState.MOVED]} moved, {active} moving, "
                f"{waiting} waiting (at most {self.status.max_parallel} at once), "
                f"{counts[WorkloadState.REFUSED]} refused, {counts[WorkloadState.FAILED]} failed",
            )
            await self.record.write()
        return all(w.state in ENDED for w in current)

    async def _refreshed(self, workload: EvacuatedWorkload) -> EvacuatedWorkload:
        if workload.state != WorkloadState.MIGRATING or workload.migration is None:
            return workload
        body = await self.kube.get(
            plan.kind_plural(workload.kind), workload.namespace, workload.migration
        )
        if body is None:
            return self._ended(
                workload,
                WorkloadState.FAILED,
                "MigrationDeleted",
                f"{workload.migration} was deleted before it finished",
            )
        end = plan.ending(body.get("status") or {})
        if end is None:
            return workload
        if end.state == WorkloadState.MOVED:
            self.events.normal("Moved", f"{self._named(workload)} now runs on {workload.target}")
            return workload.model_copy(
                update={"state": end.state, "downtime_seconds": end.downtime_seconds}
            )
        if end.retry_elsewhere:
            log.info("%s: %s refused by %s: %s", self.name, workload.name, workload.target, end)
            return workload.model_copy(
                update={
                    "state": WorkloadState.PENDING,
                    "tried": (*workload.tried, workload.target or ""),
                    "reason": end.reason,
                    "message": end.message,
                }
            )
        return self._ended(workload, end.state, end.reason or "", end.message or "")

    def _ended(
        self, workload: EvacuatedWorkload, state: WorkloadState, reason: str, message: str
    ) -> EvacuatedWorkload:
        """A workload that did not move (Refused or Failed): it runs on the node."""
        self.events.warning(
            "NotMoved",
            f"{self._named(workload)} {state.value.lower()} ({reason}): runs on {self.node}",
        )
        return workload.model_copy(update={"state": state, "reason": reason, "message": message})

    async def _started(self, current: list[EvacuatedWorkload]) -> list[EvacuatedWorkload]:
        limit = self.status.max_parallel or DEFAULT_MAX_PARALLEL
        active = sum(1 for w in current if w.state == WorkloadState.MIGRATING)
        candidates: list[str] | None = None
        for i, workload in enumerate(current):
            if active >= limit:
                break
            if workload.state != WorkloadState.PENDING:
                continue
            if candidates is None:
                candidates = await workloads.targets(
                    self.kube,
                    self.node,
                    stale_seconds=self.settings.helper_stale_seconds,
                    now=self.clock(),
                )
            load = Counter(w.target or "" for w in current if w.state == WorkloadState.MIGRATING)
            target = plan.next_target(workload, candidates, load=load)
            if target is None:
                tried = ", ".join(workload.tried) or "none fit"
                current[i] = self._ended(
                    workload,
                    WorkloadState.REFUSED,
                    workload.reason or "NoTarget",
                    f"no other node would take it (tried: {tried})"
                    + (f"; last: {workload.message}" if workload.message else ""),
                )
                continue
            name = plan.child_name(self.name, workload)
            try:
                await self.kube.create(
                    plan.kind_plural(workload.kind),
                    workload.namespace,
                    self._child(workload, name, target),
                )
            except ApiError as error:
                if kind_of(error) is Kind.TRANSIENT:
                    raise  # the daemon is run again by kopf, and resumes from status
                current[i] = self._ended(
                    workload,
                    WorkloadState.REFUSED,
                    "MigrationNotCreated",
                    f"its migration could not be created in {workload.namespace}: {error}",
                )
                continue
            current[i] = workload.model_copy(
                update={"state": WorkloadState.MIGRATING, "migration": name, "target": target}
            )
            active += 1
        return current

    def _child(self, workload: EvacuatedWorkload, name: str, target: str) -> dict[str, Any]:
        spec = self.resource.spec
        if workload.kind == WorkloadKind.POD:
            kind = constants.POD_MIGRATION_KIND
            child: dict[str, Any] = {"podName": workload.name}
        else:
            kind = constants.CONTAINER_MIGRATION_KIND
            child = {"source": {"node": self.node, "container": workload.name}}
        child |= {"target": {"node": target}, "timeoutSeconds": spec.timeout_seconds}
        return {
            "apiVersion": constants.API_VERSION,
            "kind": kind,
            "metadata": {
                "name": name,
                "labels": {constants.EVACUATION_LABEL: self.name},
                "ownerReferences": [
                    {
                        "apiVersion": constants.API_VERSION,
                        "kind": constants.NODE_EVACUATION_KIND,
                        "name": self.name,
                        "uid": self.resource.metadata.uid,
                    }
                ],
            },
            "spec": child,
        }

    async def _finish(self) -> None:
        status = self.status
        complete = status.moved == len(status.workloads)
        phase = EvacuationPhase.SUCCEEDED if complete else EvacuationPhase.INCOMPLETE
        text = f"{status.moved} of {len(status.workloads)} workload(s) moved off {self.node}" + (
            ""
            if complete
            else f"; {status.refused} refused and {status.failed} failed run on there"
        )
        self.record.condition(
            COND_COMPLETE,
            ConditionStatus.TRUE,
            "AllMoved" if complete else "SomeNotMoved",
            text,
        )
        self.record.update(
            phase=phase, completion_time=self.clock().replace(microsecond=0), message=text
        )
        await self.record.write()
        if complete:
            self.events.normal("Evacuated", text)
        else:
            self.events.warning("Incomplete", text)

    def _named(self, workload: EvacuatedWorkload) -> str:
        return f"{workload.kind.value.lower()} {workload.namespace}/{workload.name}"
