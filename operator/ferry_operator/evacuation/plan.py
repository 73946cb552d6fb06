"""The decisions of an evacuation, as pure functions of what it has seen.

A workload's migration that ended before anything was frozen was refused by
its target, or by the workload itself: a refusal naming the target (its
helper, its runtime, its CPU, its room, a name taken there) sends the workload
to the next fitting node; one naming the workload (not found, not permitted,
an owner Ferry cannot move) cannot be helped by another node. A migration
that failed after the freeze rolled back: the workload runs on the node, and
is reported, not tried again (it would be frozen again for the same fault).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry_api import constants
from ferry_api.evacuation import EvacuatedWorkload, WorkloadKind, WorkloadState

from ..phases import FINAL

#: Refusals a different target may not give: try the next node.
TARGET_REASON = re.compile(r"^(Target|Incompatible|NoEligibleTarget|HelperGone)")
MAX_NAME = 253


@dataclass(frozen=True)
class Ending:
    """What a child migration's status says of its workload."""

    state: WorkloadState
    reason: str | None = None
    message: str | None = None
    #: Refused by its target before the freeze: worth another node.
    retry_elsewhere: bool = False
    downtime_seconds: float | None = None


def ending(status: Mapping[str, Any]) -> Ending | None:
    """None while the migration runs; else what became of its workload."""
    phase = status.get("phase")
    if phase not in FINAL:
        return None
    if phase == "Succeeded":
        timings = status.get("timings") or {}
        return Ending(WorkloadState.MOVED, downtime_seconds=timings.get("downtimeSeconds"))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    succeeded = conditions.get("Succeeded") or {}
    reason = str(succeeded.get("reason") or status.get("phase"))
    message = str(succeeded.get("message") or status.get("message") or "")
    if status.get("freezeTime"):
        return Ending(WorkloadState.FAILED, reason, message)
    return Ending(
        WorkloadState.REFUSED,
        reason,
        message,
        retry_elsewhere=bool(TARGET_REASON.match(reason)),
    )


def next_target(
    workload: EvacuatedWorkload, candidates: Iterable[str], *, load: Mapping[str, int]
) -> str | None:
    """The fitting node this workload has not tried, least loaded first, then by name."""
    left = [n for n in candidates if n not in workload.tried]
    if not left:
        return None
    return min(left, key=lambda n: (load.get(n, 0), n))


def child_name(evacuation: str, workload: EvacuatedWorkload) -> str:
    """A DNS-1123 name for the workload's next migration: stable for one attempt, so a
    restarted operator finds the migration it made instead of making another."""
    attempt = len(workload.tried)
    key = f"{workload.kind}/{workload.namespace}/{workload.name}/{attempt}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    base = re.sub(r"[^a-z0-9-]+", "-", f"{evacuation}-{workload.name}".lower()).strip("-")
    return f"{base[: MAX_NAME - 20]}-{attempt}-{digest}"


def kind_plural(kind: WorkloadKind) -> str:
    return (
        constants.POD_MIGRATION_PLURAL
        if kind == WorkloadKind.POD
        else constants.CONTAINER_MIGRATION_PLURAL
    )
