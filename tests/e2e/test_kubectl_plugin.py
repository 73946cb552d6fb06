"""kubectl ferry end to end: the plugin run by kubectl, as a user runs it, on the local cluster.

kubectl finds ``kubectl-ferry`` on PATH (the virtualenv's bin directory, where
the package installs it) and passes it the arguments after ``ferry``. Output
goes to a pipe, so it is the plain one: phase lines, then the timings table.
Every command runs here through the real ``kubectl`` binary: ``-o
yaml|json|name|wide``, ``apply`` twice (server-side apply: the second is
``unchanged``), ``--dry-run=server`` (the API server checks, keeps nothing),
``cancel``, ``checkpoint``, ``restore``, ``version``, impersonation, and
kubectl's own completion of ``kubectl ferry`` through ``kubectl_complete-ferry``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ferry_pods
import pytest
import yaml
from ferry_api import constants
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import (
    container_state,
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
    items = json.loads(listed.stdout)["items"]
    assert [
        (m["metadata"]["name"], m["status"]["phase"], m["spec"]["source"]["container"])
        for m in items
    ] == [("move-nosuch", "Failed", "nosuch")]
    everywhere = kubectl_ferry(ferry, "ls", "-A")
    assert everywhere.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.split()[:3] == [namespace, "move-nosuch", "Failed"]
               for line in everywhere.stdout.splitlines())  # fmt: skip


def test_nodes_lists_every_node_with_its_criu(ferry: ClusterConfig) -> None:
    done = kubectl_ferry(ferry, "nodes", "-o", "json")
    assert done.returncode == 0, done.stderr
    nodes = {n["status"]["nodeName"]: n["status"] for n in json.loads(done.stdout)["items"]}
    assert set(nodes) == {n.name for n in ferry.node_specs()}
    for node in nodes.values():
        assert [c["status"] for c in node["conditions"] if c["type"] == "Ready"] == ["True"]
        assert node["criu"]["version"], node
        assert [r["name"] for r in node["runtimes"]] == ["podman", "docker"]
    table = kubectl_ferry(ferry, "nodes").stdout.splitlines()
    assert table[0].split()[:5] == ["NODE", "READY", "ADDRESS", "RUNTIMES", "CRIU"]
    assert len(table) == 1 + len(nodes)
    wide = kubectl_ferry(ferry, "nodes", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-3:] == ["CRI", "PROTOCOL", "HEARTBEAT"]
    names = kubectl_ferry(ferry, "nodes", "-o", "name").stdout.split()
    assert names == sorted(f"nodehelper.ferry.dev/{n}" for n in nodes)


def test_errors_are_one_line_naming_the_resource(ferry: ClusterConfig, namespace: str) -> None:
    done = kubectl_ferry(ferry, "watch", "nosuch", "-n", namespace)
    assert (done.returncode, done.stdout) == (3, ""), "3: the API (not found), not a result"
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
        status = json.loads(shown.stdout).get("status") or {} if shown.returncode == 0 else {}
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


def kubectl_complete(config: ClusterConfig, *words: str) -> list[str]:
    """What kubectl itself completes for ``kubectl ferry WORDS``: it runs kubectl_complete-ferry."""
    plugin_dir = Path(sys.executable).parent
    assert (plugin_dir / "kubectl_complete-ferry").is_file(), "the package installs it"
    env = {
        **os.environ,
        "PATH": f"{plugin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(config.admin_kubeconfig),
    }
    done = subprocess.run(
        [str(config.bin_dir / "kubectl"), "__complete", "ferry", *words],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [line.split("\t")[0] for line in done.stdout.splitlines()]


def phase_of(admin_api: client.ApiClient, namespace: str, name: str) -> str | None:
    for migration in migrations(admin_api, namespace):
        if migration["metadata"]["name"] == name:
            return str((migration.get("status") or {}).get("phase"))
    return None


def test_output_formats_selectors_and_names_that_feed_the_next_command(
    ferry: ClusterConfig, namespace: str
) -> None:
    created = kubectl_ferry(
        ferry, "migrate", "nosuch", "--from", "node-a", "--name", "fmt-nosuch",
        "-n", namespace, "-o", "name",
    )  # fmt: skip
    assert created.returncode == 1, "followed (quietly) to its failure: a result, exit 1"
    assert created.stdout == "containermigration.ferry.dev/fmt-nosuch\n"

    as_json = json.loads(kubectl_ferry(ferry, "list", "-n", namespace, "-o", "json").stdout)
    as_yaml = yaml.safe_load(kubectl_ferry(ferry, "list", "-n", namespace, "-o", "yaml").stdout)
    for listed in (as_json, as_yaml):
        assert (listed["apiVersion"], listed["kind"]) == ("v1", "List")
        (only,) = listed["items"]
        assert (only["kind"], only["metadata"]["name"]) == ("ContainerMigration", "fmt-nosuch")
        assert only["status"]["phase"] == "Failed"
    names = kubectl_ferry(ferry, "list", "-n", namespace, "-o", "name").stdout
    assert names == "containermigration.ferry.dev/fmt-nosuch\n"
    # kubectl names it the same way.
    assert ferry_pods.kubectl(ferry, "get", "cmig", "-n", namespace, "-o", "name") == names.strip()

    # -o name's form names it for the next command.
    watched = kubectl_ferry(ferry, "watch", names.strip(), "-n", namespace, "-o", "yaml")
    assert watched.returncode == 1
    assert yaml.safe_load(watched.stdout)["status"]["phase"] == "Failed"

    wide = kubectl_ferry(ferry, "list", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-1] == "REASON"
    assert wide[1].split()[-1] == "ContainerNotFound"

    ferry_pods.kubectl(ferry, "label", "cmig", "fmt-nosuch", "team=web", "-n", namespace)
    kubectl_ferry(ferry, "migrate", "nosuch", "--from", "node-a", "--name", "other",
                  "-n", namespace, "--no-watch")  # fmt: skip
    selected = kubectl_ferry(ferry, "list", "-n", namespace, "-l", "team=web", "-o", "name")
    assert selected.stdout == "containermigration.ferry.dev/fmt-nosuch\n"


def test_apply_twice_is_a_no_op_and_a_changed_spec_is_one_line(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    start_counter(node_a, "applied", namespace)
    sh(node_b, "podman rm -f -t 0 -i applied")
    document: dict[str, Any] = {
        "apiVersion": constants.API_VERSION,
        "kind": "ContainerMigration",
        "metadata": {"name": "move-applied"},
        "spec": {
            "source": {"node": node_a.name, "container": "applied"},
            "target": {"node": node_b.name},
        },
    }
    path = tmp_path / "move-applied.yaml"
    path.write_text(yaml.safe_dump(document))

    # The API server checks it (schema, CEL) and keeps nothing.
    checked = kubectl_ferry(ferry, "apply", "-f", str(path), "-n", namespace, "--dry-run=server")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "containermigration.ferry.dev/move-applied created (server dry run)\n"
    assert migrations(admin_api, namespace) == []

    first = kubectl_ferry(ferry, "apply", "-f", str(path), "-n", namespace)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines()[0] == "containermigration.ferry.dev/move-applied created"
    assert f"Succeeded: applied moved {node_a.name} -> {node_b.name}" in first.stdout
    (before,) = migrations(admin_api, namespace)

    second = kubectl_ferry(ferry, "apply", "-f", str(path), "-n", namespace)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.splitlines()[0] == "containermigration.ferry.dev/move-applied unchanged"
    (after,) = migrations(admin_api, namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    managers = {(m["manager"], m["operation"]) for m in after["metadata"]["managedFields"]}
    assert ("kubectl-ferry", "Apply") in managers, managers
    # It moved once: it counts on at the target, and nothing came back to the source.
    assert sh(node_a, "podman ps -a -q --filter name=^applied$") == ""
    wait_counting(node_b, "applied", above=read_count(node_b, "applied"))

    # A changed spec: the CRD's CEL rule refuses it, told in one line.
    document["spec"]["compression"] = "gzip"
    path.write_text(yaml.safe_dump(document))
    for extra in ("--dry-run=server", "--no-watch"):
        changed = kubectl_ferry(ferry, "apply", "-f", str(path), "-n", namespace, extra)
        assert (changed.returncode, changed.stdout) == (3, ""), changed.stderr
        assert changed.stderr.count("\n") == 1, changed.stderr
        assert "spec is immutable" in changed.stderr
    sh(node_b, "podman rm -f -t 0 applied")


def test_dry_run_server_validates_on_the_server_and_keeps_nothing(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    done = kubectl_ferry(
        ferry, "migrate", "web", "--from", "node-a", "--to", "node-b", "--timeout", "2m",
        "-n", namespace, "--dry-run=server", "-o", "yaml",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = yaml.safe_load(done.stdout)
    assert body["metadata"]["name"].startswith("web-"), "the server picked the name"
    assert body["metadata"]["uid"], "as the API server would have stored it"
    assert body["spec"]["timeoutSeconds"] == 120, "--timeout 2m"
    assert migrations(admin_api, namespace) == []
    said = kubectl_ferry(
        ferry, "checkpoint", "web", "--node", "node-a", "--name", "web-cp", "-n", namespace,
        "--dry-run=server",
    )  # fmt: skip
    assert said.stdout == "containercheckpoint.ferry.dev/web-cp created (server dry run)\n"


def test_cancel_rolls_a_migration_in_flight_back(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    # 256 MiB in a tmpfs: the dump takes seconds, long enough to cancel mid-flight.
    run_counter(
        node_a, "heavy", labels={constants.NAMESPACE_LABEL: namespace}, blob_bytes=256 << 20
    )
    wait_counting(node_a, "heavy", above=5, timeout=60)
    sh(node_b, "podman rm -f -t 0 -i heavy")
    started = kubectl_ferry(
        ferry, "migrate", "heavy", "--from", node_a.name, "--to", node_b.name,
        "--name", "move-heavy", "--compression", "none", "-n", namespace, "--no-watch",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while (phase := phase_of(admin_api, namespace, "move-heavy")) not in (
        "Checkpointing",
        "Transferring",
    ):
        assert phase not in ("Succeeded", "Failed"), f"ended {phase} before the cancel"
        assert time.monotonic() < deadline, f"never reached the freeze: {phase}"
        time.sleep(0.05)

    cancelled = kubectl_ferry(ferry, "cancel", "move-heavy", "-n", namespace)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    lines = cancelled.stdout.splitlines()
    assert lines[0].startswith("containermigration.ferry.dev/move-heavy cancelled in phase ")
    assert lines[-1] == "Cancelled: move-heavy rolled back; the workload runs on its source node"
    deadline = time.monotonic() + 60
    while phase_of(admin_api, namespace, "move-heavy") is not None:
        assert time.monotonic() < deadline, "the finalizer never let it go"
        time.sleep(0.2)
    # The source runs on, from where it was frozen; nothing is on the target.
    logged = logged_counts(node_a, "heavy")
    assert logged == list(range(1, len(logged) + 1))
    wait_counting(node_a, "heavy", above=logged[-1])
    assert sh(node_b, "podman ps -a -q --filter name=^heavy$") == ""
    gone = kubectl_ferry(ferry, "cancel", "move-heavy", "-n", namespace)
    assert gone.returncode == 3, "not found: the API"
    sh(node_a, "podman rm -f -t 0 heavy")


def test_checkpoint_then_restore_on_another_node(ferry: ClusterConfig, namespace: str) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    start_counter(node_a, "keep", namespace)
    sh(node_b, "podman rm -f -t 0 -i keep")
    taken = kubectl_ferry(
        ferry, "checkpoint", "keep", "--node", node_a.name, "--name", "keep-cp", "-n", namespace
    )
    assert taken.returncode == 0, taken.stdout + taken.stderr
    lines = taken.stdout.splitlines()
    assert lines[0] == "containercheckpoint.ferry.dev/keep-cp created"
    assert any(line.startswith(f"Ready: keep checkpointed on {node_a.name}") for line in lines)
    assert f"What it holds: kubectl ferry inspect keep-cp -n {namespace}" in lines
    assert container_state(node_a, "keep") == "running", "a checkpoint leaves it running"

    restored = kubectl_ferry(
        ferry, "restore", "keep-cp", "--node", node_b.name, "--name", "keep-again",
        "-n", namespace, "-o", "json",
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    body = json.loads(restored.stdout)
    assert (body["status"]["phase"], body["status"]["node"]) == ("Succeeded", node_b.name)
    wait_counting(node_b, "keep", above=read_count(node_b, "keep"))
    again = kubectl_ferry(ferry, "watch", "crs/keep-again", "-n", namespace)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1].startswith(
        f"Succeeded: keep restored on {node_b.name} from keep-cp"
    )
    for node in (node_a, node_b):
        sh(node, "podman rm -f -t 0 -i keep")


def test_version_impersonation_and_kubectls_own_completion(
    ferry: ClusterConfig, namespace: str
) -> None:
    done = kubectl_ferry(ferry, "version", "-o", "json")
    assert done.returncode == 0, done.stderr
    versions = json.loads(done.stdout)
    assert versions["serverVersion"]["gitVersion"].startswith("v1.34")
    (operator,) = versions["operator"]
    assert "ferry/operator:" in operator["image"], operator
    text = kubectl_ferry(ferry, "version").stdout.splitlines()
    assert [line.split(":")[0] for line in text] == [
        "Client Version", "Server Version", "Operator Version"
    ]  # fmt: skip

    kubectl_ferry(ferry, "migrate", "nosuch", "--from", "node-a", "--name", "comp-nosuch",
                  "-n", namespace, "--no-watch")  # fmt: skip
    refused = kubectl_ferry(ferry, "list", "-n", namespace, "--as", "nobody")
    assert refused.returncode == 3
    assert refused.stderr.startswith(
        f'error: forbidden: you may not list containermigrations in namespace "{namespace}"'
    )
    # Both groups reach the API server, one header each: the second makes it an admin.
    allowed = kubectl_ferry(
        ferry, "list", "-n", namespace, "--as", "nobody", "--as-group", "devs",
        "--as-group", "system:masters", "-o", "name",
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == "containermigration.ferry.dev/comp-nosuch\n"

    assert "cancel" in kubectl_complete(ferry, "ca")
    assert kubectl_complete(ferry, "watch", "-n", namespace, "")[:-1] == ["comp-nosuch"]
    assert "--dry-run" in kubectl_complete(ferry, "checkpoint", "--d")
