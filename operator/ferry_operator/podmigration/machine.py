"""One PodMigration's state machine: the shared loop (:mod:`..phases`), the pod's steps.

The error policy is the container migration's: before the freeze a transient
failure is retried until the deadline and anything else fails; from the freeze
on every failure rolls back, so the source pod runs again. The source pod is
deleted only once the replacement runs and is Ready.
"""

from __future__ import annotations

from ferry_api import constants
from ferry_api.migration import Phase
from ferry_api.podmigration import PodMigration

from ..helperclient import HelperClient
from ..kube import Kube
from ..phases import PhaseLoop, Stage
from ..settings import Settings
from ..slots import NodeSlots
from ..status import Clock, Events, utc_now
from .steps import CONDITIONS, PodContext, PodSteps


class PodMigrationMachine(PhaseLoop):
    CONDITIONS = CONDITIONS
    SOURCE = "source pod"

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
        super().__init__(
            resource,
            kind=constants.POD_MIGRATION_KIND,
            plural=constants.POD_MIGRATION_PLURAL,
            kube=kube,
            events=events,
            slots=slots,
            clock=clock,
        )
        self.c = PodContext(
            resource=resource,
            record=self.record,
            kube=kube,
            helpers=helpers,
            settings=settings,
            slots=slots,
            events=events,
            clock=clock,
        )
        self.steps = PodSteps(self.c)
        self.flow = {
            Phase.PENDING: Stage(self._nothing, then=Phase.VALIDATING),
            # No image staging: the target's containerd pulls the base image itself.
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

    def message(self, phase: Phase) -> str:
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

    def slot_nodes(self) -> tuple[str, ...]:
        status = self.c.status
        return (status.source_node or "", status.target_node or "")

    async def roll_back(self) -> None:
        await self.steps.roll_back()
