"""A node-helper without root, podman or docker: fake drivers and a helper on loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
from ferry_api.runtime import Runtime
from ferry_helper.criu_tls import TlsFiles
from ferry_helper.drivers.capabilities import Driver
from ferry_helper.drivers.records import (
    CheckpointOptions,
    CheckpointResult,
    ContainerInfo,
    RestoreResult,
)
from ferry_helper.failure_logs import FailureLogs
from ferry_helper.operations import Operations
from ferry_helper.server import HelperServer
from ferry_helper.staging import Staging
from ferry_wire import OPERATOR_USER, Peer
from ferry_wire.ssh import connect

CONTAINER_ID = "c" * 64


class Versions:
    version = "26.1.5"
    oci_runtime = "runc"
    oci_runtime_version = "1.1.15"


class DockerLike:
    """An archive checkpointer and nothing more, as docker is; one running container, web."""

    def __init__(self) -> None:
        self.checkpoints: list[str] = []
        self.web = ContainerInfo(
            id=CONTAINER_ID,
            name="web",
            image_id="i" * 64,
            image_name="busybox",
            state="running",
            running=True,
            labels={"ferry.dev/namespace": "team-a"},
            pid=42,
        )

    async def runtime_info(self) -> Versions:
        return Versions()

    async def inspect(self, container: str) -> ContainerInfo | None:
        return self.web if container in ("web", CONTAINER_ID) else None

    async def memory_bytes(self, container: str) -> int | None:
        return None

    async def running_labelled(self, label: str) -> list[str]:
        return ["web"] if label in self.web.labels else []

    async def image_exists(self, image_id: str) -> bool:
        return False

    async def save_image(self, image: str, out: Path) -> None:
        raise NotImplementedError

    async def load_image(self, archive: Path) -> str:
        raise NotImplementedError

    async def checkpoint(
        self, container: str, archive: Path, options: CheckpointOptions
    ) -> CheckpointResult:
        self.checkpoints.append(container)
        raise NotImplementedError

    async def restore(
        self,
        archive: Path,
        *,
        name: str | None = None,
        tcp_established: bool = False,
        file_locks: bool = False,
    ) -> RestoreResult:
        raise NotImplementedError

    async def rollback(
        self,
        container: str,
        archive: Path,
        *,
        tcp_established: bool | None = None,
        file_locks: bool = False,
    ) -> RestoreResult:
        raise NotImplementedError

    async def remove(self, container: str) -> None:
        raise NotImplementedError


def helper_operations(
    tmp_path: Path, drivers: dict[Runtime, Driver], *, node: str = "node-d"
) -> Operations:
    """A helper's operations on ``node`` with ``drivers``, its state under ``tmp_path``."""
    return Operations(
        node=node,
        drivers=drivers,
        staging=Staging(tmp_path / "staging"),
        store=Staging(tmp_path / "checkpoints"),
        logs=FailureLogs(tmp_path / "logs", retention_seconds=3600),
    )


def docker_only(tmp_path: Path) -> tuple[Operations, DockerLike]:
    """A node with docker and no podman."""
    driver = DockerLike()
    return helper_operations(tmp_path, {Runtime.DOCKER: driver}), driver


Run = Callable[..., Awaitable[tuple[list[dict[str, Any]], int | None]]]


OPERATOR_KEY = asyncssh.generate_private_key("ssh-ed25519")


@asynccontextmanager
async def serving(operations: Operations) -> AsyncIterator[tuple[Peer, Run]]:
    """``operations`` served over SSH on loopback: how to reach them, and a way to run one
    operation there (its events, and its exit status)."""
    operator_key = OPERATOR_KEY
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = HelperServer(operations=operations, host_key=host_key, operator_keys=[operator_key])
    acceptor = await server.start("127.0.0.1", 0)
    port = acceptor.sockets[0].getsockname()[1]
    peer = Peer(
        node=operations.node,
        address="127.0.0.1",
        port=port,
        host_key=host_key.export_public_key().decode(),
    )

    async def run(
        command: str, request: dict[str, Any], *, user: str = OPERATOR_USER, key: Any = None
    ) -> tuple[list[dict[str, Any]], int | None]:
        async with connect(peer, username=user, client_key=key or operator_key) as conn:
            process = await conn.create_process(command, encoding=None)
            # A refused operation may end before its request is read.
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(json.dumps(request).encode() + b"\n")
                process.stdin.write_eof()
            out = await process.stdout.read()
            done = await process.wait()
        return [json.loads(line) for line in out.splitlines()], done.exit_status

    try:
        yield peer, run
    finally:
        acceptor.close()
        await acceptor.wait_closed()


class PodmanLike(DockerLike):
    """A driver with the page-server capability, whose container ``web`` a page-server dump
    stopped: its memory is on the target, its checkpoint directory under ``root``."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.web = self.web.model_copy(update={"state": "exited", "running": False, "pid": 0})

    async def checkpoint_to_page_server(
        self,
        container: str,
        archive: Path,
        options: CheckpointOptions,
        *,
        address: str,
        port: int,
        tls: TlsFiles | None,
    ) -> CheckpointResult:
        raise NotImplementedError

    async def checkpoint_dir(self, container_id: str) -> Path:
        return self.root / container_id / "checkpoint"

    async def page_target(self, container_id: str) -> Path:
        raise NotImplementedError

    async def discard_page_target(self, container_id: str) -> None:
        raise NotImplementedError

    async def drop_kept_images(self, container_id: str) -> None:
        raise NotImplementedError

    async def restore_onto_pages(
        self, archive: Path, *, tcp_established: bool = False, file_locks: bool = False
    ) -> RestoreResult:
        raise NotImplementedError

    async def rollback_from_pages(
        self, container: str, archive: Path, *, file_locks: bool = False
    ) -> RestoreResult:
        raise NotImplementedError
