"""kopf handlers: one daemon per ContainerMigration (and PodMigration) drives its state machine.

A daemon (not a create handler) because deleting the resource must reach a
migration in flight: kopf raises the daemon's ``stopped`` flag, the machine
rolls back and keeps the source running, and kopf removes the finalizer only
once the daemon has returned. No cancellation timeout: a rollback is never cut
short.
Finished migrations return at once, so a resync or an operator restart never
repeats one.

ContainerCheckpoints and ContainerRestores are single steps: create handlers
(see :mod:`.checkpoint` and :mod:`.restore`), a delete handler that removes what a checkpoint
stored, and one daemon per scheduled checkpoint.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import asyncssh
import kopf
from ferry_api import constants
from ferry_api.checkpoint import parse_container_checkpoint, parse_container_restore
from ferry_api.migration import parse_container_migration
from ferry_api.podmigration import parse_pod_migration
from prometheus_client import start_http_server

from .checkpoint import CheckpointTaker, delete_stored
from .expiry import delete_when_expired
from .helperclient import HelperClient
from .kube import Kube, api_client
from .migration import Migration
from .podmigration import PodMigrationMachine
from .restore import Restorer
from .schedule import Scheduler
from .settings import Settings
from .slots import NodeSlots
from .status import KopfEvents

RESOURCE = (constants.GROUP, constants.VERSION, constants.CONTAINER_MIGRATION_PLURAL)
CHECKPOINT = (constants.GROUP, constants.VERSION, constants.CONTAINER_CHECKPOINT_PLURAL)
RESTORE = (constants.GROUP, constants.VERSION, constants.CONTAINER_RESTORE_PLURAL)
POD_MIGRATION = (constants.GROUP, constants.VERSION, constants.POD_MIGRATION_PLURAL)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    own = Settings.from_env()
    settings.persistence.finalizer = constants.MIGRATION_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=constants.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=constants.GROUP, key="last-handled-configuration"
    )
    # kopf's own log lines ("Handler ... succeeded") stay out of Events; the
    # machine posts its own, with kopf.event, which this level does not gate.
    settings.posting.level = logging.WARNING
    memo.settings = own
    memo.kube = Kube(api_client())
    memo.helpers = HelperClient(asyncssh.read_private_key(own.ssh_key))
    memo.slots = NodeSlots(own.max_migrations_per_node)
    if own.metrics_port:
        start_http_server(own.metrics_port)


# cancellation_polling: how soon kopf notices the daemon has returned after a
# deletion, and so how long the finalizer outlives the rollback (default 60 s).
@kopf.daemon(*RESOURCE, cancellation_polling=0.5)
async def migrate(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    try:
        resource = parse_container_migration(body)
    except ValueError as error:
        raise kopf.PermanentError(str(error)) from None
    await Migration(
        resource=resource,
        events=KopfEvents(body),
        kube=memo.kube,
        helpers=memo.helpers,
        settings=memo.settings,
        slots=memo.slots,
    ).run(stopped)


@kopf.on.delete(*RESOURCE)
async def deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Holds the finalizer until the daemon, which rolls back, has stopped."""
    phase = (body.get("status") or {}).get("phase")
    kopf.event(body, type="Normal", reason="Deleted", message=f"deleted in phase {phase}")
    await _delete_failure_logs(body, memo)


async def _delete_failure_logs(body: kopf.Body, memo: kopf.Memo) -> None:
    """The logs ConfigMap goes with its resource, also where no garbage collector runs."""
    logs = (body.get("status") or {}).get("failureLogs") or {}
    if logs.get("configMap"):
        await memo.kube.delete_config_map(body.metadata.namespace or "", logs["configMap"])


# A PodMigration is driven as a ContainerMigration is: one daemon, its deletion a cancel.
@kopf.daemon(*POD_MIGRATION, cancellation_polling=0.5)
async def migrate_pod(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    await PodMigrationMachine(
        resource=_parsed(parse_pod_migration, body),
        events=KopfEvents(body),
        kube=memo.kube,
        helpers=memo.helpers,
        settings=memo.settings,
        slots=memo.slots,
    ).run(stopped)


@kopf.on.delete(*POD_MIGRATION)
async def pod_migration_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Holds the finalizer until the daemon, which rolls back, has stopped."""
    await _delete_failure_logs(body, memo)


def _parsed(parse: Any, body: kopf.Body) -> Any:
    try:
        return parse(body)
    except ValueError as error:
        raise kopf.PermanentError(str(error)) from None


# Checkpoints and restores are single steps, so plain create handlers do: kopf
# records their completion, and a resync or a restart never runs one again.
@kopf.on.create(*CHECKPOINT)
async def checkpoint_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        resource = parse_container_checkpoint(body)
    except ValueError as error:
        # The API server's schema cannot check everything (a cron expression):
        # say so where the user looks, then stop.
        await memo.kube.patch_status(
            constants.CONTAINER_CHECKPOINT_PLURAL,
            body.metadata.namespace or "",
            body.metadata.name or "",
            {"phase": "Failed", "message": str(error)},
        )
        raise kopf.PermanentError(str(error)) from None
    await CheckpointTaker(
        resource=resource,
        events=KopfEvents(body),
        kube=memo.kube,
        helpers=memo.helpers,
        settings=memo.settings,
    ).run()


# A daemon, not a timer: it sleeps until the next run is due (a timer would
# wake, and log, every interval), and kopf stops it with the resource.
@kopf.daemon(
    *CHECKPOINT,
    cancellation_polling=0.5,
    when=lambda spec, status, **_: (
        bool(spec.get("schedule")) and status.get("phase") == "Scheduled"
    ),
)
async def checkpoint_schedule(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """A scheduled ContainerCheckpoint: makes a checkpoint when one is due, prunes old ones."""
    ran: datetime.datetime | None = None  # the body may not show our own last run yet
    while not stopped:
        resource = _parsed(parse_container_checkpoint, body)
        scheduler = Scheduler(resource=resource, kube=memo.kube)
        now = datetime.datetime.now(datetime.UTC)
        due = scheduler.due(now, ran=ran)
        if due <= now:
            await scheduler.run(now)
            ran = now
            continue
        await stopped.wait((due - now).total_seconds())


@kopf.on.delete(*CHECKPOINT)
async def checkpoint_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Holds the finalizer until what the checkpoint stored (or scheduled) is gone."""
    resource = _parsed(parse_container_checkpoint, body)
    if resource.spec.schedule:
        await Scheduler(resource=resource, kube=memo.kube).delete_children()
    await delete_stored(resource, memo.kube, memo.helpers)
    await _delete_failure_logs(body, memo)


@kopf.on.create(*RESTORE, timeout=3600)
async def restore_created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await Restorer(
        resource=_parsed(parse_container_restore, body),
        events=KopfEvents(body),
        kube=memo.kube,
        helpers=memo.helpers,
        settings=memo.settings,
    ).run()


@kopf.daemon(
    *RESTORE,
    cancellation_polling=0.5,
    when=lambda spec, status, **_: (
        spec.get("ttlSecondsAfterFinished") is not None
        and status.get("phase") in ("Succeeded", "Failed")
    ),
)
async def restore_expiry(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """A finished ContainerRestore with ``ttlSecondsAfterFinished``: deleted once it is up."""
    resource = _parsed(parse_container_restore, body)
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    await delete_when_expired(
        ttl_seconds=resource.spec.ttl_seconds_after_finished,
        finished=resource.status.completion_time,
        stopped=stopped,
        events=KopfEvents(body),
        delete=lambda: memo.kube.delete(constants.CONTAINER_RESTORE_PLURAL, namespace, name),
    )


@kopf.on.delete(*RESTORE)
async def restore_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The restored container stays; only the failure logs go with the resource."""
    await _delete_failure_logs(body, memo)
