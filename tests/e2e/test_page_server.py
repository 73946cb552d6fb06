"""memoryTransfer: PageServer end to end, on the real local cluster.

The workload is memhog: a process holding 64 MiB of random bytes in its own
memory (not a tmpfs: CRIU carries a tmpfs as a file, never as pages) and
counting. What a user checks: it counts on at the target from where it was,
the source is gone, the status shows the memory went through the page server
(``pagesBytes``) while the archive stayed small; a restore that fails rolls
back to a source that counts on (its memory taken back from the target); a
docker container is refused before anything is frozen.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import ferry_pods
import pytest
from ferry_api import constants
from ferry_cluster import deploy, images, memhog
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import (
    container_state,
    counted_without_restart,
    logged_counts,
    read_count,
    sh,
    wait_counting,
)
from kubernetes import client
from support import create_migration, succeeded_reason, wait_migration

pytestmark = pytest.mark.e2e

MIB = 1 << 20
HOG_MIB = 64
STAGING = "/var/lib/ferry-helper/staging"
STORAGE = "/var/lib/containers/storage/overlay-containers"


@pytest.fixture(scope="module")
def ferry(local_cluster: ClusterConfig) -> ClusterConfig:
    deploy.deploy(local_cluster)
    for node in local_cluster.node_specs():
        memhog.ensure_loaded(local_cluster, node)
    return local_cluster


def run_memhog(
    node: NodeSpec, name: str, namespace: str, *, volume: str = "", mib: int = HOG_MIB
) -> str:
    """(Re)start memhog holding ``mib`` MiB as ``name``; its container ID."""
    flags = f"--label {constants.NAMESPACE_LABEL}={namespace}"
    if volume:
        flags += f" -v {volume}"
    sh(
        node,
        f"podman rm -f -t 0 -i {name}; "
        f"podman run -d --name {name} {flags} {memhog.IMAGE} memhog {mib}",
    )
    wait_counting(node, name, above=5, timeout=60)
    return sh(node, f"podman inspect --format '{{{{.Id}}}}' {name}")


def move(
    custom: client.CustomObjectsApi, namespace: str, spec: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    name = f"p-{uuid.uuid4().hex[:6]}"
    create_migration(custom, namespace, name, spec)
    uid = custom.get_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, constants.CONTAINER_MIGRATION_PLURAL, name
    )["metadata"]["uid"]
    return uid, wait_migration(custom, namespace, name, poll=0.2)


def page_spec(source: NodeSpec, target: NodeSpec, container: str, *, tls: bool) -> dict[str, Any]:
    return {
        "source": {"node": source.name, "container": container},
        "target": {"node": target.name},
        "memoryTransfer": "PageServer",
        "pageServerTLS": tls,
        "compression": "none",
    }


def assert_no_trace(node: NodeSpec, uid: str, container_id: str) -> None:
    """No staging, no CRIU config and no page images of the migration are left on ``node``."""
    assert sh(node, f"ls -d {STAGING}/{uid} 2>/dev/null || true") == ""
    assert sh(node, "ls /etc/criu/default.conf 2>/dev/null || true") == ""
    assert sh(node, f"ls {STORAGE}/{container_id}/userdata/checkpoint 2>/dev/null || true") == ""


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain-tcp"])
def test_a_container_holding_64_mib_moves_through_the_page_server_and_counts_on(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str, tls: bool
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    name = f"hog-{'tls' if tls else 'plain'}"
    sh(node_b, f"podman rm -f -t 0 -i {name}")
    container_id = run_memhog(node_a, name, namespace)

    uid, status = move(custom, namespace, page_spec(node_a, node_b, name, tls=tls))
    assert status["phase"] == "Succeeded", status
    assert [t["phase"] for t in status["phaseTransitions"]][3:] == [
        "Checkpointing",
        "Transferring",
        "Restoring",
        "Verifying",
        "Succeeded",
    ]
    # The memory went through the page server; the archive kept only the rest.
    assert status["pagesBytes"] >= HOG_MIB * MIB, status
    assert status["archive"]["bytes"] < MIB, status
    assert status["timings"]["downtimeSeconds"] > 0

    assert container_state(node_a, name) == "", "the source container must be gone"
    # The same process, with the same ID, counting on from where it was frozen.
    assert sh(node_b, f"podman inspect --format '{{{{.Id}}}}' {name}") == container_id
    logged = logged_counts(node_b, name)
    assert counted_without_restart(logged), "the process started over"
    wait_counting(node_b, name, above=logged[-1])
    gap_ms = int(sh(node_b, f"podman exec {name} cat /tmp/gap"))
    print(
        f"\n{name}: {status['pagesBytes']} bytes of pages, archive {status['archive']['bytes']} "
        f"bytes, downtime {status['timings']['downtimeSeconds']} s (the workload saw "
        f"{gap_ms} ms), timings {status['timings']}"
    )
    for node in (node_a, node_b):
        assert_no_trace(node, uid, container_id)
    sh(node_b, f"podman rm -f -t 0 {name}")


def test_auto_sends_a_big_containers_memory_through_the_page_server_and_a_small_ones_in_the_archive(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    """memoryTransfer: Auto, each container moved the quicker way."""
    node_a, node_b = ferry.node_specs()[:2]
    chosen = {}
    for name, mib in (("auto-big", 96), ("auto-small", 8)):
        sh(node_b, f"podman rm -f -t 0 -i {name}")
        run_memhog(node_a, name, namespace, mib=mib)
        spec = {
            "source": {"node": node_a.name, "container": name},
            "target": {"node": node_b.name},
            "compression": "none",
            "memoryTransfer": "Auto",
        }
        _, status = move(custom, namespace, spec)
        assert status["phase"] == "Succeeded", status
        assert status["memoryBytes"] >= mib * MIB, status
        validated = next(c for c in status["conditions"] if c["type"] == "Validated")
        assert f"memory by {status['memoryTransfer']} (Auto: " in validated["message"]
        logged = logged_counts(node_b, name)
        assert counted_without_restart(logged), "the process started over"
        wait_counting(node_b, name, above=logged[-1])
        assert container_state(node_a, name) == ""
        chosen[name] = status
        sh(node_b, f"podman rm -f -t 0 {name}")
    big, small = chosen["auto-big"], chosen["auto-small"]
    assert big["memoryTransfer"] == "PageServer", big
    assert big["pagesBytes"] >= 96 * MIB
    assert big["archive"]["bytes"] < MIB
    assert small["memoryTransfer"] == "Archive", small
    assert small.get("pagesBytes") is None
    assert small["archive"]["bytes"] >= 8 * MIB


def test_a_failed_restore_rolls_back_with_the_memory_taken_back_from_the_target(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    # The container bind-mounts a directory only node-a has: the restore on node-b fails
    # after every page has arrived there, and the source has none of them any more.
    sh(node_b, "podman rm -f -t 0 -i hog-mounted; rm -rf /srv/only-on-a")
    sh(node_a, "mkdir -p /srv/only-on-a")
    container_id = run_memhog(node_a, "hog-mounted", namespace, volume="/srv/only-on-a:/data")
    before = read_count(node_a, "hog-mounted")

    uid, status = move(custom, namespace, page_spec(node_a, node_b, "hog-mounted", tls=True))
    assert status["phase"] == "Failed", status
    assert succeeded_reason(status) == "RestoreFailed", status
    assert "only-on-a" in status["message"], "the message names what was missing"
    assert "RollingBack" in [t["phase"] for t in status["phaseTransitions"]]
    events = client.CoreV1Api(custom.api_client).list_namespaced_event(namespace)
    returned = [e.message for e in events.items if e.reason == "PagesReturned"]
    assert returned, "the memory came back from the target before the source's restore"
    assert int(returned[0].split()[0]) >= HOG_MIB * MIB, returned

    # The same process, back on the source, counting on from where it was frozen.
    assert container_state(node_a, "hog-mounted") == "running"
    assert sh(node_a, "podman inspect --format '{{.Id}}' hog-mounted") == container_id
    logged = logged_counts(node_a, "hog-mounted")
    assert counted_without_restart(logged), "the process started over"
    assert logged[-1] > before
    wait_counting(node_a, "hog-mounted", above=logged[-1])
    assert container_state(node_b, "hog-mounted") == ""
    assert sh(node_b, f"ls -d {STORAGE}/{container_id} 2>/dev/null || true") == ""
    for node in (node_a, node_b):
        assert sh(node, f"ls -d {STAGING}/{uid} 2>/dev/null || true") == ""
        assert sh(node, "ls /etc/criu/default.conf 2>/dev/null || true") == ""
    sh(node_a, "podman rm -f -t 0 hog-mounted; rm -rf /srv/only-on-a")


def test_a_target_gone_while_it_holds_the_memory_holds_the_rollback_until_it_is_back(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    """The PageServer trade-off: the source's memory is on the target only, so a rollback
    waits for the target (and says why) instead of restoring a source without memory."""
    node_a, node_b = ferry.node_specs()[:2]
    sh(node_b, "podman rm -f -t 0 -i hog-stranded")
    container_id = run_memhog(node_a, "hog-stranded", namespace)
    name = f"p-{uuid.uuid4().hex[:6]}"
    create_migration(custom, namespace, name, page_spec(node_a, node_b, "hog-stranded", tls=True))
    # Once the archive is on its way the dump is over: every page is on node-b only.
    wait_migration(
        custom, namespace, name, lambda s: s.get("phase") in ("Transferring", "Restoring")
    )
    with ferry_pods.helper_down(ferry, node_b):
        waiting = wait_migration(
            custom,
            namespace,
            name,
            lambda s: succeeded_reason(s) == "MemoryOnTarget",
            timeout=120,
            poll=0.5,
        )
        message = next(c["message"] for c in waiting["conditions"] if c["type"] == "Succeeded")
        assert "memory is on node-b only" in message, message
        assert "the source cannot be restored without it" in message, message
        assert waiting["phase"] == "RollingBack"
        time.sleep(3)  # and it keeps waiting: the source stays down, no copy is started
        assert container_state(node_a, "hog-stranded") == "exited"

    status = wait_migration(custom, namespace, name, timeout=180, poll=0.5)
    assert status["phase"] == "Failed", status
    assert container_state(node_a, "hog-stranded") == "running"
    logged = logged_counts(node_a, "hog-stranded")
    assert counted_without_restart(logged), "the process started over"
    wait_counting(node_a, "hog-stranded", above=logged[-1])
    assert container_state(node_b, "hog-stranded") == ""
    assert sh(node_b, f"ls -d {STORAGE}/{container_id} 2>/dev/null || true") == ""
    sh(node_a, "podman rm -f -t 0 hog-stranded")


def test_a_criu_config_of_the_nodes_own_refuses_the_dump_and_the_source_runs_on(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    container_id = run_memhog(node_a, "hog-configured", namespace)
    sh(node_a, "mkdir -p /etc/criu && echo 'tcp-established' > /etc/criu/default.conf")
    try:
        uid, status = move(
            custom, namespace, page_spec(node_a, node_b, "hog-configured", tls=False)
        )
        assert sh(node_a, "cat /etc/criu/default.conf") == "tcp-established", "left alone"
    finally:
        sh(node_a, "rm -f /etc/criu/default.conf")
    assert status["phase"] == "Failed", status
    assert succeeded_reason(status) == "CheckpointFailed", status
    assert "/etc/criu/default.conf exists" in status["message"], status["message"]
    assert "memoryTransfer: Archive" in status["message"]
    assert container_state(node_a, "hog-configured") == "running"
    wait_counting(node_a, "hog-configured", above=read_count(node_a, "hog-configured"))
    assert_no_trace(node_b, uid, container_id)
    sh(node_a, "podman rm -f -t 0 hog-configured")


def test_a_docker_container_with_page_server_is_refused_before_the_freeze(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    sh(node_a, "docker rm -f dhog >/dev/null 2>&1; true")
    sh(
        node_a,
        f"docker run -d --name dhog --network host --label {constants.NAMESPACE_LABEL}="
        f"{namespace} {images.BUSYBOX_IMAGE} sleep 600",
    )
    _, status = move(custom, namespace, page_spec(node_a, node_b, "dhog", tls=True))
    assert status["phase"] == "Failed", status
    assert succeeded_reason(status) == "PageServerNeedsPodman", status
    assert "set memoryTransfer: Archive" in status["message"]
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert validated["status"] == "False"
    assert "Checkpointing" not in [t["phase"] for t in status["phaseTransitions"]]
    assert sh(node_a, "docker inspect --format '{{.State.Status}}' dhog") == "running"
    sh(node_a, "docker rm -f dhog >/dev/null 2>&1; true")
