"""ContainerCheckpointSchedule: checkpoints of one container on a cron schedule, the newest kept.

What a CronJob is to Jobs: at each time its ``schedule`` names, it creates a
ContainerCheckpoint ``<name>-<time>`` from ``checkpointTemplate``, labelled
``ferry.dev/schedule=<name>``, and deletes the oldest beyond ``keep``. Unlike
an action (a migration, a checkpoint), a schedule can change: ``keep``,
``suspend``, the cron expression and the template apply from the next run.
Its checkpoints are not owned by it: deleting the schedule keeps them (delete
them by label). A run missed while the operator was away or the schedule was
suspended is not made up, except one at once on return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import AwareDatetime, Field, model_validator

from ferry_api import constants
from ferry_api.base import SpecModel, StatusModel, parse_body
from ferry_api.checkpoint import CheckpointTemplateSpec, is_valid_schedule
from ferry_api.definition import PrinterColumn, ResourceDefinition
from ferry_api.meta import ObjectMeta


class TemplateMetadata(SpecModel):
    """Labels and annotations every checkpoint of the schedule gets."""

    labels: dict[str, str] = Field(default_factory=dict, description="Labels to add.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations to add.")


class CheckpointTemplate(SpecModel):
    """The ContainerCheckpoint each run creates."""

    metadata: TemplateMetadata = Field(
        default_factory=TemplateMetadata, description="Its labels and annotations."
    )
    spec: CheckpointTemplateSpec = Field(description="Its spec.")


class ContainerCheckpointScheduleSpec(SpecModel):
    """When to checkpoint, what, and how many to keep; every field may change."""

    schedule: str = Field(
        max_length=100,
        description="Cron schedule: five fields, as a CronJob's, in UTC; an optional sixth, "
        "leading field gives seconds.",
    )
    suspend: bool = Field(
        default=False,
        description="Make no checkpoint while true (those kept stay); on resume the next "
        "time is counted from the last run, so one missed run is made at once.",
    )
    keep: int = Field(
        default=3,
        ge=1,
        le=100,
        description="How many of its checkpoints to keep, newest first; older ones are deleted "
        "(lowering it deletes the surplus at once).",
    )
    checkpoint_template: CheckpointTemplate = Field(
        description="The ContainerCheckpoint each run creates."
    )

    @model_validator(mode="after")
    def _schedule_is_cron(self) -> ContainerCheckpointScheduleSpec:
        if not is_valid_schedule(self.schedule):
            raise ValueError(
                f"schedule {self.schedule!r} is not a cron expression of 5 fields "
                "(or 6, seconds first)"
            )
        return self


class ContainerCheckpointScheduleStatus(StatusModel):
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the status describes."
    )
    last_schedule_time: AwareDatetime | None = Field(
        default=None, description="When it last made a checkpoint (the time it was due)."
    )
    next_schedule_time: AwareDatetime | None = Field(
        default=None, description="When it makes the next one (absent while suspended)."
    )
    checkpoints: tuple[str, ...] = Field(
        default=(), description="The checkpoints it keeps, newest first."
    )
    message: str | None = Field(default=None, description="The latest news.")


class ContainerCheckpointSchedule(StatusModel):
    api_version: str = constants.API_VERSION
    kind: str = constants.CHECKPOINT_SCHEDULE_KIND
    metadata: ObjectMeta
    spec: ContainerCheckpointScheduleSpec
    status: ContainerCheckpointScheduleStatus = ContainerCheckpointScheduleStatus()


def parse_checkpoint_schedule(body: Mapping[str, Any]) -> ContainerCheckpointSchedule:
    return parse_body(ContainerCheckpointSchedule, body, kind=constants.CHECKPOINT_SCHEDULE_KIND)


DEFINITION = ResourceDefinition(
    kind=constants.CHECKPOINT_SCHEDULE_KIND,
    list_kind=constants.CHECKPOINT_SCHEDULE_LIST_KIND,
    plural=constants.CHECKPOINT_SCHEDULE_PLURAL,
    singular=constants.CHECKPOINT_SCHEDULE_SINGULAR,
    short_names=constants.CHECKPOINT_SCHEDULE_SHORT_NAMES,
    categories=(constants.CATEGORY,),
    scope="Namespaced",
    description="ContainerCheckpointSchedule checkpoints a container on a cron schedule (a "
    "ContainerCheckpoint per run, from its template) and keeps the newest `keep`; it can be "
    "suspended and changed, and deleting it keeps its checkpoints.",
    spec=ContainerCheckpointScheduleSpec,
    status=ContainerCheckpointScheduleStatus,
    printer_columns=(
        PrinterColumn(
            name="Schedule", json_path=".spec.schedule", type="string", description="Cron."
        ),
        PrinterColumn(
            name="Suspend", json_path=".spec.suspend", type="boolean", description="Suspended."
        ),
        PrinterColumn(
            name="Keep", json_path=".spec.keep", type="integer", description="Checkpoints kept."
        ),
        PrinterColumn(
            name="Last",
            json_path=".status.lastScheduleTime",
            type="date",
            description="Time since the last checkpoint it made.",
        ),
        PrinterColumn(
            name="Age",
            json_path=".metadata.creationTimestamp",
            type="date",
            description="Time since creation.",
        ),
    ),
)
