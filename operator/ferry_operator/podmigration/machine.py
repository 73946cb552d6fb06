"""One pod migration's state machine: the container migration's loop, the pod's steps.

Read top-down as :mod:`..migration.machine`: guards (final, rolling back, past
the deadline), one step, the transition the :attr:`PodMigrationMachine.flow`
table names. The error policy is the same (:mod:`..policy`): before the freeze
a transient failure is retried until the deadline and anything else fails;
from the freeze on every failure rolls back, so the source pod runs again.
The source pod is deleted only once the replacement runs and is Ready.
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
from ferry_api.migration import Failure, Phase, PhaseTransition
from ferry_api.podmigration import PodMigration

from .. import metrics
from ..expiry import delete_when_expired
from ..helperclient import HelperClient
from ..kube import Kube
from ..policy import Failure as StepFailure
from ..policy import Kind, as_failure, backoff, kind_of
from ..settings import Settings
from ..slots import NodeSlots
from ..status import Clock, Events, StatusRecorder, utc_now
from .steps import COND_SUCCEEDED, COND_VALIDATED, CONDITIONS, PodContext, PodSteps

log = logging.getLogger(__name__)

FINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})
#: From here the source may be frozen: a failure rolls back.
AFTER_FREEZE = frozenset(
    {Phase.CHECKPOINTING, Phase.TRANSFERRING, Phase.RESTORING, Phase.VERIFYING}
)
#: Stored before the loop goes on (see the container machine's WAITED).
WAITED = frozenset({Phase.CHECKPOINTING, Phase.ROLLING_BACK, *FINAL})
UNSLOTTED = frozenset({Phase.PENDING, Phase.VALIDATING, *FINAL})


@dataclass(frozen=True)
class Stage:
    run: Callable[[], Awaitable[None]]
    then: Phase
    prepare: Callable[[], Awaitable[None]] | None = None


class PodMigrationMachine:
    def __init__(
        self,
        *,
        resource: PodMigration,
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
            plural=constants.POD_MIGRATION_PLURAL,
            namespace=resource.metadata.namespace or "",
            name=resource.metadata.name or "",
            generation=resource.metadata.generation,
            clock=clock,
        )
        self.c = PodContext(
            resource=resource,
            record=record,
            kube=kube,
            helpers=helpers,
            settings=settings,
            slots=slots,
            events=events,
            clock=clock,
        )
        self.steps = PodSteps(self.c)
        #: What follows each phase when its step succeeds: the whole forward path.
        self.flow: dict[Phase, Stage] = {
            Phase.PENDING: Stage(self._nothing, then=Phase.VALIDATING),
            Phase.VALIDATING: Stage(
                self.steps.validate,
                then=Phase.CHECKPOINTING,
                prepare=self.steps.prepare_checkpoint,
            ),
            Phase.CHECKPOINTING: Stage(self.steps.checkpoint, then=Phase.TRANSFERRING),
            Phase.TRANSFERRING: Stage(self.steps.transfer, then=Phase.RESTORING),
            Phase.RESTORING: Stage(self.steps.restore, then=Phase.VERIFYING),
            Phase.VERIFYING: Stage(self.steps.hand_over, then=Phase.SUCCEEDED),
        }

    @property
    def phase(self) -> Phase | None:
        return self.c.status.phase

    def _message(self, phase: Phase) -> str:
        c, status = self.c, self.c.status
        match phase:
            case Phase.PENDING:
                return "accepted"
            case Phase.VALIDATING:
                return f"checking pod {c.pod}, the nodes and their helpers"
            case Phase.CHECKPOINTING:
                return f"freezing pod {c.pod} and checkpointing it on {status.source_node}"
            case Phase.TRANSFERRING:
                return f"streaming the checkpoints to {status.target_node}"
            case Phase.RESTORING:
                return f"restoring the pod on {status.target_node}"
            case Phase.VERIFYING:
                return f"handing over from {c.pod} to {status.target_pod}"
            case Phase.SUCCEEDED:
                return self.steps.summary()
            case _:
                return phase.value

    async def _enter(self, phase: Phase, message: str | None = None) -> None:
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
                c.record.status = before  # not stored, so not entered
                raise
        else:
            c.record.write_behind()
        c.events.normal(phase.value, text)
        log.info("%s/%s: %s: %s", c.namespace, c.name, phase.value, text)

    @staticmethod
    async def _nothing() -> None:
        return None

    # -- the daemon --------------------------------------------------------------------

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Drive the migration to a final phase, or until kopf stops this daemon (a
        deletion rolls back and ends Cancelled; an operator shutdown just returns)."""
        c = self.c
        if self.phase in FINAL:
            await self._expire(stopped)
            return
        if self.phase is None:
            for type_ in CONDITIONS:
                c.record.condition(type_, ConditionStatus.UNKNOWN, "Pending")
            c.record.update(start_time=c.clock().replace(microsecond=0))
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
            delete=lambda: c.kube.delete(constants.POD_MIGRATION_PLURAL, c.namespace, c.name),
        )

    async def _run_until_stopped(self, stopped: kopf.DaemonStopped) -> None:
        work = asyncio.create_task(self.drive(), name=f"pod migration {self.c.uid}")
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

    # -- the loop ----------------------------------------------------------------------

    async def drive(self) -> None:
        attempt = 0
        while (phase := self.phase) is not None and phase not in FINAL:
            if phase == Phase.ROLLING_BACK:
                await self._roll_back()
                continue
            stage = self.flow[phase]
            try:
                if phase not in UNSLOTTED:
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
        remaining = (self.c.deadline() - self.c.clock()).total_seconds()
        if remaining <= 0:
            raise self._timeout()
        try:
            async with asyncio.timeout(remaining) as deadline:
                await stage.run()
                if stage.then not in UNSLOTTED:
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
        c = self.c
        failure = as_failure(error)
        if phase in AFTER_FREEZE:
            c.record.update(failure=Failure(reason=failure.reason, message=failure.message))
            c.events.warning("RollingBack", str(failure))
            await self._enter(Phase.ROLLING_BACK, f"{failure}; bringing the source pod back")
            return
        remaining = (c.deadline() - c.clock()).total_seconds()
        if kind_of(error) is Kind.TRANSIENT and failure.reason != "Timeout" and remaining > 0:
            wait = min(backoff(attempt), remaining)
            text = f"{phase.value}: attempt {attempt} failed ({failure}); retrying in {wait:.0f}s"
            c.events.warning(failure.reason, text)
            c.record.update(message=f"{text}; nothing is frozen yet")
            await c.record.write()
            await asyncio.sleep(wait)
            return
        await self._fail(failure.reason, failure.message)

    async def _roll_back(self) -> None:
        c = self.c
        await c.record.written()
        kept = c.status.failure or Failure(
            reason="RolledBack", message=c.status.message or "rolled back"
        )
        message = kept.message
        try:
            await self._take_slots(force=True)
            await self.steps.roll_back()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            message = f"{message}; the rollback failed too: {as_failure(error)}"
        await self._fail(kept.reason, message)

    async def _take_slots(self, *, force: bool) -> None:
        c = self.c
        nodes = (c.status.source_node or "", c.status.target_node or "")

        async def waiting(full: list[str]) -> None:
            text = (
                f"waiting for a free slot: {', '.join(full)} already at "
                f"{c.slots.limit} migration(s) in flight (operator.maxMigrationsPerNode); "
                "nothing is frozen yet"
            )
            c.events.normal("WaitingForNode", text)
            c.record.update(message=text)
            await c.record.write()

        await c.slots.acquire(c.uid, nodes, force=force, on_wait=waiting)

    # -- endings -----------------------------------------------------------------------

    async def _fail(self, reason: str, message: str) -> None:
        c = self.c
        c.record.condition(COND_SUCCEEDED, ConditionStatus.FALSE, reason, message)
        if self.phase in (Phase.PENDING, Phase.VALIDATING):
            c.record.condition(COND_VALIDATED, ConditionStatus.FALSE, reason, message)
        c.record.update(completion_time=c.clock().replace(microsecond=0))
        metrics.MIGRATIONS.labels("failed", reason).inc()
        c.events.warning(reason, message)
        await self._enter(Phase.FAILED, f"{reason}: {message}")

    async def cancel(self) -> None:
        """The resource was deleted mid-flight: bring the source back, end Cancelled."""
        c = self.c
        try:
            if self.phase in AFTER_FREEZE or self.phase == Phase.ROLLING_BACK:
                if self.phase != Phase.ROLLING_BACK:
                    await self._enter(
                        Phase.ROLLING_BACK,
                        "Cancelled: the PodMigration was deleted; bringing the source pod back",
                    )
                await self.steps.roll_back()
            if self.phase not in FINAL:
                c.record.condition(
                    COND_SUCCEEDED,
                    ConditionStatus.FALSE,
                    "Cancelled",
                    "the PodMigration was deleted",
                )
                metrics.MIGRATIONS.labels("cancelled", "Cancelled").inc()
                await self._enter(Phase.CANCELLED, "deleted before it finished; source pod kept")
        except Exception as error:
            text = f"cancelling failed, the source pod may stay frozen: {as_failure(error)}"
            log.exception("%s/%s: %s", c.namespace, c.name, text)
            c.events.warning("CancelFailed", text)


async def _wait(stopped: kopf.DaemonStopped) -> None:
    await stopped.wait()
