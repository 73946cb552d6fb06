"""The cluster's bridge and each node's veth.

A node's network namespace belongs to its init process (no ``ip netns`` bind
mount), so it vanishes with the node, and the veth pair with it: the bridge is
the only network object ``down`` has to remove by name.
"""

from __future__ import annotations

import json

from .config import ClusterConfig, NodeSpec
from .procs import run


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def links_with_prefix(prefix: str) -> list[str]:
    out = run(["ip", "-j", "link", "show"]).stdout
    return [link["ifname"] for link in json.loads(out) if link["ifname"].startswith(prefix)]


def ensure_bridge(config: ClusterConfig) -> None:
    if not link_exists(config.bridge):
        run(["ip", "link", "add", config.bridge, "type", "bridge"])
    address = f"{config.gateway}/{config.subnet.prefixlen}"
    addrs = run(["ip", "-j", "addr", "show", "dev", config.bridge]).stdout
    present = {
        f"{a['local']}/{a['prefixlen']}" for link in json.loads(addrs) for a in link["addr_info"]
    }
    if address not in present:
        run(["ip", "addr", "add", address, "dev", config.bridge])
    run(["ip", "link", "set", config.bridge, "up"])


def delete_bridge(config: ClusterConfig) -> None:
    if link_exists(config.bridge):
        run(["ip", "link", "del", config.bridge])


def _in_netns(pid: int, *args: str) -> None:
    run(["nsenter", f"--net=/proc/{pid}/ns/net", *args])


def attach_node(config: ClusterConfig, node: NodeSpec, init_pid: int) -> None:
    """Give the node's network namespace an ``eth0`` on the bridge and a default route."""
    if link_exists(node.host_veth):
        run(["ip", "link", "del", node.host_veth])
    peer = f"{node.host_veth}p"
    run(["ip", "link", "add", node.host_veth, "type", "veth", "peer", "name", peer])
    run(["ip", "link", "set", peer, "netns", str(init_pid)])
    run(["ip", "link", "set", node.host_veth, "master", config.bridge, "up"])
    _in_netns(init_pid, "ip", "link", "set", "lo", "up")
    _in_netns(init_pid, "ip", "link", "set", peer, "name", "eth0")
    _in_netns(
        init_pid, "ip", "addr", "add", f"{node.address}/{config.subnet.prefixlen}", "dev", "eth0"
    )
    _in_netns(init_pid, "ip", "link", "set", "eth0", "up")
    _in_netns(init_pid, "ip", "route", "add", "default", "via", str(config.gateway))
    # The host reaches the node's pods (and answers them) through the node; the
    # route goes with the bridge.
    run(["ip", "route", "replace", str(node.pod_cidr), "via", str(node.address)])
