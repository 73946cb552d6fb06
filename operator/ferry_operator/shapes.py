"""What the shared migration loop (:mod:`.phases`) reads of a migration resource.

Both kinds, ContainerMigration and PodMigration, have these fields; the loop
is written against these shapes, not against either model.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Protocol

from ferry_api.meta import ObjectMeta
from ferry_api.migration import Failure, Phase, PhaseTransition, Progress
from ferry_api.migrationpolicy import AppliedPolicy
from pydantic import BaseModel


class MigrationStatus(Protocol):
    """What the loop reads of a migration's status (both kinds have it)."""

    @property
    def phase(self) -> Phase | None: ...
    @property
    def policy(self) -> AppliedPolicy | None: ...

    @property
    def progress(self) -> Progress | None: ...

    @property
    def phase_transitions(self) -> tuple[PhaseTransition, ...]: ...
    @property
    def failure(self) -> Failure | None: ...
    @property
    def start_time(self) -> datetime.datetime | None: ...
    @property
    def completion_time(self) -> datetime.datetime | None: ...
    @property
    def message(self) -> str | None: ...


class MigrationSpec(Protocol):
    @property
    def timeout_seconds(self) -> int: ...
    @property
    def ttl_seconds_after_finished(self) -> int | None: ...


class MigrationResource(Protocol):
    """What the loop reads of the resource it drives (both kinds have it)."""

    @property
    def metadata(self) -> ObjectMeta: ...
    @property
    def spec(self) -> MigrationSpec: ...
    @property
    def status(self) -> BaseModel: ...


@dataclass(frozen=True, kw_only=True)
class Identity:
    """Which resource the loop drives, and the limits its spec sets."""

    kind: str
    plural: str
    uid: str
    namespace: str
    name: str
    generation: int | None
    timeout_seconds: int
    ttl_seconds_after_finished: int | None

    @classmethod
    def of(cls, resource: MigrationResource, *, kind: str, plural: str) -> Identity:
        meta = resource.metadata
        return cls(
            kind=kind,
            plural=plural,
            uid=meta.uid or "",
            namespace=meta.namespace or "",
            name=meta.name or "",
            generation=meta.generation,
            timeout_seconds=resource.spec.timeout_seconds,
            ttl_seconds_after_finished=resource.spec.ttl_seconds_after_finished,
        )
