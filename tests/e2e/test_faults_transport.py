"""Faults under a migration in flight: a cut link, a helper killed mid-step.

Each fault hits while the source is frozen. What a user would check is then
asserted: exactly one copy runs, on the source, and it is the same process
counting on (its log reads 1, 2, ... without a restart); the target keeps
neither a container nor an archive; the migration ends ``Failed`` with a
reason that names the fault.

A helper is killed as a crash kills it: SIGKILL to its process in the node; the
kubelet restarts its container. podman and CRIU, which the helper runs in the
node's own cgroups (node_tools.py), are not part of the container and finish.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator

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

STAGING = "/var/lib/ferry-helper/staging"


def assert_one_copy_on_the_source(source: NodeSpec, target: NodeSpec, name: str) -> None:
    assert container_state(target, name) == "", f"{name} left on {target.name}"
    assert container_state(source, name) == "running"
    wait_counting(source, name, above=read_count(source, name), timeout=10)
    assert counted_without_restart(logged_counts(source, name)), "the process started over"


def assert_nothing_staged(node: NodeSpec, *, within: float = 30) -> None:
    """No archive, whole or partial, is left in the node's staging area."""
    deadline = time.monotonic() + within
    find = f"find {STAGING} -name 'checkpoint.*' -o -name '*.partial'"
    while left := sh(node, find):
        assert time.monotonic() < deadline, f"{node.name} keeps {left}"
        time.sleep(0.5)


def start_counter(node: NodeSpec, name: str, namespace: str, blob_bytes: int) -> None:
    run_counter(node, name, labels={constants.NAMESPACE_LABEL: namespace}, blob_bytes=blob_bytes)
    wait_counting(node, name, above=0, timeout=60)


def move(source: NodeSpec, target: NodeSpec, container: str) -> dict[str, object]:
    return {
        "source": {"node": source.name, "container": container},
        "target": {"node": target.name},
        "compression": "none",
    }


@pytest.fixture
def slow_link(ferry: ClusterConfig) -> Iterator[NodeSpec]:
    """A target's link shaped to 80 Mbit/s, so a transfer lasts long enough to be cut.

    Not the operator's node: cutting that link cuts the operator off the API
    server too, which is another fault (nothing can be noticed until it is back).
    """
    operator = ferry_pods.operator_node(ferry)
    target = next(n for n in ferry.node_specs()[1:] if n != operator)
    shape = ["tc", "qdisc", "replace", "dev", target.host_veth, "root", "tbf"]
    procs.run([*shape, "rate", "80mbit", "burst", "256kb", "latency", "500ms"])
    yield target
    procs.run(["ip", "link", "set", target.host_veth, "up"])
    procs.run(["tc", "qdisc", "del", "dev", target.host_veth, "root"], check=False)


def test_a_link_cut_mid_transfer_is_noticed_and_rolled_back(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str, slow_link: NodeSpec
) -> None:
    source, target = ferry.node_specs()[0], slow_link
    start_counter(source, "cut", namespace, blob_bytes=96 << 20)
    create_migration(custom, namespace, "cut", move(source, target, "cut"))
    wait_migration(
        custom,
        namespace,
        "cut",
        lambda s: (
            s.get("phase") == "Transferring" and (s.get("progress") or {}).get("bytesSent", 0) > 0
        ),
    )
    procs.run(["ip", "link", "set", target.host_veth, "down"])
    cut = time.monotonic()
    status = wait_migration(custom, namespace, "cut", timeout=180, poll=0.5)
    print(f"link cut noticed and rolled back in {time.monotonic() - cut:.1f}s")
    assert status["phase"] == "Failed", status
    assert succeeded_reason(status) == "TransferFailed", status
    procs.run(["ip", "link", "set", target.host_veth, "up"])
    wait_heartbeat_after(custom, target, datetime.datetime.now(datetime.UTC))
    assert_one_copy_on_the_source(source, target, "cut")
    assert_nothing_staged(target)
    assert_nothing_staged(source)
    sh(source, "podman rm -f -t 0 cut")


@pytest.mark.parametrize(
    ("phase", "side"),
    [("Checkpointing", "source"), ("Transferring", "source"), ("Restoring", "target")],
)
def test_a_helper_killed_mid_step_leaves_the_source_running(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    namespace: str,
    phase: str,
    side: str,
) -> None:
    source, target = ferry.node_specs()[:2]
    name = f"crash-{phase.lower()}"
    start_counter(source, name, namespace, blob_bytes=128 << 20)
    create_migration(custom, namespace, name, move(source, target, name))
    wait_migration(custom, namespace, name, lambda s: s.get("phase") == phase, poll=0.02)
    ferry_pods.kill_helper(ferry, source if side == "source" else target)
    status = wait_migration(custom, namespace, name, timeout=240, poll=0.5)
    assert status["phase"] == "Failed", status
    assert_one_copy_on_the_source(source, target, name)
    assert_nothing_staged(target)
    assert_nothing_staged(source)
    sh(source, f"podman rm -f -t 0 {name}")


SERVICE = "[p]odman system service --time=0 unix:///var/lib/ferry-helper/podman.sock"


def test_the_helpers_podman_service_killed_is_started_again_and_migrations_go_on(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    """The REST API service dies on its own: the CLI serves, and the helper starts it again."""
    source, target = ferry.node_specs()[:2]
    killed = sh(source, f"pgrep -f '{SERVICE}'")
    assert killed, "the helper runs podman's REST API service"
    sh(source, f"pkill -KILL -f '{SERVICE}'")
    start_counter(source, "unserved", namespace, blob_bytes=0)
    create_migration(custom, namespace, "unserved", move(source, target, "unserved"))
    status = wait_migration(custom, namespace, "unserved", timeout=120, poll=0.2)
    assert status["phase"] == "Succeeded", status
    assert container_state(source, "unserved") == ""
    wait_counting(target, "unserved", above=read_count(target, "unserved"), timeout=10)
    assert counted_without_restart(logged_counts(target, "unserved")), "the process started over"
    deadline = time.monotonic() + 30
    while sh(source, f"pgrep -f '{SERVICE}' || true") in ("", killed):
        assert time.monotonic() < deadline, "the helper did not start its podman service again"
        time.sleep(0.5)
    sh(target, "podman rm -f -t 0 unserved")


def test_a_cancel_whose_rollback_cannot_reach_the_target_holds_until_the_source_runs(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str, slow_link: NodeSpec
) -> None:
    """Deleted during Restoring with the target cut off: the target may be starting its copy,
    so the source must not run before that copy is gone, and the resource must not go
    before the source runs. It stays (finalizer, RollingBack) until the link is back."""
    source, target = ferry.node_specs()[0], slow_link
    name = "cancel-cut"
    start_counter(source, name, namespace, blob_bytes=64 << 20)
    create_migration(custom, namespace, name, move(source, target, name))
    wait_migration(custom, namespace, name, lambda s: s.get("phase") == "Restoring", poll=0.02)
    procs.run(["ip", "link", "set", target.host_veth, "down"])
    plural = constants.CONTAINER_MIGRATION_PLURAL
    custom.delete_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, plural, name
    )
    wait_migration(custom, namespace, name, lambda s: s.get("phase") == "RollingBack", poll=0.2)
    held_until = time.monotonic() + 25
    while time.monotonic() < held_until:
        body = custom.get_namespaced_custom_object(
            constants.GROUP, constants.VERSION, namespace, plural, name
        )
        assert constants.MIGRATION_FINALIZER in body["metadata"]["finalizers"]
        assert body["status"]["phase"] == "RollingBack", body["status"]
        assert container_state(source, name) != "running", "the source ran beside a copy"
        time.sleep(1)
    assert target.name in body["status"]["message"], body["status"]["message"]

    procs.run(["ip", "link", "set", target.host_veth, "up"])
    back = time.monotonic()
    deadline = back + 120
    while name in {
        item["metadata"]["name"]
        for item in custom.list_namespaced_custom_object(
            constants.GROUP, constants.VERSION, namespace, plural
        )["items"]
    }:
        assert time.monotonic() < deadline, "the cancel never finished after the link came back"
        time.sleep(0.5)
    print(f"cancel finished {time.monotonic() - back:.1f}s after the link came back")
    assert_one_copy_on_the_source(source, target, name)
    sh(source, f"podman rm -f -t 0 {name}")
