"""Where and how things are printed: a live terminal, or plain text for pipes and files.

Live output (colours, a progress bar) needs both stdout to be a terminal and
rich to agree it is one (it honours TERM=dumb, NO_COLOR, FORCE_COLOR...);
anything else gets plain lines. Markup is off: messages from the cluster may
hold brackets, which rich would read as styles.

``-o`` has kubectl's meaning: ``text`` (the default, for people) and ``wide``
(more columns) are drawn here; ``json`` and ``yaml`` print whole objects (a
``List`` when there are several, as ``kubectl get``), ``name`` one
``kind.group/name`` line per object.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Plain output is never wrapped: a table row stays one line for grep and awk.
PLAIN_WIDTH = 10_000


class Format(StrEnum):
    TEXT = "text"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"
    NAME = "name"


@dataclass(frozen=True)
class Output:
    console: Console
    interactive: bool
    format: Format = Format.TEXT

    @property
    def human(self) -> bool:
        """Lines and tables for people (text or wide), not objects for scripts."""
        return self.format in (Format.TEXT, Format.WIDE)

    @property
    def wide(self) -> bool:
        return self.format == Format.WIDE

    @property
    def structured(self) -> bool:
        return self.format in (Format.JSON, Format.YAML)

    def objects(self, bodies: Sequence[dict[str, Any]], *, single: bool = False) -> None:
        """Objects as ``-o json|yaml|name`` prints them (nothing for text: its caller draws)."""
        if self.format == Format.NAME:
            for body in bodies:
                sys.stdout.write(resource_name(body) + "\n")
            sys.stdout.flush()
        elif self.structured:
            shown = bodies[0] if single and len(bodies) == 1 else as_list(bodies)
            print_structured(shown, self.format)

    def line(self, text: str, style: str = "") -> None:
        self.console.print(Text(text, style=style if self.interactive else ""))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Columns as ``kubectl get`` prints them: upper-case headers, no borders."""
        table = Table(
            box=None,
            pad_edge=False,
            padding=(0, 3, 0, 0),
            header_style="bold" if self.interactive else "",
        )
        for header in headers:
            table.add_column(header, no_wrap=not self.interactive, overflow="fold")
        for row in rows:
            table.add_row(*row)
        self._print_table(table)

    def pairs(self, rows: Sequence[tuple[str, str]]) -> None:
        """``Key:  value`` lines, aligned, as ``kubectl describe`` prints them."""
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold" if self.interactive else "", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in rows:
            table.add_row(f"{key}:", value)
        self._print_table(table)

    def _print_table(self, table: Table) -> None:
        if self.interactive:
            self.console.print(table)
            return
        with self.console.capture() as captured:
            self.console.print(table)
        # rich pads every cell to its column; trailing blanks only get in a reader's way.
        lines = [line.rstrip() for line in captured.get().splitlines()]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def resource_name(body: dict[str, Any]) -> str:
    """``containermigration.ferry.dev/web-x7k2p``: what ``kubectl ... -o name`` prints."""
    group = str(body.get("apiVersion", "")).rpartition("/")[0]
    kind = str(body.get("kind", "")).lower()
    name = (body.get("metadata") or {}).get("name") or (body.get("metadata") or {}).get(
        "generateName", ""
    )
    return f"{kind}.{group}/{name}" if group else f"{kind}/{name}"


def as_list(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several objects as kubectl prints them: one ``v1`` ``List``."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": list(items),
    }


def print_structured(value: Any, fmt: Format = Format.JSON) -> None:
    """JSON (or YAML) on stdout, bypassing rich, so it is never wrapped or styled."""
    if fmt == Format.YAML:
        sys.stdout.write(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def print_json(value: Any) -> None:
    print_structured(value, Format.JSON)


def error(message: str) -> None:
    """kubectl's way: one line on stderr starting ``error: ``."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def make(*, fmt: Format, no_color: bool) -> Output:
    interactive = sys.stdout.isatty() and Console().is_terminal
    if interactive:
        console = Console(no_color=no_color, markup=False, highlight=False, emoji=False)
    else:
        console = Console(
            force_terminal=False,
            no_color=True,
            markup=False,
            highlight=False,
            emoji=False,
            width=PLAIN_WIDTH,
        )
    return Output(console=console, interactive=interactive, format=fmt)
