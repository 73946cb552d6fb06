"""One migration's state machine, in the style of KubeVirt's migration controller.

The phase in status says where the migration is; each step does one thing on
the nodes, observes the helpers' answer, and only then moves to the next phase.
Every step is idempotent on the helpers' side (keyed by the migration's UID),
so after an operator restart the machine resumes from the recorded phase.

The rule that never bends: the source container is removed only after the
target reports its restored copy running. A failure after the freeze (or a
timeout, or the resource's deletion) rolls back: the target's copy and archive
are removed, and the source is restored from the same checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf
import tenacity
from ferry_api import constants
from ferry_api.base import to_wire
from ferry_api.conditions import Condition, ConditionStatus, set_condition
from ferry_api.migration import (
    Archive,
    ContainerMigration,
    CriuStatistics,
    MemoryTransfer,
    Phase,
    PhaseTransition,
    Progress,
    Timings,
)
from ferry_api.nodehelper import NodeHelper
from ferry_api.runtime import Runtime
from ferry_helper.protocol import Operation, Peer, RemoteError

from . import failurelogs, metrics, validation
from .expiry import delete_when_expired
from .helperclient import HelperClient
from .kube import Kube
from .settings import Settings
from .slots import NodeSlots
from .validation import Refusal

log = logging.getLogger(__name__)

FINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})
#: Phases in which the source may be frozen or gone: failures here roll back.
AFTER_FREEZE = frozenset(
    {Phase.CHECKPOINTING, Phase.TRANSFERRING, Phase.RESTORING, Phase.VERIFYING, Phase.ROLLING_BACK}
)
PROGRESS_WRITE_INTERVAL = 1.0
#: The longest wait between two attempts to reach a helper during a rollback.
UNREACHABLE_RETRY_MAX_SECONDS = 30.0
#: Failures that say nothing about the step, only that its helper was not heard.
TRANSPORT_FAILURES = frozenset({"HelperUnreachable", "HelperDisconnected"})
#: The source's helper could not reach the target's to take the memory pages back.
PAGES_UNREACHABLE = "PagesUnreachable"

COND_VALIDATED = "Validated"
COND_CHECKPOINTED = "Checkpointed"
COND_TRANSFERRED = "Transferred"
COND_RESTORED = "Restored"
COND_SUCCEEDED = "Succeeded"


def _unreachable(error: BaseException) -> bool:
    return isinstance(error, RemoteError) and error.reason in TRANSPORT_FAILURES


async def _nothing() -> None:
    return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def peer_of(helper: NodeHelper) -> Peer:
    status = helper.status
    if not (status.address and status.ssh_port and status.ssh_host_key):
        raise Refusal(
            reason="HelperNotReady",
            message=f"the helper on {helper.metadata.name} published no address",
        )
    return Peer(
        node=helper.metadata.name or "",
        address=status.address,
        port=status.ssh_port,
        host_key=status.ssh_host_key,
    )


class Migration:
    def __init__(
        self,
        *,
        resource: ContainerMigration,
        body: kopf.Body,
        kube: Kube,
        helpers: HelperClient,
        settings: Settings,
        slots: NodeSlots,
    ) -> None:
        self.resource = resource
        self.body = body
        self.kube = kube
        self.helpers = helpers
        self.settings = settings
        self.slots = slots
        self.status = resource.status
        self.spec = resource.spec
        self.uid = resource.metadata.uid or ""
        self.namespace = resource.metadata.namespace or ""
        self.name = resource.metadata.name or ""
        self.started = time.monotonic()
        self.frozen_at: float | None = None
        #: The container's image (ID, name), learnt at validation.
        self._image: tuple[str, str] | None = None
        #: The source container's full ID, learnt at validation.
        self._container_id: str | None = None
        #: The source and target helpers (host keys pinned), learnt at validation.
        self._peer_pair: tuple[Peer, Peer] | None = None
        self._last_progress_write = 0.0
        #: The source's key for streaming into the target, granted before the freeze.
        self._stream_credential: str | None = None
        #: A status write not waited for (see ``_enter``); the next write waits for it.
        self._writing: asyncio.Task[None] | None = None

    # -- status ---------------------------------------------------------------

    async def _write(self) -> None:
        await self._written()
        await self.kube.patch_migration_status(self.namespace, self.name, to_wire(self.status))

    def _write_behind(self) -> None:
        """Write the status without waiting for it; writes still land in order."""
        before, wire = self._writing, to_wire(self.status)

        async def write() -> None:
            if before is not None:
                await before
            await self.kube.patch_migration_status(self.namespace, self.name, wire)

        self._writing = asyncio.create_task(write(), name=f"status of {self.uid}")

    async def _written(self) -> None:
        """Wait for the write left behind, if any (and raise its error)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    def _update(self, **changes: Any) -> None:
        self.status = self.status.model_copy(update=changes)

    def _condition(
        self, type_: str, status: ConditionStatus, reason: str, message: str = ""
    ) -> None:
        generation = self.resource.metadata.generation
        conditions = set_condition(
            self.status.conditions,
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
            ),
            now=_now(),
        )
        self._update(conditions=conditions)

    async def _enter(self, phase: Phase, message: str, *, wait: bool = True) -> None:
        """Record ``phase``. ``wait=False`` lets the next step start while the API server
        writes it: inside the freeze each write waited for was about 10 ms of downtime.

        Only phases a restarted operator may safely resume from a step behind are
        written so: every helper step answers a repeat from its journal. A phase that
        must be stored before anything moves (Checkpointing, before the freeze; the
        final ones) is waited for, and waits for any write before it.
        """
        transitions = (*self.status.phase_transitions, PhaseTransition(phase=phase, time=_now()))
        self._update(
            phase=phase,
            message=message,
            phase_transitions=transitions,
            observed_generation=self.resource.metadata.generation,
        )
        if wait:
            await self._write()
        else:
            self._write_behind()
        kopf.event(self.body, type="Normal", reason=phase.value, message=message)
        log.info("%s/%s: %s: %s", self.namespace, self.name, phase.value, message)

    def _timings(self, **changes: float) -> None:
        current = self.status.timings or Timings()
        self._update(timings=current.model_copy(update=changes))

    @property
    def _pages(self) -> bool:
        """Whether the memory goes through the target's page server (see ``pagesteps``):
        as validation chose (stored before the freeze), or as asked."""
        chosen = self.status.memory_transfer or self.spec.memory_transfer
        return chosen == MemoryTransfer.PAGE_SERVER

    def _memory_plan(self) -> str:
        """How the memory moves, and why when Auto chose: for the Validated condition."""
        chosen = self.status.memory_transfer or self.spec.memory_transfer
        used = self.status.memory_bytes
        plan = f"memory by {chosen.value}"
        if self.spec.memory_transfer == MemoryTransfer.AUTO:
            plan += " (Auto"
            plan += f": {used / (1 << 20):.0f} MiB in use)" if used is not None else ")"
        return plan

    @property
    def _runtime(self) -> str:
        """The runtime the container was found in at validation (podman before that)."""
        return self.status.runtime.value if self.status.runtime else "podman"

    # -- the machine ----------------------------------------------------------

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Drive the migration to a final phase, or until kopf stops this daemon.

        Deletion of the resource stops the daemon: the step in flight is
        abandoned (the helpers finish it, shielded), then the migration rolls
        back and ends Cancelled while the finalizer still holds the resource.
        An operator shutdown just returns: the next operator resumes.
        """
        if self.status.phase in FINAL:
            await self._expire(stopped)
            return
        if self.status.phase is None:
            for type_ in (
                COND_VALIDATED,
                COND_CHECKPOINTED,
                COND_TRANSFERRED,
                COND_RESTORED,
                COND_SUCCEEDED,
            ):
                self._condition(type_, ConditionStatus.UNKNOWN, "Pending")
            self._update(
                start_time=_now().replace(microsecond=0), source_node=self.spec.source.node
            )
            await self._enter(Phase.PENDING, "accepted", wait=False)
        try:
            await self._run_until_stopped(stopped)
        finally:
            await self.slots.release(self.uid)
        if self.status.phase in FINAL and not stopped:
            await self._expire(stopped)

    async def _expire(self, stopped: kopf.DaemonStopped) -> None:
        await delete_when_expired(
            ttl_seconds=self.spec.ttl_seconds_after_finished,
            finished=self.status.completion_time,
            stopped=stopped,
            body=self.body,
            delete=lambda: self.kube.delete_migration(self.namespace, self.name),
        )

    async def _run_until_stopped(self, stopped: kopf.DaemonStopped) -> None:
        work = asyncio.create_task(self._run_steps(), name=f"migration {self.uid}")
        stop = asyncio.create_task(self._stopped(stopped), name=f"stopper {self.uid}")
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work.done():
            work.result()
            return
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work
        if stopped.reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in (
            stopped.reason
        ):
            await self._cancel()

    @staticmethod
    async def _stopped(stopped: kopf.DaemonStopped) -> None:
        await stopped.wait()

    async def _run_steps(self) -> None:
        try:
            async with asyncio.timeout(self.spec.timeout_seconds):
                await self._advance()
        except Refusal as refusal:
            await self._fail(refusal.reason, refusal.message)
        except TimeoutError:
            await self._fail_after_error(
                "Timeout",
                f"the migration did not finish within {self.spec.timeout_seconds}s "
                "(spec.timeoutSeconds)",
            )
        except RemoteError as error:
            await self._fail_after_error(error.reason, error.message)

    async def _advance(self) -> None:
        steps: dict[Phase, Callable[[], Awaitable[Phase]]] = {
            Phase.PENDING: self._validate,
            Phase.VALIDATING: self._validate,
            Phase.IMAGE_STAGING: self._stage_image,
            Phase.CHECKPOINTING: self._checkpoint,
            Phase.TRANSFERRING: self._transfer,
            Phase.RESTORING: self._restore,
            Phase.VERIFYING: self._verify,
            Phase.ROLLING_BACK: self._resume_rollback,
        }
        while (phase := self.status.phase) is not None and phase not in FINAL:
            if phase not in (Phase.PENDING, Phase.VALIDATING):
                await self._take_slots(force=phase in AFTER_FREEZE)
            next_phase = await steps[phase]()
            if next_phase in FINAL:
                return

    async def _take_slots(self, *, force: bool) -> None:
        """A slot on the source and the target node (see :mod:`.slots`), before any work."""
        nodes = (self.spec.source.node, self.status.target_node or "")

        async def waiting(full: list[str]) -> None:
            limit = self.slots.limit
            text = (
                f"waiting for a free slot: {', '.join(full)} already "
                f"{'has' if len(full) == 1 else 'have'} {limit} migration(s) in flight "
                "(operator.maxMigrationsPerNode); nothing is frozen yet"
            )
            kopf.event(self.body, type="Normal", reason="WaitingForNode", message=text)
            self._update(message=text)
            await self._write()

        await self.slots.acquire(self.uid, nodes, force=force, on_wait=waiting)

    async def _peers(self) -> tuple[Peer, Peer]:
        """Source and target helpers, looked up once: no API round trip during the freeze.

        Validation fills this; a resumed migration looks the helpers up again.
        """
        if self._peer_pair is None:
            helpers = await self.kube.node_helpers()
            target = self.status.target_node or ""
            source_helper, target_helper = helpers.get(self.spec.source.node), helpers.get(target)
            if source_helper is None or target_helper is None:
                raise RemoteError("HelperGone", "a node-helper of this migration disappeared")
            self._peer_pair = (peer_of(source_helper), peer_of(target_helper))
        return self._peer_pair

    async def _validate(self) -> Phase:
        await self._enter(Phase.VALIDATING, "checking nodes, helpers and the container", wait=False)
        nodes, helpers = await asyncio.gather(self.kube.node_names(), self.kube.node_helpers())
        now = _now()
        stale = self.settings.helper_stale_seconds
        validation.check_source(
            self.spec, nodes=nodes, helpers=helpers, now=now, stale_seconds=stale
        )
        source_peer = peer_of(helpers[self.spec.source.node])
        asked = self.spec.runtime.value if self.spec.runtime else None
        info = await self.helpers.inspect(
            source_peer, self.spec.source.container, runtime=asked, memory=True
        )
        checked = validation.check_container(
            self.spec,
            info,
            namespace=self.namespace,
            allow_any_namespace=self.settings.allow_any_namespace,
            uid=self.uid,
        )
        runtime = Runtime(str(checked.get("runtime") or "podman"))
        memory = checked.get("memoryBytes")
        memory_bytes = int(memory) if isinstance(memory, int) else None
        self._update(
            memory_transfer=validation.choose_memory_transfer(self.spec, runtime, memory_bytes),
            memory_bytes=memory_bytes,
        )
        self._image = (str(checked["image_id"]), str(checked["image_name"]))
        self._container_id = str(checked["id"])
        target = validation.choose_target(
            self.spec,
            runtime=Runtime(runtime.value),
            nodes=nodes,
            helpers=helpers,
            now=now,
            stale_seconds=stale,
        )
        validation.check_compatible(helpers[self.spec.source.node], helpers[target])
        target_peer = peer_of(helpers[target])
        by_name, by_id = await asyncio.gather(
            self.helpers.inspect(target_peer, self.spec.source.container, runtime=runtime.value),
            self.helpers.inspect(target_peer, self._container_id, runtime=runtime.value)
            if self._pages
            else _nothing(),
        )
        validation.check_target_free(self.spec.source.container, target, by_name)
        if self._pages:
            validation.check_target_id_free(self._container_id, target, by_id)
        self._update(runtime=runtime)
        self._update(target_node=target)
        self._peer_pair = (source_peer, target_peer)
        await self._take_slots(force=False)
        self._condition(
            COND_VALIDATED,
            ConditionStatus.TRUE,
            "Validated",
            f"{self.spec.source.container} on {self.spec.source.node} -> {target}; "
            f"{self._memory_plan()}",
        )
        await self._enter(Phase.IMAGE_STAGING, f"making sure {target} has the image", wait=False)
        return Phase.IMAGE_STAGING

    async def _stage_image(self) -> Phase:
        source, target = await self._peers()
        if self._image is None:  # resumed after a restart: ask again
            info = await self.helpers.call(
                source,
                Operation.INSPECT,
                {"container": self.spec.source.container, "runtime": self._runtime},
            )
            self._image = (str(info["image_id"]), str(info["image_name"]))
        image_id, image_name = self._image
        present = await self.helpers.call(
            target, Operation.IMAGE_HAS, {"image_id": image_id, "runtime": self._runtime}
        )
        if not present.get("present"):
            kopf.event(
                self.body,
                type="Normal",
                reason="ImageStaging",
                message=f"shipping image {image_name} to {target.node} before the freeze",
            )
            await self.helpers.send_image(
                source,
                target,
                uid=self.uid,
                image_id=image_id,
                image_name=image_name,
                credential=await self._grant_stream(target),
                runtime=self._runtime,
            )
        # The stream key is granted while Checkpointing is written: one round trip less.
        self._stream_credential, _ = await asyncio.gather(
            self._grant_stream(target),
            self._enter(
                Phase.CHECKPOINTING, f"checkpointing {self.spec.source.container} on {source.node}"
            ),
        )
        return Phase.CHECKPOINTING

    async def _checkpoint(self) -> Phase:
        source, target = await self._peers()
        request: dict[str, Any] = {
            "uid": self.uid,
            "container": self.spec.source.container,
            "leave_running": self.spec.leave_running,
            "tcp_established": self.spec.tcp_established,
            "file_locks": self.spec.file_locks,
            "compression": self.spec.compression.value,
            "runtime": self._runtime,
        }
        if self._pages:
            request["page_server"] = await self._open_page_server(source, target)
        if self._stream_credential is None:  # resumed by a new operator
            # Granted now, not inside the freeze: one helper round trip less of downtime.
            self._stream_credential = await self._grant_stream(target)
        self.frozen_at = time.monotonic()
        result = await self.helpers.call(source, Operation.CHECKPOINT, request)
        self._timings(checkpoint_seconds=round(float(result["seconds"]), 3))
        self._update(
            archive=Archive(
                bytes=int(result["sizeBytes"]),
                sha256=str(result["sha256"]),
                compression=self.spec.compression,
            ),
            criu_statistics=CriuStatistics.model_validate(result.get("statistics") or {}),
            progress=Progress(bytes_sent=0, bytes_total=int(result["sizeBytes"])),
        )
        checkpointed = f"archive of {result['sizeBytes']} bytes"
        streaming = "streaming the checkpoint to the target"
        if self._pages:
            checkpointed += f", the memory sent to the page server on {target.node}"
            streaming = "streaming the checkpoint archive (without the memory) to the target"
        self._condition(COND_CHECKPOINTED, ConditionStatus.TRUE, "Checkpointed", checkpointed)
        await self._enter(Phase.TRANSFERRING, streaming, wait=False)
        return Phase.TRANSFERRING

    async def _source_container_id(self, source: Peer) -> str:
        """The source container's full ID: from validation, or asked again after a restart."""
        if self._container_id is None:
            info = await self.helpers.call(
                source,
                Operation.INSPECT,
                {"container": self.spec.source.container, "runtime": self._runtime},
            )
            self._container_id = str(info["id"])
        return self._container_id

    async def _open_page_server(self, source: Peer, target: Peer) -> dict[str, Any]:
        """The target's page server for this migration, listening before the freeze.

        With TLS each end has a certificate of its own for this migration and
        trusts only the other's: the source's goes to the target here, the
        target's to the source with the checkpoint request.
        """
        client_cert = None
        if self.spec.page_server_tls:
            identity = await self.helpers.call(source, Operation.PAGES_IDENTITY, {"uid": self.uid})
            client_cert = str(identity["cert"])
        opened = await self.helpers.call(
            target,
            Operation.PAGES_OPEN,
            {
                "uid": self.uid,
                "container_id": await self._source_container_id(source),
                "client_cert": client_cert,
                "ttl_seconds": self.spec.timeout_seconds,
            },
        )
        if self.spec.page_server_tls and not opened.get("cert"):
            raise RemoteError(
                "PageServerFailed", f"the page server on {target.node} was opened without TLS"
            )
        return {
            "address": opened["address"],
            "port": opened["port"],
            "server_cert": opened.get("cert") if self.spec.page_server_tls else None,
        }

    async def _grant_stream(self, target: Peer) -> str:
        """A key for the source to stream into this migration on ``target``, no longer than
        the migration may last."""
        return await self.helpers.grant_stream(
            target, uid=self.uid, ttl_seconds=self.spec.timeout_seconds
        )

    async def _on_progress(self, data: dict[str, Any]) -> None:
        self._update(
            progress=Progress(
                bytes_sent=int(data.get("bytesSent", 0)), bytes_total=int(data.get("bytesTotal", 0))
            )
        )
        now = time.monotonic()
        if now - self._last_progress_write >= PROGRESS_WRITE_INTERVAL:
            self._last_progress_write = now
            await self._write()

    async def _transfer(self) -> Phase:
        source, target = await self._peers()
        result = await self.helpers.call(
            source,
            Operation.SEND,
            {
                "uid": self.uid,
                "target": target.model_dump(),
                # A migration resumed by a new operator grants again.
                "credential": self._stream_credential or await self._grant_stream(target),
            },
            on_progress=self._on_progress,
        )
        sent = int(result.get("bytes", 0))
        metrics.BYTES.inc(sent)
        self._timings(transfer_seconds=round(float(result["seconds"]), 3))
        self._update(progress=Progress(bytes_sent=sent, bytes_total=sent))
        self._condition(
            COND_TRANSFERRED,
            ConditionStatus.TRUE,
            "ChecksumVerified",
            f"{sent} bytes received by {target.node}, sha256 verified",
        )
        await self._enter(Phase.RESTORING, f"restoring on {target.node}", wait=False)
        return Phase.RESTORING

    async def _restore(self) -> Phase:
        _, target = await self._peers()
        result = await self.helpers.call(
            target,
            Operation.RESTORE,
            {
                "uid": self.uid,
                "name": self.spec.source.container,
                "tcp_established": self.spec.tcp_established,
                "file_locks": self.spec.file_locks,
                "runtime": self._runtime,
                # Only when set: an Archive migration's request is what it always was.
                **({"onto_pages": True} if self._pages else {}),
            },
        )
        self._timings(restore_seconds=round(float(result["seconds"]), 3))
        if "pagesBytes" in result:
            self._update(pages_bytes=int(result["pagesBytes"]))
            metrics.BYTES.inc(int(result["pagesBytes"]))
        if self.frozen_at is not None and not self.spec.leave_running:
            downtime = time.monotonic() - self.frozen_at
            self._timings(downtime_seconds=round(downtime, 3))
            metrics.DOWNTIME.observe(downtime)
        self._condition(
            COND_RESTORED,
            ConditionStatus.TRUE,
            "Restored",
            f"running on {target.node} as {result['containerId'][:12]}",
        )
        await self._enter(
            Phase.VERIFYING, f"checking the container runs on {target.node}", wait=False
        )
        return Phase.VERIFYING

    async def _verify(self) -> Phase:
        source, target = await self._peers()
        info = await self.helpers.call(
            target,
            Operation.INSPECT,
            {"container": self.spec.source.container, "runtime": self._runtime},
        )
        if not info.get("running"):
            raise RemoteError(
                "TargetNotRunning",
                f"the restored container on {target.node} is {info.get('state')}",
            )
        # Only now, with the copy running on the target, may the source go; and only
        # once Verifying is stored: a restarted operator must not resume from a step
        # the target has already closed.
        await self._written()
        await self.helpers.call(
            source,
            Operation.FINISH_SOURCE,
            {
                "uid": self.uid,
                "container": self.spec.source.container,
                "remove_container": not self.spec.leave_running,
                "keep_checkpoint": self.spec.keep_checkpoint,
                "runtime": self._runtime,
            },
        )
        # Not at the same time: a rollback after a failed FINISH_SOURCE needs the
        # target's journal to find the copy it must remove.
        await self.helpers.call(target, Operation.CLEANUP, {"uid": self.uid})
        total = time.monotonic() - self.started
        self._timings(total_seconds=round(total, 3))
        self._condition(
            COND_SUCCEEDED,
            ConditionStatus.TRUE,
            "Succeeded",
            f"{self.spec.source.container} runs on {target.node}",
        )
        self._update(completion_time=_now().replace(microsecond=0))
        metrics.MIGRATIONS.labels("succeeded", "Succeeded").inc()
        metrics.DURATION.observe(total)
        downtime = self.status.timings.downtime_seconds if self.status.timings else None
        summary = f"{self.spec.source.container} moved {source.node} -> {target.node}"
        if downtime is not None:
            summary += f", downtime {downtime:.2f}s"
        await self._enter(Phase.SUCCEEDED, summary)
        return Phase.SUCCEEDED

    # -- failure, rollback and cancellation -------------------------------------

    async def _fail(self, reason: str, message: str) -> None:
        self._condition(COND_SUCCEEDED, ConditionStatus.FALSE, reason, message)
        if self.status.phase in (Phase.PENDING, Phase.VALIDATING):
            self._condition(COND_VALIDATED, ConditionStatus.FALSE, reason, message)
        self._update(completion_time=_now().replace(microsecond=0))
        metrics.MIGRATIONS.labels("failed", reason).inc()
        kopf.warn(self.body, reason=reason, message=message)
        summary = f"{reason}: {message}"
        if await self._keep_failure_logs():
            summary += f" (full logs: kubectl ferry logs {self.name})"
        await self._enter(Phase.FAILED, summary)

    async def _keep_failure_logs(self) -> bool:
        """Copy the nodes' logs of the failed steps next to the migration; True if there were."""
        if self.status.phase in (Phase.PENDING, Phase.VALIDATING) or self._peer_pair is None:
            return False  # refused before any node did anything
        logs = await failurelogs.collect(
            kube=self.kube,
            helpers=self.helpers,
            owner=failurelogs.Owner(
                kind=constants.CONTAINER_MIGRATION_KIND,
                name=self.name,
                namespace=self.namespace,
                uid=self.uid,
            ),
            peers=self._peer_pair,
        )
        self._update(failure_logs=logs)
        return logs is not None

    async def _fail_after_error(self, reason: str, message: str) -> None:
        if self.status.phase in AFTER_FREEZE:
            try:
                await self._rollback(reason, message)
            except RemoteError as error:
                message = f"{message}; the rollback failed too: {error.reason}: {error.message}"
        await self._fail(reason, message)

    async def _rollback(self, reason: str, message: str) -> None:
        """Remove the target's copy, then bring the source back from its checkpoint.

        A helper that cannot be reached is retried with backoff for as long as
        it takes (the daemon stays alive, so a deletion still waits for it):
        rolling the source back while the target may hold a running copy would
        leave two, and giving up on the source would lose it. The target's
        cleanup is best effort only when no restore was ever asked of it.
        """
        kopf.warn(self.body, reason="RollingBack", message=f"{reason}: {message}")
        await self._enter(Phase.ROLLING_BACK, f"{reason}: {message}; restoring the source")
        source, target = await self._peers()
        if self._pages:
            await self._take_pages_back(source, target)
        target_cleanup = {"uid": self.uid, "remove_restored": True, "runtime": self._runtime}
        if any(t.phase == Phase.RESTORING for t in self.status.phase_transitions):
            await self._call_until_reached(target, Operation.CLEANUP, target_cleanup)
        else:
            try:
                await self.helpers.call(target, Operation.CLEANUP, target_cleanup)
            except RemoteError as error:
                kopf.warn(self.body, reason="TargetCleanupFailed", message=error.message)
        await self._call_until_reached(
            source,
            Operation.ROLLBACK,
            {
                "uid": self.uid,
                "container": self.spec.source.container,
                "file_locks": self.spec.file_locks,
                "runtime": self._runtime,
            },
        )
        await self._call_until_reached(
            source,
            Operation.CLEANUP,
            {"uid": self.uid, "keep_checkpoint": self.spec.keep_checkpoint},
        )

    async def _take_pages_back(self, source: Peer, target: Peer) -> None:
        """Bring the memory a page-server dump sent to the target back to the source.

        The source keeps every CRIU image but the pages, so its in-place
        restore needs them first. They are taken back for as long as it takes:
        without them the source cannot be restored at all, which the
        ``Succeeded`` condition says while it waits. A target that has ended
        the migration or holds no pages is reported, and the source's restore
        tried anyway (its error then says what is missing).
        """
        request = {"uid": self.uid}
        asked = await self._call_until_reached(source, Operation.PAGES_FETCH, request)
        if not asked.get("needed"):
            return

        async def fetch() -> dict[str, Any]:
            credential = await self._grant_stream(target)
            return await self.helpers.call(
                source,
                Operation.PAGES_FETCH,
                {**request, "target": target.model_dump(), "credential": credential},
            )

        def waiting(error: BaseException | None) -> None:
            self._condition(
                COND_SUCCEEDED,
                ConditionStatus.UNKNOWN,
                "MemoryOnTarget",
                f"{self.spec.source.container}'s memory is on {target.node} only "
                "(memoryTransfer: PageServer sent it there during the dump) and could not be "
                f"taken back ({error}): the source cannot be restored without it; retrying "
                f"until {target.node} answers",
            )

        try:
            fetched = await self._until_reached(
                f"taking the memory back from {target.node} to {source.node}",
                fetch,
                also_retry=frozenset({PAGES_UNREACHABLE}),
                waiting=waiting,
            )
        except RemoteError as error:
            text = f"the memory could not be taken back from {target.node}: {error.message}"
            kopf.warn(self.body, reason="PagesNotReturned", message=text)
            log.warning("%s/%s: %s", self.namespace, self.name, text)
            return
        kopf.event(
            self.body,
            type="Normal",
            reason="PagesReturned",
            message=f"{fetched.get('bytes', 0)} bytes of memory back on {source.node}",
        )

    async def _call_until_reached(
        self, peer: Peer, operation: Operation, request: dict[str, Any]
    ) -> dict[str, Any]:
        """``helpers.call``, retried with exponential backoff while the helper is unreachable."""
        return await self._until_reached(
            f"{operation.value} on {peer.node}",
            lambda: self.helpers.call(peer, operation, request),
        )

    async def _until_reached(
        self,
        what: str,
        attempt: Callable[[], Awaitable[dict[str, Any]]],
        *,
        also_retry: frozenset[str] = frozenset(),
        waiting: Callable[[BaseException | None], None] | None = None,
    ) -> dict[str, Any]:
        """``attempt``, retried with exponential backoff while a helper is unreachable
        (or it fails with a reason in ``also_retry``); ``waiting`` updates the status."""

        def retried(error: BaseException) -> bool:
            return _unreachable(error) or (
                isinstance(error, RemoteError) and error.reason in also_retry
            )

        async def report(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            text = (
                f"{what}: attempt {state.attempt_number} failed ({error}); retrying in {wait:.0f}s"
            )
            kopf.warn(self.body, reason="HelperUnreachable", message=text)
            log.warning("%s/%s: %s", self.namespace, self.name, text)
            self._update(message=f"rolling back: {text}")
            if waiting is not None:
                waiting(error)
            with contextlib.suppress(Exception):
                await self._write()

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(retried),
            wait=tenacity.wait_exponential(min=1, max=UNREACHABLE_RETRY_MAX_SECONDS),
            before_sleep=report,
            reraise=True,
        )

        async def once() -> dict[str, Any]:
            # A coroutine function: tenacity would not await what a plain callable returns.
            return await attempt()

        result: dict[str, Any] = await retrying(once)
        return result

    async def _resume_rollback(self) -> Phase:
        message = self.status.message or "a rollback was under way when the operator restarted"
        await self._fail_after_error("RolledBack", message)
        return Phase.FAILED

    async def _cancel(self) -> None:
        try:
            if self.status.phase in AFTER_FREEZE:
                await self._rollback("Cancelled", "the ContainerMigration was deleted")
            if self.status.phase not in FINAL:
                self._condition(
                    COND_SUCCEEDED,
                    ConditionStatus.FALSE,
                    "Cancelled",
                    "the ContainerMigration was deleted",
                )
                metrics.MIGRATIONS.labels("cancelled", "Cancelled").inc()
                await self._enter(Phase.CANCELLED, "deleted before it finished; source kept")
        except Exception:
            log.exception("%s/%s: cancelling failed", self.namespace, self.name)
