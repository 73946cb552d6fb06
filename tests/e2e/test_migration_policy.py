"""MigrationPolicy on the real cluster: the bandwidth held and measured, a stall stopped.

What an admin checks: a migration the policy selects names it in status, its
stream ran at the policy's rate (measured by the source's helper, within
10 %), and a transfer whose link stalls without breaking is stopped after the
progress timeout, the container counting on at its source.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import ferry_pods
import pytest
from ferry_api import constants
from ferry_cluster import procs
from ferry_cluster.config import ClusterConfig, NodeSpec
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
from support import create_migration, succeeded_reason, wait_heartbeat_after, wait_migration

pytestmark = pytest.mark.e2e

LABEL = "ferry-test/policy"
MIB = 1 << 20


@pytest.fixture
def policy(custom: client.CustomObjectsApi) -> Iterator[Any]:
    """Makes MigrationPolicies; every one is deleted afterwards (they are cluster-wide)."""
    made: list[str] = []

    def make(name: str, selects: str, **spec: Any) -> None:
        custom.create_cluster_custom_object(
            constants.GROUP,
            constants.VERSION,
            constants.MIGRATION_POLICY_PLURAL,
            {
                "apiVersion": constants.API_VERSION,
                "kind": constants.MIGRATION_POLICY_KIND,
                "metadata": {"name": name},
                "spec": {
                    "selector": {"workloadSelector": {"matchLabels": {LABEL: selects}}},
                    **spec,
                },
            },
        )
        made.append(name)

    yield make
    for name in made:
        custom.delete_cluster_custom_object(
            constants.GROUP, constants.VERSION, constants.MIGRATION_POLICY_PLURAL, name
        )


def target_off_the_operator(ferry: ClusterConfig) -> tuple[NodeSpec, NodeSpec]:
    operator = ferry_pods.operator_node(ferry)
    source = ferry.node_specs()[0]
    target = next(n for n in ferry.node_specs()[1:] if n != operator)
    return source, target


def test_a_bandwidth_limit_holds_the_stream_to_its_rate(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str, policy: Any
) -> None:
    policy("twenty", "bandwidth", bandwidthPerMigration="20Mi")
    source, target = ferry.node_specs()[:2]
    name = "paced"
    run_counter(
        source,
        name,
        labels={constants.NAMESPACE_LABEL: namespace, LABEL: "bandwidth"},
        blob_bytes=256 * MIB,
    )
    wait_counting(source, name, above=3, timeout=120)
    create_migration(
        custom,
        namespace,
        name,
        {
            "source": {"node": source.name, "container": name},
            "target": {"node": target.name},
            "compression": "none",
        },
    )
    status = wait_migration(custom, namespace, name, timeout=300, poll=0.5)
    assert status["phase"] == "Succeeded", status
    assert status["policy"]["name"] == "twenty"
    assert status["policy"]["bandwidthBytesPerSecond"] == 20 * MIB
    measured = status["timings"]["transferBytesPerSecond"]
    seconds = status["timings"]["transferSeconds"]
    size = status["archive"]["bytes"]
    print(
        f"20 MiB/s configured: {measured / MIB:.2f} MiB/s measured by the helper, "
        f"{size / MIB / seconds:.2f} MiB/s over the whole transfer step ({size} bytes in "
        f"{seconds:.2f} s)"
    )
    assert abs(measured - 20 * MIB) <= 0.10 * 20 * MIB, measured
    wait_counting(target, name, above=read_count(target, name))
    assert counted_without_restart(logged_counts(target, name))
    sh(target, f"podman rm -f -t 0 {name}")


@pytest.fixture
def stalled(ferry: ClusterConfig, custom: client.CustomObjectsApi) -> Iterator[NodeSpec]:
    _, target = target_off_the_operator(ferry)
    yield target
    procs.run(["tc", "qdisc", "del", "dev", target.host_veth, "root"], check=False)
    # Its helper could not reach the API server either: fresh again before the next test.
    wait_heartbeat_after(custom, target, datetime.datetime.now(datetime.UTC))


def test_a_transfer_that_stops_progressing_fails_at_the_progress_timeout(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    namespace: str,
    policy: Any,
    stalled: NodeSpec,
) -> None:
    policy("impatient", "stall", progressTimeoutSeconds=8)
    source, target = ferry.node_specs()[0], stalled
    name = "stalls"
    run_counter(
        source,
        name,
        labels={constants.NAMESPACE_LABEL: namespace, LABEL: "stall"},
        blob_bytes=96 * MIB,
    )
    wait_counting(source, name, above=3, timeout=120)
    # Slow enough that the transfer is still under way when the link stalls.
    shape = ["tc", "qdisc", "replace", "dev", target.host_veth, "root", "tbf"]
    procs.run([*shape, "rate", "80mbit", "burst", "256kb", "latency", "500ms"])
    create_migration(
        custom,
        namespace,
        name,
        {
            "source": {"node": source.name, "container": name},
            "target": {"node": target.name},
            "compression": "none",
        },
    )
    wait_migration(
        custom,
        namespace,
        name,
        lambda s: (
            s.get("phase") == "Transferring" and (s.get("progress") or {}).get("bytesSent", 0) > 0
        ),
        poll=0.1,
    )
    # The link stalls but does not break: a trickle, the connection alive.
    procs.run([*shape, "rate", "8kbit", "burst", "4kb", "latency", "60s"])
    stalled_at = time.monotonic()
    status = wait_migration(custom, namespace, name, timeout=180, poll=0.5)
    took = time.monotonic() - stalled_at
    print(f"stall noticed and rolled back {took:.1f}s after it began (progressTimeout 8 s)")
    assert status["phase"] == "Failed", status
    assert succeeded_reason(status) == "ProgressTimeout", status
    assert "impatient" in status["message"]
    procs.run(["tc", "qdisc", "del", "dev", target.host_veth, "root"], check=False)
    assert container_state(source, name) == "running"
    wait_counting(source, name, above=read_count(source, name), timeout=30)
    assert counted_without_restart(logged_counts(source, name)), "the process started over"
    sh(source, f"podman rm -f -t 0 {name}")


def test_a_policys_memory_transfer_is_used_by_a_migration_that_sets_none(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str, policy: Any
) -> None:
    policy("pages", "pages", memoryTransfer="PageServer")
    source, target = ferry.node_specs()[:2]
    for name, asked in (("by-policy", None), ("by-spec", "Archive")):
        run_counter(source, name, labels={constants.NAMESPACE_LABEL: namespace, LABEL: "pages"})
        wait_counting(source, name, above=3, timeout=60)
        spec: dict[str, Any] = {
            "source": {"node": source.name, "container": name},
            "target": {"node": target.name},
        }
        if asked:
            spec["memoryTransfer"] = asked
        create_migration(custom, namespace, name, spec)
        status = wait_migration(custom, namespace, name, timeout=180, poll=0.5)
        assert status["phase"] == "Succeeded", status
        assert status["policy"] == {"name": "pages", "memoryTransfer": "PageServer"}
        # The policy's default where the migration set none; the migration's own choice else.
        assert status["memoryTransfer"] == (asked or "PageServer"), status
        wait_counting(target, name, above=read_count(target, name))
        assert counted_without_restart(logged_counts(target, name))
        sh(target, f"podman rm -f -t 0 {name}")
