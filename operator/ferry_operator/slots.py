"""A per-node limit on migrations in flight, as source or as target.

A migration takes a slot on both of its nodes after validation and before the
image is staged, so one that waits has frozen nothing; it gives them back when
it ends. Slots are taken on both nodes at once, so two migrations in opposite
directions cannot each hold one node and wait for the other. A migration
resumed by a restarted operator in a phase after the freeze takes its slots
whatever the count: its source is already stopped, and waiting would only
lengthen the downtime.

The counts live in this process: there is one operator replica, and after a
restart the resumed migrations take their slots again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

OnWait = Callable[[list[str]], Awaitable[None]]
#: How waiting names the cluster-wide limit among the full nodes.
CLUSTER = "the cluster"


class NodeSlots:
    def __init__(self, limit: int) -> None:
        #: Migrations allowed per node at once; 0 means no limit.
        self.limit = limit
        self._held: Counter[str] = Counter()
        self._holders: dict[str, frozenset[str]] = {}
        #: Migrations leaving each node (a MigrationPolicy's parallelOutboundMigrationsPerNode).
        self._leaving: Counter[str] = Counter()
        self._source_of: dict[str, str] = {}
        self._changed = asyncio.Condition()

    def in_flight(self, node: str) -> int:
        return self._held[node]

    def _full(self, nodes: frozenset[str]) -> list[str]:
        if self.limit <= 0:
            return []
        return sorted(n for n in nodes if self._held[n] >= self.limit)

    async def acquire(
        self,
        uid: str,
        nodes: Iterable[str],
        *,
        force: bool = False,
        on_wait: OnWait | None = None,
        outbound: tuple[str, int] | None = None,
        cluster_limit: int | None = None,
    ) -> None:
        """Take a slot on each of ``nodes`` for migration ``uid``; wait while one is full.

        ``outbound`` (source node, limit): also wait while that many migrations leave
        the source; ``cluster_limit``: while that many hold slots anywhere. ``on_wait``
        hears the full nodes (and :data:`CLUSTER`) once, when the migration starts waiting.
        """
        wanted = frozenset(nodes)
        reported = False
        while True:
            async with self._changed:
                if uid in self._holders:
                    return
                full = [] if force else self._full(wanted)
                if not force and outbound is not None and self._leaving[outbound[0]] >= outbound[1]:
                    full = sorted({*full, outbound[0]})
                if not force and cluster_limit and len(self._holders) >= cluster_limit:
                    full = [*full, CLUSTER]
                if not full:
                    self._held.update(wanted)
                    self._holders[uid] = wanted
                    if outbound is not None:
                        self._leaving[outbound[0]] += 1
                        self._source_of[uid] = outbound[0]
                    return
                if reported or on_wait is None:
                    await self._changed.wait()
                    continue
            await on_wait(full)
            reported = True

    async def release(self, uid: str) -> None:
        async with self._changed:
            nodes = self._holders.pop(uid, frozenset())
            self._held.subtract(nodes)
            if (source := self._source_of.pop(uid, None)) is not None:
                self._leaving[source] -= 1
            self._changed.notify_all()
