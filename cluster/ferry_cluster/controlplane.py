"""etcd and a real kube-apiserver, with RBAC, serving on the cluster's bridge.

The API server binds the host's address on the cluster bridge: reachable from
the host and from every simulated node, from nowhere else. Both processes run
detached with pid files, so the CLI can exit while the cluster keeps running.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import procs
from .config import ClusterConfig
from .pki import Pki

READY_TIMEOUT = 120.0


def etcd_pid_file(config: ClusterConfig) -> Path:
    return config.state_dir / "etcd.pid"


def apiserver_pid_file(config: ClusterConfig) -> Path:
    return config.state_dir / "kube-apiserver.pid"


def etcd_marker(config: ClusterConfig) -> str:
    return str(config.state_dir / "etcd-data")


def apiserver_marker(config: ClusterConfig) -> str:
    return str(config.pki_dir / "apiserver.crt")


def etcd_args(config: ClusterConfig) -> list[str]:
    client = f"http://127.0.0.1:{config.etcd_client_port}"
    peer = f"http://127.0.0.1:{config.etcd_peer_port}"
    return [
        str(config.bin_dir / "etcd"),
        f"--name=ferry-{config.name}",
        f"--data-dir={etcd_marker(config)}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=ferry-{config.name}={peer}",
        "--log-level=warn",
        # A throwaway cluster: trade durability for speed on slow disks.
        "--unsafe-no-fsync",
    ]


def apiserver_args(config: ClusterConfig) -> list[str]:
    pki = Pki(directory=config.pki_dir)
    return [
        str(config.bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{config.etcd_client_port}",
        f"--bind-address={config.gateway}",
        f"--advertise-address={config.gateway}",
        f"--secure-port={config.apiserver_port}",
        f"--tls-cert-file={pki.apiserver_cert}",
        f"--tls-private-key-file={pki.apiserver_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        "--anonymous-auth=false",
        "--profiling=false",
        f"--cert-dir={config.pki_dir}",
        "--v=1",
    ]


def running(config: ClusterConfig) -> bool:
    return (
        procs.read_pid(etcd_pid_file(config), etcd_marker(config)) is not None
        and procs.read_pid(apiserver_pid_file(config), apiserver_marker(config)) is not None
    )


def _ssl_context(config: ClusterConfig) -> ssl.SSLContext:
    pki = Pki(directory=config.pki_dir)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return context


def ready(config: ClusterConfig) -> bool:
    """True when ``/readyz`` answers ok to the admin's client certificate."""
    try:
        with urllib.request.urlopen(  # noqa: S310 - the URL is ours, https only
            f"{config.server_url}/readyz", context=_ssl_context(config), timeout=5
        ) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(config: ClusterConfig) -> None:
    """Start etcd and the API server and wait until the API server is ready."""
    logs = config.state_dir / "logs"
    if procs.read_pid(etcd_pid_file(config), etcd_marker(config)) is None:
        procs.start(etcd_args(config), pid_file=etcd_pid_file(config), log_file=logs / "etcd.log")
    if procs.read_pid(apiserver_pid_file(config), apiserver_marker(config)) is None:
        procs.start(
            apiserver_args(config),
            pid_file=apiserver_pid_file(config),
            log_file=logs / "kube-apiserver.log",
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready(config):
        for pid_file, marker, log in (
            (etcd_pid_file(config), etcd_marker(config), "etcd.log"),
            (apiserver_pid_file(config), apiserver_marker(config), "kube-apiserver.log"),
        ):
            if procs.read_pid(pid_file, marker) is None:
                tail = (logs / log).read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"{log.removesuffix('.log')} exited:\n" + "\n".join(tail))
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"kube-apiserver not ready after {READY_TIMEOUT:.0f}s; "
                f"see {logs}/kube-apiserver.log"
            )
        time.sleep(0.5)


def stop(config: ClusterConfig) -> None:
    for pid_file, marker in (
        (apiserver_pid_file(config), apiserver_marker(config)),
        (etcd_pid_file(config), etcd_marker(config)),
    ):
        pid = procs.read_pid(pid_file, marker)
        if pid is not None:
            procs.stop(pid)
        pid_file.unlink(missing_ok=True)
    # Anything started from this state directory that lost its pid file.
    for marker in (apiserver_marker(config), etcd_marker(config)):
        for pid in procs.processes_with(marker):
            procs.stop(pid)
