"""The helper's settings, read once from its environment (the DaemonSet sets them)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .checkpoint_keys import DEFAULT_ACTIVE, KeyDirectory


def _first_address() -> str:
    """The address other nodes reach this one by: the one its default route leaves from."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        # No packet is sent: connect() on UDP only chooses the source address.
        probe.connect(("192.0.2.1", 9))
        return str(probe.getsockname()[0])


@dataclass(frozen=True, kw_only=True)
class Settings:
    node_name: str
    address: str
    ssh_port: int
    state_dir: Path
    ssh_dir: Path
    heartbeat_seconds: float
    #: How long the full logs of failed steps stay on the node.
    log_retention_hours: float = 72
    #: "nsenter": run the node's podman, docker and CRIU in its namespaces (see node_tools).
    node_tools: str = ""
    #: How long a stopping helper waits for the operations in flight.
    drain_seconds: float = 60
    #: The socket of the node's CRI containerd (the kubelet's), a path in the node.
    cri_socket: Path = Path("/run/containerd/containerd.sock")
    #: containerd's ``ctr`` in the node (a name on its PATH, or an absolute path there).
    ctr: str = "ctr"
    #: The node's kubelet (its checkpoint API); empty: ``https://<address>:10250``.
    kubelet_url: str = ""
    #: Where the checkpoint-keys Secret is mounted (one file of 32 bytes per key, named as
    #: the key); None: stored checkpoints are kept in clear.
    checkpoint_keys_dir: Path | None = None
    #: The key new stored checkpoints are sealed with: a file name in that directory.
    checkpoint_key: str = DEFAULT_ACTIVE

    @property
    def checkpoint_keys(self) -> KeyDirectory | None:
        """The keys that seal stored checkpoints (read at each use), if this node has any."""
        if self.checkpoint_keys_dir is None:
            return None
        return KeyDirectory(self.checkpoint_keys_dir, self.checkpoint_key)

    @property
    def kubelet(self) -> str:
        """The base URL of this node's kubelet (the helper runs on the host network)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return self.kubelet_url.rstrip("/") or f"https://{host}:10250"

    @property
    def host_key(self) -> Path:
        return self.state_dir / "ssh_host_ed25519_key"

    @property
    def podman_socket(self) -> Path:
        """Where the helper's own ``podman system service`` listens (see :mod:`.libpod`)."""
        return self.state_dir / "podman.sock"

    @property
    def registry_authfile(self) -> Path | None:
        """podman's --authfile for checkpoint registries (the chart's registryAuthSecret)."""
        path = Path("/etc/ferry/registry/auth.json")
        return path if path.exists() else None

    @property
    def operator_keys(self) -> Path:
        """Public keys of the operator (one OpenSSH line each), from the SSH Secret."""
        return self.ssh_dir / "operator.pub"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        node_tools = env.get("FERRY_NODE_TOOLS", "")
        if node_tools not in ("", "nsenter"):
            raise ValueError(f"FERRY_NODE_TOOLS is {node_tools!r}: empty or 'nsenter'")
        keys_dir = env.get("FERRY_CHECKPOINT_KEYS_DIR", "")
        active_key = env.get("FERRY_CHECKPOINT_KEY") or DEFAULT_ACTIVE
        if keys_dir:
            KeyDirectory(Path(keys_dir), active_key)  # a name that cannot be a key's is refused
        node = env.get("FERRY_NODE_NAME", "")
        if not node:
            raise ValueError("FERRY_NODE_NAME is not set (the DaemonSet passes spec.nodeName)")
        return cls(
            node_name=node,
            address=env.get("FERRY_ADDRESS") or _first_address(),
            ssh_port=int(env.get("FERRY_SSH_PORT", "7022")),
            state_dir=Path(env.get("FERRY_STATE_DIR", "/var/lib/ferry-helper")),
            ssh_dir=Path(env.get("FERRY_SSH_DIR", "/etc/ferry/ssh")),
            heartbeat_seconds=float(env.get("FERRY_HEARTBEAT_SECONDS", "30")),
            log_retention_hours=float(env.get("FERRY_LOG_RETENTION_HOURS", "72")),
            node_tools=node_tools,
            drain_seconds=float(env.get("FERRY_DRAIN_SECONDS", "60")),
            cri_socket=Path(env.get("FERRY_CRI_SOCKET") or "/run/containerd/containerd.sock"),
            ctr=env.get("FERRY_CTR") or "ctr",
            kubelet_url=env.get("FERRY_KUBELET_URL", ""),
            checkpoint_keys_dir=Path(keys_dir) if keys_dir else None,
            checkpoint_key=active_key,
        )
