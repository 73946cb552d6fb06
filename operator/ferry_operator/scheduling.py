"""A ContainerCheckpointSchedule's loop: sleep until the next run, checkpoint, prune.

The schedule is read afresh on every pass (kopf keeps a daemon's body current),
so a changed cron expression, ``keep`` or ``suspend`` applies without a
restart: a lowered ``keep`` prunes at once, ``suspend`` stops the runs (the
checkpoints kept stay), and a resumed schedule makes one missed run at once.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import kopf
from ferry_api.schedule import ContainerCheckpointSchedule

from .kube import Kube
from .schedule import Schedule, Scheduler, next_run, stamp
from .status import Clock, Events, utc_now

#: How often a sleeping schedule looks at its spec again.
POLL_SECONDS = 10.0


async def run_schedule(
    read: Callable[[], ContainerCheckpointSchedule],
    kube: Kube,
    stopped: kopf.DaemonStopped,
    events: Events,
    *,
    clock: Clock = utc_now,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    ran: datetime.datetime | None = None  # the body may not show our own last run yet
    pruned_at: int | None = None  # the keep last pruned for
    shown: tuple[str | None, str] | None = None  # (next time, message) last written
    while not stopped:
        resource = read()
        spec = resource.spec
        scheduler = Scheduler(schedule=Schedule.of_schedule(resource), kube=kube)
        now = clock()
        if spec.keep != pruned_at:
            pruned = await scheduler.prune()
            if pruned:
                events.normal("Pruned", f"deleted {', '.join(pruned)} (keep: {spec.keep})")
            pruned_at = spec.keep
        if spec.suspend:
            due = None
            message = "suspended: no checkpoint is made"
        else:
            due = scheduler.due(now, ran=ran)
            if due <= now:
                then = next_run(spec.schedule, max(due, now))
                await scheduler.run(due, then=then)
                events.normal("Checkpointing", f"created {scheduler.child_name(due)}")
                ran, pruned_at = due, spec.keep
                continue
            message = f"next checkpoint at {stamp(due)}"
        next_time = stamp(due)
        if shown != (next_time, message):
            await kube.patch_status(
                scheduler.schedule.plural,
                scheduler.schedule.namespace,
                scheduler.schedule.name,
                {
                    "nextScheduleTime": next_time,
                    "message": message,
                    "observedGeneration": resource.metadata.generation,
                },
            )
            shown = (next_time, message)
        wait = poll_seconds if due is None else min((due - now).total_seconds(), poll_seconds)
        await stopped.wait(wait)
