"""Durations as kubectl takes them: Go's ``time.ParseDuration`` (``90s``, ``5m``, ``1h30m``).

A bare number is seconds, as the flags took before. The result is whole
seconds, because every field they fill is ``...Seconds``: a duration that is
not a whole number of seconds (``1500ms``) is refused rather than rounded.
"""

from __future__ import annotations

import argparse
import re
from decimal import Decimal, InvalidOperation

#: Go's units, in seconds (``us`` and ``µs`` are both microseconds, as Go reads them).
UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_seconds(text: str) -> int:
    """``text`` as whole seconds; ``ValueError`` saying what is wrong with it."""
    given = text.strip()
    if re.fullmatch(r"\d+", given):
        return int(given)
    if given.startswith("-"):
        raise ValueError(f"{text!r} is negative")
    rest, total = given.removeprefix("+"), Decimal(0)
    if not rest:
        raise ValueError("empty duration")
    while rest:
        part = _PART.match(rest)
        if part is None:
            raise ValueError(
                f"{text!r} is not a duration: use seconds (90) or Go's form (90s, 5m, 1h30m)"
            )
        try:
            total += Decimal(part.group(1)) * UNITS[part.group(2)]
        except InvalidOperation as error:  # pragma: no cover - the pattern admits numbers only
            raise ValueError(f"{text!r} is not a duration") from error
        rest = rest[part.end() :]
    if total != total.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of seconds")
    return int(total)


def seconds_flag(text: str) -> int:
    """``parse_seconds`` as an argparse ``type``: a wrong value is a usage error."""
    try:
        return parse_seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
