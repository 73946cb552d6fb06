"""Checkpoint schedules: when runs are due, which checkpoints go, and a schedule's loop
(suspend, a lowered keep, missed runs) against a fake API server."""

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
from ferry_api.schedule import parse_checkpoint_schedule
from ferry_operator.schedule import Schedule, Scheduler, next_run, to_prune
from ferry_operator.scheduling import run_schedule
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
    scheduler = Scheduler(schedule=Schedule.of_checkpoint(schedule), kube=kube)  # type: ignore[arg-type]
    due = scheduler.due(T0 + datetime.timedelta(minutes=7))
    assert due == T0
    asyncio.run(scheduler.run(due))
    # The operator died before its status write landed; the next one finds the run due again.
    asyncio.run(scheduler.run(scheduler.due(T0 + datetime.timedelta(minutes=9))))
    assert list(kube.objects) == ["nightly-20261125120000"]
    assert kube.status["lastScheduleTime"] == "2026-11-25T12:00:00Z"
    # The deprecated kind owns its children (they go with it).
    assert kube.objects["nightly-20261125120000"]["metadata"]["ownerReferences"][0]["name"] == (
        "nightly"
    )


def schedule_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerCheckpointSchedule",
        "metadata": {
            "name": "hourly",
            "namespace": "team-a",
            "uid": "2b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b",
            "creationTimestamp": "2026-11-25T09:30:00Z",
            "generation": 1,
        },
        "spec": {
            "schedule": "0 * * * *",
            "checkpointTemplate": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {"source": {"node": "node-a", "container": "web"}},
            },
            **spec,
        },
    }


class Stopped:
    """kopf's DaemonStopped, stopping after ``passes`` waits; the clock moves with each."""

    def __init__(self, clock: list[datetime.datetime], passes: int) -> None:
        self.clock, self.passes, self.waits = clock, passes, 0

    def __bool__(self) -> bool:
        return self.waits >= self.passes

    async def wait(self, seconds: float) -> None:
        self.waits += 1
        self.clock[0] += datetime.timedelta(seconds=seconds)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def normal(self, reason: str, message: str) -> None:
        self.seen.append((reason, message))

    def warning(self, reason: str, message: str) -> None:
        self.seen.append((reason, message))


def run(body: dict[str, Any], kube: Children, *, at: datetime.datetime, passes: int) -> Events:
    clock, events = [at], Events()
    asyncio.run(
        run_schedule(
            lambda: parse_checkpoint_schedule(body),
            kube,  # type: ignore[arg-type]
            Stopped(clock, passes),  # type: ignore[arg-type]
            events,
            clock=lambda: clock[0],
            poll_seconds=600,
        )
    )
    return events


def test_a_schedule_makes_one_checkpoint_for_the_runs_it_missed_then_keeps_time() -> None:
    kube = Children()
    # Created 09:30, first seen at 12:07: 10, 11 and 12 o'clock were missed: one run, 12:00.
    run(schedule_body(), kube, at=T0 + datetime.timedelta(minutes=7), passes=8)
    names = sorted(kube.objects)
    assert names[0] == "hourly-20261125120000"
    assert names[1:] == ["hourly-20261125130000"], "then on time, one an hour"
    child = kube.objects["hourly-20261125120000"]
    assert child["metadata"]["labels"] == {"team": "a", "ferry.dev/schedule": "hourly"}
    assert "ownerReferences" not in child["metadata"], "its checkpoints outlive the schedule"
    assert child["spec"]["source"] == {"node": "node-a", "container": "web"}


def test_a_suspended_schedule_makes_none_and_a_lowered_keep_prunes_at_once() -> None:
    kube = Children()
    for hour in (9, 10, 11):
        name = f"hourly-20261125{hour:02d}0000"
        kube.objects[name] = {
            "metadata": {"name": name, "creationTimestamp": f"2026-11-25T{hour:02d}:00:00Z"}
        }
    events = run(schedule_body(suspend=True, keep=1), kube, at=T0, passes=3)
    assert sorted(kube.objects) == ["hourly-20261125110000"], "the newest one kept"
    assert ("Pruned", "deleted hourly-20261125100000, hourly-20261125090000 (keep: 1)") in (
        events.seen
    )
    assert kube.status["message"] == "suspended: no checkpoint is made"
    assert kube.status["nextScheduleTime"] is None
