"""The forward steps of a migration, one per phase; each does one thing and records what it saw.

A step observes the helpers' answers and writes the facts into status
(conditions, timings, sizes); it never decides what comes next: that is the
machine's table (:mod:`.machine`). Every helper step is idempotent, keyed by
the migration's UID, so a step repeated after an operator restart gets the
journaled answer instead of acting twice.
"""

from __future__ import annotations

import asyncio

from ferry_api.conditions import ConditionStatus
from ferry_api.migration import Archive, MemoryTransfer, Progress, Timings
from ferry_wire import Peer
from ferry_wire.containers import Container, InspectRequest
from ferry_wire.migration import (
    CheckpointRequest,
    CleanupRequest,
    FinishSourceRequest,
    PageServerLink,
    RestoreRequest,
    SendRequest,
)
from ferry_wire.pages import PagesIdentityRequest, PagesOpenRequest

from .. import metrics, validation
from ..governing import governing
from ..peers import peer_of
from ..phases import COND_SUCCEEDED, COND_VALIDATED
from ..policy import Failure
from ..progress import ProgressWrites
from .context import Context

COND_CHECKPOINTED = "Checkpointed"
COND_TRANSFERRED = "Transferred"
COND_RESTORED = "Restored"
CONDITIONS = (COND_VALIDATED, COND_CHECKPOINTED, COND_TRANSFERRED, COND_RESTORED, COND_SUCCEEDED)


class Steps:
    def __init__(self, context: Context) -> None:
        self.c = context
        self._progress = ProgressWrites(context.record)

    def _timings(self, **changes: float) -> None:
        current = self.c.status.timings or Timings()
        self.c.record.update(timings=current.model_copy(update=changes))

    # -- Validating ---------------------------------------------------------------

    async def validate(self) -> None:
        """Nodes, helpers, the container and the target, checked before anything is touched."""
        c, spec = self.c, self.c.spec
        nodes, helpers = await asyncio.gather(c.kube.node_names(), c.kube.node_helpers())
        now, stale = c.clock(), c.settings.helper_stale_seconds
        validation.check_source(spec, nodes=nodes, helpers=helpers, now=now, stale_seconds=stale)
        source_peer = peer_of(helpers[spec.source.node])
        info = await c.helpers.inspect(
            source_peer, InspectRequest(container=c.container, runtime=spec.runtime, memory=True)
        )
        checked = validation.check_container(
            spec,
            info,
            namespace=c.namespace,
            allow_any_namespace=c.settings.allow_any_namespace,
            uid=c.uid,
        )
        runtime = checked.runtime
        policy = await governing(
            c.kube, namespace=c.namespace, labels=checked.labels, memory_bytes=checked.memory_bytes
        )
        c.record.update(
            memory_transfer=validation.choose_memory_transfer(
                spec,
                runtime,
                checked.memory_bytes,
                policy_default=policy.memory_transfer if policy else None,
            ),
            memory_bytes=checked.memory_bytes,
            policy=policy,
        )
        c.image = (checked.image_id, checked.image_name)
        c.container_id = checked.id
        target = validation.choose_target(
            spec, runtime=runtime, nodes=nodes, helpers=helpers, now=now, stale_seconds=stale
        )
        validation.check_tcp_established(spec, target)
        validation.check_compatible(helpers[spec.source.node], helpers[target])
        target_peer = peer_of(helpers[target])
        by_name, by_id = await asyncio.gather(
            c.helpers.inspect(target_peer, InspectRequest(container=c.container, runtime=runtime)),
            self._by_id(target_peer, checked),
        )
        validation.check_target_free(c.container, target, by_name)
        if c.pages:
            validation.check_target_id_free(checked.id, target, by_id)
        c.record.update(runtime=runtime, target_node=target)
        c.peer_pair = (source_peer, target_peer)
        c.record.condition(
            COND_VALIDATED,
            ConditionStatus.TRUE,
            "Validated",
            f"{c.container} on {spec.source.node} -> {target}; {self._memory_plan()}",
        )

    async def _by_id(self, target: Peer, source: Container) -> Container | None:
        """The target's container with the source's ID (a page-server restore keeps it)."""
        if not self.c.pages:
            return None
        return await self.c.helpers.inspect(
            target, InspectRequest(container=source.id, runtime=source.runtime)
        )

    def _memory_plan(self) -> str:
        """How the memory moves, and why when Auto chose: for the Validated condition."""
        spec, status = self.c.spec, self.c.status
        chosen = status.memory_transfer or spec.memory_transfer or MemoryTransfer.ARCHIVE
        plan = f"memory by {chosen.value}"
        if spec.memory_transfer is None and status.policy and status.policy.memory_transfer:
            plan += f" (MigrationPolicy {status.policy.name})"
        if spec.memory_transfer == MemoryTransfer.AUTO:
            used = status.memory_bytes
            plan += f" (Auto: {used / (1 << 20):.0f} MiB in use)" if used is not None else " (Auto)"
        return plan

    # -- ImageStaging --------------------------------------------------------------

    async def stage_image(self) -> None:
        """The target gets the container's image (with its ID) before anything freezes."""
        c = self.c
        source, target = await c.peers()
        _, (image_id, image_name) = await c.source_container()

        async def credential() -> str:
            c.events.normal(
                "ImageStaging", f"shipping image {image_name} to {target.node} before the freeze"
            )
            return await c.grant(target)

        await c.helpers.ship_image(
            source,
            target,
            uid=c.uid,
            image_id=image_id,
            image_name=image_name,
            runtime=c.runtime,
            credential=credential,
        )

    # -- Checkpointing ---------------------------------------------------------------

    async def prepare_checkpoint(self) -> None:
        """Granted while Checkpointing is written: one helper round trip less before the freeze."""
        _, target = await self.c.peers()
        self.c.credential = await self.c.grant(target)

    async def checkpoint(self) -> None:
        c, spec = self.c, self.c.spec
        source, target = await c.peers()
        page_server = await self._open_page_server(source, target) if c.pages else None
        if c.credential is None:  # resumed by a new operator
            # Granted now, not inside the freeze: one helper round trip less of downtime.
            c.credential = await c.grant(target)
        request = CheckpointRequest(
            uid=c.uid,
            container=c.container,
            runtime=c.runtime,
            leave_running=spec.leave_running,
            tcp_established=spec.tcp_established,
            file_locks=spec.file_locks,
            compression=spec.compression,
            page_server=page_server,
            bandwidth_bytes_per_second=c.bandwidth() if page_server is not None else None,
        )
        c.frozen_at = c.clock()
        c.record.update(freeze_time=c.frozen_at)
        result = await c.helpers.call(source, request)
        self._timings(checkpoint_seconds=round(result.seconds, 3))
        if result.bytes_per_second is not None:
            self._timings(transfer_bytes_per_second=round(result.bytes_per_second))
        c.record.update(
            archive=Archive(
                bytes=result.size_bytes, sha256=result.sha256, compression=spec.compression
            ),
            criu_statistics=result.statistics,
            progress=Progress(bytes_sent=0, bytes_total=result.size_bytes),
        )
        checkpointed = f"archive of {result.size_bytes} bytes"
        if c.pages:
            checkpointed += f", the memory sent to the page server on {target.node}"
        c.record.condition(COND_CHECKPOINTED, ConditionStatus.TRUE, "Checkpointed", checkpointed)

    async def _open_page_server(self, source: Peer, target: Peer) -> PageServerLink:
        """The target's page server for this migration, listening before the freeze.

        With TLS each end has a certificate of its own for this migration and
        trusts only the other's: the source's goes to the target here, the
        target's to the source with the checkpoint request.
        """
        c = self.c
        client_cert = None
        if c.spec.pages_over_tls:
            identity = await c.helpers.call(source, PagesIdentityRequest(uid=c.uid))
            client_cert = identity.cert
        container_id, _ = await c.source_container()
        opened = await c.helpers.call(
            target,
            PagesOpenRequest(
                uid=c.uid,
                container_id=container_id,
                client_cert=client_cert,
                ttl_seconds=c.spec.timeout_seconds,
            ),
        )
        if c.spec.pages_over_tls and not opened.cert:
            raise Failure(
                reason="PageServerFailed",
                message=f"the page server on {target.node} was opened without TLS",
            )
        return opened if c.spec.pages_over_tls else opened.model_copy(update={"cert": None})

    # -- Transferring ----------------------------------------------------------------

    async def transfer(self) -> None:
        c = self.c
        source, target = await c.peers()
        # A migration resumed by a new operator grants again.
        credential = c.credential or await c.grant(target)
        result = await c.helpers.call(
            source,
            SendRequest(
                uid=c.uid,
                target=target,
                credential=credential,
                bandwidth_bytes_per_second=c.bandwidth(),
            ),
            on_progress=self._progress,
        )
        metrics.BYTES.inc(result.bytes)
        self._timings(transfer_seconds=round(result.seconds, 3))
        if result.bytes_per_second is not None and not c.pages:
            self._timings(transfer_bytes_per_second=round(result.bytes_per_second))
        c.record.update(progress=Progress(bytes_sent=result.bytes, bytes_total=result.bytes))
        c.record.condition(
            COND_TRANSFERRED,
            ConditionStatus.TRUE,
            "ChecksumVerified",
            f"{result.bytes} bytes received by {target.node}, sha256 verified",
        )

    # -- Restoring ---------------------------------------------------------------------

    async def restore(self) -> None:
        c, spec = self.c, self.c.spec
        _, target = await c.peers()
        result = await c.helpers.call(
            target,
            RestoreRequest(
                uid=c.uid,
                name=c.container,
                runtime=c.runtime,
                tcp_established=spec.tcp_established,
                file_locks=spec.file_locks,
                onto_pages=c.pages,
            ),
        )
        self._timings(restore_seconds=round(result.seconds, 3))
        if result.pages_bytes is not None:
            c.record.update(pages_bytes=result.pages_bytes)
            metrics.BYTES.inc(result.pages_bytes)
        frozen = c.freeze_time()
        if frozen is not None and not spec.leave_running:
            downtime = (c.clock() - frozen).total_seconds()
            self._timings(downtime_seconds=round(downtime, 3))
            metrics.DOWNTIME.observe(downtime)
        c.record.condition(
            COND_RESTORED,
            ConditionStatus.TRUE,
            "Restored",
            f"running on {target.node} as {result.container_id[:12]}",
        )

    # -- Verifying ---------------------------------------------------------------------

    async def verify(self) -> None:
        """The copy runs on the target: only now may the source go."""
        c, spec = self.c, self.c.spec
        source, target = await c.peers()
        info = await c.helpers.inspect(
            target, InspectRequest(container=c.container, runtime=c.runtime)
        )
        if info is None or not info.running:
            state = info.state if info is not None else "gone"
            raise Failure(
                reason="TargetNotRunning",
                message=f"the restored container on {target.node} is {state}",
            )
        # Only once Verifying is stored: a restarted operator must not resume from a step
        # the target has already closed.
        await c.record.written()
        await c.helpers.call(
            source,
            FinishSourceRequest(
                uid=c.uid,
                container=c.container,
                runtime=c.runtime,
                remove_container=not spec.leave_running,
                keep_checkpoint=spec.keep_checkpoint,
            ),
        )
        # Not at the same time: a rollback after a failed FINISH_SOURCE needs the
        # target's journal to find the copy it must remove.
        await c.helpers.call(target, CleanupRequest(uid=c.uid, runtime=c.runtime))
        total = (c.clock() - c.started()).total_seconds()
        self._timings(total_seconds=round(total, 3))
        c.record.condition(
            COND_SUCCEEDED,
            ConditionStatus.TRUE,
            "Succeeded",
            f"{c.container} runs on {target.node}",
        )
        c.record.update(completion_time=c.clock().replace(microsecond=0))
        metrics.MIGRATIONS.labels("succeeded", "Succeeded").inc()
        metrics.DURATION.observe(total)

    def summary(self) -> str:
        """The message of the Succeeded phase."""
        c = self.c
        downtime = c.status.timings.downtime_seconds if c.status.timings else None
        text = f"{c.container} moved {c.spec.source.node} -> {c.status.target_node}"
        if downtime is not None:
            text += f", downtime {downtime:.2f}s"
        return text
