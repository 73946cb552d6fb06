"""Twenty migrations in flight across three nodes, under the per-node limit.

Every counter is moved to the next node at once (a -> b -> c -> a), so each
node is the source of some migrations and the target of others. What a user
checks: every migration succeeded, every container runs in exactly one place
(its target) as the same process, and no node ever carried more migrations
at a time than ``operator.maxMigrationsPerNode`` allows. The figures (wall
time, downtime) are printed; the benchmark, not this test, judges speed.
"""

from __future__ import annotations

import datetime
import statistics
import time
from typing import Any

import pytest
from ferry_api import constants
from ferry_cluster import deploy
from ferry_cluster.config import ClusterConfig
from ferry_cluster.workloads import (
    container_state,
    counted_without_restart,
    logged_counts,
    read_count,
    run_counter,
    sh,
    wait_counting,
)
from kubernetes import client
from support import create_migration, wait_migration

pytestmark = pytest.mark.e2e

MIGRATIONS = 20
PER_NODE = 2


@pytest.fixture(scope="module")
def ferry(local_cluster: ClusterConfig) -> ClusterConfig:
    deploy.deploy(local_cluster, extra={"operator.maxMigrationsPerNode": str(PER_NODE)})
    return local_cluster


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def busiest(intervals: list[tuple[datetime.datetime, datetime.datetime, set[str]]]) -> int:
    """The most intervals that overlapped on any one node at any moment."""
    edges = sorted(
        [(start, 1, nodes) for start, _, nodes in intervals]
        + [(end, -1, nodes) for _, end, nodes in intervals],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    load: dict[str, int] = {}
    peak = 0
    for _, step, nodes in edges:
        for node in nodes:
            load[node] = load.get(node, 0) + step
            peak = max(peak, load[node])
    return peak


def test_twenty_migrations_across_three_nodes_all_succeed_within_the_node_limit(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    specs = ferry.node_specs()
    assert len(specs) == 3, "the load test needs three nodes"
    moves = {f"load-{i:02d}": (specs[i % 3], specs[(i + 1) % 3]) for i in range(MIGRATIONS)}
    for name, (source, target) in moves.items():
        sh(target, f"podman rm -f -t 0 -i {name}")
        run_counter(source, name, labels={constants.NAMESPACE_LABEL: namespace}, interval=0.2)
    for name, (source, _) in moves.items():
        wait_counting(source, name, above=0, timeout=60)

    custom = client.CustomObjectsApi(admin_api)
    started = time.monotonic()
    for name, (source, target) in moves.items():
        create_migration(
            custom,
            namespace,
            name,
            {
                "source": {"node": source.name, "container": name},
                "target": {"node": target.name},
            },
        )
    finals = {n: wait_migration(custom, namespace, n, timeout=600, poll=0.5) for n in moves}
    wall = time.monotonic() - started

    failed = {n: s.get("message") for n, s in finals.items() if s["phase"] != "Succeeded"}
    assert not failed, failed
    for name, (source, target) in moves.items():
        assert container_state(source, name) == "", f"{name} still on its source {source.name}"
        assert container_state(target, name) == "running", f"{name} does not run on {target.name}"
        wait_counting(target, name, above=read_count(target, name), timeout=10)
        assert counted_without_restart(logged_counts(target, name)), f"{name} started over"

    def interval(status: dict[str, Any]) -> tuple[datetime.datetime, datetime.datetime, set[str]]:
        times = {t["phase"]: _time(t["time"]) for t in status["phaseTransitions"]}
        nodes = {status["sourceNode"], status["targetNode"]}
        return times["ImageStaging"], times["Succeeded"], nodes

    peak = busiest([interval(s) for s in finals.values()])
    assert peak <= PER_NODE, f"a node carried {peak} migrations at once (limit {PER_NODE})"
    waited = [
        e
        for e in client.CoreV1Api(admin_api).list_namespaced_event(namespace).items
        if e.reason == "WaitingForNode"
    ]
    assert waited, "with 20 migrations and 2 per node, some must have waited for a slot"

    downtimes = sorted(float(s["timings"]["downtimeSeconds"]) for s in finals.values())
    print(
        f"\n{MIGRATIONS} migrations across 3 nodes in {wall:.1f}s; peak {peak} per node; "
        f"{len(waited)} waited for a slot; downtime median {statistics.median(downtimes):.2f}s, "
        f"max {downtimes[-1]:.2f}s"
    )
    for name, (_, target) in moves.items():
        sh(target, f"podman rm -f -t 0 {name}")
