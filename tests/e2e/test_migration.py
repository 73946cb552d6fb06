"""ContainerMigration end to end: kubectl-level resources, the real operator and helpers.

The operator runs with its chart ServiceAccount's token, the helpers inside the
simulated nodes; containers are real podman containers checkpointed by CRIU.
Each test asserts what a user would check: the counter kept counting after the
move, the source is gone (or still runs when it must), the status says why.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import ferry_pods
import pytest
import yaml
from ferry_api import constants
from ferry_cluster import cluster, images, procs
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import (
    counter_script,
    logged_counts,
    read_count,
    run_counter,
    run_tcp_talker,
    sh,
    wait_counting,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import config_map_files, create_migration

pytestmark = pytest.mark.e2e

FINAL = {"Succeeded", "Failed", "Cancelled"}
#: Where a helper keeps the full logs of failed steps.
LOGS = "/var/lib/ferry-helper/logs"


def start_counter(node: NodeSpec, name: str, namespace: str) -> None:
    run_counter(node, name, labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, name, above=5)


def exists(node: NodeSpec, name: str) -> bool:
    return sh(node, f"podman ps -a --format '{{{{.Names}}}}' --filter name=^{name}$") == name


def migrate(
    custom: client.CustomObjectsApi, namespace: str, spec: dict[str, Any], *, timeout: float = 120
) -> dict[str, Any]:
    name = f"m-{uuid.uuid4().hex[:6]}"
    create_migration(custom, namespace, name, spec)
    return wait_final(custom, namespace, name, timeout=timeout)


def get(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = custom.get_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, constants.CONTAINER_MIGRATION_PLURAL, name
    )
    return body


def gone(custom: client.CustomObjectsApi, namespace: str, name: str) -> bool:
    try:
        get(custom, namespace, name)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def wait_final(
    custom: client.CustomObjectsApi, namespace: str, name: str, *, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = get(custom, namespace, name)
        if body.get("status", {}).get("phase") in FINAL:
            return body
        assert time.monotonic() < deadline, f"{name} stuck: {body.get('status')}"
        time.sleep(0.2)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in body["status"]["conditions"] if c["type"] == type_]
    assert found, f"no {type_} condition in {body['status']['conditions']}"
    return found[0]


def test_a_counter_moves_to_another_node_and_keeps_counting(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    start_counter(node_a, "web", namespace)
    sh(node_b, "podman rm -f -t 0 -i web")

    body = migrate(
        custom,
        namespace,
        {"source": {"node": "node-a", "container": "web"}, "target": {"node": "node-b"}},
    )
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert status["targetNode"] == "node-b"
    assert condition(body, "Succeeded")["status"] == "True"
    timings = status["timings"]
    for field in (
        "checkpointSeconds",
        "transferSeconds",
        "restoreSeconds",
        "downtimeSeconds",
        "totalSeconds",
    ):
        assert timings[field] > 0, field
    assert status["archive"]["bytes"] > 0
    assert len(status["archive"]["sha256"]) == 64
    assert [t["phase"] for t in status["phaseTransitions"]] == [
        "Pending",
        "Validating",
        "ImageStaging",
        "Checkpointing",
        "Transferring",
        "Restoring",
        "Verifying",
        "Succeeded",
    ]

    assert not exists(node_a, "web"), "the source container must be gone after a move"
    logged = logged_counts(node_b, "web")
    assert logged == list(range(1, len(logged) + 1)), "the process started over"
    wait_counting(node_b, "web", above=logged[-1])

    # What `kubectl describe` shows, and what Prometheus scrapes.
    name = body["metadata"]["name"]
    events = client.CoreV1Api(custom.api_client).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    reasons = {e.reason for e in events.items}
    assert {"Checkpointing", "Transferring", "Restoring", "Succeeded"} <= reasons, reasons
    url = ferry_pods.operator_metrics_url(ferry)  # http://<pod IP>:<port>/metrics
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        metrics = response.read().decode()
    assert 'ferry_migrations_total{outcome="succeeded",reason="Succeeded"}' in metrics
    assert "ferry_migration_downtime_seconds_count" in metrics


def test_leave_running_keeps_the_source_and_a_move_back_works(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    start_counter(node_a, "twin", namespace)
    sh(node_b, "podman rm -f -t 0 -i twin")
    body = migrate(
        custom,
        namespace,
        {
            "source": {"node": "node-a", "container": "twin"},
            "target": {"node": "node-b"},
            "leaveRunning": True,
            "compression": "gzip",
        },
    )
    assert body["status"]["phase"] == "Succeeded", body["status"]
    wait_counting(node_a, "twin", above=read_count(node_a, "twin"))
    wait_counting(node_b, "twin", above=read_count(node_b, "twin"))

    sh(node_a, "podman rm -f -t 0 twin")
    back = migrate(
        custom,
        namespace,
        {"source": {"node": "node-b", "container": "twin"}, "compression": "none"},
    )
    assert back["status"]["phase"] == "Succeeded", back["status"]
    chosen = next(n for n in ferry.node_specs() if n.name == back["status"]["targetNode"])
    assert chosen != node_b, "the operator picked a target other than the source"
    assert not exists(node_b, "twin")
    wait_counting(chosen, "twin", above=read_count(chosen, "twin"))
    sh(chosen, "podman rm -f -t 0 twin")


def test_an_image_the_target_lacks_is_shipped_before_the_freeze(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    image = f"localhost/ferry/only-on-a:{uuid.uuid4().hex[:6]}"
    sh(
        node_a,
        f"podman rm -f -t 0 -i build; podman run --name build {images.BUSYBOX_IMAGE} "
        "sh -c 'echo made on node-a > /etc/origin' && podman commit -q build "
        f"{image} >/dev/null && podman rm build",
    )
    image_id = sh(node_a, f"podman image inspect --format '{{{{.Id}}}}' {image}")
    assert sh(node_b, f"podman image exists {image} && echo yes || echo no") == "no"
    run_counter(node_a, "shipped", labels={constants.NAMESPACE_LABEL: namespace}, image=image)
    wait_counting(node_a, "shipped", above=5)

    body = migrate(
        custom,
        namespace,
        {"source": {"node": "node-a", "container": "shipped"}, "target": {"node": "node-b"}},
    )
    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert sh(node_b, f"podman image inspect --format '{{{{.Id}}}}' {image}") == image_id
    assert sh(node_b, "podman exec shipped cat /etc/origin") == "made on node-a"
    wait_counting(node_b, "shipped", above=read_count(node_b, "shipped"))
    sh(node_b, "podman rm -f -t 0 shipped")


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"source": {"node": "node-z", "container": "victim"}}, "SourceNodeNotFound"),
        (
            {"source": {"node": "node-a", "container": "victim"}, "target": {"node": "node-z"}},
            "TargetNodeNotFound",
        ),
        ({"source": {"node": "node-a", "container": "nosuch"}}, "ContainerNotFound"),
        ({"source": {"node": "node-a", "container": "stopped"}}, "ContainerNotRunning"),
        ({"source": {"node": "node-a", "container": "foreign"}}, "NamespaceNotPermitted"),
        (
            {"source": {"node": "node-a", "container": "victim"}, "tcpEstablished": True},
            "TCPEstablishedAcrossNodes",
        ),
    ],
)
def test_bad_input_fails_with_a_reason_and_touches_nothing(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    namespace: str,
    spec: dict[str, Any],
    reason: str,
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    start_counter(node_a, "victim", namespace)
    start_counter(node_a, "foreign", "someone-else")
    start_counter(node_a, "stopped", namespace)
    sh(node_a, "podman stop -t 0 stopped")
    before = read_count(node_a, "victim")

    body = migrate(custom, namespace, spec)
    assert body["status"]["phase"] == "Failed"
    succeeded = condition(body, "Succeeded")
    assert succeeded["status"] == "False"
    assert succeeded["reason"] == reason
    assert succeeded["message"]
    assert condition(body, "Validated")["status"] == "False"
    # Nothing was touched: the source counts on, nothing appeared on node-b.
    wait_counting(node_a, "victim", above=before)
    wait_counting(node_a, "foreign", above=0)
    assert not exists(node_b, "victim")


def test_source_equal_to_target_is_refused_by_the_api_server(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    with pytest.raises(ApiException) as refused:
        migrate(
            custom,
            namespace,
            {"source": {"node": "node-a", "container": "web"}, "target": {"node": "node-a"}},
        )
    assert refused.value.status == 422
    assert "target.node" in refused.value.body


def test_a_name_taken_on_the_target_is_refused_before_the_freeze(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    start_counter(node_a, "clash", namespace)
    # A different container already holds the name on the target.
    sh(
        node_b,
        f"podman rm -f -t 0 -i clash; podman run -d --name clash {images.BUSYBOX_IMAGE} sleep 1000",
    )
    occupant = sh(node_b, "podman inspect --format '{{.Id}}' clash")

    body = migrate(
        custom,
        namespace,
        {"source": {"node": "node-a", "container": "clash"}, "target": {"node": "node-b"}},
    )
    status = body["status"]
    assert status["phase"] == "Failed", status
    assert condition(body, "Succeeded")["reason"] == "TargetNameTaken"
    assert "Checkpointing" not in [t["phase"] for t in status["phaseTransitions"]]
    logged = logged_counts(node_a, "clash")
    assert logged == list(range(1, len(logged) + 1))
    wait_counting(node_a, "clash", above=logged[-1])
    assert sh(node_b, "podman inspect --format '{{.Id}}' clash") == occupant
    sh(node_b, "podman rm -f -t 0 clash")
    sh(node_a, "podman rm -f -t 0 clash")


def test_a_restore_that_fails_on_the_target_rolls_back_to_a_running_source(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    # The container bind-mounts a directory that only node-a has: nothing the
    # helpers publish tells, so the restore on node-b is where it fails.
    sh(node_b, "podman rm -f -t 0 -i mounted; rm -rf /srv/only-on-a")
    sh(
        node_a,
        "mkdir -p /srv/only-on-a; podman rm -f -t 0 -i mounted; "
        f"podman run -d --name mounted --label {constants.NAMESPACE_LABEL}={namespace} "
        f"-v /srv/only-on-a:/data {images.BUSYBOX_IMAGE} sh -c '{counter_script()}'",
    )
    wait_counting(node_a, "mounted", above=0)

    body = migrate(
        custom,
        namespace,
        {"source": {"node": "node-a", "container": "mounted"}, "target": {"node": "node-b"}},
    )
    status = body["status"]
    assert status["phase"] == "Failed", status
    failed = condition(body, "Succeeded")
    assert failed["reason"] == "RestoreFailed", failed
    assert "only-on-a" in failed["message"], "the message names what was missing"
    assert "RollingBack" in [t["phase"] for t in status["phaseTransitions"]]
    # The source is back and counting on from where it was frozen; node-b keeps nothing.
    logged = logged_counts(node_a, "mounted")
    assert logged == list(range(1, len(logged) + 1))
    wait_counting(node_a, "mounted", above=logged[-1])
    assert not exists(node_b, "mounted")
    sh(node_a, "podman rm -f -t 0 mounted")


def test_deleting_a_migration_in_flight_cancels_it_and_keeps_the_source(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    # 256 MiB of random data in a tmpfs: the dump takes seconds, long enough to delete
    # the resource while the source is frozen.
    run_counter(
        node_a, "heavy", labels={constants.NAMESPACE_LABEL: namespace}, blob_bytes=256 << 20
    )
    wait_counting(node_a, "heavy", above=5, timeout=60)
    sh(node_b, "podman rm -f -t 0 -i heavy")
    name = f"m-{uuid.uuid4().hex[:6]}"
    create_migration(
        custom,
        namespace,
        name,
        {
            "source": {"node": "node-a", "container": "heavy"},
            "target": {"node": "node-b"},
            "compression": "none",
        },
    )
    deadline = time.monotonic() + 60
    while (phase := get(custom, namespace, name).get("status", {}).get("phase")) not in (
        "Checkpointing",
        "Transferring",
    ):
        assert phase not in FINAL, f"finished ({phase}) before it could be deleted"
        assert time.monotonic() < deadline, f"never reached the freeze: {phase}"
        time.sleep(0.05)
    uid = get(custom, namespace, name)["metadata"]["uid"]
    # Let CRIU get well into the dump (it takes seconds here) before deleting.
    time.sleep(1.5)
    custom.delete_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, constants.CONTAINER_MIGRATION_PLURAL, name
    )

    deadline = time.monotonic() + 120
    while not gone(custom, namespace, name):
        assert time.monotonic() < deadline, "the finalizer never let the resource go"
        time.sleep(0.2)
    # The deletion came after the freeze: the source was checkpointed and rolled back
    # (restored from its checkpoint), not left alone.
    restored = sh(node_a, "podman inspect --format '{{.State.Restored}}' heavy")
    assert restored == "true", "the deletion came before the freeze: nothing was rolled back"
    # The source runs, counting on from where it was frozen; nothing is left on node-b.
    logged = logged_counts(node_a, "heavy")
    assert logged == list(range(1, len(logged) + 1))
    wait_counting(node_a, "heavy", above=logged[-1])
    assert not exists(node_b, "heavy")
    for node in (node_a, node_b):
        assert sh(node, f"ls /var/lib/ferry-helper/staging/{uid} 2>/dev/null || true") == ""
    sh(node_a, "podman rm -f -t 0 heavy")


def test_a_finished_migration_reapplied_changes_nothing_and_its_ttl_removes_it(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str, tmp_path: Path
) -> None:
    """What a GitOps tool does: apply the same manifest again and again."""
    node_a, node_b = ferry.node_specs()[:2]
    start_counter(node_a, "gitops", namespace)
    sh(node_b, "podman rm -f -t 0 -i gitops")
    manifest = tmp_path / "move-gitops.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": constants.API_VERSION,
                "kind": constants.CONTAINER_MIGRATION_KIND,
                "metadata": {"name": "move-gitops", "namespace": namespace},
                "spec": {
                    "source": {"node": node_a.name, "container": "gitops"},
                    "target": {"node": node_b.name},
                    "ttlSecondsAfterFinished": 10,
                },
            }
        )
    )
    kubectl = [str(ferry.bin_dir / "kubectl"), f"--kubeconfig={ferry.admin_kubeconfig}"]
    procs.run([*kubectl, "apply", "-f", manifest])
    body = wait_final(custom, namespace, "move-gitops", timeout=120)
    assert body["status"]["phase"] == "Succeeded", body["status"]

    again = procs.run([*kubectl, "apply", "-f", manifest]).stdout
    assert "unchanged" in again, again
    after = get(custom, namespace, "move-gitops")
    assert after["metadata"]["generation"] == body["metadata"]["generation"]
    assert after["status"]["phase"] == "Succeeded"
    assert not exists(node_a, "gitops"), "a re-apply must not move it again"
    wait_counting(node_b, "gitops", above=read_count(node_b, "gitops"))

    deadline = time.monotonic() + 60
    while not gone(custom, namespace, "move-gitops"):
        assert time.monotonic() < deadline, "ttlSecondsAfterFinished never removed it"
        time.sleep(0.5)
    # Deleting a finished migration touches no container.
    wait_counting(node_b, "gitops", above=read_count(node_b, "gitops"))
    assert not exists(node_a, "gitops")
    sh(node_b, "podman rm -f -t 0 gitops")


def test_a_criu_failure_says_what_broke_and_what_to_do(
    ferry: ClusterConfig,
    custom: client.CustomObjectsApi,
    admin_api: client.ApiClient,
    namespace: str,
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    run_tcp_talker(node_a, "talker", labels={constants.NAMESPACE_LABEL: namespace})
    body = migrate(
        custom,
        namespace,
        {"source": {"node": node_a.name, "container": "talker"}, "target": {"node": node_b.name}},
    )
    failed = condition(body, "Succeeded")
    assert (body["status"]["phase"], failed["reason"]) == ("Failed", "CheckpointFailed"), failed
    assert "inet: Connected TCP socket" in failed["message"], "CRIU's own decisive line"
    assert "close them before a migration" in failed["message"], "and what to do about it"
    assert sh(node_a, "podman inspect --format '{{.State.Status}}' talker") == "running"
    assert not exists(node_b, "talker")
    # The whole CRIU log: kept on the node, and readable through the API without a shell there.
    uid = body["metadata"]["uid"]
    assert "Connected TCP socket" in sh(node_a, f"cat {LOGS}/{uid}/checkpoint.criu.log")
    logs = body["status"]["failureLogs"]
    assert "kubectl ferry logs" in body["status"]["message"]
    assert logs["nodes"] == [node_a.name]
    files = config_map_files(admin_api, namespace, logs["configMap"])
    assert sorted(files) == sorted(logs["files"])
    criu_log = files[f"{node_a.name}.checkpoint.criu.log"]
    assert "Connected TCP socket" in criu_log
    assert "Dumping FAILED" in criu_log, "the whole log, not only its error lines"
    assert "exit code: " in files[f"{node_a.name}.checkpoint.podman.txt"]
    sh(node_a, "podman rm -f -t 0 talker")


def test_a_kept_checkpoint_archive_stays_with_its_migration_and_goes_with_it(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    sh(node_b, "podman rm -f -t 0 -i keeper")
    start_counter(node_a, "keeper", namespace)
    body = migrate(
        custom,
        namespace,
        {
            "source": {"node": node_a.name, "container": "keeper"},
            "target": {"node": node_b.name},
            "keepCheckpoint": True,
        },
    )
    assert body["status"]["phase"] == "Succeeded", body["status"]
    uid, name = body["metadata"]["uid"], body["metadata"]["name"]
    staged = f"/var/lib/ferry-helper/staging/{uid}"
    assert "checkpoint.tar" in sh(node_a, f"ls {staged}"), "the source kept no archive"
    custom.delete_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, constants.CONTAINER_MIGRATION_PLURAL, name
    )
    deadline = time.monotonic() + 60
    while not gone(custom, namespace, name):
        assert time.monotonic() < deadline, "the migration was never released"
        time.sleep(0.3)
    for node in (node_a, node_b):
        assert sh(node, f"ls -d {staged} 2>/dev/null || true") == "", f"{node.name} kept it"
    wait_counting(node_b, "keeper", above=read_count(node_b, "keeper"))
    sh(node_b, "podman rm -f -t 0 keeper")


def test_a_former_field_name_is_accepted_with_a_warning(
    ferry: ClusterConfig, namespace: str
) -> None:
    """A manifest from before pageServerTLS was renamed still applies; the API server warns."""
    manifest = yaml.safe_dump(
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.CONTAINER_MIGRATION_KIND,
            "metadata": {"name": "old-names", "namespace": namespace},
            "spec": {"source": {"node": "node-a", "container": "web"}, "pageServerTls": False},
        }
    )
    applied = procs.run(
        [*cluster.kubectl(ferry), "apply", "--dry-run=server", "-f", "-"],
        input_text=manifest,
    )
    assert "created (server dry run)" in applied.stdout
    assert applied.stderr.startswith("Warning: "), applied.stderr
    assert "spec.pageServerTls is deprecated" in applied.stderr
    assert "rename it spec.pageServerTLS" in applied.stderr
