"""``kubectl ferry watch``: a migration followed to its end, live on a terminal, plainly elsewhere.

On a terminal: the phases as they are entered, above a progress bar (phase,
bytes sent of the archive, time since the migration started). Elsewhere: one
line per phase entered. Then, either way, the outcome and the timings table.
"""

from __future__ import annotations

import sys
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

from ferry_kubectl import render
from ferry_kubectl.follow import follow
from ferry_kubectl.kube import MIGRATION, POD_MIGRATION, Cluster, Kind
from ferry_kubectl.output import Output

#: What the shell reports for a process stopped with Ctrl-C.
EXIT_INTERRUPTED = 130


def parse(kind: Kind, body: dict[str, Any]) -> render.Moving:
    """A ContainerMigration or PodMigration body, as its model."""
    return parse_pod_migration(body) if kind == POD_MIGRATION else parse_container_migration(body)


def _named(kind: Kind, name: str) -> str:
    """How ``watch`` is told the object: ``NAME``, or ``podmigration/NAME``."""
    return f"{POD_MIGRATION.singular}/{name}" if kind == POD_MIGRATION else name


def is_final(body: dict[str, Any]) -> bool:
    phase = (body.get("status") or {}).get("phase")
    return phase is not None and Phase(phase).is_final


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


def watch(
    cluster: Cluster, namespace: str, name: str, output: Output, *, kind: Kind = MIGRATION
) -> tuple[int, dict[str, Any] | None]:
    """Follow a migration until it is final, reporting it unless the output is JSON.

    The exit code (0 when it Succeeded, 1 otherwise, 130 when the user stopped
    watching) and the final object, for the caller to print as JSON.
    """
    states = follow(
        lambda: cluster.list_one(kind, name, namespace),
        lambda version: cluster.watch_one(kind, name, namespace, version),
        is_final=is_final,
        what=kind.describe(name, namespace),
    )
    last: dict[str, Any] = {}
    view: PlainView | None = None
    if not output.json:
        view = LiveView(output) if output.interactive else PlainView(output)
    try:
        if view is None:
            for body in states:
                last = body
        else:
            with view:
                for body in states:
                    last = body
                    view.update(parse(kind, body))
    except KeyboardInterrupt:
        sys.stderr.write(
            "\nstopped watching; the migration goes on: "
            f"kubectl ferry watch {_named(kind, name)} -n {namespace}\n"
        )
        return EXIT_INTERRUPTED, None
    migration = parse(kind, last)
    if not output.json:
        report(output, migration)
    return (0 if migration.status.phase == Phase.SUCCEEDED else 1), last
