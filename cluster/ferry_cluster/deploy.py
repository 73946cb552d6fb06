"""Ferry itself on the local cluster, installed the way a cluster admin would: with Helm.

``helm upgrade --install`` of ``charts/ferry`` creates the ServiceAccounts,
RBAC, the operator's Deployment and the helpers' DaemonSet. There is no
kubelet, so the harness plays it (see kubelet.py): it runs the chart's hook
Jobs, starts one node-helper inside each node from the DaemonSet's pod template
and the operator on the host from the Deployment's, each with a token of its
own ServiceAccount. Chart and harness therefore cannot drift: change the
chart's command, environment or RBAC and the tests run with the change.

Hooks are run by the harness (``--no-hooks`` for Helm), since Helm would wait
for Jobs no kubelet runs: their ServiceAccounts and roles are applied from the
rendered chart, the Job's command runs with that account's token, and the
hook's resources are deleted afterwards, as their delete policy says.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from . import cluster, helperlayer, kubelet, nodes, procs, registry
from .config import ClusterConfig, NodeSpec

NAMESPACE = "ferry-system"
RELEASE = "ferry"
#: The Secret holding the helpers' credentials for the local registry (registry.py).
REGISTRY_AUTH_SECRET = "ferry-registry-auth"  # noqa: S105 - a Secret's name
KUBE_VERSION = "1.34.4"
TOKEN_SECONDS = 24 * 3600
READY_TIMEOUT = 60.0
KEYGEN_HOOK = (
    "ssh-keygen-serviceaccount",
    "ssh-keygen-role",
    "ssh-keygen-rolebinding",
    "ssh-keygen-job",
)
PRE_DELETE_HOOK = (
    "pre-delete-serviceaccount",
    "pre-delete-clusterrole",
    "pre-delete-clusterrolebinding",
    "pre-delete-job",
)


def _kubectl(config: ClusterConfig) -> list[str]:
    return [str(config.bin_dir / "kubectl"), f"--kubeconfig={config.admin_kubeconfig}"]


def _helm(config: ClusterConfig) -> list[str]:
    return [str(config.bin_dir / "helm"), f"--kubeconfig={config.admin_kubeconfig}"]


def deploy_dir(config: ClusterConfig) -> Path:
    return config.state_dir / "ferry"


def chart_dir() -> Path:
    return helperlayer.source_root() / "charts" / "ferry"


def values(
    config: ClusterConfig, *, allow_any_namespace: bool, extra: Mapping[str, str] | None = None
) -> list[str]:
    """Helm ``--set`` flags for the local cluster: faster heartbeats, a free metrics port."""
    settings: dict[str, str] = {
        # CRDs come from crds/ (kubectl), so the tests' own CRD applies never fight Helm.
        "crds.enabled": "false",
        "nodeHelper.heartbeatSeconds": "5",
        "operator.helperStaleSeconds": "30",
        "operator.metrics.port": str(metrics_port(config)),
        "operator.allowAnyNamespace": "true" if allow_any_namespace else "false",
        "nodeHelper.registryAuthSecret": REGISTRY_AUTH_SECRET,
        # Every simulated node runs Docker Engine beside podman.
        "nodeHelper.docker.enabled": "true",
        **(extra or {}),
    }
    return [flag for key, value in settings.items() for flag in ("--set", f"{key}={value}")]


def metrics_port(config: ClusterConfig) -> int:
    return 9090 + config.index


def _render(
    config: ClusterConfig, templates: tuple[str, ...], sets: list[str]
) -> list[dict[str, Any]]:
    args = [
        *_helm(config),
        "template",
        RELEASE,
        str(chart_dir()),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *sets,
    ]
    for template in templates:
        args += ["--show-only", f"templates/{template}.yaml"]
    return [doc for doc in yaml.safe_load_all(procs.run(args).stdout) if doc]


def _apply(config: ClusterConfig, objects: list[dict[str, Any]]) -> None:
    procs.run([*_kubectl(config), "apply", "-f", "-"], input_text=yaml.safe_dump_all(objects))


def _token_kubeconfig(config: ClusterConfig, account: str, out: Path) -> Path:
    """What in-cluster config would give a pod of ``account``: a kubeconfig with its token."""
    return cluster.service_account_kubeconfig(
        config, namespace=NAMESPACE, name=account, seconds=TOKEN_SECONDS, out=out
    )


def apply_crds(config: ClusterConfig) -> None:
    """The CRDs from crds/, server-side (idempotent), once Established."""
    crds = helperlayer.source_root() / "crds"
    kubectl = _kubectl(config)
    procs.run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", crds])
    procs.run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", crds])


def install(
    config: ClusterConfig,
    *,
    allow_any_namespace: bool = False,
    extra: Mapping[str, str] | None = None,
) -> None:
    """CRDs from crds/, the namespace, ``helm upgrade --install``, then the keygen hook."""
    apply_crds(config)
    # The DaemonSet is privileged: the namespace must allow it (charts/ferry/README.md).
    _apply(
        config,
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": NAMESPACE,
                    "labels": {"pod-security.kubernetes.io/enforce": "privileged"},
                },
            }
        ],
    )
    # The cluster's registry, for ContainerCheckpoints kept as images, and the
    # helpers' credentials for it, as a cluster admin would give them.
    registry.ensure(config)
    _apply(
        config,
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": REGISTRY_AUTH_SECRET, "namespace": NAMESPACE},
                "type": "Opaque",
                "stringData": {"auth.json": registry.auth_json(config)},
            }
        ],
    )
    sets = values(config, allow_any_namespace=allow_any_namespace, extra=extra)
    procs.run(
        [
            *_helm(config),
            "upgrade",
            "--install",
            RELEASE,
            str(chart_dir()),
            "--namespace",
            NAMESPACE,
            "--no-hooks",
            *sets,
        ],
        timeout=300,
    )
    run_hook(config, KEYGEN_HOOK, sets)


def run_hook(config: ClusterConfig, templates: tuple[str, ...], sets: list[str]) -> str:
    """Run a hook Job of the chart as its ServiceAccount; then delete its objects."""
    objects = _render(config, templates, sets)
    job = next(o for o in objects if o["kind"] == "Job")
    support = [o for o in objects if o["kind"] != "Job"]
    _apply(config, support)
    with cluster.api_client(config) as api:
        container = kubelet.container_for(
            client.CoreV1Api(api),
            {**job, "metadata": {**job["metadata"], "namespace": NAMESPACE}},
            name=None,
            fields={},
            python=sys.executable,
            source_root=helperlayer.source_root(),
        )
    kube = _token_kubeconfig(
        config,
        container.service_account,
        deploy_dir(config) / f"{job['metadata']['name']}.kubeconfig",
    )
    try:
        output = procs.run(["env", f"KUBECONFIG={kube}", *container.argv], timeout=300).stdout
    finally:
        kube.unlink(missing_ok=True)
        procs.run(
            [*_kubectl(config), "delete", "--ignore-not-found", "-f", "-"],
            input_text=yaml.safe_dump_all(support),
        )
    return output


def workload(config: ClusterConfig, kind: str, name: str) -> dict[str, Any]:
    out = procs.run([*_kubectl(config), "get", kind, name, "-n", NAMESPACE, "-o", "json"]).stdout
    workload: dict[str, Any] = json.loads(out)
    return workload


def helper_pid_file(node: NodeSpec) -> Path:
    return node.state_dir / "helper.pid"


def helper_log(node: NodeSpec) -> Path:
    return node.state_dir / "helper.log"


def start_helper(config: ClusterConfig, node: NodeSpec, daemonset: Mapping[str, Any]) -> None:
    """(Re)start the node-helper inside ``node`` as the DaemonSet's pod would run."""
    stop_helper(node)
    with cluster.api_client(config) as api:
        container = kubelet.container_for(
            client.CoreV1Api(api),
            daemonset,
            name="node-helper",
            fields={"spec.nodeName": node.name, "status.hostIP": str(node.address)},
            python=f"{helperlayer.VENV}/bin/python",
            source_root=helperlayer.source_root(),
        )
    kubelet.write_files(nodes.host_path(node, "/"), container.secret_files)
    kube = _token_kubeconfig(
        config, container.service_account, deploy_dir(config) / f"helper-{node.name}.kubeconfig"
    )
    inside = "/run/ferry/kubeconfig"  # the node's tmpfs: what in-cluster config would be
    target = nodes.host_path(node, inside)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.write_bytes(kube.read_bytes())
    target.chmod(0o600)
    env = {
        **container.env,
        "KUBECONFIG": inside,
        "PYTHONPATH": helperlayer.helper_pythonpath(),
        "PYTHONUNBUFFERED": "1",
    }
    command = nodes.exec_args(node, ["env", *(f"{k}={v}" for k, v in env.items()), *container.argv])
    procs.start(command, pid_file=helper_pid_file(node), log_file=helper_log(node))


def stop_helper(node: NodeSpec) -> None:
    pid = procs.read_pid(helper_pid_file(node), "ferry_helper")
    if pid is not None:
        # nsenter forks the helper and does not forward signals: stop the group.
        procs.stop(pid, group=True)


def operator_pid_file(config: ClusterConfig) -> Path:
    return deploy_dir(config) / "operator.pid"


def operator_log(config: ClusterConfig) -> Path:
    return deploy_dir(config) / "operator.log"


def start_operator(config: ClusterConfig, deployment: Mapping[str, Any]) -> None:
    """(Re)start the operator on the host as the Deployment's pod would run."""
    stop_operator(config)
    with cluster.api_client(config) as api:
        container = kubelet.container_for(
            client.CoreV1Api(api),
            deployment,
            name="operator",
            fields={"metadata.namespace": NAMESPACE},
            python=sys.executable,
            source_root=helperlayer.source_root(),
        )
    # The pod's filesystem, for its Secret volumes: paths in env are mapped into it.
    pod_root = deploy_dir(config) / "operator-root"
    kubelet.write_files(pod_root, container.secret_files)
    env = {
        k: str(pod_root / v.lstrip("/"))
        if any(v.startswith(m) for m in container.secret_files)
        else v
        for k, v in container.env.items()
    }
    kube = _token_kubeconfig(
        config, container.service_account, deploy_dir(config) / "operator.kubeconfig"
    )
    env |= {"KUBECONFIG": str(kube), "PYTHONUNBUFFERED": "1"}
    procs.start(
        ["env", *(f"{k}={v}" for k, v in env.items()), *container.argv, config.operator_marker],
        pid_file=operator_pid_file(config),
        log_file=operator_log(config),
    )


def stop_operator(config: ClusterConfig) -> None:
    pid = procs.read_pid(operator_pid_file(config), config.operator_marker)
    if pid is not None:
        procs.stop(pid)


def wait_for_helpers(config: ClusterConfig) -> None:
    """Until every node's NodeHelper has published its host key."""
    deadline = time.monotonic() + READY_TIMEOUT
    wanted = {n.name for n in config.node_specs()}
    while True:
        out = subprocess.run(
            [
                *_kubectl(config),
                "get",
                "nodehelpers",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.sshHostKey}{'\\n'}{end}",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        ready = {line.split()[0] for line in out.splitlines() if len(line.split()) > 1}
        if wanted <= ready:
            return
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {n.name}:\n" + helper_log(n).read_text(errors="replace")[-1500:]
                for n in config.node_specs()
                if helper_log(n).exists()
            )
            raise RuntimeError(f"node-helpers not ready: {sorted(wanted - ready)}\n{logs}")
        time.sleep(0.3)


def deploy(
    config: ClusterConfig,
    *,
    allow_any_namespace: bool = False,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Install (or upgrade) Ferry and (re)start its processes; idempotent.

    ``extra``: more ``--set`` values for the chart, e.g. {"nodeHelper.sshPort": "7023"}.
    """
    deploy_dir(config).mkdir(parents=True, exist_ok=True, mode=0o700)
    install(config, allow_any_namespace=allow_any_namespace, extra=extra)
    daemonset = workload(config, "daemonset", f"{RELEASE}-node-helper")
    for node in config.node_specs():
        start_helper(config, node, daemonset)
    wait_for_helpers(config)
    start_operator(config, workload(config, "deployment", f"{RELEASE}-operator"))


def undeploy(config: ClusterConfig) -> str:
    """What ``helm uninstall`` does, hooks included: no stuck finalizer is left."""
    sets = values(config, allow_any_namespace=False)
    output = run_hook(config, PRE_DELETE_HOOK, sets)
    stop_operator(config)
    for node in config.node_specs():
        stop_helper(node)
    procs.run(
        [*_helm(config), "uninstall", RELEASE, "--namespace", NAMESPACE, "--no-hooks", "--wait"],
        timeout=300,
    )
    return output
