"""``kubectl ferry watch``: a migration followed to its end, live on a terminal, plainly elsewhere.

On a terminal: the phases as they are entered, above a progress bar (phase,
bytes sent of the archive, time since the migration started). Elsewhere: one
line per phase entered. Then, either way, the outcome and the timings table.
A checkpoint or a restore is followed the same way, without the bar (see
:mod:`.tracking`). Ctrl-C stops following, never what is followed: one line
says so, and how to follow it again or cancel it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from ferry_api.migration import Phase, parse_container_migration
from ferry_api.podmigration import parse_pod_migration
from rich.console import RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
)
from rich.text import Text

from ferry_kubectl import render, tracking
from ferry_kubectl.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from ferry_kubectl.follow import follow
from ferry_kubectl.kinds import CANCELLABLE, MIGRATION, POD_MIGRATION, Kind
from ferry_kubectl.kube import Cluster
from ferry_kubectl.output import Output


def parse(kind: Kind, body: dict[str, Any]) -> render.Moving:
    """A ContainerMigration or PodMigration body, as its model."""
    return parse_pod_migration(body) if kind == POD_MIGRATION else parse_container_migration(body)


def named(kind: Kind, name: str) -> str:
    """How ``watch`` and ``cancel`` are told the object: ``NAME``, or ``KIND/NAME``."""
    return name if kind == MIGRATION else f"{kind.singular}/{name}"


def interrupted(kind: Kind, name: str, namespace: str) -> str:
    """The one line Ctrl-C prints: what goes on, and the commands to follow or stop it."""
    where = render.namespaced_flag(namespace)
    again = f"kubectl ferry watch {named(kind, name)}{where}"
    stop = (
        f"kubectl ferry cancel {named(kind, name)}{where}"
        if kind in CANCELLABLE
        else f"kubectl delete {kind.singular} {name}{where}"
    )
    return (
        f"stopped following: {kind.singular} {name} keeps running in the cluster; "
        f"follow it again with `{again}`, or stop it with `{stop}`"
    )


class SinceColumn(ProgressColumn):
    """Time since the migration started (to its completion once it has one)."""

    def render(self, task: Task) -> Text:
        since: datetime = task.fields["since"]
        until: datetime | None = task.fields["until"]
        return Text(render.elapsed(((until or datetime.now(UTC)) - since).total_seconds()))


class RunningSpinner(SpinnerColumn):
    """Spins until the migration is final, not until the bar is full: a restore follows."""

    def render(self, task: Task) -> RenderableType:
        return self.finished_text if task.fields["until"] else self.spinner.render(task.get_time())


class PlainView:
    """One line per phase entered, for pipes, files and CI logs."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.printed = 0

    def __enter__(self) -> PlainView:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        return None

    def update(self, migration: render.Moving) -> None:
        lines = render.phase_lines(migration.status)
        for line in lines[self.printed :]:
            self.output.line(line)
        self.printed = max(self.printed, len(lines))


class LiveView(PlainView):
    """The phase lines, above a bar that follows the transfer and the clock."""

    def __init__(self, output: Output) -> None:
        super().__init__(output)
        self.progress = Progress(
            RunningSpinner(),
            TextColumn("{task.fields[phase]:<13}"),
            BarColumn(),
            DownloadColumn(),
            SinceColumn(),
            console=output.console,
            refresh_per_second=4,
        )
        self.task = self.progress.add_task(
            "", total=None, phase="Pending", since=datetime.now(UTC), until=None
        )

    def __enter__(self) -> LiveView:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def update(self, migration: render.Moving) -> None:
        super().update(migration)
        status = migration.status
        progress = status.progress
        total = progress.bytes_total if progress else None
        self.progress.update(
            self.task,
            phase=status.phase.value if status.phase else "Pending",
            completed=(progress.bytes_sent or 0) if progress else 0,
            total=total or None,
            since=render.started(migration) or datetime.now(UTC),
            until=render.finished(migration),
        )


def report(output: Output, migration: render.Moving) -> None:
    """The timings measured, then the outcome (why, for a failure), so the outcome ends it."""
    rows = render.timing_rows(migration.status)
    if rows:
        output.line("")
        output.table(["MEASURE", "VALUE"], rows)
    failed = migration.status.phase != Phase.SUCCEEDED
    output.line("")
    for i, line in enumerate(render.outcome_lines(migration)):
        output.line(line, style=("bold red" if failed else "bold green") if i == 0 else "")


def _view(kind: Kind, states: Iterator[dict[str, Any]], output: Output) -> dict[str, Any]:
    """Show the states as they come; the last one."""
    last: dict[str, Any] = {}
    if kind not in (MIGRATION, POD_MIGRATION):
        for body in tracking.phase_lines(states, output):
            last = body
        return last
    if not output.human:
        for body in states:
            last = body
        return last
    view = LiveView(output) if output.interactive else PlainView(output)
    with view:
        for body in states:
            last = body
            view.update(parse(kind, body))
    return last


def watch(
    cluster: Cluster, namespace: str, name: str, output: Output, *, kind: Kind = MIGRATION
) -> tuple[int, dict[str, Any] | None]:
    """Follow a migration, checkpoint or restore until it is final, reporting it for people.

    The exit code (0 when it succeeded, 1 otherwise, 130 when the user stopped
    watching) and the final object, for the caller to print for scripts.
    """
    states = follow(
        lambda: cluster.list_one(kind, name, namespace),
        lambda version: cluster.watch_one(kind, name, namespace, version),
        is_final=kind.is_final,
        what=kind.describe(name, namespace),
    )
    try:
        last = _view(kind, states, output)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{interrupted(kind, name, namespace)}\n")
        sys.stderr.flush()
        return EXIT_INTERRUPTED, None
    if output.human:
        if kind in (MIGRATION, POD_MIGRATION):
            report(output, parse(kind, last))
        else:
            tracking.report(kind, last, output)
    return (EXIT_OK if kind.succeeded(last) else EXIT_FAILED), last
