"""kubectl ferry end to end: the plugin run by kubectl, as a user runs it, on the local cluster.

kubectl finds ``kubectl-ferry`` on PATH (the virtualenv's bin directory, where
the package installs it) and passes it the arguments after ``ferry``. Output
goes to a pipe, so it is the plain one: phase lines, then the timings table.
"""

from __future__ import annotations

import json
import time
from typing import Any

import ferry_pods
import pytest
from ferry_api import constants
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import (
    logged_counts,
    read_count,
    run_counter,
    run_tcp_talker,
    sh,
    wait_counting,
)
from kubernetes import client
from support import create_resource

pytestmark = pytest.mark.e2e

MOVE_PHASES = [
    "Pending",
    "Validating",
    "ImageStaging",
    "Checkpointing",
    "Transferring",
    "Restoring",
    "Verifying",
    "Succeeded",
]


kubectl_ferry = ferry_pods.kubectl_ferry


def migrations(admin_api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(admin_api).list_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, constants.CONTAINER_MIGRATION_PLURAL
    )
    items: list[dict[str, Any]] = listed["items"]
    return items


def start_counter(node: NodeSpec, name: str, namespace: str) -> None:
    run_counter(node, name, labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, name, above=5)


def test_dry_run_prints_the_manifest_as_json_and_creates_nothing(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    done = kubectl_ferry(
        ferry, "migrate", "web", "--from", "node-a", "--to", "node-b", "--ttl", "600",
        "-n", namespace, "--dry-run", "-o", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert (body["apiVersion"], body["kind"]) == (constants.API_VERSION, "ContainerMigration")
    assert body["metadata"] == {"generateName": "web-", "namespace": namespace}
    assert body["spec"]["source"] == {"node": "node-a", "container": "web"}
    assert body["spec"]["target"] == {"node": "node-b"}
    assert body["spec"]["ttlSecondsAfterFinished"] == 600
    assert migrations(admin_api, namespace) == []


def test_migrate_moves_a_counter_and_reports_phases_and_timings(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    start_counter(node_a, "web", namespace)
    sh(node_b, "podman rm -f -t 0 -i web")

    done = kubectl_ferry(
        ferry, "migrate", "web", "--from", node_a.name, "--to", node_b.name, "-n", namespace
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    (created,) = [m["metadata"]["name"] for m in migrations(admin_api, namespace)]
    assert lines[0] == f"containermigration.ferry.dev/{created} created"
    assert created.startswith("web-")
    phases = [line.split()[-1] for line in lines if line and line.split()[-1] in MOVE_PHASES]
    assert phases == MOVE_PHASES, done.stdout
    assert f"Succeeded: web moved {node_a.name} -> {node_b.name}" in lines
    table = {line.split()[0]: line.split()[1:] for line in lines if line.strip()}
    for step in ("checkpoint", "transfer", "restore", "downtime", "total"):
        value, unit = table[step]
        assert (float(value) > 0, unit) == (True, "s"), step
    assert table["archive"][1] in ("kB", "MB"), "archive size, human-readable"
    assert float(table["CRIU"][1]) > 0, "CRIU frozen time"
    assert "\x1b[" not in done.stdout, "no colours in a pipe"

    # What the user checks next: it counts on at the target, from where it was.
    assert sh(node_a, "podman ps -a -q --filter name=^web$") == "", "source gone after a move"
    logged = logged_counts(node_b, "web")
    assert logged == list(range(1, len(logged) + 1)), "the process started over"
    wait_counting(node_b, "web", above=read_count(node_b, "web"))

    # watch on a finished migration reports at once, with the same outcome.
    again = kubectl_ferry(ferry, "watch", created, "-n", namespace, "-o", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"]["phase"] == "Succeeded"
    sh(node_b, "podman rm -f -t 0 web")


def test_a_failed_migration_exits_1_and_list_shows_it(ferry: ClusterConfig, namespace: str) -> None:
    created = kubectl_ferry(
        ferry, "migrate", "nosuch", "--from", "node-a", "--name", "move-nosuch",
        "-n", namespace, "--no-watch", "-o", "json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["metadata"]["name"] == "move-nosuch"

    watched = kubectl_ferry(ferry, "watch", "move-nosuch", "-n", namespace)
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "Failed (ContainerNotFound): " in watched.stdout

    listed = kubectl_ferry(ferry, "list", "-n", namespace, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [(m["name"], m["phase"], m["container"]) for m in json.loads(listed.stdout)] == [
        ("move-nosuch", "Failed", "nosuch")
    ]
    everywhere = kubectl_ferry(ferry, "ls", "-A")
    assert everywhere.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:3] == [namespace, "move-nosuch", "Failed"]
               for line in everywhere.stdout.splitlines())  # fmt: skip


def test_nodes_lists_every_node_with_its_criu(ferry: ClusterConfig) -> None:
    done = kubectl_ferry(ferry, "nodes", "-o", "json")
    assert done.returncode == 0, done.stderr
    nodes = {n["node"]: n for n in json.loads(done.stdout)}
    assert set(nodes) == {n.name for n in ferry.node_specs()}
    for node in nodes.values():
        assert node["ready"] == "True"
        assert node["criuVersion"], node
        assert [r["name"] for r in node["runtimes"]] == ["podman", "docker"]
    table = kubectl_ferry(ferry, "nodes").stdout.splitlines()
    assert table[0].split()[:5] == ["NODE", "READY", "ADDRESS", "RUNTIMES", "CRIU"]
    assert len(table) == 1 + len(nodes)


def test_errors_are_one_line_naming_the_resource(ferry: ClusterConfig, namespace: str) -> None:
    done = kubectl_ferry(ferry, "watch", "nosuch", "-n", namespace)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f'error: containermigration "nosuch" in namespace "{namespace}" not found\n'
    )


def test_logs_prints_the_whole_criu_log_of_a_failed_migration(
    ferry: ClusterConfig, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    run_tcp_talker(node_a, "talker", labels={constants.NAMESPACE_LABEL: namespace})
    moved = kubectl_ferry(
        ferry, "migrate", "talker", "--from", node_a.name, "--to", node_b.name,
        "--name", "move-talker", "-n", namespace,
    )  # fmt: skip
    assert moved.returncode == 1, moved.stdout + moved.stderr
    assert "Failed (CheckpointFailed): " in moved.stdout
    assert "kubectl ferry logs move-talker" in moved.stdout

    logs = kubectl_ferry(ferry, "logs", "move-talker", "-n", namespace)
    assert logs.returncode == 0, logs.stderr
    criu_log = f"{node_a.name}.checkpoint.criu.log"
    assert f"==> {criu_log} <==" in logs.stdout
    assert "Connected TCP socket" in logs.stdout
    assert "Dumping FAILED" in logs.stdout, "the whole log, not only its error lines"
    as_json = json.loads(
        kubectl_ferry(ferry, "logs", "move-talker", "-n", namespace, "-o", "json").stdout
    )
    assert set(as_json) == {criu_log, f"{node_a.name}.checkpoint.podman.txt"}
    assert sh(node_a, "podman inspect --format '{{.State.Status}}' talker") == "running"
    sh(node_a, "podman rm -f -t 0 talker")


def test_inspect_shows_what_a_checkpoint_holds(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    start_counter(node, "snap", namespace)
    # A second process for certain: the counter's own `sleep` comes and goes.
    sh(node, "podman exec -d snap sleep 100000")
    custom = client.CustomObjectsApi(admin_api)
    create_resource(
        custom,
        namespace,
        constants.CONTAINER_CHECKPOINT_PLURAL,
        "snap-cp",
        {"source": {"node": node.name, "container": "snap"}},
    )
    deadline = time.monotonic() + 60
    while True:
        shown = kubectl_ferry(ferry, "inspect", "snap-cp", "-n", namespace, "-o", "json")
        status = json.loads(shown.stdout) if shown.returncode == 0 else {}
        if status.get("phase") in ("Ready", "Failed"):
            break
        assert time.monotonic() < deadline, shown.stdout + shown.stderr
        time.sleep(0.5)
    assert status["phase"] == "Ready", status
    assert status["summary"]["processes"] >= 2, status["summary"]  # the shell and the sleeper
    text = kubectl_ferry(ferry, "inspect", "snap-cp", "-n", namespace).stdout
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    assert fields["Phase"].strip() == "Ready"
    assert int(fields["Processes"]) == status["summary"]["processes"]
    assert fields["Memory"].strip().endswith(("kB", "MB")), text
    assert fields["Runtime"].strip().startswith("podman "), text
    assert fields["CRIU"].strip().startswith("4."), text
    sh(node, "podman rm -f -t 0 snap")
