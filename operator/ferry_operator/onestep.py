"""What a ContainerCheckpoint and a ContainerRestore share: one step, one status, one ending.

Both are single steps run by a kopf create handler (kopf records their
completion, so a resync or a restart never runs one again), with the same
pieces as a migration: a :class:`~.status.StatusRecorder`, the events, the
helper client, and, when they fail, the nodes' logs of the failed step copied
next to the resource (:mod:`.failurelogs`).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ferry_api.conditions import ConditionStatus
from ferry_api.meta import ObjectMeta
from ferry_wire import Peer
from pydantic import BaseModel

from . import failurelogs
from .helperclient import HelperClient
from .kube import Kube
from .settings import Settings
from .status import Clock, Events, StatusRecorder

StatusT = TypeVar("StatusT", bound=BaseModel)


class OneStep(Generic[StatusT]):
    """One resource handled in one step; subclasses say which kind and do the step."""

    #: The kind and plural of the resource handled.
    kind: str
    plural: str

    def __init__(
        self,
        *,
        metadata: ObjectMeta,
        status: StatusT,
        events: Events,
        kube: Kube,
        helpers: HelperClient,
        settings: Settings,
        clock: Clock,
        elapsed_seconds: float = 0.0,
    ) -> None:
        self.events = events
        #: How long kopf has been running this handler, over its retries and restarts.
        self.elapsed_seconds = elapsed_seconds
        self.kube = kube
        self.helpers = helpers
        self.settings = settings
        self.uid = metadata.uid or ""
        self.namespace = metadata.namespace or ""
        self.name = metadata.name or ""
        self.record = StatusRecorder[StatusT](
            status,
            kube=kube,
            plural=self.plural,
            namespace=self.namespace,
            name=self.name,
            generation=metadata.generation,
            clock=clock,
        )
        #: The helpers asked for something, whose logs tell of a failure.
        self.peers: list[Peer] = []

    async def write(self, **changes: Any) -> None:
        self.record.update(**changes)
        await self.record.write()

    async def end(
        self, *, ok: bool, condition: str, phase: object, reason: str, message: str, **more: Any
    ) -> None:
        """Record the ending: ``condition`` True or False, the phase, and for a failure where
        its full logs are."""
        logs = None
        if not ok:
            logs = await failurelogs.collect(
                kube=self.kube,
                helpers=self.helpers,
                owner=failurelogs.Owner(
                    kind=self.kind, name=self.name, namespace=self.namespace, uid=self.uid
                ),
                peers=self.peers,
            )
        status = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
        self.record.condition(condition, status, reason, message)
        shown = message
        if logs is not None:
            word = self.kind.removeprefix("Container").lower()
            shown += f" (full logs: kubectl ferry logs --kind {word} {self.name})"
        await self.write(phase=phase, message=shown, failure_logs=logs, **more)
        if ok:
            self.events.normal(reason, message)
        else:
            self.events.warning(reason, message)
