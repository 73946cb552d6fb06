"""Ferry itself on the local cluster: CRDs, the chart's RBAC, helpers and operator.

The chart's ServiceAccounts and ClusterRoles are rendered with ``helm template``
and applied, and each component runs with a token of its own ServiceAccount,
so RBAC is enforced exactly as the chart grants it. There is no kubelet: the
harness plays it, starting one node-helper inside each node and the operator
as a host process. SSH identities are generated once per cluster: the
operator's key, and the helpers' shared peer key for node-to-node streaming.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import asyncssh
from kubernetes import client

from . import cluster, helperlayer, kubeconfig, nodes, procs
from .config import ClusterConfig, NodeSpec
from .pki import Pki

NAMESPACE = "ferry-system"
RELEASE = "ferry"
OPERATOR_SA = f"{RELEASE}-operator"
HELPER_SA = f"{RELEASE}-node-helper"
HELPER_SSH_PORT = 7022
TOKEN_SECONDS = 24 * 3600
READY_TIMEOUT = 60.0
NODE_CONFIG_DIR = "/run/ferry"


def _kubectl(config: ClusterConfig) -> list[str]:
    return [str(config.bin_dir / "kubectl"), f"--kubeconfig={config.admin_kubeconfig}"]


def deploy_dir(config: ClusterConfig) -> Path:
    return config.state_dir / "ferry"


def _ssh_keys(config: ClusterConfig) -> Path:
    directory = deploy_dir(config) / "ssh"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("operator", "peer"):
        private = directory / name
        if not private.exists():
            key = asyncssh.generate_private_key("ssh-ed25519", comment=f"ferry-{name}")
            key.write_private_key(private)
            private.chmod(0o600)
            key.write_public_key(directory / f"{name}.pub")
    return directory


def apply_manifests(config: ClusterConfig) -> None:
    """CRDs from crds/, then the namespace and the chart's RBAC."""
    root = helperlayer.source_root()
    kubectl = _kubectl(config)
    procs.run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", root / "crds"])
    procs.run(
        [*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", root / "crds"]
    )
    namespace = procs.run(
        [*kubectl, "create", "namespace", NAMESPACE, "--dry-run=client", "-o", "yaml"]
    ).stdout
    procs.run([*kubectl, "apply", "-f", "-"], input_text=namespace)
    rendered = procs.run(
        [
            str(config.bin_dir / "helm"),
            "template",
            RELEASE,
            str(root / "charts" / "ferry"),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            "1.34.4",
        ]
    ).stdout
    procs.run([*kubectl, "apply", "-f", "-"], input_text=rendered)


def _service_account_kubeconfig(config: ClusterConfig, name: str, out: Path) -> Path:
    with cluster.api_client(config) as api:
        token = kubeconfig.mint_service_account_token(
            client.CoreV1Api(api), namespace=NAMESPACE, name=name, seconds=TOKEN_SECONDS
        )
    kubeconfig.write(
        out,
        kubeconfig.render(
            cluster=f"ferry-{config.name}",
            server=config.server_url,
            ca_cert=Pki(directory=config.pki_dir).ca_cert,
            user={"token": token},
            namespace=NAMESPACE,
        ),
    )
    return out


def helper_pid_file(node: NodeSpec) -> Path:
    return node.state_dir / "helper.pid"


def helper_log(node: NodeSpec) -> Path:
    return node.state_dir / "helper.log"


def helper_env(node: NodeSpec) -> list[str]:
    """The environment the DaemonSet gives a helper, as the harness passes it."""
    return [
        f"FERRY_NODE_NAME={node.name}",
        f"FERRY_ADDRESS={node.address}",
        f"FERRY_SSH_PORT={HELPER_SSH_PORT}",
        f"FERRY_SSH_DIR={NODE_CONFIG_DIR}/ssh",
        "FERRY_STATE_DIR=/var/lib/ferry-helper",
        "FERRY_HEARTBEAT_SECONDS=5",
        f"KUBECONFIG={NODE_CONFIG_DIR}/kubeconfig",
        f"PYTHONPATH={helperlayer.helper_pythonpath()}",
        "PYTHONUNBUFFERED=1",
    ]


def start_helper(
    config: ClusterConfig, node: NodeSpec, ssh_dir: Path, kubeconfig_file: Path
) -> None:
    """(Re)start the node-helper inside ``node``, with its Secret's files in place."""
    stop_helper(node)
    inside = nodes.host_path(node, NODE_CONFIG_DIR)
    (inside / "ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("operator.pub", "peer", "peer.pub"):
        target = inside / "ssh" / name
        target.write_bytes((ssh_dir / name).read_bytes())
        target.chmod(0o600)
    (inside / "kubeconfig").write_bytes(kubeconfig_file.read_bytes())
    (inside / "kubeconfig").chmod(0o600)
    command = nodes.exec_args(
        node,
        [
            "env",
            *helper_env(node),
            f"{helperlayer.VENV}/bin/python",
            "-m",
            "ferry_helper",
        ],
    )
    procs.start(command, pid_file=helper_pid_file(node), log_file=helper_log(node))


def stop_helper(node: NodeSpec) -> None:
    pid = procs.read_pid(helper_pid_file(node), "ferry_helper")
    if pid is not None:
        # nsenter forks the helper and does not forward signals: stop the group.
        procs.stop(pid, group=True)


def operator_marker(config: ClusterConfig) -> str:
    """The operator's ``--instance``: names its cluster in its command line."""
    return f"--instance=ferry-cluster-{config.name}"


def operator_pid_file(config: ClusterConfig) -> Path:
    return deploy_dir(config) / "operator.pid"


def operator_log(config: ClusterConfig) -> Path:
    return deploy_dir(config) / "operator.log"


def start_operator(
    config: ClusterConfig,
    ssh_dir: Path,
    kubeconfig_file: Path,
    *,
    allow_any_namespace: bool = False,
) -> None:
    stop_operator(config)
    procs.start(
        [
            "env",
            f"KUBECONFIG={kubeconfig_file}",
            f"FERRY_SSH_KEY={ssh_dir / 'operator'}",
            f"FERRY_ALLOW_ANY_NAMESPACE={'true' if allow_any_namespace else 'false'}",
            "FERRY_HELPER_STALE_SECONDS=30",
            f"FERRY_METRICS_PORT={9090 + config.index}",
            "PYTHONUNBUFFERED=1",
            sys.executable,
            "-m",
            "ferry_operator",
            operator_marker(config),
        ],
        pid_file=operator_pid_file(config),
        log_file=operator_log(config),
    )


def stop_operator(config: ClusterConfig) -> None:
    pid = procs.read_pid(operator_pid_file(config), operator_marker(config))
    if pid is not None:
        procs.stop(pid)


def wait_for_helpers(config: ClusterConfig) -> None:
    """Until every node's NodeHelper reports Ready with a host key."""
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


def deploy(config: ClusterConfig, *, allow_any_namespace: bool = False) -> None:
    """Install and (re)start Ferry on the running local cluster; idempotent."""
    apply_manifests(config)
    ssh_dir = _ssh_keys(config)
    helper_kubeconfig = _service_account_kubeconfig(
        config, HELPER_SA, deploy_dir(config) / "node-helper.kubeconfig"
    )
    operator_kubeconfig = _service_account_kubeconfig(
        config, OPERATOR_SA, deploy_dir(config) / "operator.kubeconfig"
    )
    for node in config.node_specs():
        start_helper(config, node, ssh_dir, helper_kubeconfig)
    wait_for_helpers(config)
    start_operator(config, ssh_dir, operator_kubeconfig, allow_any_namespace=allow_any_namespace)
