"""The local cluster's lifecycle: ``up``, ``down``, ``status`` and what a ``down`` left.

``up`` is idempotent: a cluster that is healthy and of the asked size is left
alone. Anything else under the cluster's name (a crashed run, a half-built
cluster, another size) is torn down first and built afresh, so ``up`` always
ends in a known state.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kubernetes import client
from kubernetes import config as kube_config

from . import (
    cgroups,
    controlplane,
    crilayer,
    dockerd,
    helperlayer,
    images,
    kubeconfig,
    kubenode,
    network,
    nodes,
    procs,
)
from .config import KUBERNETES_SERVICE_IP, MAX_NODES, ClusterConfig, NodeSpec
from .pki import Pki, ensure_pki

Progress = Callable[[str], None]
#: Bumped whenever a cluster built by older code cannot serve newer code (the
#: node layers, the certificates' extensions, dockerd in the nodes): ``up`` then rebuilds it.
LAYOUT = 5


def _quiet(_: str) -> None:
    return None


def _script(name: str) -> Path:
    return Path(str(resources.files("ferry_cluster") / "scripts" / name))


def state_file(config: ClusterConfig) -> Path:
    return config.state_dir / "cluster.json"


def _same_layout(config: ClusterConfig) -> bool:
    """Whether the running cluster was built the way this code builds one."""
    try:
        return bool(json.loads(state_file(config).read_text()).get("layout") == LAYOUT)
    except (OSError, ValueError):
        return False


def recorded(config: ClusterConfig) -> ClusterConfig:
    """The config this cluster was brought up with (its node count), if any."""
    try:
        data = json.loads(state_file(config).read_text())
    except (OSError, ValueError):
        return config
    return ClusterConfig(
        name=config.name,
        nodes=int(data["nodes"]),
        state_root=config.state_root,
        cache_dir=config.cache_dir,
    )


def ensure_binaries(config: ClusterConfig) -> None:
    procs.run(["bash", _script("build-binaries.sh")], timeout=3600)
    missing = [
        b
        for b in (
            "etcd",
            "kube-apiserver",
            "kube-scheduler",
            "kube-controller-manager",
            "kubelet",
            "kube-proxy",
            "kubectl",
            "helm",
        )
        if not (config.bin_dir / b).exists()
    ]
    if missing:
        raise RuntimeError(f"binaries missing after the build: {missing}")


def ensure_rootfs() -> Path:
    out = procs.run(["bash", _script("build-rootfs.sh")], timeout=3600).stdout.strip()
    return Path(out.splitlines()[-1])


def kubectl(config: ClusterConfig) -> list[str]:
    return [str(config.bin_dir / "kubectl"), f"--kubeconfig={config.admin_kubeconfig}"]


def api_client(config: ClusterConfig) -> client.ApiClient:
    api: client.ApiClient = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
        str(config.admin_kubeconfig)
    )
    return api


def service_account_kubeconfig(
    config: ClusterConfig, *, namespace: str, name: str, seconds: int, out: Path
) -> Path:
    """Write a kubeconfig for ``namespace/name`` with a token from the TokenRequest API."""
    with api_client(config) as api:
        token = kubeconfig.mint_service_account_token(
            client.CoreV1Api(api), namespace=namespace, name=name, seconds=seconds
        )
    kubeconfig.write(
        out,
        kubeconfig.render(
            cluster=f"ferry-{config.name}",
            server=config.server_url,
            ca_cert=Pki(directory=config.pki_dir).ca_cert,
            user={"token": token},
            namespace=namespace,
        ),
    )
    return out


@dataclass(frozen=True, kw_only=True)
class NodeStatus:
    name: str
    address: str
    running: bool


@dataclass(frozen=True, kw_only=True)
class Status:
    name: str
    apiserver_ready: bool
    server: str
    kubeconfig: Path
    nodes: list[NodeStatus]

    @property
    def healthy(self) -> bool:
        return self.apiserver_ready and all(n.running for n in self.nodes) and bool(self.nodes)


def status(config: ClusterConfig) -> Status:
    actual = recorded(config)
    exists = state_file(config).exists()
    node_states = [
        NodeStatus(name=n.name, address=str(n.address), running=nodes.init_pid(n) is not None)
        for n in (actual.node_specs() if exists else [])
    ]
    return Status(
        name=config.name,
        apiserver_ready=exists and controlplane.running(actual) and controlplane.ready(actual),
        server=config.server_url,
        kubeconfig=config.admin_kubeconfig,
        nodes=node_states,
    )


def load_image(
    node: NodeSpec, archive: Path, *, docker: bool = False, image_id: str | None = None
) -> None:
    """``podman load`` a docker-archive from the host on a node; ``docker``: ``docker load`` too.

    ``image_id``: fail unless docker gives the image that ID (podman's follows from the archive).
    """
    inside = f"/run/{archive.name}"  # the node's own tmpfs; gone with the node
    shutil.copyfile(archive, nodes.host_path(node, inside))
    nodes.run_in(node, ["podman", "load", "-q", "-i", inside])
    if docker:
        dockerd.load_image(node, inside, image_id=image_id)
    nodes.run_in(node, ["rm", "-f", inside])


def ensure_layers(config: ClusterConfig, progress: Progress = _quiet) -> list[Path]:
    """The nodes' root filesystem and the layers stacked on it, top first (built once)."""
    progress("control-plane binaries (built once from the Go module proxy, then cached)")
    ensure_binaries(config)
    progress("node root filesystem (Debian trixie, built once with debootstrap, then cached)")
    rootfs = ensure_rootfs()
    progress("the node-helper's Python environment (built once, then cached)")
    helper = helperlayer.ensure(config.cache_dir, rootfs)
    progress("containerd, runc and the CNI plugins from sid, the kubelet (built once, then cached)")
    cri = crilayer.ensure(config.cache_dir, rootfs, config.bin_dir)
    return [helper, cri, rootfs]


def _start_node(
    config: ClusterConfig, node: NodeSpec, layers: list[Path], archives: list[images.ImageArchive]
) -> None:
    dockerd.write_config(node)
    kubenode.write_config(config, node)
    init = nodes.start(config, node, layers, helperlayer.source_root())
    network.attach_node(config, node, init)
    dockerd.start(node)
    busybox = archives[0]
    load_image(node, busybox.path, docker=True, image_id=busybox.image_id)
    kubenode.start(config, node, [a.path for a in archives])


def up(config: ClusterConfig, progress: Progress = _quiet) -> Status:
    current = status(config)
    if current.healthy and recorded(config).nodes == config.nodes and _same_layout(config):
        progress(f"cluster {config.name} is already up")
        return current
    if state_file(config).exists() or leftovers(config):
        progress(f"cleaning up an earlier run of cluster {config.name}")
        down(config)

    started = time.monotonic()
    layers = ensure_layers(config, progress)
    rootfs = layers[-1]

    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.state_dir.chmod(0o700)
    state_file(config).write_text(json.dumps({"nodes": config.nodes, "layout": LAYOUT}))
    network.ensure_bridge(config)

    progress(
        f"etcd, kube-apiserver, kube-scheduler, kube-controller-manager on {config.server_url}"
    )
    pki = Pki(directory=config.pki_dir)
    ensure_pki(
        pki,
        # Pods reach the API server at the `kubernetes` Service's address.
        server_ips=[config.gateway, ipaddress.IPv4Address("127.0.0.1"), KUBERNETES_SERVICE_IP],
        server_names=[
            "localhost",
            "ferry-apiserver",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        ],
    )
    controlplane.start(config)
    kubeconfig.write(
        config.admin_kubeconfig,
        kubeconfig.render(
            cluster=f"ferry-{config.name}",
            server=config.server_url,
            ca_cert=pki.ca_cert,
            user=kubeconfig.admin_user(pki.admin_cert, pki.admin_key),
        ),
    )

    archives = [
        images.busybox_archive(rootfs, config.state_dir / "images" / "busybox.tar"),
        kubenode.pause_archive(config),
    ]
    for node in config.node_specs():
        progress(f"node {node.name} at {node.address}: containerd, kubelet, kube-proxy")
        _start_node(config, node, layers, archives)
    progress("waiting for the kubelets to register their nodes as Ready")
    kubenode.wait_ready(config, kubectl(config))
    progress(f"cluster {config.name} up in {time.monotonic() - started:.1f}s")
    return status(config)


def down(config: ClusterConfig, progress: Progress = _quiet) -> None:
    """Stop everything of this cluster and remove its state; raise if anything is left."""
    every_node = ClusterConfig(
        name=config.name,
        nodes=MAX_NODES,
        state_root=config.state_root,
        cache_dir=config.cache_dir,
    ).node_specs()
    for node in every_node:
        if node.state_dir.exists() or cgroups.existing(node.cgroup):
            progress(f"stopping node {node.name}")
            nodes.stop(config, node)
    progress("stopping kube-apiserver and etcd")
    controlplane.stop(config)
    for pid in procs.processes_with(str(config.state_dir)):
        procs.stop(pid)
    for link in network.links_with_prefix(f"fv{config.index}-"):
        procs.run(["ip", "link", "del", link], check=False)
    network.delete_bridge(config)
    cgroups.remove(config.cgroup_name)
    if config.state_dir.exists():
        shutil.rmtree(config.state_dir)
    left = leftovers(config)
    if left:
        raise RuntimeError("teardown left: " + "; ".join(left))
    progress(f"cluster {config.name} is down")


def leftovers(config: ClusterConfig) -> list[str]:
    """Everything of this cluster still present on the host, described for a human."""
    found: list[str] = []
    state = str(config.state_dir)
    found += [f"process {pid}: {procs.cmdline(pid)}" for pid in procs.processes_with(state)]
    found += [
        f"process {pid} in the nodes' cgroups" for pid in cgroups.procs_below(config.cgroup_name)
    ]
    found += [f"cgroup {p}" for p in cgroups.existing(config.cgroup_name)]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4]
        if mountpoint == state or mountpoint.startswith(state + "/"):
            found.append(f"mount {mountpoint}")
    found += [f"network link {link}" for link in network.links_with_prefix(f"fv{config.index}-")]
    if network.link_exists(config.bridge):
        found.append(f"bridge {config.bridge}")
    if config.state_dir.exists():
        found.append(f"state directory {config.state_dir}")
    return found
