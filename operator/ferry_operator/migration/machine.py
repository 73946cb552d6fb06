"""One migration's state machine, in the style of KubeVirt's migration controller.

The machine is rebuilt from the resource's status whenever kopf starts its
daemon (a new migration, or an operator restart). Its loop reads top-down:

1. guards first: a final phase has nothing to do; a rollback under way
   resumes; a deadline passed fails (and rolls back what is frozen);
2. then the step of the current phase (:mod:`.steps`), which does one thing
   and records what it saw;
3. then the transition the :data:`FLOW` table names, written to status.

A failure is decided by the error policy (:mod:`..policy`): before the freeze
a transient one is retried until the deadline, anything else fails; after the
freeze every failure rolls back (:mod:`.rollback`), first recording the
failure in status so a restarted operator ends the rollback with the same
reason. The rule that never bends: the source container is removed only after
the target reports its restored copy running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import kopf
from ferry_api import constants
from ferry_api.conditions import ConditionStatus
from ferry_api.migration import ContainerMigration, Failure, Phase, PhaseTransition

from .. import failurelogs, metrics
from ..expiry import delete_when_expired
from ..helperclient import HelperClient
from ..kube import Kube
from ..policy import Failure as StepFailure
from ..policy import Kind, as_failure, backoff, kind_of
from ..settings import Settings
from ..slots import NodeSlots
from ..status import Clock, Events, StatusRecorder, utc_now
from .context import Context
from .rollback import Rollback
from .steps import COND_SUCCEEDED, COND_VALIDATED, CONDITIONS, Steps

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
#: Phases that hold no slot on the nodes (see :mod:`..slots`): nothing is touched yet, or
#: nothing is left to do.
UNSLOTTED = frozenset({Phase.PENDING, Phase.VALIDATING, *FINAL})


@dataclass(frozen=True)
class Stage:
    """What happens in one phase, and which phase follows when it is done."""

    run: Callable[[], Awaitable[None]]
    then: Phase
    #: Done while the next phase is written (it saves a round trip before the freeze).
    prepare: Callable[[], Awaitable[None]] | None = None


class Migration:
    def __init__(
        self,
        *,
        resource: ContainerMigration,
        events: Events,
        kube: Kube,
        helpers: HelperClient,
        settings: Settings,
        slots: NodeSlots,
        clock: Clock = utc_now,
    ) -> None:
        record = StatusRecorder(
            resource.status,
            kube=kube,
            plural=constants.CONTAINER_MIGRATION_PLURAL,
            namespace=resource.metadata.namespace or "",
            name=resource.metadata.name or "",
            generation=resource.metadata.generation,
            clock=clock,
        )
        self.c = Context(
            resource=resource,
            record=record,
            kube=kube,
            helpers=helpers,
            settings=settings,
            slots=slots,
            events=events,
            clock=clock,
        )
        self.steps = Steps(self.c)
        self.rollback = Rollback(self.c)
        #: What follows each phase when its step succeeds: the whole forward path.
        self.flow: dict[Phase, Stage] = {
            Phase.PENDING: Stage(self._nothing, then=Phase.VALIDATING),
            Phase.VALIDATING: Stage(self.steps.validate, then=Phase.IMAGE_STAGING),
            Phase.IMAGE_STAGING: Stage(
                self.steps.stage_image,
                then=Phase.CHECKPOINTING,
                prepare=self.steps.prepare_checkpoint,
            ),
            Phase.CHECKPOINTING: Stage(self.steps.checkpoint, then=Phase.TRANSFERRING),
            Phase.TRANSFERRING: Stage(self.steps.transfer, then=Phase.RESTORING),
            Phase.RESTORING: Stage(self.steps.restore, then=Phase.VERIFYING),
            Phase.VERIFYING: Stage(self.steps.verify, then=Phase.SUCCEEDED),
        }

    @property
    def phase(self) -> Phase | None:
        return self.c.status.phase

    def _message(self, phase: Phase) -> str:
        """What the status says on entering ``phase``."""
        c, target = self.c, self.c.status.target_node
        source = c.spec.source.node
        match phase:
            case Phase.PENDING:
                return "accepted"
            case Phase.VALIDATING:
                return "checking nodes, helpers and the container"
            case Phase.IMAGE_STAGING:
                return f"making sure {target} has the image"
            case Phase.CHECKPOINTING:
                return f"checkpointing {c.container} on {source}"
            case Phase.TRANSFERRING if c.pages:
                return "streaming the checkpoint archive (without the memory) to the target"
            case Phase.TRANSFERRING:
                return "streaming the checkpoint to the target"
            case Phase.RESTORING:
                return f"restoring on {target}"
            case Phase.VERIFYING:
                return f"checking the container runs on {target}"
            case Phase.SUCCEEDED:
                return self.steps.summary()
            case _:
                return phase.value

    async def _enter(self, phase: Phase, message: str | None = None) -> None:
        """Record ``phase`` (waited for or written behind, see :data:`WAITED`) and say so."""
        c = self.c
        text = message if message is not None else self._message(phase)
        before = c.status
        c.record.update(
            phase=phase,
            message=text,
            phase_transitions=(
                *c.status.phase_transitions,
                PhaseTransition(phase=phase, time=c.clock()),
            ),
            observed_generation=c.resource.metadata.generation,
        )
        if phase in WAITED:
            try:
                await c.record.write()
            except BaseException:
                # Not stored, so not entered: the loop must not run a step (the freeze
                # above all) that status does not announce.
                c.record.status = before
                raise
        else:
            c.record.write_behind()
        c.events.normal(phase.value, text)
        log.info("%s/%s: %s: %s", c.namespace, c.name, phase.value, text)

    @staticmethod
    async def _nothing() -> None:
        return None

    # -- the daemon ----------------------------------------------------------------

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Drive the migration to a final phase, or until kopf stops this daemon.

        Deletion of the resource stops the daemon: the step in flight is
        abandoned (the helpers finish it, shielded), then the migration rolls
        back and ends Cancelled while the finalizer still holds the resource.
        An operator shutdown just returns: the next operator resumes.
        """
        c = self.c
        if self.phase in FINAL:
            await self._expire(stopped)
            return
        if self.phase is None:
            for type_ in CONDITIONS:
                c.record.condition(type_, ConditionStatus.UNKNOWN, "Pending")
            c.record.update(
                start_time=c.clock().replace(microsecond=0), source_node=c.spec.source.node
            )
            await self._enter(Phase.PENDING)
        try:
            await self._run_until_stopped(stopped)
        finally:
            await c.slots.release(c.uid)
        if self.phase in FINAL and not stopped:
            await self._expire(stopped)

    async def _expire(self, stopped: kopf.DaemonStopped) -> None:
        c = self.c
        await delete_when_expired(
            ttl_seconds=c.spec.ttl_seconds_after_finished,
            finished=c.status.completion_time,
            stopped=stopped,
            events=c.events,
            delete=lambda: c.kube.delete(constants.CONTAINER_MIGRATION_PLURAL, c.namespace, c.name),
        )

    async def _run_until_stopped(self, stopped: kopf.DaemonStopped) -> None:
        work = asyncio.create_task(self.drive(), name=f"migration {self.c.uid}")
        stop = asyncio.create_task(_wait(stopped), name=f"stopper {self.c.uid}")
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
        self.c.record.abandon()
        if stopped.reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in (
            stopped.reason
        ):
            await self.cancel()

    # -- the loop ------------------------------------------------------------------

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
        remaining = (self.c.deadline() - self.c.clock()).total_seconds()
        if remaining <= 0:
            raise self._timeout()
        try:
            async with asyncio.timeout(remaining) as deadline:
                await stage.run()
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

    def _timeout(self) -> StepFailure:
        seconds = self.c.spec.timeout_seconds
        return StepFailure(
            reason="Timeout",
            message=f"the migration did not finish within {seconds}s (spec.timeoutSeconds)",
        )

    async def _failed(self, phase: Phase, error: Exception, attempt: int) -> None:
        """The policy's decision on ``error`` in ``phase``: retry, roll back or fail."""
        c = self.c
        failure = as_failure(error)
        if phase in AFTER_FREEZE:
            c.record.update(failure=Failure(reason=failure.reason, message=failure.message))
            c.events.warning("RollingBack", str(failure))
            await self._enter(Phase.ROLLING_BACK, f"{failure}; restoring the source")
            return
        remaining = (c.deadline() - c.clock()).total_seconds()
        if kind_of(error) is Kind.TRANSIENT and failure.reason != "Timeout" and remaining > 0:
            wait = min(backoff(attempt), remaining)
            text = f"{phase.value}: attempt {attempt} failed ({failure}); retrying in {wait:.0f}s"
            c.events.warning(failure.reason, text)
            log.warning("%s/%s: %s", c.namespace, c.name, text)
            c.record.update(message=f"{text}; nothing is frozen yet")
            await c.record.write()
            await asyncio.sleep(wait)
            return
        await self._fail(failure.reason, failure.message)

    async def _roll_back(self) -> None:
        """Bring the source back, then end Failed with the failure that caused the rollback."""
        c = self.c
        await c.record.written()
        kept = c.status.failure
        if kept is None:  # a rollback begun by an operator too old to record why
            kept = Failure(
                reason="RolledBack",
                message=c.status.message or "a rollback was under way when the operator restarted",
            )
        message = kept.message
        try:
            await self._take_slots(force=True)
            await self.rollback.run()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failure = as_failure(error)
            message = f"{message}; the rollback failed too: {failure}"
        await self._fail(kept.reason, message)

    async def _take_slots(self, *, force: bool) -> None:
        """A slot on the source and the target node (see :mod:`..slots`), before any work."""
        c = self.c
        nodes = (c.spec.source.node, c.status.target_node or "")

        async def waiting(full: list[str]) -> None:
            limit = c.slots.limit
            text = (
                f"waiting for a free slot: {', '.join(full)} already "
                f"{'has' if len(full) == 1 else 'have'} {limit} migration(s) in flight "
                "(operator.maxMigrationsPerNode); nothing is frozen yet"
            )
            c.events.normal("WaitingForNode", text)
            c.record.update(message=text)
            await c.record.write()

        await c.slots.acquire(c.uid, nodes, force=force, on_wait=waiting)

    # -- endings -------------------------------------------------------------------

    async def _fail(self, reason: str, message: str) -> None:
        c = self.c
        c.record.condition(COND_SUCCEEDED, ConditionStatus.FALSE, reason, message)
        if self.phase in (Phase.PENDING, Phase.VALIDATING):
            c.record.condition(COND_VALIDATED, ConditionStatus.FALSE, reason, message)
        c.record.update(completion_time=c.clock().replace(microsecond=0))
        metrics.MIGRATIONS.labels("failed", reason).inc()
        c.events.warning(reason, message)
        summary = f"{reason}: {message}"
        if await self._keep_failure_logs():
            summary += f" (full logs: kubectl ferry logs {c.name})"
        await self._enter(Phase.FAILED, summary)

    async def _keep_failure_logs(self) -> bool:
        """Copy the nodes' logs of the failed steps next to the migration; True if there were."""
        c = self.c
        if c.status.target_node is None:
            return False  # refused before any node did anything
        try:
            peers = await c.peers()
        except Exception:  # without the helpers there are no logs to fetch
            return False
        logs = await failurelogs.collect(
            kube=c.kube,
            helpers=c.helpers,
            owner=failurelogs.Owner(
                kind=constants.CONTAINER_MIGRATION_KIND,
                name=c.name,
                namespace=c.namespace,
                uid=c.uid,
            ),
            peers=peers,
        )
        c.record.update(failure_logs=logs)
        return logs is not None

    async def cancel(self) -> None:
        """The resource was deleted mid-flight: roll back what is frozen, end Cancelled."""
        c = self.c
        try:
            if self.phase in AFTER_FREEZE or self.phase == Phase.ROLLING_BACK:
                if self.phase != Phase.ROLLING_BACK:
                    c.events.warning("RollingBack", "Cancelled: the ContainerMigration was deleted")
                    await self._enter(
                        Phase.ROLLING_BACK,
                        "Cancelled: the ContainerMigration was deleted; restoring the source",
                    )
                await self.rollback.run()
            if self.phase not in FINAL:
                c.record.condition(
                    COND_SUCCEEDED,
                    ConditionStatus.FALSE,
                    "Cancelled",
                    "the ContainerMigration was deleted",
                )
                metrics.MIGRATIONS.labels("cancelled", "Cancelled").inc()
                await self._enter(Phase.CANCELLED, "deleted before it finished; source kept")
        except Exception as error:
            # The finalizer goes with the daemon: say loudly what is left behind.
            text = f"cancelling failed, the source may not run: {as_failure(error)}"
            log.exception("%s/%s: %s", c.namespace, c.name, text)
            c.events.warning("CancelFailed", text)


async def _wait(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()
