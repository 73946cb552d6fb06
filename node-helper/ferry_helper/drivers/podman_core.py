"""The podman driver's core: checkpoint into an archive, restore, roll back, ship images.

The helper drives podman through its command line (``asyncio`` subprocesses,
an argv and never a shell, each with a timeout), and through the libpod REST
API of a ``podman system service`` it runs itself (:mod:`.libpod`) where
podman's start-up would cost the most: the quick queries, and the checkpoint
and restore of small containers, which happen while the container is frozen.
Without the service everything goes through the CLI. What podman prints is
read by :mod:`.podman_parsing`; this module only runs commands and wires them
up. The page server (:mod:`.podman_pages`) and checkpoint images
(:mod:`.podman_images`) build on it.

What was found running podman 5.4.2 + crun 1.21 + CRIU 4.2.1 on the simulated
nodes, and what the driver therefore does:

* A checkpoint is written under a temporary name next to the archive and
  renamed when podman succeeded, so an archive that exists is complete.
* A failed CRIU restore (``restore --import``) leaves a container in state
  ``created`` holding the name, and the container's cgroups (with crun's
  ``.proxy-crun`` child) in every cgroup v1 hierarchy. Any later restore with
  the same container ID then fails with ``crun: write file `devices.deny`:
  Invalid argument`` (cgroup v1 refuses to change the device list of a cgroup
  with children). After a failed restore the driver removes both, so the
  restore can be retried; CRIU's error lines are kept in the error first.
* A checkpoint made with ``--tcp-established`` must be restored with it (CRIU:
  ``inet: Connected TCP socket in image``), in place and from an archive; the
  rollback reads it from CRIU's images when not told.
* Not the driver's to fix, but worth knowing: a long ``sleep`` in a container
  returns early (exit 0) after a checkpoint, even a failed one: CRIU cannot
  bring back the kernel's restart state of an interrupted ``nanosleep``.
  Workloads see an early wake-up, not a lost one.
* With ``--leave-running`` podman exports the container's log after the dump,
  while the source still writes it: the restored copy's log runs past the
  point its process resumes from.
* ``restore --import`` of an archive whose image is missing tries to *pull*
  the image by name (three retries, about 3 s, then a registry error): the
  image is shipped first (see :mod:`.podman_images`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from ..criu_stats import CriuStatistics, parse_print_stats, statistics_of_entry
from .archives import file_digest, written_whole
from .cli import CliDriver, CommandOutput
from .errors import RuntimeCommandError
from .libpod import Libpod, LibpodError, ServiceUnavailable
from .libpod_export import finish_export
from .podman_parsing import (
    RuntimeInfo,
    api_output,
    checkpoint_args,
    checkpoint_params,
    container_id_of_log,
    container_info,
    holds_tcp_streams,
    import_args,
    is_no_such_container,
    parse_container_inspect,
    parse_runtime_info,
    restore_flags,
    restore_params,
    stale_cgroup_dirs,
    work_path_log,
)
from .records import CheckpointOptions, CheckpointResult, ContainerInfo, RestoreResult

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Where the cgroup hierarchies are mounted.
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Containers using at most this much memory are checkpointed through the REST API. Its
#: export is a temporary file copied into the response: dearer than the CLI's start-up
#: for big ones (256 MiB: 1.6 s against 1.3 s with the hash), cheaper for small ones.
API_CHECKPOINT_MEMORY_LIMIT = 64 << 20
#: Archives up to this size are restored through the REST API (it copies the body first).
API_IMPORT_LIMIT = 64 << 20


class PodmanCore(CliDriver):
    """Podman on this node as an archive checkpointer (:class:`~.capabilities.Driver`),
    through its REST API where that is quicker and its CLI otherwise; every call is
    bounded by a timeout.

    ``timeout`` bounds the long commands (checkpoint, restore, image save and
    load); quick ones get at most :data:`~.cli.QUICK_TIMEOUT`. ``cgroup_root`` is
    where the cleanup after a failed restore looks for the container's cgroups.
    """

    def __init__(
        self,
        *,
        podman: str = "podman",
        timeout: float = 600,
        cgroup_root: Path = CGROUP_ROOT,
        api: Libpod | None = None,
    ) -> None:
        super().__init__(tool=podman, timeout=timeout)
        self._cgroup_root = cgroup_root
        self._api = api

    async def _by_api(
        self, what: str, call: Callable[[Libpod], Awaitable[T]], *, criu_log: str | None = None
    ) -> T:
        """``call`` through the REST API; raises ServiceUnavailable if it cannot be reached
        (nothing was asked: the caller uses the CLI), RuntimeCommandError as the CLI would.
        ``criu_log``: the name of the log CRIU writes in the runtime's work path."""
        if self._api is None or not self._api.usable:
            raise ServiceUnavailable("no REST API")
        try:
            return await call(self._api)
        except LibpodError as error:
            log = work_path_log(error.message, criu_log) if criu_log else None
            raise await self._failure(api_output(what, error), criu_log=log) from None

    # -- queries

    async def runtime_info(self) -> RuntimeInfo:
        output = await self._check(["info", "--format", "json"], limit=self._quick)
        try:
            return parse_runtime_info(output.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._unexpected(output, error) from error

    async def inspect(self, container: str) -> ContainerInfo | None:
        """The container named ``container`` (a name or an ID), None if there is none."""
        with contextlib.suppress(ServiceUnavailable):
            found = await self._by_api(
                f"container inspect {container}",
                lambda api: api.inspect(container, limit=self._quick),
            )
            return None if found is None else container_info(found)
        output = await self._run(["container", "inspect", container], limit=self._quick)
        if output.returncode != 0:
            if is_no_such_container(output.stderr):
                return None
            raise await self._failure(output)
        try:
            return parse_container_inspect(output.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._unexpected(output, error) from error

    async def image_exists(self, image_id: str) -> bool:
        with contextlib.suppress(ServiceUnavailable):
            return await self._by_api(
                f"image exists {image_id}",
                lambda api: api.image_exists(image_id, limit=self._quick),
            )
        output = await self._run(["image", "exists", image_id], limit=self._quick)
        if output.returncode in (0, 1):
            return output.returncode == 0
        raise await self._failure(output)

    # -- checkpoint and restore

    async def checkpoint(
        self, container: str, archive: Path, options: CheckpointOptions
    ) -> CheckpointResult:
        """Checkpoint ``container`` into ``archive`` (stopping it unless ``leave_running``).

        The archive appears only once complete; its size and SHA-256 are read
        back from the file in chunks, not held in memory. A small container is
        checkpointed through the REST API (the archive is the same).
        """
        if await self._small(container):
            with contextlib.suppress(ServiceUnavailable):
                return await self._checkpoint_by_api(container, archive, options)
        started = time.monotonic()
        with written_whole(archive) as partial:
            output = await self._run(
                checkpoint_args(container, partial, options), limit=self._timeout
            )
            seconds = time.monotonic() - started
            if output.returncode != 0:
                raise await self._failure(output)
        _, statistics = parse_print_stats(output.stdout)
        size, sha256 = await asyncio.to_thread(file_digest, archive)
        return CheckpointResult(
            archive=archive, size_bytes=size, sha256=sha256, seconds=seconds, statistics=statistics
        )

    async def memory_bytes(self, container: str) -> int | None:
        """The memory ``container``'s cgroup uses now, from the REST API (None without it:
        ``podman stats`` by the CLI takes longer than what it would help decide)."""
        try:
            return await self._by_api(
                f"container stats {container}",
                lambda api: api.memory_bytes(container, limit=self._quick),
            )
        except (ServiceUnavailable, RuntimeCommandError):
            return None

    async def _small(self, container: str) -> bool:
        """Whether ``container`` uses little enough memory for the REST API's export."""
        used = await self.memory_bytes(container)
        return used is not None and used <= API_CHECKPOINT_MEMORY_LIMIT

    async def _checkpoint_by_api(
        self, container: str, archive: Path, options: CheckpointOptions
    ) -> CheckpointResult:
        started = time.monotonic()
        raw = archive.with_name(f".{archive.name}.export")
        try:
            with written_whole(archive) as partial:
                await self._by_api(
                    f"container checkpoint --export {container}",
                    lambda api: api.checkpoint_export(
                        container, raw, params=checkpoint_params(options), limit=self._timeout
                    ),
                    criu_log="dump.log",
                )
                size, sha256, statistics = await asyncio.to_thread(
                    finish_export, raw, partial, options.compression
                )
        finally:
            raw.unlink(missing_ok=True)
        return CheckpointResult(
            archive=archive,
            size_bytes=size,
            sha256=sha256,
            seconds=time.monotonic() - started,
            statistics=statistics,
        )

    async def restore(
        self,
        archive: Path,
        *,
        name: str | None = None,
        tcp_established: bool = False,
        file_locks: bool = False,
    ) -> RestoreResult:
        """Create and start a container from a checkpoint archive.

        Without ``name`` the container gets the name and ID it had when it was
        checkpointed; with it, a new ID. A failed restore leaves nothing behind
        (see the module docstring), so it can be retried.
        """
        started = time.monotonic()
        if await asyncio.to_thread(lambda: archive.stat().st_size) <= API_IMPORT_LIMIT:
            with contextlib.suppress(ServiceUnavailable):
                params = restore_params(
                    name=name, tcp_established=tcp_established, file_locks=file_locks
                )
                try:
                    report = await self._by_api(
                        f"container restore --import {archive}",
                        lambda api: api.restore_import(archive, params=params, limit=self._timeout),
                        criu_log="restore.log",
                    )
                except RuntimeCommandError as error:
                    await self._clean_failed_restore(error)
                    raise
                return await self._restored_report(report, name, time.monotonic() - started)
        output = await self._run(
            import_args(archive, name=name, tcp_established=tcp_established, file_locks=file_locks),
            limit=self._timeout,
        )
        seconds = time.monotonic() - started
        if output.returncode != 0:
            failure = await self._failure(output)
            await self._clean_failed_restore(failure)
            raise failure
        return await self._restored(output, name, seconds)

    async def _restored_report(
        self, report: dict[str, Any], name: str | None, seconds: float
    ) -> RestoreResult:
        """:meth:`_restored` for the REST API's restore report."""
        output = CommandOutput(
            command=["podman", "container", "restore", "(REST API)"],
            returncode=0,
            stdout=json.dumps(report),
            stderr="",
        )
        reference = str(report.get("Id") or "") or name
        return await self._restored_as(output, reference, statistics_of_entry(report), seconds)

    async def _restored(
        self, output: CommandOutput, reference: str | None, seconds: float
    ) -> RestoreResult:
        container_id, statistics = parse_print_stats(output.stdout)
        return await self._restored_as(output, container_id or reference, statistics, seconds)

    async def _restored_as(
        self,
        output: CommandOutput,
        reference: str | None,
        statistics: CriuStatistics,
        seconds: float,
    ) -> RestoreResult:
        """The container a restore made (by the ID it reported, else by ``reference``)."""
        if reference is None:
            raise self._unexpected(output, "no container ID in --print-stats")
        info = await self.inspect(reference)
        if info is None:
            raise self._unexpected(output, f"the restored container {reference} is gone")
        return RestoreResult(
            container_id=info.id, name=info.name, seconds=seconds, statistics=statistics
        )

    async def _clean_failed_restore(self, error: RuntimeCommandError) -> None:
        """Remove what a failed CRIU restore left: its ``created`` container and cgroups.

        Only the container whose userdata holds the failing restore log is
        touched, and only if it never ran; cgroups are removed with rmdir,
        which the kernel refuses for a cgroup that still has processes.
        """
        container_id = container_id_of_log(error.criu_log) if error.criu_log else None
        if container_id is None:
            return
        try:
            info = await self.inspect(container_id)
            if info is not None and info.state == "created":
                logger.info("removing %s (%s), left by a failed restore", info.name, info.id)
                await self.remove(info.id)
        except RuntimeCommandError as cleanup_error:
            logger.warning("could not remove what the failed restore left: %s", cleanup_error)
        await self._remove_stale_cgroups(container_id)

    async def _remove_stale_cgroups(self, container_id: str) -> None:
        def remove() -> list[str]:
            failed = []
            for directory in stale_cgroup_dirs(self._cgroup_root, container_id):
                try:
                    directory.rmdir()
                except OSError as error:
                    failed.append(f"{directory}: {error.strerror}")
            return failed

        failed = await asyncio.to_thread(remove)
        if failed:
            logger.warning("cgroups of %s left in place: %s", container_id, "; ".join(failed))

    async def rollback(
        self,
        container: str,
        archive: Path,
        *,
        tcp_established: bool | None = None,
        file_locks: bool = False,
    ) -> RestoreResult:
        """Bring the source container back after a failed migration, from its checkpoint:
        in place first, else from ``archive`` (see :meth:`_rollback`)."""
        return await self._rollback(
            container,
            archive,
            tcp_established=tcp_established,
            file_locks=file_locks,
            archive_holds_memory=True,
        )

    async def _rollback(
        self,
        container: str,
        archive: Path,
        *,
        tcp_established: bool | None = None,
        file_locks: bool = False,
        archive_holds_memory: bool,
    ) -> RestoreResult:
        """Bring the source container back after a failed migration, from its checkpoint.

        Found on podman 5.4.2: after ``checkpoint --export`` (without
        ``--leave-running``) the container is ``exited`` with
        ``State.Checkpointed`` true and its CRIU images stay in its userdata
        (``checkpoint/``), so an in-place ``podman container restore <container>``
        works and resumes the process where it was frozen (a successful restore
        then deletes those images). That is tried first: it keeps the container,
        its ID and its writable layer as they are.

        The options must be those of the checkpoint: a ``--tcp-established`` dump
        refuses to restore without it (``inet: Connected TCP socket in image``).
        With ``tcp_established`` left None it is read from the container's CRIU
        images (``tcp-stream-*.img`` exist only for such a dump), and taken as
        False when the container is gone. ``file_locks`` cannot be read back:
        pass what the checkpoint used. A failed in-place restore breaks the next
        one (``crun: write file `devices.deny`: Invalid argument``) unless the
        cgroups it left are removed, which is done first.

        When it cannot work (the container is not checkpointed: it was started
        again, or exited on its own) or fails, the container is removed,
        the cgroups a failed CRIU restore leaves are removed, and the archive is
        restored with ``restore --import`` *without* ``--name``: podman then
        gives the container back the name *and the ID* it had when checkpointed
        (verified). A container that is gone already is restored the same way;
        one that runs is left alone (the checkpoint left it running, or an
        earlier rollback brought it back), so a rollback can be repeated.

        ``archive_holds_memory`` False: a page-server dump, whose memory is
        only in the container's checkpoint directory (brought back from the
        target). Removing the container would lose it, so there is no
        fallback: a failed in-place restore is the error (see
        :meth:`.podman_pages.PodmanPageServer.rollback_from_pages`).
        """
        started = time.monotonic()
        info = await self.inspect(container)
        if info is not None and info.running:
            return RestoreResult(
                container_id=info.id, name=info.name, seconds=0.0, statistics=CriuStatistics()
            )
        if tcp_established is None:
            tcp_established = False
            if info is not None and info.static_dir:
                images = Path(info.static_dir, "checkpoint")
                tcp_established = await asyncio.to_thread(holds_tcp_streams, images)
        flags = restore_flags(tcp_established=tcp_established, file_locks=file_locks)
        if info is not None and info.checkpointed:
            # An earlier failed restore of this container may have left its cgroups.
            await self._remove_stale_cgroups(info.id)
            output = await self._run(["container", "restore", *flags, info.id], limit=self._timeout)
            if output.returncode == 0:
                return await self._restored(output, info.id, time.monotonic() - started)
            error = await self._failure(output)
            if not archive_holds_memory:
                raise error
            logger.warning(
                "in-place restore of %s failed, restoring the archive: %s", info.name, error
            )
        elif info is not None and not archive_holds_memory:
            raise RuntimeCommandError(
                command=[self._tool, "container", "restore", info.id],
                exit_code=None,
                stderr="",
                decisive_line=f"container {info.name} is {info.state}, not checkpointed, and "
                "its memory is only in its checkpoint directory: it cannot be restored",
            )
        if info is not None:
            await self.remove(info.id)
            await self._remove_stale_cgroups(info.id)
        restored = await self.restore(
            archive, tcp_established=tcp_established, file_locks=file_locks
        )
        return restored.model_copy(update={"seconds": time.monotonic() - started})

    async def remove(self, container: str) -> None:
        """Remove the container, killing it at once if it runs; no error if there is none.

        ``--time 0``: what is removed here is a checkpointed source or a
        failed restore, whose state is in the checkpoint; waiting for a
        graceful stop (10 s by default) would only lengthen a migration.
        """
        with contextlib.suppress(ServiceUnavailable):
            await self._by_api(
                f"rm --force --time 0 {container}",
                lambda api: api.remove(container, limit=self._quick),
            )
            return
        await self._check(
            ["rm", "--force", "--ignore", "--time", "0", container], limit=self._quick
        )
