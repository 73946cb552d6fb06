"""Scheduled ContainerCheckpoints: when runs are due, which checkpoints go (pure logic)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from ferry_api.checkpoint import (
    ContainerCheckpointSpec,
    is_valid_schedule,
    parse_container_checkpoint,
)
from ferry_operator.schedule import Scheduler, next_run, to_prune
from pydantic import ValidationError

T0 = datetime.datetime(2026, 11, 25, 12, 0, 0, tzinfo=datetime.UTC)


def test_five_fields_are_a_cronjob_schedule_and_a_leading_sixth_is_seconds() -> None:
    assert next_run("0 3 * * *", T0) == datetime.datetime(2026, 11, 26, 3, 0, tzinfo=datetime.UTC)
    assert next_run("*/5 * * * *", T0) == T0 + datetime.timedelta(minutes=5)
    assert next_run("*/3 * * * * *", T0) == T0 + datetime.timedelta(seconds=3)


@pytest.mark.parametrize("schedule", ["0 3 * * *", "*/3 * * * * *", "@hourly"])
def test_schedules_are_checked_when_the_spec_is_parsed(schedule: str) -> None:
    spec = {"source": {"node": "node-a", "container": "web"}, "schedule": schedule}
    if schedule == "@hourly":
        assert not is_valid_schedule(schedule), "one field: not a cron line here"
        with pytest.raises(ValidationError, match="not a cron expression"):
            ContainerCheckpointSpec.model_validate(spec)
    else:
        assert ContainerCheckpointSpec.model_validate(spec).keep == 3


def test_the_newest_are_kept_and_the_rest_pruned() -> None:
    def child(name: str, created: str) -> dict[str, object]:
        return {"metadata": {"name": name, "creationTimestamp": created}}

    children = [
        child("nightly-20261125120003", "2026-11-25T12:00:03Z"),
        child("nightly-20261125120000", "2026-11-25T12:00:00Z"),
        child("nightly-20261125120006", "2026-11-25T12:00:06Z"),
        child("nightly-20261125120009", "2026-11-25T12:00:09Z"),
    ]
    assert to_prune(children, 2) == ["nightly-20261125120003", "nightly-20261125120000"]
    assert to_prune(children, 10) == []


class Children:
    """The API server as a schedule sees it: names are unique, a second create is refused."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        name = body["metadata"]["name"]
        if name in self.objects:
            return False
        self.objects[name] = body
        return True

    async def list_labelled(
        self, plural: str, namespace: str, *, selector: str
    ) -> list[dict[str, Any]]:
        return list(self.objects.values())

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        self.objects.pop(name, None)

    async def patch_status(
        self, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> None:
        self.status.update(patch)


def test_a_run_repeated_after_a_crash_makes_no_second_checkpoint() -> None:
    schedule = parse_container_checkpoint(
        {
            "apiVersion": "ferry.dev/v1alpha1",
            "kind": "ContainerCheckpoint",
            "metadata": {
                "name": "nightly",
                "namespace": "team-a",
                "uid": "1b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b",
                "creationTimestamp": "2026-11-25T11:00:00Z",
            },
            "spec": {"source": {"node": "node-a", "container": "web"}, "schedule": "0 * * * *"},
        }
    )
    kube = Children()
    scheduler = Scheduler(resource=schedule, kube=kube)  # type: ignore[arg-type]
    due = scheduler.due(T0 + datetime.timedelta(minutes=7))
    assert due == T0
    asyncio.run(scheduler.run(due))
    # The operator died before its status write landed; the next one finds the run due again.
    asyncio.run(scheduler.run(scheduler.due(T0 + datetime.timedelta(minutes=9))))
    assert list(kube.objects) == ["nightly-20261125120000"]
    assert kube.status["lastScheduleTime"] == "2026-11-25T12:00:00Z"
