"""Docker's side of the checkpoint archive, as pure functions: no docker run.

Docker checkpoints (``docker checkpoint create``, experimental mode) and
starts a container from a checkpoint (``docker start --checkpoint``), but has
no export or import: a checkpoint cannot leave its container. The docker
driver (:mod:`.docker`) therefore builds what podman's ``--export`` makes, one
tar with the same layout, so shipping, checking
(:mod:`ferry_helper.archive_check`) and summarizing
(:mod:`ferry_helper.criu_images`) are the same for both runtimes:

* ``checkpoint/``: CRIU's images (``docker checkpoint create --checkpoint-dir``
  into the helper's staging);
* ``config.json``: what recreating the container needs (image ID, entrypoint,
  command, environment, working directory, user, labels, network mode,
  mounts), from ``docker inspect`` (:func:`recreation`, :func:`create_args`);
* ``rootfs-diff.tar`` and ``deleted.files``: the container's writable layer
  (overlay2's upper directory; whiteouts listed, not packed), which CRIU does
  not carry and a process may hold files in (:func:`pack_upper`,
  :func:`unpack_upper`).

What docker prints is read here too, and the CRIU configuration file runc
reads (:func:`criu_config`: docker has no flags for CRIU's options). The unit
tests feed these with output captured from Docker 26.1.5.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from ..archive_check import decompressed
from .records import ContainerInfo, Record, epoch_seconds

CONFIG = "config.json"
ROOTFS_DIFF = "rootfs-diff.tar"
DELETED = "deleted.files"
IMAGES = "checkpoint"

_ALREADY_EXISTS = re.compile(r"content (?P<digest>sha256:[0-9a-f]{64}).*already exists")
_CRIU_LOG = re.compile(r"(?:path=|log file:)\s*(?P<path>/\S+?\.log)")
_WHITEOUT_DEV = 0


class DockerRuntimeInfo(Record):
    name: str = "docker"
    version: str
    oci_runtime: str
    oci_runtime_version: str


# --- Pure parts: what docker prints, what a container needs ----------------------------------


def parse_inspect(text: str) -> dict[str, Any] | None:
    """The first object of ``docker inspect`` output; None for ``[]``."""
    data: Any = json.loads(text)
    if isinstance(data, list):
        if not data:
            return None
        data = data[0]
    if not isinstance(data, dict):
        raise TypeError(f"docker inspect gave {type(data).__name__}, not an object")
    return data


def container_info(data: dict[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    config = data.get("Config") or {}
    running = bool(state.get("Running")) and not state.get("Paused")
    labels = config.get("Labels") or {}
    return ContainerInfo(
        id=data["Id"],
        name=str(data.get("Name") or "").lstrip("/"),
        image_id=str(data.get("Image") or "").removeprefix("sha256:"),
        image_name=str(config.get("Image") or ""),
        state=str(state.get("Status") or ""),
        running=running,
        labels={str(k): str(v) for k, v in labels.items()},
        pid=int(state.get("Pid") or 0) if running else 0,
        created=epoch_seconds(str(data.get("Created") or "")),
    )


def recreation(data: dict[str, Any]) -> dict[str, Any]:
    """What ``docker create`` needs to make this container again on another node."""
    config = data.get("Config") or {}
    host = data.get("HostConfig") or {}
    return {
        "runtime": "docker",
        "name": str(data.get("Name") or "").lstrip("/"),
        "imageId": str(data.get("Image") or ""),
        "image": str(config.get("Image") or ""),
        "entrypoint": list(config.get("Entrypoint") or []),
        "cmd": list(config.get("Cmd") or []),
        "env": list(config.get("Env") or []),
        "workingDir": str(config.get("WorkingDir") or ""),
        "user": str(config.get("User") or ""),
        "labels": dict(config.get("Labels") or {}),
        "networkMode": str(host.get("NetworkMode") or "default"),
        "binds": list(host.get("Binds") or []),
        "tmpfs": dict(host.get("Tmpfs") or {}),
        "tty": bool(config.get("Tty")),
        "openStdin": bool(config.get("OpenStdin")),
    }


def create_args(config: dict[str, Any], *, name: str, criu_config: Path) -> list[str]:
    """``docker create`` arguments for a container as :func:`recreation` described it."""
    args = ["create", "--name", name, "--annotation", f"org.criu.config={criu_config}"]
    if config.get("networkMode") not in (None, "", "default"):
        args += ["--network", str(config["networkMode"])]
    for variable in config.get("env", []):
        args += ["--env", str(variable)]
    if config.get("workingDir"):
        args += ["--workdir", str(config["workingDir"])]
    if config.get("user"):
        args += ["--user", str(config["user"])]
    for key, value in sorted(config.get("labels", {}).items()):
        args += ["--label", f"{key}={value}"]
    for bind in config.get("binds", []):
        args += ["--volume", str(bind)]
    for path, options in sorted(config.get("tmpfs", {}).items()):
        args += ["--tmpfs", f"{path}:{options}" if options else str(path)]
    if config.get("tty"):
        args.append("--tty")
    if config.get("openStdin"):
        args.append("--interactive")
    entrypoint = [str(a) for a in config.get("entrypoint", [])]
    command = [str(a) for a in config.get("cmd", [])]
    if entrypoint:
        args += ["--entrypoint", entrypoint[0]]
        command = entrypoint[1:] + command
    image = str(config.get("imageId") or config.get("image"))
    return [*args, image, *command]


#: The first line of every CRIU configuration this driver writes: a helper that
#: died while one was in runc.conf finds it at its next start and removes it.
OURS = "# written by ferry-helper for one command"


def criu_config(*, tcp_established: bool, file_locks: bool, log_file: Path) -> str:
    """A CRIU configuration file (runc reads it at checkpoint and restore)."""
    lines = [OURS, f"log-file {log_file}"]
    if tcp_established:
        lines.append("tcp-established")
    if file_locks:
        lines.append("file-locks")
    return "\n".join(lines) + "\n"


def stale_upload(stderr: str) -> str | None:
    """The digest containerd still holds when a restore failed with ``already exists``."""
    match = _ALREADY_EXISTS.search(stderr)
    return match.group("digest") if match else None


def criu_log_named(stderr: str) -> Path | None:
    """The CRIU log docker's error names (``path= .../criu-dump.log``)."""
    match = _CRIU_LOG.search(stderr)
    return Path(match.group("path")) if match else None


def is_no_such_container(stderr: str) -> bool:
    return "No such container" in stderr or "No such object" in stderr


def parse_loaded(stdout: str) -> str | None:
    """What ``docker load`` says it loaded: ``sha256:<id>`` or a name."""
    for line in stdout.splitlines():
        for prefix in ("Loaded image ID:", "Loaded image:"):
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip()
    return None


# --- The writable layer --------------------------------------------------------------------


def _is_whiteout(mode: int, rdev: int) -> bool:
    return stat.S_ISCHR(mode) and rdev == _WHITEOUT_DEV


def pack_upper(upper: Path | None, out: Path) -> list[str]:
    """Tar the container's upper directory into ``out``; the whiteouts (deleted paths).

    Whiteouts are character devices, which no archive check lets through: they
    travel as a list of paths and become whiteouts again on the target.
    """
    deleted: list[str] = []
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        if upper is None or not upper.is_dir():
            return deleted
        for root, dirs, files in os.walk(upper):
            dirs.sort()
            for entry in [*dirs, *sorted(files)]:
                path = Path(root, entry)
                relative = path.relative_to(upper).as_posix()
                info = path.lstat()
                if _is_whiteout(info.st_mode, info.st_rdev):
                    deleted.append(relative)
                else:
                    tar.add(path, arcname=relative, recursive=False)
    return deleted


def upper_dir(data: dict[str, Any] | None) -> Path | None:
    """overlay2's upper directory of an inspected container; None for another graph driver."""
    graph = (data or {}).get("GraphDriver") or {}
    upper = (graph.get("Data") or {}).get("UpperDir")
    return Path(upper) if upper else None


def unpack_upper(diff: Path, deleted: list[str], upper: Path | None) -> None:
    """Lay a packed writable layer into a new container's upper directory."""
    if upper is None:
        raise ValueError("the container has no overlay2 upper directory to restore its layer into")
    with tarfile.open(diff) as tar:
        tar.extractall(upper, filter="tar")
    for relative in deleted:
        target = upper / relative
        if ".." in Path(relative).parts or target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))


# --- The archive ---------------------------------------------------------------------------


@contextmanager
def _compressed_writer(path: Path, compression: str) -> Iterator[IO[bytes]]:
    with path.open("wb") as raw:
        if compression == "zstd":
            with zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as stream:
                yield cast(IO[bytes], stream)
        elif compression == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as stream:
                yield cast(IO[bytes], stream)
        else:
            yield raw


def write_archive(work: Path, archive: Path, compression: str) -> None:
    """Pack ``work`` (images, config, layer) into ``archive`` the way podman's export does."""
    with (
        _compressed_writer(archive, compression) as stream,
        tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in (CONFIG, DELETED, ROOTFS_DIFF):
            tar.add(work / name, arcname=name)
        tar.add(work / IMAGES, arcname=IMAGES)


def read_archive(archive: Path, into: Path) -> None:
    """Unpack an archive written by :func:`write_archive` (any compression) into ``into``."""
    with (
        archive.open("rb") as raw,
        decompressed(raw) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        tar.extractall(into, filter="data")
