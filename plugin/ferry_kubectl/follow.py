"""Following one object to its end: list, then watch from the list's resourceVersion.

Kept apart from the client so the loop (re-watch when the server ends a watch,
list again when the version expired or the connection died, stop when the
object is final or gone) is tested without an API server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ferry_kubectl.errors import ApiError

Body = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    body: Body
    resource_version: str


class Resync(Exception):
    """The watch cannot go on from its resourceVersion: list again, then watch."""


def follow(
    list_once: Callable[[], tuple[Body | None, str]],
    watch_from: Callable[[str], Iterable[Event]],
    *,
    is_final: Callable[[Body], bool],
    what: str,
    on_gone: Callable[[Body | None], None] | None = None,
) -> Iterator[Body]:
    """Each state of one object, from now until ``is_final`` holds for it.

    ``list_once`` gives the object (None when absent) and the resourceVersion of
    the list; ``watch_from`` the events after a version, until the server ends
    the watch (then this watches again from the last version seen) or raises
    ``Resync``. Raises ``ApiError`` when the object is or becomes absent,
    unless ``on_gone`` is given (a cancel waits for that): then it is called
    with the last state (None when the object was gone from the start) and
    the states end.
    """
    version: str | None = None
    while True:
        if version is None:
            body, version = list_once()
            if body is None:
                if on_gone is not None:
                    on_gone(None)
                    return
                raise ApiError(f"{what} not found")
            yield body
            if is_final(body):
                return
        try:
            for event in watch_from(version):
                version = event.resource_version
                if event.type == "DELETED":
                    if on_gone is not None:
                        on_gone(event.body)
                        return
                    raise ApiError(f"{what} was deleted before it finished")
                if event.type in ("ADDED", "MODIFIED"):
                    yield event.body
                    if is_final(event.body):
                        return
        except Resync:
            version = None
