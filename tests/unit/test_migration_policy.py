"""MigrationPolicy: which one governs a migration, what it sets, and how the loop holds it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ferry_api import constants
from ferry_api.migration import ContainerMigrationStatus
from ferry_api.migrationpolicy import choose_policy, parse_migration_policy, quantity_bytes
from ferry_operator import progress
from ferry_operator.governing import applied
from ferry_operator.slots import NodeSlots
from ferry_operator.status import StatusRecorder
from ferry_wire.migration import TransferProgress
from operator_fakes import Clock, FakeKube

MIB = 1 << 20


def policy(name: str, **spec: Any) -> Any:
    return parse_migration_policy(
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.MIGRATION_POLICY_KIND,
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def test_the_most_specific_policy_selecting_a_migration_wins() -> None:
    everything = policy("default", parallelOutboundMigrationsPerNode=2)
    team = policy("team", selector={"namespaceSelector": {"matchLabels": {"team": "a"}}})
    batch = policy(
        "batch",
        selector={
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "workloadSelector": {"matchLabels": {"tier": "batch"}},
        },
    )
    found = [batch, everything, team]
    assert choose_policy(found, namespace_labels={"team": "a"}, labels={"tier": "batch"}) is batch
    assert choose_policy(found, namespace_labels={"team": "a"}, labels={}) is team
    assert choose_policy(found, namespace_labels={}, labels={"tier": "batch"}) is everything
    assert choose_policy([team], namespace_labels={}, labels={}) is None


def test_what_a_policy_sets_for_a_workload_of_some_memory() -> None:
    assert quantity_bytes("20Mi") == 20 << 20
    assert quantity_bytes("1G") == 10**9
    with pytest.raises(ValueError, match="quantity"):
        quantity_bytes("fast")
    set_ = applied(
        policy(
            "p",
            bandwidthPerMigration="20Mi",
            progressTimeoutSeconds=30,
            completionTimeoutPerGiBSeconds=150,
        ),
        memory_bytes=3 << 29,  # 1.5 GiB
    )
    assert set_.bandwidth_bytes_per_second == 20 << 20
    assert set_.completion_timeout_seconds == 225
    small = applied(policy("p", completionTimeoutPerGiBSeconds=150), memory_bytes=1 << 20)
    assert small.completion_timeout_seconds == 150, "at least one GiB is counted"


def test_at_most_the_policys_count_leaves_one_node_and_the_next_waits() -> None:
    async def main() -> list[str]:
        slots = NodeSlots(10)
        waited: list[str] = []

        async def on_wait(full: list[str]) -> None:
            waited.extend(full)

        await slots.acquire("m1", ["node-a", "node-b"], outbound=("node-a", 1))
        third = asyncio.create_task(
            slots.acquire("m2", ["node-a", "node-c"], outbound=("node-a", 1), on_wait=on_wait)
        )
        await asyncio.sleep(0.05)
        assert not third.done(), "a second migration left node-a"
        await slots.acquire("m3", ["node-b", "node-c"], outbound=("node-b", 1))  # another source
        await slots.release("m1")
        await asyncio.wait_for(third, 1)
        return waited

    assert asyncio.run(main()) == ["node-a"]


def test_a_step_that_stops_progressing_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "POLL_SECONDS", 0.01)
    moved = [0]

    async def stalls() -> None:
        for _ in range(5):
            moved[0] += 1
            await asyncio.sleep(0.02)
        await asyncio.sleep(3600)  # the link stalls

    with pytest.raises(TimeoutError, match="no progress"):
        asyncio.run(
            progress.watched(
                stalls(),
                limit=0.1,
                mark=lambda: moved[0],
                failure=lambda: TimeoutError("no progress"),
            )
        )
    assert moved[0] == 5, "it ran while it progressed"

    async def finishes() -> None:
        await asyncio.sleep(0.05)

    asyncio.run(progress.watched(finishes(), limit=1, mark=lambda: 0, failure=RuntimeError))


def test_at_most_the_policys_count_run_in_the_cluster() -> None:
    async def main() -> list[str]:
        slots = NodeSlots(10)
        waited: list[str] = []

        async def on_wait(full: list[str]) -> None:
            waited.extend(full)

        await slots.acquire("m1", ["node-a", "node-b"], cluster_limit=2)
        await slots.acquire("m2", ["node-c", "node-d"], cluster_limit=2)
        third = asyncio.create_task(
            slots.acquire("m3", ["node-e", "node-f"], cluster_limit=2, on_wait=on_wait)
        )
        await asyncio.sleep(0.05)
        assert not third.done(), "a third ran beside two"
        await slots.release("m2")
        await asyncio.wait_for(third, 1)
        return waited

    assert asyncio.run(main()) == ["the cluster"]


def test_every_progress_report_reaches_the_status_model_and_writes_are_spaced() -> None:
    """What the progress timeout watches (both kinds): each report, in memory at once."""
    kube = FakeKube(Clock())
    record = StatusRecorder(
        ContainerMigrationStatus(),
        kube=kube,  # type: ignore[arg-type]
        plural=constants.CONTAINER_MIGRATION_PLURAL,
        namespace="team-a",
        name="move",
        generation=1,
    )
    writes = progress.ProgressWrites(record)

    async def main() -> None:
        for sent in (1, 2, 3):
            await writes(TransferProgress(bytes_sent=sent * MIB, bytes_total=3 * MIB))

    asyncio.run(main())
    assert record.status.progress is not None
    assert record.status.progress.bytes_sent == 3 * MIB
    assert len(kube.statuses) == 1, "written once within a second, not per report"
