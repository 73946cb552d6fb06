"""Ferry itself on the local cluster, installed the way a cluster admin would: with Helm.

The operator's and the node-helper's images are built from their
Containerfiles (imagebuild.py, cached by the tree they copy) and imported into
every node's containerd, since there is no registry to pull from; then
``helm upgrade --install --wait`` of ``charts/ferry``, hooks included: the
kubelets run the keygen Job, the helpers' DaemonSet and the operator's
Deployment from those images, with the chart's ServiceAccounts, RBAC, security
contexts and host paths. ``helm uninstall`` runs the pre-delete cleanup Job.
Nothing here starts a Ferry process itself.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from . import cluster, helperlayer, imagebuild, kubenode, procs, registry
from .config import ClusterConfig, NodeSpec
from .crilayer import CRI_BIN

NAMESPACE = "ferry-system"
RELEASE = "ferry"
#: The Secret holding the helpers' credentials for the local registry (registry.py).
REGISTRY_AUTH_SECRET = "ferry-registry-auth"  # noqa: S105 - a Secret's name
READY_TIMEOUT = 120.0
HELM_TIMEOUT = "5m"
HELPER_SELECTOR = "app.kubernetes.io/component=node-helper"
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
Log = Callable[[str], None]


def _kubectl(config: ClusterConfig) -> list[str]:
    return cluster.kubectl(config)


def _helm(config: ClusterConfig) -> list[str]:
    return [str(config.bin_dir / "helm"), f"--kubeconfig={config.admin_kubeconfig}"]


def chart_dir() -> Path:
    return helperlayer.source_root() / "charts" / "ferry"


def values(
    config: ClusterConfig, *, allow_any_namespace: bool, extra: Mapping[str, str] | None = None
) -> list[str]:
    """Helm ``--set`` flags for the local cluster: faster heartbeats, the registry, docker."""
    tree = imagebuild.tree_tag(helperlayer.source_root())  # hashes every file the images copy
    settings: dict[str, str] = {
        # CRDs come from crds/ (kubectl), so the tests' own CRD applies never fight Helm.
        "crds.enabled": "false",
        "nodeHelper.heartbeatSeconds": "5",
        "operator.helperStaleSeconds": "30",
        "operator.allowAnyNamespace": "true" if allow_any_namespace else "false",
        "nodeHelper.registryAuthSecret": REGISTRY_AUTH_SECRET,
        # Every simulated node runs Docker Engine beside podman.
        "nodeHelper.docker.enabled": "true",
        # The kubelet's containerd is the nodes' second one, beside Docker's (see kubenode).
        "nodeHelper.cri.socket": kubenode.CRI_SOCKET,
        "nodeHelper.cri.ctr": f"{CRI_BIN}/ctr",
        # The tree's own tag: a redeploy of a changed tree replaces the pods.
        "operator.image.tag": tree,
        "nodeHelper.image.tag": tree,
        **(extra or {}),
    }
    return [flag for key, value in settings.items() for flag in ("--set", f"{key}={value}")]


def _apply(config: ClusterConfig, objects: list[dict[str, Any]]) -> None:
    procs.run([*_kubectl(config), "apply", "-f", "-"], input_text=yaml.safe_dump_all(objects))


def apply_crds(config: ClusterConfig) -> None:
    """The CRDs from crds/, server-side (idempotent), once Established."""
    crds = helperlayer.source_root() / "crds"
    kubectl = _kubectl(config)
    procs.run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", crds])
    procs.run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", crds])


def _imported_marker(node: NodeSpec) -> Path:
    return node.state_dir / "imported-images"


def load_images(config: ClusterConfig, log: Log = print) -> list[imagebuild.BuiltImage]:
    """Build (or take from the cache) Ferry's images; import them where not yet imported."""
    built = imagebuild.build(config, config.node_specs()[0], log=log)
    tree = imagebuild.tree_tag(helperlayer.source_root())
    for node in config.node_specs():
        marker = _imported_marker(node)
        done = set(marker.read_text().split()) if marker.exists() else set()
        for image in built:
            if image.archive.name not in done:
                log(f"==> importing {image.reference} into {node.name}'s containerd")
                kubenode.import_image(node, image.archive)
                done.add(image.archive.name)
                marker.write_text("\n".join(sorted(done)) + "\n")
            # podman saved it as localhost/<name>; the chart's default names the image as a
            # kubelet resolves it, on docker.io, and deploy() names this tree's own tag.
            # Tagged every time (cheap): a node imported by an older deploy gets them too.
            name = image.reference.split(":")[0]
            for alias in (image.reference, f"{name}:{tree}"):
                kubenode.tag_image(node, f"localhost/{image.reference}", f"docker.io/{alias}")
    return built


def install(
    config: ClusterConfig,
    *,
    allow_any_namespace: bool = False,
    extra: Mapping[str, str] | None = None,
) -> None:
    """CRDs from crds/, the namespace, the registry's Secret, then ``helm upgrade --install``."""
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
    _helm_waiting(config, "upgrade", "--install", RELEASE, str(chart_dir()), *sets)


def _helm_waiting(config: ClusterConfig, command: str, *args: str) -> None:
    """``helm COMMAND`` in Ferry's namespace, waiting for its hooks and workloads.

    A failure says what Ferry's pods were doing (a Job's image not found, say).
    """
    result = procs.run(
        [
            *_helm(config),
            command,
            *args,
            "--namespace",
            NAMESPACE,
            "--wait",
            f"--timeout={HELM_TIMEOUT}",
        ],
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"helm {command} {args[0]} failed: {result.stderr.strip()}\n{describe(config)}"
        )


def pods(config: ClusterConfig, selector: str) -> list[dict[str, Any]]:
    """Ferry's pods matching ``selector``, as ``kubectl get -o json`` gives them."""
    out = procs.run(
        [*_kubectl(config), "get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json"]
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def helper_pod(config: ClusterConfig, node: NodeSpec) -> str:
    """The name of the node-helper pod the DaemonSet runs on ``node``."""
    for pod in pods(config, HELPER_SELECTOR):
        if pod["spec"].get("nodeName") == node.name and not pod["metadata"].get(
            "deletionTimestamp"
        ):
            return str(pod["metadata"]["name"])
    raise RuntimeError(f"no node-helper pod on {node.name}")


def operator_pod(config: ClusterConfig) -> str:
    for pod in pods(config, OPERATOR_SELECTOR):
        if not pod["metadata"].get("deletionTimestamp"):
            return str(pod["metadata"]["name"])
    raise RuntimeError("no operator pod")


def logs(config: ClusterConfig, pod: str, *, tail: int = 60) -> str:
    result = procs.run(
        [*_kubectl(config), "logs", "-n", NAMESPACE, pod, f"--tail={tail}"], check=False
    )
    return result.stdout or result.stderr


def describe(config: ClusterConfig) -> str:
    """Ferry's pods and their recent logs and events: what a failed install needs shown."""
    shown = procs.run(
        [*_kubectl(config), "get", "pods,jobs", "-n", NAMESPACE, "-o", "wide"], check=False
    ).stdout
    events = procs.run(
        [*_kubectl(config), "get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp"],
        check=False,
    ).stdout
    tails = "".join(
        f"--- {p['metadata']['name']}:\n{logs(config, p['metadata']['name'], tail=20)}\n"
        for p in pods(config, "app.kubernetes.io/name=ferry")
    )
    return f"{shown}\n{events[-3000:]}\n{tails}"


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
            raise RuntimeError(
                f"node-helpers not ready: {sorted(wanted - ready)}\n{describe(config)}"
            )
        time.sleep(0.3)


def deploy(
    config: ClusterConfig,
    *,
    allow_any_namespace: bool = False,
    extra: Mapping[str, str] | None = None,
    log: Log = print,
) -> None:
    """Install (or upgrade) Ferry from its images and wait until it serves; idempotent.

    ``extra``: more ``--set`` values for the chart, e.g. {"nodeHelper.sshPort": "7023"}.
    """
    load_images(config, log=log)
    install(config, allow_any_namespace=allow_any_namespace, extra=extra)
    wait_for_helpers(config)


def undeploy(config: ClusterConfig) -> None:
    """``helm uninstall``, hooks included: the pre-delete Job leaves no finalizer stuck."""
    _helm_waiting(config, "uninstall", RELEASE)
