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

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Iterator
from typing import Any

import asyncssh
import kopf
from ferry_api import constants
from ferry_api.checkpoint import parse_container_checkpoint, parse_container_restore
from ferry_api.evacuation import parse_node_evacuation
from ferry_api.migration import parse_container_migration
from ferry_api.podmigration import parse_pod_migration
from ferry_api.schedule import parse_checkpoint_schedule
from ferry_wire import RemoteError
from ferry_wire.migration import CleanupRequest
from prometheus_client import start_http_server

from .checkpoint import CheckpointTaker, delete_stored
from .evacuation import Evacuator, eviction
from .expiry import delete_when_expired
from .helperclient import HelperClient
from .kube import Kube, api_client
from .migration import Migration
from .peers import peer_of
from .phases import FINAL, CancelFailed, PhaseLoop
from .podmigration import PodMigrationMachine
from .policy import RETRY_MAX_SECONDS, Kind, Refusal, as_failure, kind_of
from .restore import Restorer
from .schedule import Schedule, Scheduler
from .scheduling import run_schedule
from .settings import Settings
from .slots import NodeSlots
from .status import KopfEvents, utc_now

RESOURCE = (constants.GROUP, constants.VERSION, constants.CONTAINER_MIGRATION_PLURAL)
CHECKPOINT = (constants.GROUP, constants.VERSION, constants.CONTAINER_CHECKPOINT_PLURAL)
RESTORE = (constants.GROUP, constants.VERSION, constants.CONTAINER_RESTORE_PLURAL)
POD_MIGRATION = (constants.GROUP, constants.VERSION, constants.POD_MIGRATION_PLURAL)
EVACUATION = (constants.GROUP, constants.VERSION, constants.NODE_EVACUATION_PLURAL)
SCHEDULE = (constants.GROUP, constants.VERSION, constants.CHECKPOINT_SCHEDULE_PLURAL)

log = logging.getLogger(__name__)


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
    # The migrations whose daemon runs in this process: UID -> set when it has ended.
    memo.driving = {}
    if own.metrics_port:
        start_http_server(own.metrics_port)
    if own.webhook_port:
        # The chart owns the ValidatingWebhookConfiguration (and its CA): kopf only serves.
        settings.admission.server = kopf.WebhookServer(
            addr="0.0.0.0",  # noqa: S104 - the API server reaches it through a Service
            port=own.webhook_port,
            certfile=str(own.webhook_cert_dir / "tls.crt"),
            pkeyfile=str(own.webhook_cert_dir / "tls.key"),
        )
        settings.admission.managed = None


# cancellation_polling: how soon kopf notices the daemon has returned after a
# deletion, and so how long the finalizer outlives the rollback (default 60 s).
@kopf.daemon(*RESOURCE, cancellation_polling=0.5)
async def migrate(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    with _driving(memo, body):
        await _container_migration(body, body, memo).run(stopped)


def _container_migration(fresh: Any, body: kopf.Body, memo: kopf.Memo) -> Migration:
    return Migration(
        resource=_parsed(parse_container_migration, fresh),
        events=KopfEvents(body),
        kube=memo.kube,
        helpers=memo.helpers,
        settings=memo.settings,
        slots=memo.slots,
    )


@kopf.on.delete(*RESOURCE)
async def deleted(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Holds the finalizer until the migration is over and its source runs (see
    :func:`_cancelled`)."""
    if retry == 0:
        phase = (body.get("status") or {}).get("phase")
        kopf.event(body, type="Normal", reason="Deleted", message=f"deleted in phase {phase}")
    await _cancelled(body, memo, retry, constants.CONTAINER_MIGRATION_PLURAL, _container_migration)
    await _delete_kept_archives(body, memo)
    await _delete_failure_logs(body, memo)


async def _delete_kept_archives(body: kopf.Body, memo: kopf.Memo) -> None:
    """``keepCheckpoint``'s archive stays on the source as long as its migration does."""
    resource = _parsed(parse_container_migration, body)
    if not resource.spec.keep_checkpoint or resource.status.target_node is None:
        return
    helpers = await memo.kube.node_helpers()
    request = CleanupRequest(uid=resource.metadata.uid or "", runtime=resource.status.runtime)
    node = resource.spec.source.node
    if (helper := helpers.get(node)) is not None:  # else its node is gone, and the archive
        try:
            await memo.helpers.call(peer_of(helper), request)
        except (Refusal, RemoteError) as error:
            if kind_of(error) is Kind.TRANSIENT:
                raise kopf.TemporaryError(str(as_failure(error)), delay=RETRY_MAX_SECONDS) from None
            kopf.warn(body, reason="KeptArchiveNotDeleted", message=f"{node}: {error}")


@contextlib.contextmanager
def _driving(memo: kopf.Memo, body: kopf.Body) -> Iterator[None]:
    """Marks the migration's daemon as running, so its delete handler waits for its cancel."""
    uid = body.metadata.uid or ""
    memo.driving[uid] = ended = asyncio.Event()
    try:
        yield
    finally:
        del memo.driving[uid]
        ended.set()


async def _cancelled(
    body: kopf.Body,
    memo: kopf.Memo,
    retry: int,
    plural: str,
    machine: Callable[[dict[str, Any], kopf.Body, kopf.Memo], PhaseLoop],
) -> None:
    """Keep the finalizer until a deleted migration is in a final phase.

    Its daemon cancels it (rolls back) when it is deleted; this handler waits
    for that, then reads the status again. A migration still not over (the
    daemon's cancel failed, or it never ran: the operator restarted during the
    deletion) is cancelled here; a cancel that fails again is kopf's
    ``TemporaryError``, retried with backoff while the finalizer stays.
    """
    uid = body.metadata.uid or ""
    if (daemon := memo.driving.get(uid)) is not None:
        await daemon.wait()
    fresh = await memo.kube.get(plural, body.metadata.namespace or "", body.metadata.name or "")
    if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
        return
    loop = machine(fresh, body, memo)
    if loop.phase in FINAL:
        return
    try:
        await loop.cancel()
    except CancelFailed as error:
        delay = min(RETRY_MAX_SECONDS, 2.0 ** min(retry, 5))
        raise kopf.TemporaryError(str(error), delay=delay) from None


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
    with _driving(memo, body):
        await _pod_migration(body, body, memo).run(stopped)


def _pod_migration(fresh: Any, body: kopf.Body, memo: kopf.Memo) -> PodMigrationMachine:
    return PodMigrationMachine(
        resource=_parsed(parse_pod_migration, fresh),
        events=KopfEvents(body),
        kube=memo.kube,
        helpers=memo.helpers,
        settings=memo.settings,
        slots=memo.slots,
    )


@kopf.on.delete(*POD_MIGRATION)
async def pod_migration_deleted(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Holds the finalizer until the migration is over and its pod runs."""
    await _cancelled(body, memo, retry, constants.POD_MIGRATION_PLURAL, _pod_migration)
    await _delete_failure_logs(body, memo)


def _parsed(parse: Any, body: kopf.Body) -> Any:
    try:
        return parse(body)
    except ValueError as error:
        raise kopf.PermanentError(str(error)) from None


# Checkpoints and restores are single steps, so plain create handlers do: kopf
# records their completion, and a resync or a restart never runs one again.
@kopf.on.create(*CHECKPOINT)
async def checkpoint_created(
    body: kopf.Body, memo: kopf.Memo, runtime: datetime.timedelta, **_: Any
) -> None:
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
        elapsed_seconds=runtime.total_seconds(),
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
        schedule = Schedule.of_checkpoint(_parsed(parse_container_checkpoint, body))
        scheduler = Scheduler(schedule=schedule, kube=memo.kube)
        now = datetime.datetime.now(datetime.UTC)
        due = scheduler.due(now, ran=ran)
        if due <= now:
            await scheduler.run(due)
            ran = due
            continue
        await stopped.wait((due - now).total_seconds())


# The body a daemon holds is kept current by kopf: a changed keep, cron or suspend
# is seen within scheduling.POLL_SECONDS, and a lowered keep deletes the surplus at once.
@kopf.daemon(*SCHEDULE, cancellation_polling=0.5)
async def checkpoint_schedules(
    body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """A ContainerCheckpointSchedule: a checkpoint when one is due, the oldest pruned."""
    await run_schedule(
        lambda: _parsed(parse_checkpoint_schedule, body), memo.kube, stopped, KopfEvents(body)
    )


@kopf.on.delete(*CHECKPOINT)
async def checkpoint_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Holds the finalizer until what the checkpoint stored (or scheduled) is gone."""
    resource = _parsed(parse_container_checkpoint, body)
    if resource.spec.schedule:
        await Scheduler(schedule=Schedule.of_checkpoint(resource), kube=memo.kube).delete_children()
    await delete_stored(resource, memo.kube, memo.helpers)
    await _delete_failure_logs(body, memo)


# Bounded by the restore's own spec.timeoutSeconds (Restorer.run), counted from the
# handler's first start: kopf's `runtime` spans its retries and operator restarts.
@kopf.on.create(*RESTORE)
async def restore_created(
    body: kopf.Body, memo: kopf.Memo, runtime: datetime.timedelta, **_: Any
) -> None:
    await Restorer(
        resource=_parsed(parse_container_restore, body),
        events=KopfEvents(body),
        kube=memo.kube,
        helpers=memo.helpers,
        settings=memo.settings,
        elapsed_seconds=runtime.total_seconds(),
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


# A NodeEvacuation lives as long as its workloads move: one daemon reads its
# children and starts the next ones; a finished one returns at once.
@kopf.daemon(*EVACUATION, cancellation_polling=0.5)
async def evacuate(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    await Evacuator(
        resource=_parsed(parse_node_evacuation, body),
        kube=memo.kube,
        helpers=memo.helpers,
        settings=memo.settings,
        events=KopfEvents(body),
    ).run(stopped)


# kubectl drain evicts; a pod that opted in is live-migrated instead (see .evacuation.eviction).
@kopf.on.validate("", "v1", "pods", subresource="eviction", operations=["CREATE"], id="evictions")
async def evicting(
    body: kopf.Body, dryrun: bool, warnings: list[str], memo: kopf.Memo, **_: Any
) -> None:
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    try:
        verdict = await eviction.review(
            memo.kube,
            namespace,
            name,
            now=utc_now(),
            dry_run=dryrun,
            own_pod=memo.settings.own_pod,
        )
    except Exception as error:  # a pod is never evicted because Ferry failed to look
        log.warning("eviction of %s/%s: %s", namespace, name, error)
        raise kopf.AdmissionError(
            f"Ferry could not yet tell whether to live-migrate this pod ({error}); ask again",
            code=eviction.RETRY_LATER,
        ) from error
    warnings.extend(verdict.warnings)
    if not verdict.allowed:
        raise kopf.AdmissionError(verdict.message, code=verdict.code)
