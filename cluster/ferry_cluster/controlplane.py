"""etcd, kube-apiserver, kube-scheduler and kube-controller-manager, on the host.

The API server binds the host's address on the cluster bridge: reachable from
the host and from every simulated node, from nowhere else. It authorizes with
the Node authorizer and RBAC and admits with NodeRestriction, as a kubeadm
cluster does; the scheduler and the controller-manager reach it with client
certificates of their well-known users and serve nothing themselves (no port
to collide with a second cluster). Every process runs detached with a pid
file, so the CLI can exit while the cluster keeps running.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import kubeconfig, procs
from .config import SERVICE_CIDR, ClusterConfig
from .pki import Pki, ensure_client_cert

READY_TIMEOUT = 120.0


@dataclass(frozen=True, kw_only=True)
class Component:
    """One control-plane process: how it starts and how to recognise it afterwards."""

    name: str
    args: list[str]
    #: A string of its command line that names this cluster (pid files can be reused).
    marker: str

    def pid_file(self, config: ClusterConfig) -> Path:
        return config.state_dir / f"{self.name}.pid"

    def log(self, config: ClusterConfig) -> Path:
        return config.state_dir / "logs" / f"{self.name}.log"

    def pid(self, config: ClusterConfig) -> int | None:
        return procs.read_pid(self.pid_file(config), self.marker)


def component_kubeconfig(config: ClusterConfig, name: str) -> Path:
    return config.state_dir / f"{name}.kubeconfig"


def write_component_kubeconfig(
    config: ClusterConfig, name: str, *, common_name: str, organization: str | None = None
) -> Path:
    """A kubeconfig with a client certificate of ``common_name`` (default RBAC binds these)."""
    pki = Pki(directory=config.pki_dir)
    cert = ensure_client_cert(pki, name, common_name=common_name, organization=organization)
    path = component_kubeconfig(config, name)
    kubeconfig.write(
        path,
        kubeconfig.render(
            cluster=f"ferry-{config.name}",
            server=config.server_url,
            ca_cert=pki.ca_cert,
            user=kubeconfig.admin_user(cert.cert, cert.key),
        ),
    )
    return path


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
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        # Webhooks (Ferry's eviction webhook) are called at their Service's endpoints: the
        # host routes the pod network but runs no kube-proxy, so a ClusterIP is unreachable
        # from here (as on clusters whose control plane runs off the pod network).
        "--enable-aggregator-routing=true",
        # `kubectl logs` and `exec` go through the API server to the kubelets.
        f"--kubelet-client-certificate={pki.directory / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki.directory / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        "--anonymous-auth=false",
        "--profiling=false",
        f"--cert-dir={config.pki_dir}",
        "--v=1",
    ]


def _controller(config: ClusterConfig, name: str, flags: list[str]) -> Component:
    """A control-plane client on the host: its certificate's kubeconfig for everything it
    asks the API server, no leader election (one of each), no port of its own."""
    kube = component_kubeconfig(config, name)
    return Component(
        name=name,
        args=[
            str(config.bin_dir / name),
            f"--kubeconfig={kube}",
            f"--authentication-kubeconfig={kube}",
            f"--authorization-kubeconfig={kube}",
            *flags,
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ],
        marker=str(kube),
    )


def scheduler(config: ClusterConfig) -> Component:
    return _controller(config, "kube-scheduler", [])


def controller_manager(config: ClusterConfig) -> Component:
    pki = Pki(directory=config.pki_dir)
    return _controller(
        config,
        "kube-controller-manager",
        [
            # Each controller acts as its own ServiceAccount, as in kubeadm's clusters.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Pod CIDRs are the harness's (config.py): no node IPAM, no cloud routes.
            "--allocate-node-cidrs=false",
        ],
    )


def components(config: ClusterConfig) -> list[Component]:
    """Every control-plane process, in the order they start."""
    return [
        Component(name="etcd", args=etcd_args(config), marker=etcd_marker(config)),
        Component(
            name="kube-apiserver", args=apiserver_args(config), marker=apiserver_marker(config)
        ),
        scheduler(config),
        controller_manager(config),
    ]


def running(config: ClusterConfig) -> bool:
    return all(c.pid(config) is not None for c in components(config))


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


def _start(config: ClusterConfig, component: Component) -> None:
    if component.pid(config) is None:
        procs.start(
            component.args, pid_file=component.pid_file(config), log_file=component.log(config)
        )


def _check_alive(config: ClusterConfig, started: list[Component]) -> None:
    for component in started:
        if component.pid(config) is None:
            tail = component.log(config).read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{component.name} exited:\n" + "\n".join(tail))


def start(config: ClusterConfig) -> None:
    """Start etcd and the API server, wait until it is ready, then the scheduler and controllers."""
    pki = Pki(directory=config.pki_dir)
    ensure_client_cert(
        pki,
        "apiserver-kubelet-client",
        common_name="kube-apiserver-kubelet-client",
        organization="system:masters",
    )
    write_component_kubeconfig(config, "kube-scheduler", common_name="system:kube-scheduler")
    write_component_kubeconfig(
        config, "kube-controller-manager", common_name="system:kube-controller-manager"
    )
    etcd, apiserver, *controllers = components(config)
    for component in (etcd, apiserver):
        _start(config, component)
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready(config):
        _check_alive(config, [etcd, apiserver])
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"kube-apiserver not ready after {READY_TIMEOUT:.0f}s; see {apiserver.log(config)}"
            )
        time.sleep(0.5)
    for component in controllers:
        _start(config, component)
    time.sleep(0.5)
    _check_alive(config, controllers)


def stop(config: ClusterConfig) -> None:
    for component in reversed(components(config)):
        pid = component.pid(config)
        if pid is not None:
            procs.stop(pid)
        component.pid_file(config).unlink(missing_ok=True)
        # Anything started from this state directory that lost its pid file.
        for orphan in procs.processes_with(component.marker):
            procs.stop(orphan)
