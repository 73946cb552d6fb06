"""Where a local cluster keeps its state, and the names and addresses it uses.

Everything that varies between two clusters on one machine (state directory,
bridge, subnet, ports, cgroup) derives from the cluster's name, so the tests can
run a second, short-lived cluster beside the demo one without collisions.
The default cluster ("ferry") takes index 0: bridge ``ferry0``, subnet
``10.213.0.0/24``, API server on port 6443.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAME = "ferry"
MAX_NODES = 4
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,9}$")

#: Services' virtual addresses (kube-proxy's rules live in each node's network namespace).
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")
#: The ``kubernetes`` Service's address: in the API server's certificate.
KUBERNETES_SERVICE_IP = SERVICE_CIDR.network_address + 1
#: Pods' addresses of every cluster: one /20 per cluster index, one /24 per node.
POD_NETWORKS = ipaddress.IPv4Network("10.128.0.0/9")

#: Versions of the control-plane binaries built from the Go module proxy.
K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.19.0"


def _index(name: str) -> int:
    if name == DEFAULT_NAME:
        return 0
    return 1 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % 200


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """One simulated node: its name, address and the host side of its veth."""

    name: str
    address: ipaddress.IPv4Address
    host_veth: str
    state_dir: Path
    cgroup: str
    pod_cidr: ipaddress.IPv4Network

    @property
    def upper_dir(self) -> Path:
        return self.state_dir / "upper"

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"

    @property
    def root_mountpoint(self) -> Path:
        return self.state_dir / "root"

    @property
    def containers_dir(self) -> Path:
        """Podman's storage: a plain directory, since overlay cannot stack on overlay."""
        return self.state_dir / "containers"

    @property
    def docker_dir(self) -> Path:
        """dockerd's data root (``/var/lib/docker`` in the node), plain for the same reason."""
        return self.state_dir / "docker"

    @property
    def containerd_dir(self) -> Path:
        """containerd's root (``/var/lib/containerd`` in the node)."""
        return self.state_dir / "containerd"

    @property
    def cri_dir(self) -> Path:
        """The kubelet's containerd's root (``/var/lib/containerd-cri`` in the node)."""
        return self.state_dir / "containerd-cri"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "init.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "init.log"


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """The identity of one local cluster; pure data, nothing is touched here."""

    name: str = DEFAULT_NAME
    nodes: int = 2
    state_root: Path = Path("/var/lib/ferry/clusters")
    cache_dir: Path = Path(os.environ.get("FERRY_CACHE", "/var/cache/ferry"))

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(
                f"cluster name {self.name!r} must be 1-10 lowercase letters or digits, "
                "starting with a letter"
            )
        if not 1 <= self.nodes <= MAX_NODES:
            raise ValueError(f"a local cluster has 1 to {MAX_NODES} nodes, not {self.nodes}")

    @property
    def index(self) -> int:
        return _index(self.name)

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.name

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.213.{self.index}.0/24")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The host's address on the bridge; the API server listens here."""
        return self.subnet.network_address + 1

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        """This cluster's pods' addresses: distinct per index, so two clusters never overlap."""
        return list(POD_NETWORKS.subnets(new_prefix=20))[self.index]

    @property
    def bridge(self) -> str:
        return f"ferry{self.index}"

    @property
    def apiserver_port(self) -> int:
        return 6443 + self.index

    @property
    def etcd_client_port(self) -> int:
        return 12379 + 2 * self.index

    @property
    def etcd_peer_port(self) -> int:
        return 12380 + 2 * self.index

    @property
    def server_url(self) -> str:
        return f"https://{self.gateway}:{self.apiserver_port}"

    @property
    def cgroup_name(self) -> str:
        """The cgroup (in every hierarchy) that holds all of the nodes' processes."""
        return f"ferry-{self.name}"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    def node_specs(self) -> list[NodeSpec]:
        return [self.node_spec(i) for i in range(self.nodes)]

    def node_spec(self, i: int) -> NodeSpec:
        letter = string.ascii_lowercase[i]
        name = f"node-{letter}"
        return NodeSpec(
            name=name,
            address=self.subnet.network_address + 10 + i,
            host_veth=f"fv{self.index}-{letter}",
            state_dir=self.state_dir / "nodes" / name,
            cgroup=f"{self.cgroup_name}/{name}",
            pod_cidr=list(self.pod_network.subnets(new_prefix=24))[i],
        )
