"""Conditions in the shape of ``metav1.Condition``, and the one rule for changing them.

Kubernetes API conventions: ``status.conditions`` is a list keyed by ``type``;
``lastTransitionTime`` moves only when ``status`` changes, so "Ready since 3h"
stays true while a helper re-reports Ready every heartbeat. ``set_condition`` is
a pure function over a tuple (no clock read, no mutation) so handlers stay easy
to test and safe to re-run.

``lastTransitionTime`` is optional in the model (``metav1.Condition`` requires
it) only so that a caller can build the new condition without a time:
``set_condition`` always fills it, so every condition written carries one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field

from ferry_api.base import StatusModel

#: ``metav1.Condition``'s patterns, so the API server accepts what we write.
TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One observation about the resource (Kubernetes metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=TYPE_PATTERN,
        description="Type of the condition, an adjective or past participle in CamelCase "
        "(Ready, Validated, Checkpointed, Restored).",
    )
    status: ConditionStatus = Field(
        description="Whether the condition holds: True, False or Unknown."
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
        description="Why the condition has its status, one CamelCase word for machines.",
    )
    message: str = Field(
        default="", max_length=32768, description="Details for humans; may be empty."
    )
    last_transition_time: AwareDatetime | None = Field(
        default=None,
        description="When the status last changed (not when it was last reported).",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The metadata.generation the condition was computed from.",
    )


#: A condition list as the CRDs declare it: a map keyed by ``type``, so a server
#: side apply or a strategic merge replaces one condition, not the whole list.
Conditions = Annotated[
    tuple[Condition, ...],
    Field(
        description="Current observations of the resource, one per type "
        "(Kubernetes API conventions).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of type ``type_``, or None when it was never set."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition], new: Condition, *, now: datetime
) -> tuple[Condition, ...]:
    """``conditions`` with ``new`` in place of the one of the same type, or appended.

    ``lastTransitionTime`` is kept when the status did not change, and is ``now``
    when it did or when the type is new (whatever ``new`` carries is ignored:
    only this function decides transitions). Reason, message and
    observedGeneration always come from ``new``. Order is preserved.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (use datetime.now(UTC))")
    old = find_condition(conditions, new.type)
    if old is None:
        return (*conditions, new.model_copy(update={"last_transition_time": now}))
    transitioned = old.status != new.status or old.last_transition_time is None
    placed = new.model_copy(
        update={"last_transition_time": now if transitioned else old.last_transition_time}
    )
    return tuple(placed if c.type == new.type else c for c in conditions)
