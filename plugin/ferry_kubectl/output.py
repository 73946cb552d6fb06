"""Where and how things are printed: a live terminal, or plain text for pipes and files.

Live output (colours, a progress bar) needs both stdout to be a terminal and
rich to agree it is one (it honours TERM=dumb, NO_COLOR, FORCE_COLOR...);
anything else gets plain lines. Markup is off: messages from the cluster may
hold brackets, which rich would read as styles.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Plain output is never wrapped: a table row stays one line for grep and awk.
PLAIN_WIDTH = 10_000


@dataclass(frozen=True)
class Output:
    console: Console
    interactive: bool
    json: bool

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


def print_json(value: Any) -> None:
    """JSON on stdout, bypassing rich, so it is never wrapped or styled."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    """kubectl's way: one line on stderr starting ``error: ``."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def make(*, json_output: bool, no_color: bool) -> Output:
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
    return Output(console=console, interactive=interactive, json=json_output)
