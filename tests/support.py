"""Helpers shared by the test tiers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


def retry_while_status(call: Callable[[], T], status: int, *, timeout: float = 30) -> T:
    """Call until it stops failing with HTTP ``status`` (a grant or CRD becoming effective)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ApiException as error:
            if error.status != status or time.monotonic() > deadline:
                raise
        time.sleep(0.2)
