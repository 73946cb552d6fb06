"""Following a ContainerCheckpoint or a ContainerRestore, and what their end is told as.

Their statuses keep no phase history (a migration's ``phaseTransitions``), so
a line is printed per phase seen, with the time since following began; then
one outcome line: where the checkpoint is and what it weighs, where the
container was restored; for a failure, why (the outcome condition's reason
and message) and where the logs are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from ferry_api import constants
from ferry_api.checkpoint import (
    CheckpointPhase,
    ContainerCheckpoint,
    ContainerRestore,
    RestorePhase,
    parse_container_checkpoint,
    parse_container_restore,
)
from ferry_api.conditions import find_condition

from ferry_kubectl import render
from ferry_kubectl.kinds import CHECKPOINT, Kind
from ferry_kubectl.output import Output

Body = dict[str, Any]
#: The condition a checkpoint sets when it ends.
READY_CONDITION = "Ready"


def failure_line(phase: str, conditions: Any, message: str | None, condition: str) -> str:
    outcome = find_condition(conditions, condition)
    if outcome is not None and outcome.message:
        return f"{phase} ({outcome.reason}): {outcome.message}"
    return f"{phase}: {message or 'no reason recorded'}"


def logs_hint(name: str, namespace: str | None, word: str) -> str:
    return f"Full logs: kubectl ferry logs {name} --kind {word}{render.namespaced_flag(namespace)}"


def checkpoint_outcome(checkpoint: ContainerCheckpoint) -> list[str]:
    status, meta = checkpoint.status, checkpoint.metadata
    if status.phase == CheckpointPhase.READY:
        took = (
            f" in {render.seconds(status.checkpoint_seconds)}"
            if status.checkpoint_seconds is not None
            else ""
        )
        container = status.container_name or checkpoint.spec.source.container
        node = status.node or checkpoint.spec.source.node
        where = render.namespaced_flag(meta.namespace)
        return [
            f"Ready: {container} checkpointed on {node}{took}; {render.storage(checkpoint)}",
            f"What it holds: kubectl ferry inspect {meta.name}{where}",
        ]
    if status.phase == CheckpointPhase.SCHEDULED:
        return [
            f"Scheduled: {checkpoint.spec.source.container} on {checkpoint.spec.source.node} at "
            f"{checkpoint.spec.schedule!r}, keeping {checkpoint.spec.keep}; its checkpoints: "
            f"kubectl get containercheckpoints -l {constants.SCHEDULE_LABEL}={meta.name}"
            f"{render.namespaced_flag(meta.namespace)}"
        ]
    phase = status.phase.value if status.phase else "Unknown"
    lines = [failure_line(phase, status.conditions, status.message, READY_CONDITION)]
    if status.failure_logs is not None:
        lines.append(logs_hint(meta.name, meta.namespace, "checkpoint"))
    return lines


def restore_outcome(restore: ContainerRestore) -> list[str]:
    status, meta = restore.status, restore.metadata
    if status.phase == RestorePhase.SUCCEEDED:
        timings = [
            f"{what} {render.seconds(value)}"
            for what, value in (
                ("transfer", status.transfer_seconds),
                ("restore", status.restore_seconds),
            )
            if value is not None
        ]
        shown = f" ({', '.join(timings)})" if timings else ""
        return [
            f"Succeeded: {status.container_name or '?'} restored on {status.node or '?'} "
            f"from {restore.spec.checkpoint_ref.name}{shown}"
        ]
    phase = status.phase.value if status.phase else "Unknown"
    lines = [failure_line(phase, status.conditions, status.message, render.OUTCOME_CONDITION)]
    if status.failure_logs is not None:
        lines.append(logs_hint(meta.name, meta.namespace, "restore"))
    return lines


def outcome(kind: Kind, body: Body) -> list[str]:
    if kind == CHECKPOINT:
        return checkpoint_outcome(parse_container_checkpoint(body))
    return restore_outcome(parse_container_restore(body))


def phase_lines(states: Iterable[Body], output: Output) -> Iterator[Body]:
    """Pass the states on, printing a line per phase entered (time since the first state)."""
    start, shown = time.monotonic(), None
    for body in states:
        phase = (body.get("status") or {}).get("phase")
        if output.human and phase and phase != shown:
            output.line(f"{render.elapsed(time.monotonic() - start):>7}  {phase}")
            shown = phase
        yield body


def report(kind: Kind, body: Body, output: Output) -> None:
    """The outcome, after a blank line; its first line in colour on a terminal."""
    output.line("")
    style = "bold green" if kind.succeeded(body) else "bold red"
    for i, line in enumerate(outcome(kind, body)):
        output.line(line, style=style if i == 0 else "")
