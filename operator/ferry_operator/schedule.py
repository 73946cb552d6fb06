"""Checkpoints on a schedule: one ContainerCheckpoint per run, the newest ``keep`` kept.

Two kinds schedule: a ContainerCheckpointSchedule (what to use), and, deprecated,
a ContainerCheckpoint with ``spec.schedule``. Their children carry a label
naming the schedule. A deprecated scheduled checkpoint also owns its children,
as a CronJob owns its Jobs, and its delete handler removes them; a
ContainerCheckpointSchedule does not: its checkpoints outlive it. A missed run
is not made up: the next one is due from the last run, or from the creation,
so an operator that was down (or a schedule that was suspended) makes one
checkpoint on return, not a burst.

A child is named after the time its run was due, not the time it was made: an
operator that crashes between creating it and recording the run makes the
same name again on return, which the API server refuses as existing, so a run
never makes two checkpoints.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter
from ferry_api import constants
from ferry_api.base import to_wire
from ferry_api.checkpoint import CheckpointTemplateSpec, ContainerCheckpoint
from ferry_api.schedule import ContainerCheckpointSchedule

from .kube import Kube


def next_run(schedule: str, after: datetime.datetime) -> datetime.datetime:
    """The first time ``schedule`` names after ``after`` (a sixth field: seconds, first)."""
    six = len(schedule.split()) == 6
    found: datetime.datetime = croniter(schedule, after, second_at_beginning=six).get_next(
        datetime.datetime
    )
    return found


def last_run_by(schedule: str, moment: datetime.datetime) -> datetime.datetime:
    """The last time ``schedule`` names before ``moment``."""
    six = len(schedule.split()) == 6
    found: datetime.datetime = croniter(schedule, moment, second_at_beginning=six).get_prev(
        datetime.datetime
    )
    return found


def to_prune(children: list[dict[str, Any]], keep: int) -> list[str]:
    """Names of the checkpoints past the newest ``keep``, by creation time then name."""
    ordered = sorted(
        children,
        key=lambda c: (c["metadata"].get("creationTimestamp", ""), c["metadata"]["name"]),
        reverse=True,
    )
    return [c["metadata"]["name"] for c in ordered[keep:]]


def stamp(moment: datetime.datetime | None) -> str | None:
    """``moment`` as the API server writes times (UTC, ``Z``); None stays None."""
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """What any schedule says: when, how many to keep, and the checkpoint to make."""

    namespace: str
    name: str
    #: Where the run is recorded (the schedule's own kind).
    plural: str
    cron: str
    keep: int
    template: CheckpointTemplateSpec
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    #: An owner reference for the children (the deprecated kind's), or none.
    owner: dict[str, Any] | None = None
    last_run: datetime.datetime | None = None
    created: datetime.datetime | None = None

    @classmethod
    def of_schedule(cls, resource: ContainerCheckpointSchedule) -> Schedule:
        spec, meta = resource.spec, resource.metadata
        return cls(
            namespace=meta.namespace or "",
            name=meta.name or "",
            plural=constants.CHECKPOINT_SCHEDULE_PLURAL,
            cron=spec.schedule,
            keep=spec.keep,
            template=spec.checkpoint_template.spec,
            labels=dict(spec.checkpoint_template.metadata.labels),
            annotations=dict(spec.checkpoint_template.metadata.annotations),
            last_run=resource.status.last_schedule_time,
            created=meta.creation_timestamp,
        )

    @classmethod
    def of_checkpoint(cls, resource: ContainerCheckpoint) -> Schedule:
        spec, meta = resource.spec, resource.metadata
        return cls(
            namespace=meta.namespace or "",
            name=meta.name or "",
            plural=constants.CONTAINER_CHECKPOINT_PLURAL,
            cron=spec.schedule or "",
            keep=spec.keep,
            template=CheckpointTemplateSpec.model_validate(
                spec.model_dump(exclude={"schedule", "keep"})
            ),
            owner={
                "apiVersion": constants.API_VERSION,
                "kind": constants.CONTAINER_CHECKPOINT_KIND,
                "name": meta.name,
                "uid": meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            },
            last_run=resource.status.last_schedule_time,
            created=meta.creation_timestamp,
        )


class Scheduler:
    """Makes a schedule's children and prunes them."""

    def __init__(self, *, schedule: Schedule, kube: Kube) -> None:
        self.schedule = schedule
        self.kube = kube

    def child_name(self, due: datetime.datetime) -> str:
        return f"{self.schedule.name[:230]}-{due.astimezone(datetime.UTC):%Y%m%d%H%M%S}"

    def _child(self, due: datetime.datetime) -> dict[str, Any]:
        s = self.schedule
        metadata: dict[str, Any] = {
            "name": self.child_name(due),
            "labels": {**s.labels, constants.SCHEDULE_LABEL: s.name},
        }
        if s.annotations:
            metadata["annotations"] = dict(s.annotations)
        if s.owner is not None:
            metadata["ownerReferences"] = [s.owner]
        return {
            "apiVersion": constants.API_VERSION,
            "kind": constants.CONTAINER_CHECKPOINT_KIND,
            "metadata": metadata,
            "spec": to_wire(s.template),
        }

    async def children(self) -> list[dict[str, Any]]:
        return await self.kube.list_labelled(
            constants.CONTAINER_CHECKPOINT_PLURAL,
            self.schedule.namespace,
            selector=f"{constants.SCHEDULE_LABEL}={self.schedule.name}",
        )

    def due(
        self, now: datetime.datetime, *, ran: datetime.datetime | None = None
    ) -> datetime.datetime:
        """When the next checkpoint is due: after the last run (``ran``, or the one status
        records, whichever is later), or after the creation."""
        runs = [t for t in (ran, self.schedule.last_run) if t is not None]
        since = max(runs) if runs else (self.schedule.created or now)
        due = next_run(self.schedule.cron, since)
        if due <= now:  # missed runs (an operator away, a suspension) make one, the latest
            due = max(due, last_run_by(self.schedule.cron, now))
        return due

    async def run(self, due: datetime.datetime, *, then: datetime.datetime | None = None) -> None:
        """Make the checkpoint of the run due at ``due`` (once: it exists already if a run
        was cut short), prune past ``keep``, record the run (and ``then``, the next)."""
        s = self.schedule
        await self.kube.create(constants.CONTAINER_CHECKPOINT_PLURAL, s.namespace, self._child(due))
        await self.prune(
            lastScheduleTime=stamp(due),
            **({"nextScheduleTime": stamp(then)} if then is not None else {}),
        )

    async def prune(self, **recorded: Any) -> list[str]:
        """Delete the children past ``keep``; record the ones kept (and ``recorded``)."""
        s = self.schedule
        children = await self.children()
        pruned = to_prune(children, s.keep)
        for name in pruned:
            await self.kube.delete(constants.CONTAINER_CHECKPOINT_PLURAL, s.namespace, name)
        kept = [c["metadata"]["name"] for c in children if c["metadata"]["name"] not in pruned]
        await self.kube.patch_status(
            s.plural, s.namespace, s.name, {"checkpoints": sorted(kept, reverse=True), **recorded}
        )
        return pruned

    async def delete_children(self) -> None:
        for child in await self.children():
            await self.kube.delete(
                constants.CONTAINER_CHECKPOINT_PLURAL,
                self.schedule.namespace,
                child["metadata"]["name"],
            )
