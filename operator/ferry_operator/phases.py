"""The loop a migration runs, in the style of KubeVirt's migration controller: shared by
ContainerMigration (:mod:`.migration`) and PodMigration (:mod:`.podmigration`).

A machine is rebuilt from the resource's status whenever kopf starts its
daemon (a new migration, or an operator restart). Its loop reads top-down:

1. guards first: a final phase has nothing to do; a rollback under way
   resumes; a deadline passed fails (and rolls back what is frozen);
2. then the step of the current phase, which does one thing and records what
   it saw;
3. then the transition the subclass's :attr:`PhaseLoop.flow` table names,
   written to status.

A failure is decided by the error policy (:mod:`.policy`): before the freeze
a transient one is retried until the deadline, anything else fails; after the
freeze every failure rolls back, first recording the failure in status so a
restarted operator ends the rollback with the same reason. The subclass says
what each phase does, what its messages are and how it rolls back.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import kopf
from ferry_api.conditions import ConditionStatus
from ferry_api.migration import Failure, Phase, PhaseTransition

from . import metrics, progress
from .expiry import delete_when_expired
from .kube import Kube
from .policy import Failure as StepFailure
from .policy import Kind, as_failure, backoff, kind_of
from .shapes import Identity, MigrationResource, MigrationStatus
from .slots import CLUSTER, NodeSlots
from .status import Clock, Events, StatusRecorder

log = logging.getLogger(__name__)

FINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})
#: Phases in which the source may be frozen or gone: a failure here rolls back.
AFTER_FREEZE = frozenset(
    {Phase.CHECKPOINTING, Phase.TRANSFERRING, Phase.RESTORING, Phase.VERIFYING}
)
#: Phases whose entry is stored before anything moves: Checkpointing comes before the
#: freeze, and a restarted operator must know a freeze may have happened; the rest
#: (written behind the next step) a restarted operator resumes one step behind, which
#: the helpers' journals answer. Inside the freeze each write waited for was ~10 ms of
#: downtime.
WAITED = frozenset({Phase.CHECKPOINTING, Phase.ROLLING_BACK, *FINAL})
#: Phases that hold no slot on the nodes (see :mod:`.slots`): nothing is touched yet, or
#: nothing is left to do.
UNSLOTTED = frozenset({Phase.PENDING, Phase.VALIDATING, *FINAL})

COND_VALIDATED = "Validated"
COND_SUCCEEDED = "Succeeded"


@dataclass(frozen=True)
class Stage:
    """What happens in one phase, and which phase follows when it is done."""

    run: Callable[[], Awaitable[None]]
    then: Phase
    #: Done while the next phase is written (it saves a round trip before the freeze).
    prepare: Callable[[], Awaitable[None]] | None = None


class PhaseLoop(abc.ABC):
    #: The conditions set Unknown when the migration begins.
    CONDITIONS: ClassVar[tuple[str, ...]]
    #: How messages name what a rollback brings back.
    SOURCE: ClassVar[str] = "source"
    #: What follows each phase when its step succeeds: the whole forward path.
    flow: dict[Phase, Stage]

    def __init__(
        self,
        resource: MigrationResource,
        *,
        kind: str,
        plural: str,
        kube: Kube,
        events: Events,
        slots: NodeSlots,
        clock: Clock,
    ) -> None:
        self.identity = identity = Identity.of(resource, kind=kind, plural=plural)
        self.record: StatusRecorder[Any] = StatusRecorder(
            resource.status,
            kube=kube,
            plural=plural,
            namespace=identity.namespace,
            name=identity.name,
            generation=identity.generation,
            clock=clock,
        )
        self.kube = kube
        self.events = events
        self.slots = slots
        self.clock = clock

    # -- what a kind says --------------------------------------------------------------

    @abc.abstractmethod
    def message(self, phase: Phase) -> str:
        """What the status says on entering ``phase``."""

    @abc.abstractmethod
    def slot_nodes(self) -> tuple[str, ...]:
        """The nodes whose slots a migration holds (see :mod:`.slots`)."""

    @abc.abstractmethod
    async def roll_back(self) -> None:
        """Bring the source back as it was before the freeze; undo what the target has."""

    def beginning(self) -> dict[str, Any]:
        """More status to record when the migration begins."""
        return {}

    async def failure_hint(self) -> str:
        """Added to the Failed message, e.g. where the full logs are."""
        return ""

    # -- status ------------------------------------------------------------------------

    @property
    def status(self) -> MigrationStatus:
        status: MigrationStatus = self.record.status
        return status

    @property
    def phase(self) -> Phase | None:
        return self.status.phase

    def deadline(self) -> datetime.datetime:
        """When the migration must be over: its start plus ``spec.timeoutSeconds``, or plus
        its MigrationPolicy's completion timeout when that is shorter."""
        started = self.status.start_time or self.clock()
        return started + datetime.timedelta(seconds=self.timeout_seconds())

    def timeout_seconds(self) -> int:
        applied = self.status.policy
        own = self.identity.timeout_seconds
        if applied is None or applied.completion_timeout_seconds is None:
            return own
        return min(own, applied.completion_timeout_seconds)

    def _log_name(self) -> str:
        return f"{self.identity.namespace}/{self.identity.name}"

    async def _enter(self, phase: Phase, message: str | None = None) -> None:
        """Record ``phase`` (waited for or written behind, see :data:`WAITED`) and say so."""
        text = message if message is not None else self.message(phase)
        before = self.record.status
        self.record.update(
            phase=phase,
            message=text,
            phase_transitions=(
                *self.status.phase_transitions,
                PhaseTransition(phase=phase, time=self.clock()),
            ),
            observed_generation=self.identity.generation,
        )
        if phase in WAITED:
            try:
                await self.record.write()
            except BaseException:
                # Not stored, so not entered: the loop must not run a step (the freeze
                # above all) that status does not announce.
                self.record.status = before
                raise
        else:
            self.record.write_behind()
        self.events.normal(phase.value, text)
        log.info("%s: %s: %s", self._log_name(), phase.value, text)

    @staticmethod
    async def _nothing() -> None:
        return None

    # -- the daemon --------------------------------------------------------------------

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Drive the migration to a final phase, or until kopf stops this daemon.

        Deletion of the resource stops the daemon: the step in flight is
        abandoned (the helpers finish it, shielded), then the migration rolls
        back and ends Cancelled while the finalizer still holds the resource.
        An operator shutdown just returns: the next operator resumes.
        """
        if self.phase in FINAL:
            await self._expire(stopped)
            return
        if self.phase is None:
            for type_ in self.CONDITIONS:
                self.record.condition(type_, ConditionStatus.UNKNOWN, "Pending")
            self.record.update(start_time=self.clock().replace(microsecond=0), **self.beginning())
            await self._enter(Phase.PENDING)
        try:
            await self._run_until_stopped(stopped)
        finally:
            await self.slots.release(self.identity.uid)
        if self.phase in FINAL and not stopped:
            await self._expire(stopped)

    async def _expire(self, stopped: kopf.DaemonStopped) -> None:
        identity = self.identity
        await delete_when_expired(
            ttl_seconds=identity.ttl_seconds_after_finished,
            finished=self.status.completion_time,
            stopped=stopped,
            events=self.events,
            delete=lambda: self.kube.delete(identity.plural, identity.namespace, identity.name),
        )

    async def _run_until_stopped(self, stopped: kopf.DaemonStopped) -> None:
        uid = self.identity.uid
        work = asyncio.create_task(self.drive(), name=f"migration {uid}")
        stop = asyncio.create_task(_wait(stopped), name=f"stopper {uid}")
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop
        if work.done():
            work.result()
            return
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        self.record.abandon()
        if stopped.reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in (
            stopped.reason
        ):
            with contextlib.suppress(CancelFailed):  # recorded; the delete handler retries
                await self.cancel()

    # -- the loop ----------------------------------------------------------------------

    async def drive(self) -> None:
        """Advance one phase at a time until a final one."""
        attempt = 0
        while (phase := self.phase) is not None and phase not in FINAL:
            if phase == Phase.ROLLING_BACK:
                await self._roll_back()
                continue
            stage = self.flow[phase]
            try:
                if phase not in UNSLOTTED:  # resumed after a restart: take them again
                    await self._take_slots(force=phase in AFTER_FREEZE)
                await self._step(stage)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                attempt += 1
                await self._failed(phase, error, attempt)
            else:
                attempt = 0

    async def _step(self, stage: Stage) -> None:
        """The stage's step and its transition, within what is left until the deadline."""
        remaining = (self.deadline() - self.clock()).total_seconds()
        if remaining <= 0:
            raise self._timeout()
        try:
            async with asyncio.timeout(remaining) as deadline:
                await self._watched(stage.run())
                if stage.then not in UNSLOTTED:
                    # Held before the next phase is entered: a migration waiting for a slot
                    # shows Validating (and why it waits), never a phase it has not begun.
                    await self._take_slots(force=stage.then in AFTER_FREEZE)
                if stage.prepare is None:
                    await self._enter(stage.then)
                else:
                    await asyncio.gather(self._enter(stage.then), stage.prepare())
        except TimeoutError:
            if deadline.expired():
                raise self._timeout() from None
            raise

    async def _watched(self, step: Awaitable[None]) -> None:
        """``step``, under the MigrationPolicy's progress timeout if it sets one."""
        applied = self.status.policy
        if applied is None or applied.progress_timeout_seconds is None:
            await step
            return
        await progress.watched(
            step,
            limit=applied.progress_timeout_seconds,
            mark=self._progress_mark,
            failure=lambda: StepFailure(
                reason="ProgressTimeout",
                message=f"no progress for {applied.progress_timeout_seconds}s in "
                f"{self.phase.value if self.phase else '?'} (MigrationPolicy {applied.name}: "
                "progressTimeoutSeconds)",
            ),
        )

    def _progress_mark(self) -> tuple[object, ...]:
        progress = self.status.progress
        return (self.phase, progress.model_dump() if progress is not None else None)

    def _timeout(self) -> StepFailure:
        seconds = self.timeout_seconds()
        which = (
            "spec.timeoutSeconds"
            if seconds == self.identity.timeout_seconds
            else f"MigrationPolicy {self.status.policy.name if self.status.policy else ''}: "
            "completionTimeoutPerGiBSeconds"
        )
        return StepFailure(
            reason="Timeout",
            message=f"the migration did not finish within {seconds}s ({which})",
        )

    async def _failed(self, phase: Phase, error: Exception, attempt: int) -> None:
        """The policy's decision on ``error`` in ``phase``: retry, roll back or fail."""
        failure = as_failure(error)
        if phase in AFTER_FREEZE:
            self.record.update(failure=Failure(reason=failure.reason, message=failure.message))
            self.events.warning("RollingBack", str(failure))
            await self._enter(Phase.ROLLING_BACK, f"{failure}; restoring the {self.SOURCE}")
            return
        remaining = (self.deadline() - self.clock()).total_seconds()
        if kind_of(error) is Kind.TRANSIENT and failure.reason != "Timeout" and remaining > 0:
            wait = min(backoff(attempt), remaining)
            text = f"{phase.value}: attempt {attempt} failed ({failure}); retrying in {wait:.0f}s"
            self.events.warning(failure.reason, text)
            log.warning("%s: %s", self._log_name(), text)
            self.record.update(message=f"{text}; nothing is frozen yet")
            await self.record.write()
            await asyncio.sleep(wait)
            return
        await self._fail(failure.reason, failure.message)

    async def _roll_back(self) -> None:
        """Bring the source back, then end Failed with the failure that caused the rollback."""
        await self.record.written()
        kept = self.status.failure
        if kept is None:  # a rollback begun by an operator too old to record why
            kept = Failure(
                reason="RolledBack",
                message=self.status.message
                or "a rollback was under way when the operator restarted",
            )
        message = kept.message
        try:
            await self._take_slots(force=True)
            await self.roll_back()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            message = f"{message}; the rollback failed too: {as_failure(error)}"
        await self._fail(kept.reason, message)

    async def _take_slots(self, *, force: bool) -> None:
        """A slot on the source and the target node (see :mod:`.slots`), before any work."""

        async def waiting(full: list[str]) -> None:
            limit = self.slots.limit
            text = (
                f"waiting for a free slot: {', '.join(full)} already "
                f"{'has' if len(full) == 1 else 'have'} {limit} migration(s) in flight "
                "(operator.maxMigrationsPerNode); nothing is frozen yet"
            )
            applied = self.status.policy
            if applied is not None and CLUSTER in full:
                text = (
                    f"waiting for a free slot: {applied.parallel_migrations_per_cluster} "
                    f"migration(s) already run in the cluster (MigrationPolicy {applied.name}: "
                    "parallelMigrationsPerCluster); nothing is frozen yet"
                )
            elif applied is not None and applied.parallel_outbound_migrations_per_node:
                text = (
                    f"waiting for a free slot on {', '.join(full)}: at most "
                    f"{applied.parallel_outbound_migrations_per_node} migration(s) may leave "
                    f"{self.slot_nodes()[0]} at once (MigrationPolicy {applied.name}) and "
                    f"{limit} use a node (operator.maxMigrationsPerNode); nothing is frozen yet"
                )
            self.events.normal("WaitingForNode", text)
            self.record.update(message=text)
            await self.record.write()

        applied = self.status.policy
        limit = applied.parallel_outbound_migrations_per_node if applied is not None else None
        source = self.slot_nodes()[0]
        await self.slots.acquire(
            self.identity.uid,
            self.slot_nodes(),
            force=force,
            on_wait=waiting,
            outbound=(source, limit) if limit else None,
            cluster_limit=applied.parallel_migrations_per_cluster if applied else None,
        )

    # -- endings -----------------------------------------------------------------------

    async def _fail(self, reason: str, message: str) -> None:
        self.record.condition(COND_SUCCEEDED, ConditionStatus.FALSE, reason, message)
        if self.phase in (Phase.PENDING, Phase.VALIDATING):
            self.record.condition(COND_VALIDATED, ConditionStatus.FALSE, reason, message)
        self.record.update(completion_time=self.clock().replace(microsecond=0))
        metrics.MIGRATIONS.labels("failed", reason).inc()
        self.events.warning(reason, message)
        await self._enter(Phase.FAILED, f"{reason}: {message}{await self.failure_hint()}")

    async def cancel(self) -> None:
        """The resource was deleted mid-flight: roll back what is frozen, end Cancelled.

        A rollback that cannot finish (a helper answered with an error, a
        node-helper is gone) is recorded in status and raised as
        :class:`CancelFailed`: the delete handler keeps the finalizer and asks
        again, so the resource does not go while its source may not run.
        """
        kind = self.identity.kind
        try:
            if self.phase in AFTER_FREEZE or self.phase == Phase.ROLLING_BACK:
                if self.phase != Phase.ROLLING_BACK:
                    self.events.warning("RollingBack", f"Cancelled: the {kind} was deleted")
                    await self._enter(
                        Phase.ROLLING_BACK,
                        f"Cancelled: the {kind} was deleted; restoring the {self.SOURCE}",
                    )
                await self.roll_back()
            if self.phase not in FINAL:
                self.record.condition(
                    COND_SUCCEEDED,
                    ConditionStatus.FALSE,
                    "Cancelled",
                    f"the {kind} was deleted",
                )
                metrics.MIGRATIONS.labels("cancelled", "Cancelled").inc()
                await self._enter(
                    Phase.CANCELLED, f"deleted before it finished; {self.SOURCE} kept"
                )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            text = (
                f"cancelling failed, the {self.SOURCE} may not run yet: {as_failure(error)}; "
                f"the {kind} keeps its finalizer and the rollback is tried again"
            )
            log.warning("%s: %s", self._log_name(), text)
            self.events.warning("CancelFailed", text)
            self.record.condition(COND_SUCCEEDED, ConditionStatus.UNKNOWN, "CancelFailed", text)
            self.record.update(message=text)
            try:
                await self.record.write()
            except Exception as failed:  # the retry records it again
                log.warning("%s: status not written: %s", self._log_name(), failed)
            raise CancelFailed(text) from error


class CancelFailed(Exception):
    """A cancel's rollback did not finish: the source may not run yet."""


async def _wait(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()
