"""The node's CRI containerd (the kubelet's runtime), through its own ``ctr``.

A pod's containers are not podman's or docker's: the kubelet runs them in
the node's CRI containerd, namespace ``k8s.io``. The helper asks that
containerd for the few things a pod's migration needs that the kubelet does
not offer: freeze and thaw a container's task (``ctr tasks pause|resume``),
import a checkpoint image and unpack it into the CRI snapshotter
(``ctr images import --local``), remove it again, and its version (a
checkpoint image is restored by containerd 2.1 or newer).

``ctr`` runs in the node's mount namespace when the helper runs the node's
tools (see :func:`.node_tools.in_node`): the socket and every file handed to
containerd are paths in the node.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from ferry_api.nodehelper import CriInfo

from . import node_tools

#: The CRI plugin's containerd namespace: where the kubelet's containers and images are.
CRI_NAMESPACE = "k8s.io"
#: The first containerd that restores a container from a checkpoint image.
CHECKPOINT_IMAGES_SINCE = (2, 1)
#: How long a ``ctr`` command may take (an import of a large archive included).
CTR_TIMEOUT = 600.0
PROBE_TIMEOUT = 15.0

RUNNING = "RUNNING"
PAUSED = "PAUSED"


class CriCommandError(Exception):
    """A ``ctr`` command failed; the message carries ctr's own words."""


def parse_server_version(text: str) -> str | None:
    """The server's version in ``ctr version``'s output (``Server:`` then ``Version:``)."""
    _, server, rest = text.partition("Server:")
    match = re.search(r"^\s*Version:\s*(\S+)", rest, re.MULTILINE) if server else None
    return match.group(1) if match else None


def restores_checkpoint_images(version: str | None) -> bool:
    """Whether containerd ``version`` (``2.1.9``, ``v2.1.0``, ``2.1.9~ds1``) restores them."""
    match = re.match(r"v?(\d+)\.(\d+)", version or "")
    return match is not None and (int(match[1]), int(match[2])) >= CHECKPOINT_IMAGES_SINCE


def parse_tasks(text: str) -> dict[str, str]:
    """Task ID -> status (``RUNNING``, ``PAUSED``, ``STOPPED``...) from ``ctr tasks ls``."""
    tasks = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:  # TASK PID STATUS
            tasks[fields[0]] = fields[2]
    return tasks


@dataclass(frozen=True, kw_only=True)
class Ctr:
    """``ctr`` of the node's CRI containerd."""

    ctr: str = "ctr"
    socket: Path = Path("/run/containerd/containerd.sock")
    namespace: str = CRI_NAMESPACE

    def command(self, *args: str) -> list[str]:
        base = [self.ctr, "--address", str(self.socket), "--namespace", self.namespace]
        return node_tools.in_node([*base, *args])

    def present(self) -> bool:
        """Whether the socket is there (in the node): if not, nothing is asked."""
        return node_tools.node_path(self.socket).exists()

    async def run(self, *args: str, limit: float = CTR_TIMEOUT) -> str:
        """ctr's output; :class:`CriCommandError` with its words when it fails."""
        command = self.command(*args)
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as error:
            raise CriCommandError(f"ctr {' '.join(args)}: {error}") from None
        try:
            out, err = await asyncio.wait_for(process.communicate(), limit)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise CriCommandError(f"ctr {' '.join(args)}: no answer in {limit:.0f} s") from None
        if process.returncode != 0:
            said = (err or out).decode(errors="replace").strip() or f"exit {process.returncode}"
            raise CriCommandError(f"ctr {' '.join(args)}: {said}")
        return out.decode(errors="replace")

    async def tasks(self) -> dict[str, str]:
        return parse_tasks(await self.run("tasks", "ls"))

    async def pause(self, container_id: str) -> None:
        await self.run("tasks", "pause", container_id)

    async def resume(self, container_id: str) -> None:
        await self.run("tasks", "resume", container_id)

    async def kill(self, container_id: str) -> None:
        """SIGKILL the task's processes (a frozen task dies when it is resumed)."""
        await self.run("tasks", "kill", "--signal", "SIGKILL", "--all", container_id)

    async def import_image(self, layout: Path) -> None:
        """Import an OCI layout tar (a path in the node), unpacked into the CRI snapshotter."""
        await self.run("images", "import", "--local", str(layout))

    async def images(self) -> set[str]:
        return set((await self.run("images", "ls", "--quiet")).split())

    async def remove_images(self, references: set[str]) -> set[str]:
        """Remove those of ``references`` that are there; the ones removed."""
        present = references & await self.images()
        if present:
            await self.run("images", "rm", *sorted(present))
        return present

    async def info(self) -> CriInfo | None:
        """The runtime as the NodeHelper status reports it; None when it does not answer."""
        if not self.present():
            return None
        try:
            version = parse_server_version(await self.run("version", limit=PROBE_TIMEOUT))
        except CriCommandError:
            return None
        return CriInfo(
            runtime="containerd",
            version=version,
            checkpoint_images=restores_checkpoint_images(version),
        )
