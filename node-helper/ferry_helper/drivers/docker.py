"""The docker runtime driver: the same checkpoint archive and restore as podman's, built by hand.

Docker has no checkpoint export or import, so this driver builds the archive
podman's ``--export`` makes from docker's parts (:mod:`.docker_archive`). A
restore creates the container from ``config.json``, lays the writable layer
into its upper directory, copies the images into the container's own
``checkpoints/`` (``--checkpoint-dir`` is refused at restore: "custom
checkpointdir is not supported") and starts it from there.

Docker is an archive checkpointer only (:class:`~.capabilities.Driver`): no
page server, no checkpoint images (see :mod:`.capabilities`).

Found with Docker 26.1.5, containerd 1.7.24, runc 1.1.15, CRIU 4.2.1 (see
docs/docker-notes.md):

* Docker has no flags for CRIU's options; runc reads a CRIU configuration file
  whose settings win: ``/etc/criu/runc.conf`` for every container, or the one
  a container's ``org.criu.config`` annotation names (fixed at creation). The
  source was not created by us, so its checkpoint (and an in-place rollback)
  writes ``runc.conf`` for the time of the command, under a lock; containers
  this driver creates get their own file through the annotation.
* The same file sets CRIU's ``log-file``: a failed restore's log is deleted
  with containerd's task before the command returns, unless written elsewhere.
* ``docker start --checkpoint`` right after ``docker checkpoint create`` on the
  same node can fail with ``commit failed: content sha256:...: already
  exists``: containerd still holds the upload of the checkpoint until its
  garbage collector runs (about 0.3 s). The driver removes that blob when
  ``ctr`` is there and retries after a pause.
* Docker reports no CRIU statistics; the driver returns none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..criu_stats import CriuStatistics
from .archives import file_digest, written_whole
from .cli import CliDriver, CommandOutput
from .docker_archive import (
    CONFIG,
    DELETED,
    IMAGES,
    OURS,
    ROOTFS_DIFF,
    DockerRuntimeInfo,
    container_info,
    create_args,
    criu_config,
    is_no_such_container,
    pack_upper,
    parse_inspect,
    parse_loaded,
    read_archive,
    recreation,
    stale_upload,
    unpack_upper,
    upper_dir,
    write_archive,
)
from .errors import RuntimeCommandError
from .records import CheckpointOptions, CheckpointResult, ContainerInfo, RestoreResult

if TYPE_CHECKING:
    from .capabilities import Driver

logger = logging.getLogger(__name__)

#: The name of the checkpoint inside a container's ``checkpoints/`` directory.
CHECKPOINT_NAME = "ferry"
#: runc's CRIU configuration for every container (read at each checkpoint and restore).
RUNC_CONF = Path("/etc/criu/runc.conf")
#: How often ``start --checkpoint`` is tried while containerd holds a stale upload.
START_ATTEMPTS = 5
STALE_PAUSE = 0.5


async def _existing(path: Path) -> Path | None:
    return path if await asyncio.to_thread(path.exists) else None


class DockerDriver(CliDriver):
    """Docker on this node, through its CLI; files under its data root reached directly."""

    def __init__(
        self, *, docker: str = "docker", timeout: float = 600, runc_conf: Path = RUNC_CONF
    ) -> None:
        super().__init__(tool=docker, timeout=timeout)
        self._runc_conf = runc_conf
        # runc.conf is one file for the node: one command that needs it at a time.
        self._runc_conf_lock = asyncio.Lock()
        self._root: Path | None = None
        self._forget_stale_runc_conf()

    def _forget_stale_runc_conf(self) -> None:
        """A runc.conf left by a helper killed mid-command would steer every later docker
        checkpoint on the node (its options, a log file in our staging): remove it."""
        try:
            if self._runc_conf.read_text().startswith(OURS):
                logger.warning("removing %s, left by an earlier helper", self._runc_conf)
                self._runc_conf.unlink()
        except OSError:
            return

    async def runtime_info(self) -> DockerRuntimeInfo:
        output = await self._check(
            ["version", "--format", "{{.Server.Version}}"], limit=self._quick
        )
        runc = shutil.which("runc")
        runc_version = ""
        if runc:
            answer = (await self._run(["--version"], limit=self._quick, tool=runc)).stdout
            runc_version = answer.split()[2] if answer.startswith("runc version") else ""
        return DockerRuntimeInfo(
            version=output.stdout.strip(), oci_runtime="runc", oci_runtime_version=runc_version
        )

    async def _data_root(self) -> Path:
        if self._root is None:
            output = await self._check(
                ["info", "--format", "{{.DockerRootDir}}"], limit=self._quick
            )
            self._root = Path(output.stdout.strip())
        return self._root

    async def _inspect_raw(self, container: str) -> dict[str, Any] | None:
        output = await self._run(["inspect", "--type", "container", container], limit=self._quick)
        if output.returncode != 0:
            if is_no_such_container(output.stderr):
                return None
            raise await self._failure(output)
        try:
            return parse_inspect(output.stdout)
        except (ValueError, TypeError) as error:
            raise self._unexpected(output, error) from error

    async def inspect(self, container: str) -> ContainerInfo | None:
        data = await self._inspect_raw(container)
        try:
            return container_info(data) if data is not None else None
        except (KeyError, TypeError, ValueError) as error:
            raise RuntimeCommandError(
                command=["docker", "inspect", container],
                exit_code=0,
                stderr="",
                decisive_line=f"unexpected inspect output: {error}",
            ) from error

    async def memory_bytes(self, container: str) -> int | None:
        """Not asked of docker: its containers move their memory in the archive only."""
        return None

    async def image_exists(self, image_id: str) -> bool:
        output = await self._run(["image", "inspect", image_id], limit=self._quick)
        return output.returncode == 0

    # -- checkpoint

    @contextmanager
    def _work(self, archive: Path, purpose: str) -> Iterator[Path]:
        work = archive.parent / f".docker-{purpose}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _with_runc_conf(self, text: str, args: list[str], *, limit: float) -> CommandOutput:
        """Run docker while ``runc.conf`` holds ``text`` (the source container reads only it)."""
        async with self._runc_conf_lock:
            previous = self._runc_conf.read_bytes() if self._runc_conf.exists() else None
            self._runc_conf.parent.mkdir(parents=True, exist_ok=True)
            self._runc_conf.write_text(text)
            try:
                return await self._run(args, limit=limit)
            finally:
                if previous is None:
                    self._runc_conf.unlink(missing_ok=True)
                else:
                    self._runc_conf.write_bytes(previous)

    async def checkpoint(
        self, container: str, archive: Path, options: CheckpointOptions
    ) -> CheckpointResult:
        data = await self._inspect_raw(container)
        if data is None:
            raise RuntimeCommandError(
                command=["docker", "checkpoint", "create", container],
                exit_code=None,
                stderr="",
                decisive_line=f"no container {container!r}",
            )
        with self._work(archive, "checkpoint") as work:
            log = work / "dump.log"
            conf = criu_config(
                tcp_established=options.tcp_established, file_locks=options.file_locks, log_file=log
            )
            args = ["checkpoint", "create", "--checkpoint-dir", str(work / "cps")]
            if options.leave_running:
                args.append("--leave-running")
            started = time.monotonic()
            output = await self._with_runc_conf(
                conf, [*args, data["Id"], CHECKPOINT_NAME], limit=self._timeout
            )
            seconds = time.monotonic() - started
            if output.returncode != 0:
                raise await self._failure(output, criu_log=log)
            if not options.leave_running:
                await self._wait_exited(data["Id"])
            (work / "cps" / CHECKPOINT_NAME).rename(work / IMAGES)
            (work / CONFIG).write_text(json.dumps(recreation(data)))
            deleted = await asyncio.to_thread(pack_upper, upper_dir(data), work / ROOTFS_DIFF)
            (work / DELETED).write_text(json.dumps(deleted))
            with written_whole(archive) as partial:
                await asyncio.to_thread(write_archive, work, partial, options.compression)
        size, sha256 = await asyncio.to_thread(file_digest, archive)
        return CheckpointResult(
            archive=archive,
            size_bytes=size,
            sha256=sha256,
            seconds=seconds,
            statistics=CriuStatistics(),
        )

    async def _wait_exited(self, container_id: str, *, within: float = 10) -> None:
        # Seen once: `Up (Paused)` for a moment after the checkpoint returned.
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            info = await self.inspect(container_id)
            if info is None or info.state == "exited":
                return
            await asyncio.sleep(0.1)

    # -- restore

    async def restore(
        self,
        archive: Path,
        *,
        name: str | None = None,
        tcp_established: bool = False,
        file_locks: bool = False,
    ) -> RestoreResult:
        """Create a container from the archive's config, with its layer, and start it from
        the checkpoint; a failed restore removes what it created."""
        started = time.monotonic()
        with self._work(archive, "restore") as work:
            await asyncio.to_thread(read_archive, archive, work)
            config: dict[str, Any] = json.loads((work / CONFIG).read_text())
            name = name or str(config.get("name") or "")
            conf = work / "criu.conf"
            log = work / "restore.log"
            conf.write_text(
                criu_config(tcp_established=tcp_established, file_locks=file_locks, log_file=log)
            )
            created = await self._check(
                create_args(config, name=name, criu_config=conf), limit=self._quick
            )
            container_id = created.stdout.strip().splitlines()[-1]
            try:
                await self._place(container_id, work)
                await self._start_from_checkpoint(container_id, log)
            except BaseException:
                await self.remove(container_id)
                raise
        return RestoreResult(
            container_id=container_id,
            name=name,
            seconds=time.monotonic() - started,
            statistics=CriuStatistics(),
        )

    async def _place(self, container_id: str, work: Path) -> None:
        """The writable layer and CRIU's images, where docker and runc look for them."""
        upper = upper_dir(await self._inspect_raw(container_id))
        deleted = json.loads((work / DELETED).read_text())
        await asyncio.to_thread(unpack_upper, work / ROOTFS_DIFF, deleted, upper)
        await self._install_images(container_id, work / IMAGES)

    async def _install_images(self, container_id: str, images: Path) -> None:
        into = await self._data_root() / "containers" / container_id / "checkpoints"
        await asyncio.to_thread(into.mkdir, parents=True, exist_ok=True)
        target = into / CHECKPOINT_NAME
        await asyncio.to_thread(shutil.rmtree, target, True)
        # copy2 keeps the mtimes: docker tars this directory again for containerd.
        await asyncio.to_thread(shutil.copytree, images, target, copy_function=shutil.copy2)

    async def _start_from_checkpoint(
        self, container_id: str, log: Path, *, runc_conf: str | None = None
    ) -> None:
        """``docker start --checkpoint``, retried while containerd holds a stale upload.

        ``runc_conf``: CRIU's options for a container we did not create (read
        from ``runc.conf`` only); our own read theirs through the annotation.
        """
        args = ["start", "--checkpoint", CHECKPOINT_NAME, container_id]
        for attempt in range(1, START_ATTEMPTS + 1):
            if runc_conf is None:
                output = await self._run(args, limit=self._timeout)
            else:
                output = await self._with_runc_conf(runc_conf, args, limit=self._timeout)
            if output.returncode == 0:
                return
            digest = stale_upload(output.stderr)
            if digest is None or attempt == START_ATTEMPTS:
                raise await self._failure(output, criu_log=await _existing(log))
            logger.info("containerd still holds %s; removing it and retrying", digest)
            if ctr := shutil.which("ctr"):
                await self._run(
                    ["-n", "moby", "content", "rm", digest], limit=self._quick, tool=ctr
                )
            await asyncio.sleep(STALE_PAUSE * attempt)

    async def rollback(
        self,
        container: str,
        archive: Path,
        *,
        tcp_established: bool | None = None,
        file_locks: bool = False,
    ) -> RestoreResult:
        """Bring the source back from its checkpoint: in place when it is still there
        (stopped by the checkpoint), else recreated from the archive."""
        started = time.monotonic()
        info = await self.inspect(container)
        if info is not None and info.running:
            return RestoreResult(
                container_id=info.id, name=info.name, seconds=0.0, statistics=CriuStatistics()
            )
        with self._work(archive, "rollback") as work:
            await asyncio.to_thread(read_archive, archive, work)
            if tcp_established is None:
                tcp_established = any((work / IMAGES).glob("tcp-stream-*.img"))
            if info is not None:
                log = work / "restore.log"
                conf = criu_config(
                    tcp_established=tcp_established, file_locks=file_locks, log_file=log
                )
                await self._install_images(info.id, work / IMAGES)
                try:
                    await self._start_from_checkpoint(info.id, log, runc_conf=conf)
                except RuntimeCommandError as error:
                    logger.warning(
                        "in-place restore of %s failed, recreating it: %s", container, error
                    )
                    await self.remove(info.id)
                else:
                    return RestoreResult(
                        container_id=info.id,
                        name=info.name,
                        seconds=time.monotonic() - started,
                        statistics=CriuStatistics(),
                    )
        restored = await self.restore(
            archive,
            name=info.name if info else None,
            tcp_established=tcp_established,
            file_locks=file_locks,
        )
        return restored.model_copy(update={"seconds": time.monotonic() - started})

    async def remove(self, container: str) -> None:
        output = await self._run(["rm", "--force", container], limit=self._quick)
        if output.returncode != 0 and not is_no_such_container(output.stderr):
            raise await self._failure(output)

    # -- images

    async def save_image(self, image: str, out: Path) -> None:
        with written_whole(out) as partial:
            await self._check(["save", "--output", str(partial), image], limit=self._timeout)

    async def load_image(self, archive: Path) -> str:
        output = await self._check(
            ["load", "--quiet", "--input", str(archive)], limit=self._timeout
        )
        loaded = parse_loaded(output.stdout)
        if loaded is None:
            raise self._unexpected(output, "no `Loaded image` line")
        inspected = await self._check(
            ["image", "inspect", "--format", "{{.Id}}", loaded], limit=self._quick
        )
        return inspected.stdout.strip().removeprefix("sha256:")


if TYPE_CHECKING:
    # mypy checks here that the driver has the archive checkpointer's methods.
    _DRIVER: type[Driver] = DockerDriver
