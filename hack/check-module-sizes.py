#!/usr/bin/env python3
"""Fail when a module of the product (api, wire, operator, node-helper, plugin) grows past
MAX_LINES: a module that big is doing more than one job. The test harness is not product."""

from __future__ import annotations

import sys
from pathlib import Path

MAX_LINES = 500
PRODUCT = ("api", "wire", "operator", "node-helper", "plugin")

root = Path(__file__).resolve().parent.parent
too_big = sorted(
    (len(path.read_text().splitlines()), path.relative_to(root))
    for component in PRODUCT
    for path in (root / component).rglob("*.py")
    if len(path.read_text().splitlines()) > MAX_LINES
)
for lines, path in too_big:
    print(f"{path}: {lines} lines, more than {MAX_LINES}: split it by concern", file=sys.stderr)
sys.exit(1 if too_big else 0)
