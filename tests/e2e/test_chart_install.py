"""The chart as a cluster admin meets it: install, least privilege, upgrade, uninstall.

Installed with ``helm upgrade --install`` into the real API server; the operator
and helpers then run with tokens of the chart's own ServiceAccounts (see
ferry_cluster.deploy), so every permission asserted here is the chart's.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import ferry_pods
import pytest
from ferry_api import constants
from ferry_cluster import deploy, images, nodes
from ferry_cluster.config import ClusterConfig
from ferry_cluster.workloads import logged_counts, read_count, run_counter, sh, wait_counting
from kubernetes import client
from support import (
    create_migration,
    get_resource,
    restore_checkpoint,
    take_checkpoint,
    wait_migration,
)

pytestmark = pytest.mark.e2e

OPERATOR = f"system:serviceaccount:{deploy.NAMESPACE}:{deploy.RELEASE}-operator"
HELPER = f"system:serviceaccount:{deploy.NAMESPACE}:{deploy.RELEASE}-node-helper"
#: Where a helper keeps ContainerCheckpoints' archives.
STORE = "/var/lib/ferry-helper/checkpoints"


def kubectl(config: ClusterConfig, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [str(config.bin_dir / "kubectl"), f"--kubeconfig={config.admin_kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def can_i(config: ClusterConfig, user: str, *args: str) -> bool:
    return kubectl(config, "auth", "can-i", f"--as={user}", *args, check=False) == "yes"


@pytest.fixture(scope="module")
def installed(local_cluster: ClusterConfig) -> ClusterConfig:
    deploy.deploy(local_cluster)
    return local_cluster


@pytest.mark.parametrize(
    ("user", "verb", "resource", "allowed"),
    [
        (OPERATOR, "patch", "containermigrations.ferry.dev:status", True),
        (OPERATOR, "watch", "containermigrations.ferry.dev", True),
        (OPERATOR, "list", "nodehelpers.ferry.dev", True),
        (OPERATOR, "patch", "nodehelpers.ferry.dev", False),
        (OPERATOR, "get", "secrets", False),
        # kubectl reads "pods/exec" as the pod named exec: the subresource is asked for so.
        (OPERATOR, "create", "pods:exec", False),
        (OPERATOR, "create", "pods", True),  # a PodMigration's replacement
        (OPERATOR, "create", "nodes:checkpoint", False),  # the helpers call their kubelet
        (OPERATOR, "delete", "nodes", False),
        (OPERATOR, "create", "deployments.apps", False),
        (HELPER, "patch", "nodehelpers.ferry.dev:status", True),
        # Its NodeHelper's owner (its Node); the admission policy keeps it to its own.
        (HELPER, "patch", "nodehelpers.ferry.dev", True),
        (HELPER, "get", "nodes", True),
        (HELPER, "patch", "nodes", False),
        (HELPER, "create", "nodehelpers.ferry.dev", True),
        (HELPER, "delete", "nodehelpers.ferry.dev", False),
        (HELPER, "patch", "containermigrations.ferry.dev", False),
        (HELPER, "get", "secrets", False),
        (HELPER, "create", "nodes:checkpoint", True),
        (HELPER, "create", "nodes:proxy", False),
        (HELPER, "create", "pods", False),
    ],
)
def test_each_component_may_do_what_it_needs_and_nothing_more(
    installed: ClusterConfig, user: str, verb: str, resource: str, allowed: bool
) -> None:
    name, _, subresource = resource.partition(":")
    extra = [f"--subresource={subresource}"] if subresource else []
    assert can_i(installed, user, verb, name, *extra, "--all-namespaces") is allowed


def test_upgrade_with_changed_values_reaches_the_running_helpers(
    installed: ClusterConfig,
) -> None:
    deploy.deploy(installed, extra={"nodeHelper.heartbeatSeconds": "7"})
    history = json.loads(
        subprocess.run(
            [
                str(installed.bin_dir / "helm"),
                f"--kubeconfig={installed.admin_kubeconfig}",
                "history",
                deploy.RELEASE,
                "-n",
                deploy.NAMESPACE,
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert len(history) >= 2
    daemonset = json.loads(
        kubectl(
            installed,
            "get",
            "ds",
            f"{deploy.RELEASE}-node-helper",
            "-n",
            deploy.NAMESPACE,
            "-o",
            "json",
        )
    )
    env = {
        e["name"]: e.get("value")
        for e in daemonset["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["FERRY_HEARTBEAT_SECONDS"] == "7"
    node = installed.node_specs()[0]
    pid = ferry_pods.pid_in_node(node, ferry_pods.HELPER_COMMAND)
    environ = nodes.run_in(node, ["cat", f"/proc/{pid}/environ"]).stdout
    assert "FERRY_HEARTBEAT_SECONDS=7" in environ.split("\0")


def metrics_endpoints(config: ClusterConfig, service: str) -> list[tuple[str, int]]:
    """(address, port) of every ready endpoint behind ``service``'s `metrics` port."""
    slices = json.loads(
        kubectl(
            config,
            "get",
            "endpointslices",
            "-n",
            deploy.NAMESPACE,
            "-l",
            f"kubernetes.io/service-name={service}",
            "-o",
            "json",
        )
    )["items"]
    return [
        (address, port["port"])
        for endpoint_slice in slices
        for port in endpoint_slice.get("ports") or []
        if port.get("name") == "metrics"
        for endpoint in endpoint_slice.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
        for address in endpoint["addresses"]
    ]


def test_the_metrics_service_answers_prometheus(installed: ClusterConfig) -> None:
    """What a ServiceMonitor scrapes: the operator Service's `metrics` port. The host routes
    to pods but runs no kube-proxy, so the request goes where the Service sends it: to
    each ready address of its EndpointSlices, on the port they name."""
    service_name = f"{deploy.RELEASE}-operator"
    service = json.loads(
        kubectl(installed, "get", "service", service_name, "-n", deploy.NAMESPACE, "-o", "json")
    )
    assert {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )
    deadline = time.monotonic() + 90
    while not (endpoints := metrics_endpoints(installed, service_name)):
        assert time.monotonic() < deadline, "the operator Service has no ready endpoint"
        time.sleep(1)
    operator_ip = ferry_pods.operator_metrics_url(installed).split("/")[2].split(":")[0]
    assert [address for address, _ in endpoints] == [operator_ip]
    for address, port in endpoints:
        with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=10) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"].startswith("text/plain")
            exposition = answer.read().decode()
        # Every metric the dashboard draws; the histograms show even before any migration.
        assert "# TYPE ferry_migrations_total counter" in exposition
        assert "# TYPE ferry_migration_bytes_total counter" in exposition
        for histogram in ("ferry_migration_downtime_seconds", "ferry_migration_duration_seconds"):
            assert f"# TYPE {histogram} histogram" in exposition
            assert f'{histogram}_bucket{{le="+Inf"}}' in exposition


def test_uninstall_mid_migration_leaves_no_stuck_finalizer_and_the_source_running(
    installed: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    node_a = installed.node_specs()[0]
    nodes.run_in(
        node_a,
        [
            "sh",
            "-c",
            "podman rm -f -t 0 -i held; podman run -d --name held "
            f"--label {constants.NAMESPACE_LABEL}={namespace} --tmpfs /data:size=200m "
            f"{images.BUSYBOX_IMAGE} sh -c 'head -c 134217728 /dev/urandom > /data/blob; "
            "while true; do sleep 0.1; done'",
        ],
    )
    blob = ["podman", "exec", "held", "sh", "-c", "wc -c < /data/blob"]
    deadline = time.monotonic() + 60
    while nodes.run_in(node_a, blob, check=False).stdout.strip() != "134217728":
        assert time.monotonic() < deadline, "the workload never filled its memory"
        time.sleep(0.2)
    custom = client.CustomObjectsApi(admin_api)
    create_migration(
        custom,
        namespace,
        "in-flight",
        {"source": {"node": "node-a", "container": "held"}, "compression": "none"},
    )
    # In flight: frozen, or on its way (the 128 MiB dump and transfer take seconds here).
    wait_migration(
        custom,
        namespace,
        "in-flight",
        lambda s: s.get("phase") in ("Checkpointing", "Transferring", "Restoring"),
        timeout=120,
        poll=0.02,
    )

    deploy.undeploy(installed)

    # Cancelled (deleted, rolled back); finished migrations elsewhere stay as records.
    assert kubectl(installed, "get", "containermigrations", "-n", namespace, "-o", "name") == ""
    state = nodes.run_in(
        node_a, ["podman", "inspect", "--format", "{{.State.Status}}", "held"]
    ).stdout.strip()
    assert state == "running", "the source must survive an uninstall"
    left = kubectl(
        installed,
        "get",
        "deployments,daemonsets,serviceaccounts,roles,rolebindings,jobs",
        "-n",
        deploy.NAMESPACE,
        "-l",
        "app.kubernetes.io/name=ferry",
        "-o",
        "name",
    )
    assert left == ""
    cluster_wide = kubectl(
        installed,
        "get",
        "clusterroles,clusterrolebindings,"
        "validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-l",
        "app.kubernetes.io/name=ferry",
        "-o",
        "name",
    )
    assert cluster_wide == ""
    # Kept on purpose (charts/ferry/README.md): the SSH identities, so a reinstall
    # keeps the helpers' trust; and the registry credentials, which the admin made
    # (here the harness), not the chart.
    secrets = kubectl(installed, "get", "secrets", "-n", deploy.NAMESPACE, "-o", "name")
    assert set(secrets.split()) == {
        f"secret/{deploy.RELEASE}-operator-ssh",
        f"secret/{deploy.RELEASE}-node-helper-ssh",
        f"secret/{deploy.REGISTRY_AUTH_SECRET}",
    }
    nodes.run_in(node_a, ["podman", "rm", "-f", "-t", "0", "held"])
    deploy.deploy(installed)  # for the tests after this one


def test_an_uninstall_keeps_stored_checkpoints_and_a_reinstall_restores_them(
    installed: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    node = installed.node_specs()[0]
    custom = client.CustomObjectsApi(admin_api)
    plural = constants.CONTAINER_CHECKPOINT_PLURAL
    run_counter(node, "kept", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, "kept", above=3)
    at = read_count(node, "kept")  # before the checkpoint: it holds this count or more
    ready = take_checkpoint(custom, namespace, "kept-cp", node.name, "kept")
    assert ready["phase"] == "Ready", ready
    uid = get_resource(custom, namespace, plural, "kept-cp")["metadata"]["uid"]
    sh(node, "podman rm -f -t 0 kept")

    deploy.undeploy(installed)

    kept = get_resource(custom, namespace, plural, "kept-cp")
    assert kept["status"]["phase"] == "Ready"
    assert constants.MIGRATION_FINALIZER not in (kept["metadata"].get("finalizers") or [])
    assert sh(node, f"ls {STORE}/{uid}"), "the archive went with the release"

    deploy.deploy(installed)

    done = restore_checkpoint(custom, namespace, "kept-rs", {"checkpointRef": {"name": "kept-cp"}})
    assert done["phase"] == "Succeeded", done
    value = read_count(node, "kept")
    assert value >= at, f"restored from the kept checkpoint (>= {at}), not started over"
    wait_counting(node, "kept", above=value)
    assert logged_counts(node, "kept")[:1] == [1]
    sh(node, "podman rm -f -t 0 kept")
    # The adopted checkpoint is the operator's again: deleting it removes its archive.
    custom.delete_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, plural, "kept-cp"
    )
    deadline = time.monotonic() + 60
    while sh(node, f"ls -d {STORE}/{uid} 2>/dev/null || true"):
        assert time.monotonic() < deadline, "the reinstalled operator did not adopt it"
        time.sleep(0.5)
