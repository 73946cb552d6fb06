"""What podman prints, read; what podman is asked, built: pure functions, no podman run.

The unit tests feed these with output captured from podman 5.4.2 + crun 1.21 +
CRIU 4.2.1 on the simulated nodes, so a change of podman's output shows up as
a failing test rather than a failing migration. The drivers
(:mod:`.podman_core` and its capabilities) only run commands and wire these up.

What was found about podman's output and arguments:

* ``--print-stats`` replaces the container name on stdout by a JSON document
  (see :mod:`ferry_helper.criu_stats`); it is printed on failures too.
* A checkpoint made with ``--tcp-established`` must be restored with it (CRIU:
  ``inet: Connected TCP socket in image``), in place and from an archive;
  :func:`holds_tcp_streams` tells such a dump by its CRIU images.
* ``podman load`` reports ``Loaded image: <name>`` (or ``sha256:<id>`` for an
  image without a name); :func:`is_image_id` tells an ID from a name.
* The REST API's errors name only the OCI runtime's command, whose
  ``--work-path`` is where CRIU wrote its log (:func:`work_path_log`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from .cli import CommandOutput
from .libpod import LibpodError
from .records import CheckpointOptions, ContainerInfo, Record, epoch_seconds

# The container storage directory is named after the graph driver (overlay, vfs, ...).
_CONTAINER_DIR_ID = re.compile(r"/[a-z0-9]+-containers/(?P<id>[0-9a-f]{64})/userdata/")
_LOADED = re.compile(r"^Loaded image\(?s?\)?:\s*(?P<refs>.+)$")
_VERSION_WORD = re.compile(r"\bversion\s+(?P<version>\S+)")
FULL_ID = re.compile(r"^[0-9a-f]{64}$")
_WORK_PATH = re.compile(r"--work-path[= ](?P<path>/\S+)")


class RuntimeInfo(Record):
    name: Literal["podman"] = "podman"
    version: str
    oci_runtime: str
    oci_runtime_version: str


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
    args += ["--compress", options.compression.value]
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
    if not FULL_ID.match(container_id):
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
