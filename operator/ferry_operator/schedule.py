"""Scheduled ContainerCheckpoints: one child checkpoint per run, the newest ``keep`` kept.

Like a CronJob's Jobs, the children carry an owner reference to the schedule (a
real cluster's garbage collector removes them with it) and a label naming it;
the delete handler also removes them itself, so nothing depends on a
controller-manager. A missed run is not made up: the next one is due from the
last run, or from the creation, so an operator that was down makes one
checkpoint on return, not a burst.

A child is named after the time its run was due, not the time it was made: an
operator that crashes between creating it and recording the run makes the
same name again on return, which the API server refuses as existing, so a run
never makes two checkpoints.
"""

from __future__ import annotations

import datetime
from typing import Any

from croniter import croniter
from ferry_api import constants
from ferry_api.base import to_wire
from ferry_api.checkpoint import ContainerCheckpoint

from .kube import Kube


def next_run(schedule: str, after: datetime.datetime) -> datetime.datetime:
    """The first time ``schedule`` names after ``after`` (a sixth field: seconds, first)."""
    six = len(schedule.split()) == 6
    found: datetime.datetime = croniter(schedule, after, second_at_beginning=six).get_next(
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


class Scheduler:
    """A scheduled ContainerCheckpoint: makes its children and prunes them."""

    def __init__(self, *, resource: ContainerCheckpoint, kube: Kube) -> None:
        self.resource = resource
        self.kube = kube
        self.namespace = resource.metadata.namespace or ""
        self.name = resource.metadata.name or ""

    def child_name(self, due: datetime.datetime) -> str:
        return f"{self.name[:230]}-{due.astimezone(datetime.UTC):%Y%m%d%H%M%S}"

    def _child(self, due: datetime.datetime) -> dict[str, Any]:
        spec = self.resource.spec
        child_spec = to_wire(spec.model_copy(update={"schedule": None}))
        child_spec.pop("keep", None)
        return {
            "apiVersion": constants.API_VERSION,
            "kind": constants.CONTAINER_CHECKPOINT_KIND,
            "metadata": {
                "name": self.child_name(due),
                "labels": {constants.SCHEDULE_LABEL: self.name},
                "ownerReferences": [
                    {
                        "apiVersion": constants.API_VERSION,
                        "kind": constants.CONTAINER_CHECKPOINT_KIND,
                        "name": self.name,
                        "uid": self.resource.metadata.uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": child_spec,
        }

    async def children(self) -> list[dict[str, Any]]:
        return await self.kube.list_labelled(
            constants.CONTAINER_CHECKPOINT_PLURAL,
            self.namespace,
            selector=f"{constants.SCHEDULE_LABEL}={self.name}",
        )

    def due(
        self, now: datetime.datetime, *, ran: datetime.datetime | None = None
    ) -> datetime.datetime:
        """When the next checkpoint is due: after the last run (``ran``, or the one status
        records, whichever is later), or after the creation."""
        recorded = self.resource.status.last_schedule_time
        runs = [t for t in (ran, recorded) if t is not None]
        since = max(runs) if runs else (self.resource.metadata.creation_timestamp or now)
        return next_run(self.resource.spec.schedule or "", since)

    async def run(self, due: datetime.datetime) -> None:
        """Make the checkpoint of the run due at ``due`` (once: it exists already if a run
        was cut short), prune past ``keep``, record the run in status."""
        spec = self.resource.spec
        child = self._child(due)
        await self.kube.create(constants.CONTAINER_CHECKPOINT_PLURAL, self.namespace, child)
        children = await self.children()
        pruned = to_prune(children, spec.keep)
        for name in pruned:
            await self.kube.delete(constants.CONTAINER_CHECKPOINT_PLURAL, self.namespace, name)
        kept = [c["metadata"]["name"] for c in children if c["metadata"]["name"] not in pruned]
        await self.kube.patch_status(
            constants.CONTAINER_CHECKPOINT_PLURAL,
            self.namespace,
            self.name,
            {
                "lastScheduleTime": due.isoformat().replace("+00:00", "Z"),
                "checkpoints": sorted(kept, reverse=True),
            },
        )

    async def delete_children(self) -> None:
        for child in await self.children():
            await self.kube.delete(
                constants.CONTAINER_CHECKPOINT_PLURAL, self.namespace, child["metadata"]["name"]
            )
