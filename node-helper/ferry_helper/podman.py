"""The podman runtime driver: checkpoint, restore, roll back and ship images.

The helper drives podman through its command line (``asyncio`` subprocesses,
an argv and never a shell, each with a timeout), and through the libpod REST
API of a ``podman system service`` it runs itself (:mod:`.libpod`) where
podman's start-up would cost the most: the quick queries, and the checkpoint
and restore of small containers, which happen while the container is frozen.
Without the service everything goes through the CLI. Everything podman prints
is parsed by the small pure functions at the top of this module, which the
unit tests feed with captured output; the :class:`PodmanDriver` below only
runs commands and wires them up.

What was found running podman 5.4.2 + crun 1.21 + CRIU 4.2.1 on the simulated
nodes, and what the driver therefore does:

* ``--print-stats`` replaces the container name on stdout by a JSON document
  (see :mod:`ferry_helper.criu_stats`); it is printed on failures too.
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
  the image by name (three retries, about 3 s, then a registry error): ship the
  image first (:meth:`PodmanDriver.image_exists`, ``save_image``, ``load_image``).
* ``podman save --format docker-archive`` keeps the image ID (the config blob is
  stored as is) for docker and OCI images alike, and ``podman load`` gives the
  image its name back; ``oci-archive`` changed the ID of a docker-format image
  (its config is converted), so it is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from . import pagestream
from .api_export import finish_export
from .criu_images import Contents, summarize_tree
from .criu_stats import CriuStatistics, parse_print_stats, statistics_of_entry
from .criu_tls import TlsFiles
from .errors import RuntimeCommandError
from .libpod import Libpod, LibpodError, ServiceUnavailable
from .runtime import (
    CheckpointOptions,
    CheckpointResult,
    CliDriver,
    CommandOutput,
    Compression,
    ContainerInfo,
    Record,
    RestoreResult,
    epoch_seconds,
    file_digest,
    written_whole,
)

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

# The container storage directory is named after the graph driver (overlay, vfs, ...).
_CONTAINER_DIR_ID = re.compile(r"/[a-z0-9]+-containers/(?P<id>[0-9a-f]{64})/userdata/")
_LOADED = re.compile(r"^Loaded image\(?s?\)?:\s*(?P<refs>.+)$")
_VERSION_WORD = re.compile(r"\bversion\s+(?P<version>\S+)")
_FULL_ID = re.compile(r"^[0-9a-f]{64}$")
_WORK_PATH = re.compile(r"--work-path[= ](?P<path>/\S+)")


class ImageCheckpoint(Record):
    """A checkpoint pushed as an image; ``seconds`` is the dump's wall time (the push aside)."""

    reference: str
    digest: str
    seconds: float
    statistics: CriuStatistics
    #: The image's size, and what its CRIU images hold, when they could be read.
    size_bytes: int | None = None
    contents: Contents | None = None


class RuntimeInfo(Record):
    name: Literal["podman"] = "podman"
    version: str
    oci_runtime: str
    oci_runtime_version: str


# --- Pure parsing and argv building -------------------------------------------------------


def parse_container_inspect(text: str) -> ContainerInfo | None:
    """The first container of ``podman container inspect`` output; None for ``[]``."""
    data: Any = json.loads(text)
    if isinstance(data, list):
        if not data:
            return None
        data = data[0]
    return container_info(data)


def container_info(data: Any) -> ContainerInfo:
    """One container's inspect object (the CLI's list item, or the REST API's answer)."""
    if not isinstance(data, dict):
        raise TypeError(f"podman container inspect gave {type(data).__name__}, not an object")
    state = data.get("State") or {}
    config = data.get("Config") or {}
    running = bool(state.get("Running"))
    labels = config.get("Labels") or {}
    return ContainerInfo(
        id=data["Id"],
        name=data["Name"],
        image_id=data.get("Image") or "",
        image_name=data.get("ImageName") or "",
        state=state.get("Status") or "",
        running=running,
        labels={str(k): str(v) for k, v in labels.items()},
        # NB: podman keeps the last pid after the container stopped.
        pid=int(state.get("Pid") or 0) if running else 0,
        checkpointed=bool(state.get("Checkpointed")),
        static_dir=data.get("StaticDir") or "",
        created=epoch_seconds(str(data.get("Created") or "")),
    )


def is_no_such_container(stderr: str) -> bool:
    return "no such container" in stderr.lower()


def parse_oci_runtime_version(text: str) -> str:
    """``crun version 1.21\\ncommit: ...`` (or runc's) -> ``1.21``."""
    match = _VERSION_WORD.search(text)
    if match:
        return match.group("version")
    first = text.strip().splitlines()
    return first[0] if first else ""


def parse_runtime_info(text: str) -> RuntimeInfo:
    """``podman info --format json`` -> versions of podman and its OCI runtime."""
    data = json.loads(text)
    runtime = data.get("host", {}).get("ociRuntime", {})
    return RuntimeInfo(
        version=data["version"]["Version"],
        oci_runtime=runtime.get("name") or "",
        oci_runtime_version=parse_oci_runtime_version(runtime.get("version") or ""),
    )


def parse_image_inspect(text: str) -> tuple[str, list[str]]:
    """``podman image inspect`` -> (image ID, names such as ``localhost/x:latest``)."""
    data: Any = json.loads(text)
    if isinstance(data, list):
        if not data:
            raise ValueError("podman image inspect gave no image")
        data = data[0]
    names = [str(n) for n in data.get("RepoTags") or []]
    return str(data["Id"]), names


def parse_loaded_images(stdout: str) -> list[str]:
    """The references ``podman load`` reports: names, or ``sha256:<id>`` for unnamed images."""
    refs: list[str] = []
    for line in stdout.splitlines():
        match = _LOADED.match(line.strip())
        if match:
            refs += [r.strip() for r in match.group("refs").split(",") if r.strip()]
    return refs


def is_image_id(reference: str, image_id: str) -> bool:
    """Whether ``reference`` names the image by (a prefix of) its ID rather than by a name."""
    bare = reference.removeprefix("sha256:")
    return len(bare) >= 3 and image_id.startswith(bare)


def container_id_of_log(log: Path) -> str | None:
    """The container whose userdata holds ``log`` (a CRIU dump.log or restore.log)."""
    match = _CONTAINER_DIR_ID.search(str(log))
    return match.group("id") if match else None


def checkpoint_flags(options: CheckpointOptions) -> list[str]:
    """What a checkpoint keeps and whether the container goes on, wherever the dump goes."""
    flags = []
    if options.leave_running:
        flags.append("--leave-running")
    if options.tcp_established:
        flags.append("--tcp-established")
    if options.file_locks:
        flags.append("--file-locks")
    return flags


def checkpoint_args(container: str, archive: Path, options: CheckpointOptions) -> list[str]:
    args = ["container", "checkpoint", "--export", str(archive), "--print-stats"]
    args += ["--compress", options.compression]
    return [*args, *checkpoint_flags(options), container]


def checkpoint_params(options: CheckpointOptions) -> dict[str, bool | str]:
    """:func:`checkpoint_flags` as the REST API's query parameters."""
    return {
        "leaveRunning": options.leave_running,
        "tcpEstablished": options.tcp_established,
        "fileLocks": options.file_locks,
    }


def restore_params(
    *, name: str | None, tcp_established: bool, file_locks: bool
) -> dict[str, bool | str]:
    """:func:`import_args` as the REST API's query parameters."""
    params: dict[str, bool | str] = {
        "printStats": True,
        "tcpEstablished": tcp_established,
        "fileLocks": file_locks,
    }
    if name is not None:
        params["name"] = name
    return params


def work_path_log(message: str, log_name: str) -> Path | None:
    """CRIU's log of a failed REST API checkpoint or restore.

    The CLI's error output names the log; the API's message names only the OCI
    runtime's command, whose ``--work-path`` is where CRIU wrote it (``dump.log``,
    ``restore.log``).
    """
    match = _WORK_PATH.search(message)
    return Path(match.group("path")) / log_name if match else None


def api_output(what: str, error: LibpodError) -> CommandOutput:
    """A REST API error as the CLI would have shown it, for the CLI's error handling."""
    return CommandOutput(
        command=["podman", *what.split(), "(REST API)"],
        returncode=125,
        stdout="",
        stderr=f"Error: {error.message}\n",
    )


def restore_flags(*, tcp_established: bool, file_locks: bool) -> list[str]:
    flags = ["--print-stats"]
    if tcp_established:
        flags.append("--tcp-established")
    if file_locks:
        flags.append("--file-locks")
    return flags


def import_args(
    archive: Path,
    *,
    name: str | None,
    tcp_established: bool,
    file_locks: bool,
    keep: bool = False,
) -> list[str]:
    args = ["container", "restore", "--import", str(archive)]
    args += restore_flags(tcp_established=tcp_established, file_locks=file_locks)
    if keep:
        # podman otherwise deletes the checkpoint directory once restored, and with it
        # the pages a rollback would need back.
        args.append("--keep")
    if name is not None:
        args += ["--name", name]
    return args


def parse_store_info(text: str) -> tuple[Path, str]:
    """``podman info --format json`` -> (graph root, graph driver), where containers' data lives."""
    store = json.loads(text)["store"]
    return Path(store["graphRoot"]), str(store["graphDriverName"])


def stale_cgroup_dirs(cgroup_root: Path, container_id: str) -> list[Path]:
    """The cgroup directories of ``container_id``, children first, in every hierarchy.

    They sit one level below a hierarchy's root: ``libpod_parent/libpod-<id>``
    with the cgroupfs manager, ``machine.slice/libpod-<id>.scope`` with systemd.
    """
    if not _FULL_ID.match(container_id):
        raise ValueError(f"not a full container ID: {container_id!r}")
    names = {f"libpod-{container_id}", f"libpod-{container_id}.scope"}
    found: list[Path] = []
    roots = [cgroup_root, *(p for p in _subdirs(cgroup_root))]
    for root in roots:
        for parent in _subdirs(root):
            for name in names:
                top = parent / name
                if top.is_dir():
                    below = sorted(
                        (p for p in top.rglob("*") if p.is_dir()),
                        key=lambda p: len(p.parts),
                        reverse=True,
                    )
                    found += [*below, top]
    return found


def _subdirs(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def holds_tcp_streams(checkpoint_dir: Path) -> bool:
    """Whether CRIU's images hold established TCP connections (``tcp-stream-*.img``).

    CRIU writes those only for a dump with ``--tcp-established``, and such a dump
    restores only with it too.
    """
    try:
        return any(checkpoint_dir.glob("tcp-stream-*.img"))
    except OSError:
        return False


# --- The driver ---------------------------------------------------------------------------


class PodmanDriver(CliDriver):
    """Podman on this node, driven through its CLI; every call is bounded by a timeout.

    ``timeout`` bounds the long commands (checkpoint, restore, image save and
    load); quick ones get at most :data:`QUICK_TIMEOUT`. ``cgroup_root`` is
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
        self._store: tuple[Path, str] | None = None

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

    async def store_info(self) -> tuple[Path, str]:
        """podman's graph root and driver (the parents of every container's userdata).

        Asked once: ``podman info`` takes 0.3-0.4 s, and a page-server migration
        needs the answer three times; the storage does not move under a running
        podman.
        """
        if self._store is not None:
            return self._store
        output = await self._check(["info", "--format", "json"], limit=self._quick)
        try:
            self._store = parse_store_info(output.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._unexpected(output, error) from error
        return self._store

    async def checkpoint_dir(self, container_id: str) -> Path:
        """Where CRIU's images of the container with ID ``container_id`` are (or would be)."""
        graph_root, driver = await self.store_info()
        return pagestream.container_checkpoint_dir(graph_root, driver, container_id)

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

    async def checkpoint_to_page_server(
        self,
        container: str,
        archive: Path,
        options: CheckpointOptions,
        *,
        address: str,
        port: int,
        tls: TlsFiles | None,
        config: Path = pagestream.DEFAULT_CONFIG,
    ) -> CheckpointResult:
        """Checkpoint ``container``, its memory to the page server at address:port.

        The archive holds everything but the pages (about 100 KB whatever the
        memory); the pages are on the target once this returns. CRIU is
        configured through the node-wide ``config`` (see :mod:`.pagestream`):
        the caller must let no other CRIU run start meanwhile.
        """
        text = pagestream.dump_config(address, port, tls)
        try:
            async with pagestream.DumpConfig(text, path=config):
                return await self.checkpoint(container, archive, options)
        except pagestream.PageStreamError as error:
            raise RuntimeCommandError(
                command=[self._tool, "container", "checkpoint", container],
                exit_code=None,
                stderr="",
                decisive_line=str(error),
            ) from None

    async def page_target(self, container_id: str) -> Path:
        """The directory a page server fills for ``container_id``, made empty here.

        It is the checkpoint directory of the container that ``restore
        --import`` without ``--name`` creates with the same ID, so the restore
        finds the pages where CRIU reads its images. Refused when a container
        of that ID exists here.
        """
        if (existing := await self.inspect(container_id)) is not None:
            raise RuntimeCommandError(
                command=[self._tool, "container", "inspect", container_id],
                exit_code=None,
                stderr="",
                decisive_line=f"a container with ID {container_id} exists on this node "
                f"already ({existing.name}, {existing.state}): the restored copy keeps the "
                "source's ID; remove it there or pick another target",
            )
        directory = await self.checkpoint_dir(container_id)

        def make() -> None:
            shutil.rmtree(directory, ignore_errors=True)  # pages of an earlier attempt
            directory.mkdir(mode=0o700, parents=True)

        await asyncio.to_thread(make)
        return directory

    async def discard_page_target(self, container_id: str) -> None:
        """Remove the pages received for ``container_id`` unless a container of that ID exists.

        What goes: the directory :meth:`page_target` made, its parents if they
        are empty, and the cgroups of a restore that failed (they would break
        the next restore of this ID here: ``devices.deny: Invalid argument``).
        """
        if await self.inspect(container_id) is not None:
            return
        directory = await self.checkpoint_dir(container_id)

        def discard() -> None:
            shutil.rmtree(directory, ignore_errors=True)
            # Only what page_target made: anything else there is podman's.
            for parent in (directory.parent, directory.parent.parent):
                with contextlib.suppress(OSError):
                    parent.rmdir()

        await asyncio.to_thread(discard)
        await self._remove_stale_cgroups(container_id)

    async def drop_kept_images(self, container_id: str) -> None:
        """Remove the CRIU images a restore with ``--keep`` left in a container's userdata.

        The container runs without them; a later checkpoint makes the
        directory again.
        """
        directory = await self.checkpoint_dir(container_id)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def restore_onto_pages(
        self, archive: Path, *, tcp_established: bool = False, file_locks: bool = False
    ) -> RestoreResult:
        """Restore the small archive of a page-server dump onto the pages already in place.

        Without ``--name`` (the container keeps the source's ID, whose
        checkpoint directory holds the pages) and with ``--keep``: the pages
        stay until the migration ends, since a rollback needs them back. A
        failed restore's ``created`` container is left too, for the same
        reason; :meth:`discard_page_target` removes what remains.
        """
        started = time.monotonic()
        output = await self._run(
            import_args(
                archive,
                name=None,
                tcp_established=tcp_established,
                file_locks=file_locks,
                keep=True,
            ),
            limit=self._timeout,
        )
        seconds = time.monotonic() - started
        if output.returncode != 0:
            raise await self._failure(output)
        return await self._restored(output, None, seconds)

    async def checkpoint_image(
        self, container: str, reference: str, options: CheckpointOptions, *, authfile: Path | None
    ) -> ImageCheckpoint:
        """Checkpoint ``container`` as a checkpoint image and push it to its registry.

        The image carries podman's checkpoint annotations (runtime, CRIU,
        kernel, rootfs image), so any podman can restore it; the local copy is
        removed once pushed.
        """
        args = ["container", "checkpoint", "--create-image", reference, "--print-stats"]
        args += [*checkpoint_flags(options), container]
        started = time.monotonic()
        output = await self._run(args, limit=self._timeout)
        seconds = time.monotonic() - started
        if output.returncode != 0:
            raise await self._failure(output)
        _, statistics = parse_print_stats(output.stdout)
        digest_file = Path(tempfile.mkdtemp(prefix="ferry-push-")) / "digest"
        try:
            push = ["push", "--digestfile", str(digest_file)]
            if authfile is not None:
                push += ["--authfile", str(authfile)]
            pushed = await self._run([*push, reference], limit=self._timeout)
            if pushed.returncode != 0:
                raise await self._failure(pushed)
            digest = digest_file.read_text().strip()
            size, contents = await self._image_contents(reference)
        finally:
            shutil.rmtree(digest_file.parent, ignore_errors=True)
            await self._run(["image", "rm", "--ignore", reference], limit=self._timeout)
        return ImageCheckpoint(
            reference=reference,
            digest=digest,
            seconds=seconds,
            statistics=statistics,
            size_bytes=size,
            contents=contents,
        )

    async def _image_contents(self, reference: str) -> tuple[int | None, Contents | None]:
        """The size of a local checkpoint image and what its CRIU images hold; None if unknown."""
        size: int | None = None
        inspected = await self._run(
            ["image", "inspect", "--format", "{{.Size}}", reference], limit=self._quick
        )
        if inspected.returncode == 0 and inspected.stdout.strip().isdigit():
            size = int(inspected.stdout.strip())
        mounted = await self._run(["image", "mount", reference], limit=self._quick)
        if mounted.returncode != 0:
            logger.warning("cannot mount %s: %s", reference, mounted.stderr.strip())
            return size, None
        try:
            return size, await asyncio.to_thread(summarize_tree, Path(mounted.stdout.strip()))
        except (OSError, ValueError) as error:
            logger.warning("cannot read %s: %s", reference, error)
            return size, None
        finally:
            await self._run(["image", "unmount", reference], limit=self._quick)

    async def restore_image(
        self,
        reference: str,
        *,
        name: str,
        tcp_established: bool = False,
        file_locks: bool = False,
        authfile: Path | None,
    ) -> RestoreResult:
        """Pull a checkpoint image and start a container named ``name`` from it."""
        pull = ["pull", "--quiet"]
        if authfile is not None:
            pull += ["--authfile", str(authfile)]
        pulled = await self._run([*pull, reference], limit=self._timeout)
        if pulled.returncode != 0:
            raise await self._failure(pulled)
        started = time.monotonic()
        flags = restore_flags(tcp_established=tcp_established, file_locks=file_locks)
        output = await self._run(
            ["container", "restore", *flags, "--name", name, reference], limit=self._timeout
        )
        seconds = time.monotonic() - started
        await self._run(["image", "rm", "--ignore", reference], limit=self._timeout)
        if output.returncode != 0:
            failure = await self._failure(output)
            await self._clean_failed_restore(failure)
            raise failure
        return await self._restored(output, name, seconds)

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
        archive_holds_memory: bool = True,
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
        fallback: a failed in-place restore is the error.
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

    # -- images

    async def save_image(self, image: str, out: Path) -> None:
        """Write ``image`` (a name or an ID) to ``out`` as a docker-archive, for ``load_image``.

        The archive keeps the image ID (the target must have the very image the
        checkpoint was made on) and its name; an image given by ID is saved under
        its first name, since an archive saved by ID carries none.
        """
        output = await self._check(["image", "inspect", image], limit=self._quick)
        try:
            image_id, names = parse_image_inspect(output.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._unexpected(output, error) from error
        reference = names[0] if names and is_image_id(image, image_id) else image
        with written_whole(out) as partial:
            await self._check(
                [
                    "save",
                    "--quiet",
                    "--format",
                    "docker-archive",
                    "--output",
                    str(partial),
                    reference,
                ],
                limit=self._timeout,
            )

    async def load_image(self, archive: Path) -> str:
        """Load an image archive; returns the ID of the (first) image loaded."""
        output = await self._check(
            ["load", "--quiet", "--input", str(archive)], limit=self._timeout
        )
        refs = parse_loaded_images(output.stdout)
        if not refs:
            raise self._unexpected(output, "no `Loaded image` line")
        first = refs[0]
        if first.startswith("sha256:") and _FULL_ID.match(first.removeprefix("sha256:")):
            return first.removeprefix("sha256:")
        inspected = await self._check(["image", "inspect", first], limit=self._quick)
        try:
            image_id, _ = parse_image_inspect(inspected.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._unexpected(inspected, error) from error
        return image_id


__all__ = [
    "CheckpointOptions",
    "CheckpointResult",
    "Compression",
    "ContainerInfo",
    "CriuStatistics",
    "PodmanDriver",
    "RestoreResult",
    "RuntimeCommandError",
    "RuntimeInfo",
    "file_digest",
]
