"""One ContainerMigration's state machine: the shared loop (:mod:`..phases`), this kind's steps.

The loop (guards, one step, the transition the :attr:`Migration.flow` table
names, the error policy) is :class:`~ferry_operator.phases.PhaseLoop`'s; here
are the phases' steps (:mod:`.steps`), what status says on entering each, and
the rollback (:mod:`.rollback`). The rule that never bends: the source
container is removed only after the target reports its restored copy running.
"""

from __future__ import annotations

from typing import Any

from ferry_api import constants
from ferry_api.migration import ContainerMigration, Phase

from .. import failurelogs
from ..helperclient import HelperClient
from ..kube import Kube
from ..phases import PhaseLoop, Stage
from ..settings import Settings
from ..slots import NodeSlots
from ..status import Clock, Events, utc_now
from .context import Context
from .rollback import Rollback
from .steps import CONDITIONS, Steps


class Migration(PhaseLoop):
    CONDITIONS = CONDITIONS

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
        super().__init__(
            resource,
            kind=constants.CONTAINER_MIGRATION_KIND,
            plural=constants.CONTAINER_MIGRATION_PLURAL,
            kube=kube,
            events=events,
            slots=slots,
            clock=clock,
        )
        self.c = Context(
            resource=resource,
            record=self.record,
            kube=kube,
            helpers=helpers,
            settings=settings,
            slots=slots,
            events=events,
            clock=clock,
        )
        self.steps = Steps(self.c)
        self.rollback = Rollback(self.c)
        self.flow = {
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

    def message(self, phase: Phase) -> str:
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

    def beginning(self) -> dict[str, Any]:
        return {"source_node": self.c.spec.source.node}

    def slot_nodes(self) -> tuple[str, ...]:
        return (self.c.spec.source.node, self.c.status.target_node or "")

    async def roll_back(self) -> None:
        await self.rollback.run()

    async def failure_hint(self) -> str:
        if await self._keep_failure_logs():
            return f" (full logs: kubectl ferry logs {self.c.name})"
        return ""

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
