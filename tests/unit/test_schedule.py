"""Scheduled ContainerCheckpoints: when runs are due, which checkpoints go (pure logic)."""

from __future__ import annotations

import datetime

import pytest
from ferry_api.checkpoint import ContainerCheckpointSpec, is_valid_schedule
from ferry_operator.schedule import next_run, to_prune
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
