"""What every controller does with a resource's status: hold it, change it, write it, tell.

A :class:`StatusRecorder` holds the resource's status as a frozen model,
applies changes to it (fields, conditions by the one rule of
:func:`~ferry_api.conditions.set_condition`), and writes it to the API server
as a merge patch, either waited for or left behind: a write left behind lets
the next step start while the API server stores it, and the next write waits
for it, so writes still land in order. A transient API failure is retried a
few times (:data:`WRITE_ATTEMPTS`); what still fails is raised to the
controller, whose policy decides (see :mod:`.policy`).

Events go through :class:`Events`, so the controllers' logic runs the same in
unit tests as under kopf.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import kopf
from ferry_api.base import to_wire
from ferry_api.conditions import Condition, ConditionStatus, set_condition
from pydantic import BaseModel

from .kube import Kube
from .policy import Kind, backoff, kind_of

log = logging.getLogger(__name__)

StatusT = TypeVar("StatusT", bound=BaseModel)
Clock = Callable[[], datetime.datetime]
#: Tries at one status write while the API server answers "not now".
WRITE_ATTEMPTS = 4


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Events(Protocol):
    """Where a controller tells what happened (Kubernetes Events under kopf)."""

    def normal(self, reason: str, message: str) -> None: ...

    def warning(self, reason: str, message: str) -> None: ...


class KopfEvents:
    """Events on the resource, posted by kopf (which batches them off the event loop)."""

    def __init__(self, body: kopf.Body) -> None:
        self.body = body

    def normal(self, reason: str, message: str) -> None:
        kopf.event(self.body, type="Normal", reason=reason, message=message)

    def warning(self, reason: str, message: str) -> None:
        kopf.warn(self.body, reason=reason, message=message)


class StatusRecorder(Generic[StatusT]):
    """One resource's status: the model in memory and its writes to the API server."""

    def __init__(
        self,
        status: StatusT,
        *,
        kube: Kube,
        plural: str,
        namespace: str,
        name: str,
        generation: int | None,
        clock: Clock = utc_now,
    ) -> None:
        self.status = status
        self.kube = kube
        self.plural = plural
        self.namespace = namespace
        self.name = name
        self.generation = generation
        self.clock = clock
        self._writing: asyncio.Task[None] | None = None

    def update(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)

    def condition(
        self, type_: str, status: ConditionStatus, reason: str, message: str = ""
    ) -> None:
        """Set the condition ``type_`` (its transition time moves only when ``status`` does)."""
        conditions = set_condition(
            getattr(self.status, "conditions", ()),
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=self.generation,
            ),
            now=self.clock(),
        )
        self.update(conditions=conditions)

    async def write(self) -> None:
        """Write the status and wait for it (and for any write left behind before it)."""
        await self.written()
        await self._patch(to_wire(self.status))

    def write_behind(self) -> None:
        """Write the status without waiting for it; writes still land in order."""
        before, wire = self._writing, to_wire(self.status)

        async def write() -> None:
            if before is not None:
                await before
            await self._patch(wire)

        self._writing = asyncio.create_task(write(), name=f"status of {self.namespace}/{self.name}")

    async def written(self) -> None:
        """Wait for the write left behind, if any (and raise its error)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    def abandon(self) -> None:
        """Forget a write left behind (the controller stops; the next one rewrites)."""
        writing, self._writing = self._writing, None
        if writing is not None and not writing.done():
            writing.cancel()

    async def _patch(self, wire: dict[str, Any]) -> None:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                await self.kube.patch_status(self.plural, self.namespace, self.name, wire)
            except Exception as error:
                if kind_of(error) is not Kind.TRANSIENT or attempt == WRITE_ATTEMPTS:
                    raise
                log.warning(
                    "%s/%s: status write failed (%s); again in %.0fs",
                    self.namespace,
                    self.name,
                    error,
                    backoff(attempt),
                )
                await asyncio.sleep(backoff(attempt))
            else:
                return
