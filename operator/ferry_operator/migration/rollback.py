"""A failure after the freeze: the target's copy goes, the source comes back from its checkpoint.

The rule that never bends: the source is not given up, and there are never
two copies. A helper that cannot be reached is therefore retried with backoff
for as long as it takes (the daemon stays alive, so a deletion still waits for
it): rolling the source back while the target may hold a running copy would
leave two, and giving up on the source would lose it. The target's cleanup is
best effort only when no restore was ever asked of it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity
from ferry_api.conditions import ConditionStatus
from ferry_api.migration import Phase
from ferry_wire import Peer, Reason, RemoteError, Reply, Request
from ferry_wire.migration import CleanupRequest, RollbackRequest
from ferry_wire.pages import PagesFetched, PagesFetchRequest

from ..phases import COND_SUCCEEDED
from ..policy import RETRY_MAX_SECONDS, Kind, kind_of
from .context import Context

log = logging.getLogger(__name__)

ReplyT = TypeVar("ReplyT", bound=Reply)


class Rollback:
    def __init__(self, context: Context) -> None:
        self.c = context

    async def run(self) -> None:
        """Remove the target's copy, then bring the source back from its checkpoint."""
        c = self.c
        source, target = await c.peers()
        if c.pages:
            await self._take_pages_back(source, target)
        target_cleanup = CleanupRequest(uid=c.uid, runtime=c.runtime, remove_restored=True)
        if any(t.phase == Phase.RESTORING for t in c.status.phase_transitions):
            await self._until_reached(target, target_cleanup)
        else:
            try:
                await c.helpers.call(target, target_cleanup)
            except RemoteError as error:
                c.events.warning("TargetCleanupFailed", error.message)
        await self._until_reached(
            source,
            RollbackRequest(
                uid=c.uid, container=c.container, runtime=c.runtime, file_locks=c.spec.file_locks
            ),
        )
        await self._until_reached(
            source,
            CleanupRequest(uid=c.uid, runtime=c.runtime, keep_checkpoint=c.spec.keep_checkpoint),
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
        c = self.c
        asked = await self._until_reached(source, PagesFetchRequest(uid=c.uid))
        if not asked.needed:
            return

        async def fetch() -> PagesFetched:
            credential = await c.grant(target)
            return await c.helpers.call(
                source, PagesFetchRequest(uid=c.uid, target=target, credential=credential)
            )

        def waiting(error: BaseException | None) -> None:
            c.record.condition(
                COND_SUCCEEDED,
                ConditionStatus.UNKNOWN,
                "MemoryOnTarget",
                f"{c.container}'s memory is on {target.node} only "
                "(memoryTransfer: PageServer sent it there during the dump) and could not be "
                f"taken back ({error}): the source cannot be restored without it; retrying "
                f"until {target.node} answers",
            )

        try:
            fetched = await self._retried(
                f"taking the memory back from {target.node} to {source.node}",
                fetch,
                also_retry=frozenset({Reason.PAGES_UNREACHABLE}),
                waiting=waiting,
            )
        except RemoteError as error:
            text = f"the memory could not be taken back from {target.node}: {error.message}"
            c.events.warning("PagesNotReturned", text)
            log.warning("%s/%s: %s", c.namespace, c.name, text)
            return
        c.events.normal("PagesReturned", f"{fetched.bytes} bytes of memory back on {source.node}")

    async def _until_reached(self, peer: Peer, request: Request[ReplyT]) -> ReplyT:
        """``request`` on ``peer``, retried with backoff while the helper is not heard."""

        async def attempt() -> ReplyT:
            return await self.c.helpers.call(peer, request)

        return await self._retried(f"{request.operation.value} on {peer.node}", attempt)

    async def _retried(
        self,
        what: str,
        attempt: Callable[[], Awaitable[ReplyT]],
        *,
        also_retry: frozenset[Reason] = frozenset(),
        waiting: Callable[[BaseException | None], None] | None = None,
    ) -> ReplyT:
        """``attempt``, retried with exponential backoff while it fails transiently (or with
        a reason in ``also_retry``); ``waiting`` updates the status."""
        c = self.c

        def retried(error: BaseException) -> bool:
            return kind_of(error) is Kind.TRANSIENT or (
                isinstance(error, RemoteError) and error.reason in also_retry
            )

        async def report(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            text = (
                f"{what}: attempt {state.attempt_number} failed ({error}); retrying in {wait:.0f}s"
            )
            c.events.warning("HelperUnreachable", text)
            log.warning("%s/%s: %s", c.namespace, c.name, text)
            c.record.update(message=f"rolling back: {text}")
            if waiting is not None:
                waiting(error)
            try:
                await c.record.write()
            except Exception as failed:  # the rollback goes on; the next write may land
                log.warning("%s/%s: status not written: %s", c.namespace, c.name, failed)

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(retried),
            wait=tenacity.wait_exponential(min=1, max=RETRY_MAX_SECONDS),
            before_sleep=report,
            reraise=True,
        )

        async def once() -> ReplyT:
            # A coroutine function: tenacity would not await what a plain callable returns.
            return await attempt()

        result: ReplyT = await retrying(once)
        return result
