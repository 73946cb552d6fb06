"""``ferry-helper``: the node agent. Serves SSH and publishes the node's NodeHelper.

The helper drives the runtimes the node has, and only those: podman (with a
``podman system service`` of its own for podman's REST API) when ``podman`` is
installed, docker when ``docker`` is. A node with docker and no podman is
served like any other; what it cannot do (a page server, checkpoint images) is
refused by capability when asked, and its NodeHelper lists docker alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections.abc import AsyncIterator

import asyncssh
from ferry_api.runtime import Runtime

from . import node_tools
from .cri import Ctr
from .drivers.capabilities import Driver
from .drivers.docker import DockerDriver
from .drivers.libpod import Libpod
from .drivers.podman import PodmanDriver
from .failure_logs import FailureLogs
from .kubelet import Kubelet
from .operations import Operations
from .probe import probe
from .publisher import publisher
from .server import HelperServer
from .settings import Settings
from .staging import Staging

log = logging.getLogger("ferry_helper")


def _host_key(settings: Settings) -> asyncssh.SSHKey:
    """The persistent host key, made on first start (clients pin its public half)."""
    if settings.host_key.exists():
        return asyncssh.read_private_key(settings.host_key)
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(settings.host_key)
    settings.host_key.chmod(0o600)
    return key


@contextlib.asynccontextmanager
async def node_drivers(settings: Settings) -> AsyncIterator[dict[Runtime, Driver]]:
    """A driver for each runtime installed on this node (podman first, then docker).

    podman's REST API service is started only where podman is, and stopped
    when the helper stops.
    """
    drivers: dict[Runtime, Driver] = {}
    libpod: Libpod | None = None
    if shutil.which("podman"):
        libpod = Libpod(settings.podman_socket, tmpdir=settings.state_dir / "tmp")
        await libpod.start()
        drivers[Runtime.PODMAN] = PodmanDriver(api=libpod)
    if shutil.which("docker"):
        drivers[Runtime.DOCKER] = DockerDriver()
    if not drivers:
        log.warning("neither podman nor docker is installed: no container can be migrated here")
    try:
        yield drivers
    finally:
        if libpod is not None:
            await libpod.stop()


async def serve(settings: Settings) -> None:
    if settings.node_tools == "nsenter":
        node_tools.install(settings.state_dir / "node-tools", settings.state_dir / "tmp")
    async with node_drivers(settings) as drivers:
        log.info("runtimes on this node: %s", ", ".join(drivers) or "none")
        await _serve(settings, drivers)


async def _serve(settings: Settings, drivers: dict[Runtime, Driver]) -> None:
    host_key = _host_key(settings)
    cri = Ctr(ctr=settings.ctr, socket=settings.cri_socket)
    operations = Operations(
        node=settings.node_name,
        address=settings.address,
        drivers=drivers,
        staging=Staging(settings.state_dir / "staging"),
        store=Staging(settings.state_dir / "checkpoints"),
        logs=FailureLogs(
            settings.state_dir / "logs", retention_seconds=settings.log_retention_hours * 3600
        ),
        registry_authfile=(
            node_tools.node_visible(settings.registry_authfile, settings.state_dir)
            if settings.node_tools
            else settings.registry_authfile
        ),
        cri=cri,
        kubelet=Kubelet(url=settings.kubelet),
        checkpoint_keys=settings.checkpoint_keys,
    )
    # Before any operation: what a helper that died mid-way left in clear.
    operations.sealed.sweep()
    server = HelperServer(
        operations=operations,
        host_key=host_key,
        operator_keys=list(asyncssh.read_public_key_list(settings.operator_keys)),
    )
    acceptor = await server.start("0.0.0.0", settings.ssh_port)  # noqa: S104 - other nodes connect
    log.info("serving SSH on %s:%d", settings.address, settings.ssh_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    public_host_key = host_key.export_public_key().decode().strip()
    with publisher(node=settings.node_name) as heartbeat:
        while not stop.is_set():
            try:
                status = (await probe(drivers, cri=cri)).model_copy(
                    update={
                        "node_name": settings.node_name,
                        "address": settings.address,
                        "ssh_port": settings.ssh_port,
                        "ssh_host_key": public_host_key,
                    }
                )
                await heartbeat.publish(status)
            except Exception:
                log.exception("heartbeat failed; retrying at the next one")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.heartbeat_seconds)
    # No new sessions; those in flight end first (the pod's grace period bounds this).
    acceptor.close()
    left = await server.drain(settings.drain_seconds)
    if left:
        log.warning("stopping with %d operation(s) still running", left)


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
    except ValueError as error:
        print(f"ferry-helper: {error}", file=sys.stderr)
        return 2
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
