"""The Kubernetes side of a simulated node: containerd (CRI), the kubelet and kube-proxy.

Each node runs what a kubeadm node runs, as kind does inside its containers:

- a containerd 2.1 for the kubelet (``/run/containerd-cri``), beside the one
  Docker Engine uses, with runc 1.3 and the CNI plugins from the CRI layer
  (crilayer.py) and cgroupfs, as podman and dockerd in the node use;
- the kubelet, as ``system:node:<name>`` (the Node authorizer and
  NodeRestriction hold it to its own node), its API authenticated and
  authorized through the API server (webhook), as ``kubectl logs`` needs;
- kube-proxy in iptables mode, so Services (the ``kubernetes`` one first)
  answer in the node and in its pods.

Pods get addresses from the node's own /24 of the cluster's pod network
(``bridge`` + ``host-local``); every node routes the other nodes' /24s to
them over the cluster bridge, and the host routes all of them, so a pod
reaches a pod on another node, the API server and the host directly.

There is no registry: images are imported into containerd's ``k8s.io``
namespace (``ctr images import``), where the kubelet finds them with
``imagePullPolicy: IfNotPresent`` or ``Never``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from . import controlplane, images, nodes, procs
from .config import ClusterConfig, NodeSpec
from .crilayer import CRI_BIN
from .pki import Pki

CRI_STATE = "/run/containerd-cri"
CRI_SOCKET = f"{CRI_STATE}/containerd.sock"
CRI_ROOT = "/var/lib/containerd-cri"
CRI_LOG = "/var/log/containerd-cri.log"
KUBELET_LOG = "/var/log/kubelet.log"
KUBE_PROXY_LOG = "/var/log/kube-proxy.log"
KUBERNETES_DIR = "/etc/kubernetes"
PAUSE_IMAGE = "localhost/ferry/pause:3.10"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: Nodes carry this label (the kubelet sets it), naming their cluster.
SIMULATED_LABEL = "ferry.dev/simulated-node"

CONTAINERD_TOML = f"""version = 3
root = "{CRI_ROOT}"
state = "{CRI_STATE}"

[grpc]
  address = "{CRI_SOCKET}"

[ttrpc]
  address = "{CRI_SOCKET}.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

# Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which hosts running
# in a container (this project's CI machines) may not grant: the pod sandbox's
# -998 then fails in runc's nsexec. Keep every value at or above containerd's own.
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "{CRI_BIN}/runc"
      SystemdCgroup = false
"""


def _pause_source() -> Path:
    return Path(__file__).parent / "scripts" / "pause.c"


def pause_archive(config: ClusterConfig) -> images.ImageArchive:
    """The pod sandbox image: one static ``/pause``, built with the host's compiler (cached)."""
    out = config.cache_dir / "images" / "pause-3.10.tar"
    tree = config.cache_dir / "images" / "pause-root"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    procs.run(["cc", "-static", "-O2", "-o", tree / "pause", _pause_source()], timeout=300)
    archive = images.write_docker_archive(
        out, layer=images.layer_from_tree(tree), reference=PAUSE_IMAGE, cmd=["/pause"]
    )
    shutil.rmtree(tree)
    return archive


def cni_conflist(node: NodeSpec) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "ferry",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                # The other nodes and the host route the pod network: no NAT, pods
                # see each other's real addresses.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(node.pod_cidr)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(node: NodeSpec) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": f"{KUBERNETES_DIR}/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{CRI_SOCKET}",
        "failSwapOn": False,
        "failCgroupV1": False,
        "readOnlyPort": 0,
        "address": str(node.address),
        # The host's disks are shared by everything on it: never evict for them here.
        "evictionHard": {
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "localStorageCapacityIsolation": False,
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
    }


def kube_proxy_config(config: ClusterConfig, node: NodeSpec) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": f"{KUBERNETES_DIR}/kube-proxy.kubeconfig"},
        "mode": "iptables",
        "clusterCIDR": str(config.pod_network),
        "hostnameOverride": node.name,
        "bindAddress": str(node.address),
        # A node's network namespace cannot raise the host's conntrack limits.
        "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
    }


def write_config(config: ClusterConfig, node: NodeSpec) -> None:
    """Every file the node's CRI containerd, kubelet and kube-proxy read, before it starts."""
    upper = node.upper_dir
    pki = Pki(directory=config.pki_dir)
    (upper / "etc/containerd-cri").mkdir(parents=True, exist_ok=True)
    (upper / "etc/containerd-cri/config.toml").write_text(CONTAINERD_TOML)
    (upper / "etc/cni/net.d").mkdir(parents=True, exist_ok=True)
    (upper / "etc/cni/net.d/10-ferry.conflist").write_text(
        json.dumps(cni_conflist(node), indent=2) + "\n"
    )
    kube = upper / KUBERNETES_DIR.lstrip("/")
    (kube / "pki").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pki.ca_cert, kube / "pki/ca.crt")
    (kube / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(node)))
    (kube / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(config, node)))
    for component, common_name, organization in (
        ("kubelet", f"system:node:{node.name}", "system:nodes"),
        ("kube-proxy", "system:kube-proxy", None),
    ):
        written = controlplane.write_component_kubeconfig(
            config, f"{component}-{node.name}", common_name=common_name, organization=organization
        )
        target = kube / f"{component}.kubeconfig"
        shutil.copyfile(written, target)
        target.chmod(0o600)


def route_pods(config: ClusterConfig, node: NodeSpec) -> None:
    """Forwarding on, and a route to every other node's pods over the cluster bridge."""
    nodes.run_in(node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    for other in config.node_specs():
        if other != node:
            nodes.run_in(
                node, ["ip", "route", "replace", str(other.pod_cidr), "via", str(other.address)]
            )


def ctr(*args: str) -> list[str]:
    return [f"{CRI_BIN}/ctr", f"--address={CRI_SOCKET}", "--namespace=k8s.io", *args]


def import_image(node: NodeSpec, archive: Path) -> None:
    """``ctr images import`` a docker-archive from the host into the kubelet's containerd."""
    inside = f"/run/{archive.name}"  # the node's own tmpfs; gone with the node
    shutil.copyfile(archive, nodes.host_path(node, inside))
    try:
        nodes.run_in(node, ctr("images", "import", "--local", inside), timeout=600)
    finally:
        nodes.host_path(node, inside).unlink(missing_ok=True)


def trust_cluster_ca(config: ClusterConfig, node: NodeSpec) -> None:
    """Add the cluster CA to the node's system bundle, before containerd first reads it.

    A restore pulls the checkpointed container's base image with containerd's
    default resolver, which trusts the system's CAs only (registry.py).
    """
    bundle = nodes.host_path(node, SYSTEM_CA_BUNDLE)
    ca = Pki(directory=config.pki_dir).ca_cert.read_text()
    if ca not in bundle.read_text():
        bundle.write_text(bundle.read_text() + ca)


def tag_image(node: NodeSpec, source: str, target: str) -> None:
    """Name an image of the kubelet's containerd ``target`` too (replacing what had that name)."""
    nodes.run_in(node, ctr("images", "tag", "--force", source, target))


def start(config: ClusterConfig, node: NodeSpec, archives: list[Path]) -> None:
    """containerd, the images in ``archives``, then the kubelet and kube-proxy."""
    route_pods(config, node)
    trust_cluster_ca(config, node)
    nodes.detach(
        node,
        f"env PATH={CRI_BIN}:$PATH containerd --config /etc/containerd-cri/config.toml",
        CRI_LOG,
    )
    nodes.wait_until(node, daemon="containerd", ready=f"test -S {CRI_SOCKET}", log=CRI_LOG)
    for archive in archives:
        import_image(node, archive)
    nodes.detach(
        node,
        " ".join(
            [
                "kubelet",
                f"--config={KUBERNETES_DIR}/kubelet.yaml",
                f"--kubeconfig={KUBERNETES_DIR}/kubelet.kubeconfig",
                f"--hostname-override={node.name}",
                f"--node-ip={node.address}",
                f"--node-labels={SIMULATED_LABEL}={config.name}",
                "--v=1",
            ]
        ),
        KUBELET_LOG,
    )
    nodes.detach(
        node,
        f"kube-proxy --config={KUBERNETES_DIR}/kube-proxy.yaml --v=1",
        KUBE_PROXY_LOG,
    )


def wait_ready(config: ClusterConfig, kubectl: list[str], timeout: float = 120) -> None:
    """Until every node's kubelet has registered and reports Ready; the kubelets' logs if not."""
    names = [n.name for n in config.node_specs()]
    deadline = time.monotonic() + timeout
    while True:
        result = procs.run(
            [
                *kubectl,
                "wait",
                "--for=condition=Ready",
                "--timeout=5s",
                *(f"node/{n}" for n in names),
            ],
            check=False,
        )
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {n.name} kubelet:\n"
                + nodes.log_path(n, KUBELET_LOG).read_text(errors="replace")[-3000:]
                for n in config.node_specs()
                if nodes.log_path(n, KUBELET_LOG).exists()
            )
            raise RuntimeError(f"nodes not Ready after {timeout:.0f}s: {result.stderr}\n{logs}")
        time.sleep(1)
