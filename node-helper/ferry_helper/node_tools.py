"""The node's own podman, docker and CRIU, run from the helper's pod.

A podman inside the helper's container cannot act on the node's containers,
even with every host path mounted in: a container's network namespace is a
file under the node's ``/run``, podman's locks live in the node's
``/dev/shm``, its overlay mounts and a restored container's bind-mount
sources are in the node's mount namespace, and crun resolves all of them
there. So, when the DaemonSet asks for it (``FERRY_NODE_TOOLS=nsenter``), the
helper runs each tool in the node's mount and cgroup namespaces (those of
PID 1, which ``hostPID`` makes the node's init), as the node's administrator
would run it: one small wrapper per tool, first on ``PATH``, so every caller
(and ``shutil.which``) finds the node's tool under its usual name.

The wrapper first moves itself into the node's root cgroups: a container
podman restores keeps its ``conmon`` in the cgroups of whoever started it,
and the kubelet, stopping the helper's pod, kills everything left in the
pod's cgroups, restored containers included.

A tool the node lacks gets no wrapper: the helper then serves the runtimes
the node has, as it does outside Kubernetes.

Every path the helper hands a tool must exist in the node too: its temporary
files go to the state directory (a hostPath at the same path on both sides),
and files of the pod (a Secret's) are copied there first. The other way, a
mount a tool makes (``podman image mount``) is read through the node's root,
``/proc/1/root``: podman makes its storage's mounts private, so they never
propagate into the pod.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

TOOLS = ("podman", "docker", "criu")
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENTER = ["nsenter", "--target=1", "--mount", "--cgroup"]
NODE_ROOT = Path("/proc/1/root")
_active = False

WRAPPER = """#!/bin/sh
# {tool} of the node (see ferry_helper.node_tools).
exec {enter} -- env PATH={path} sh -c '
for procs in /sys/fs/cgroup/*/cgroup.procs /sys/fs/cgroup/cgroup.procs; do
  [ -w "$procs" ] && echo $$ >"$procs" 2>/dev/null
done
exec "$0" "$@"' {tool} "$@"
"""


def node_has(tool: str) -> bool:
    """Whether the node (PID 1's mount namespace) has ``tool`` on its PATH."""
    probe = [*_ENTER, "--", "env", f"PATH={NODE_PATH}", "sh", "-c", f"command -v {tool}"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def install(wrappers: Path, scratch: Path) -> list[str]:
    """Write a wrapper for each tool the node has into ``wrappers``, put it first on PATH;
    temporary files from now on in ``scratch`` (which the node sees).

    Returns the tools wrapped.
    """
    if shutil.which("nsenter") is None:
        raise RuntimeError("FERRY_NODE_TOOLS=nsenter needs nsenter (util-linux) in the image")
    wrappers.mkdir(parents=True, exist_ok=True)
    wrapped = []
    for tool in TOOLS:
        target = wrappers / tool
        target.unlink(missing_ok=True)
        if not node_has(tool):
            continue
        target.write_text(WRAPPER.format(tool=tool, enter=" ".join(_ENTER), path=NODE_PATH))
        target.chmod(0o755)
        wrapped.append(tool)
    global _active  # noqa: PLW0603 - one switch, set once at start-up
    _active = True
    os.environ["PATH"] = f"{wrappers}:{os.environ.get('PATH', '')}"
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = str(scratch)
    log.info("using the node's %s (run in its namespaces)", ", ".join(wrapped) or "nothing")
    return wrapped


def in_node(command: list[str]) -> list[str]:
    """``command`` as run in the node's mount namespace (with ``nsenter``), else as is.

    For a client of a daemon of the node, such as ``ctr`` of the kubelet's
    containerd: its socket, and the files it hands the daemon, are paths in
    the node. Only the mount namespace is entered: it starts no process that
    outlives the command, so it may stay in the helper's cgroups.
    """
    if not _active:
        return command
    return [*_ENTER[:3], "--", "env", f"PATH={NODE_PATH}", *command]


#: As the kernel's limit on symlinks followed in one lookup.
MAX_SYMLINKS = 40


def node_path(path: Path) -> Path:
    """Where the helper reads ``path`` as the node's tools see it (their mounts included).

    Symlinks on the way are followed inside the node's root: through
    ``/proc/1/root`` an absolute link (``/var/run`` -> ``/run``, a socket linked
    elsewhere) would otherwise lead into the helper's own filesystem.
    """
    return within(NODE_ROOT, path) if _active and path.is_absolute() else path


def _is_symlink(path: Path) -> bool:
    """Whether ``path`` is a symlink; one that cannot be looked at is taken as it is."""
    try:
        return path.is_symlink()
    except OSError:
        return False


def within(root: Path, path: Path) -> Path:
    """``path`` (absolute) looked up below ``root`` as if ``root`` were ``/``."""
    current, parts, followed = root, list(path.parts[1:]), 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if not _is_symlink(candidate):
            current = candidate
            continue
        followed += 1
        if followed > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "too many symlinks", str(path))
        target = candidate.readlink()
        if target.is_absolute():
            current, parts = root, [*target.parts[1:], *parts]
        else:
            parts = [*target.parts, *parts]
    return current


def node_visible(path: Path | None, state_dir: Path) -> Path | None:
    """A copy of ``path`` (a file of the helper's pod, say a Secret) where the node sees it.

    The state directory is a hostPath at the same path on both sides.
    """
    if path is None:
        return None
    copy = state_dir / "node-visible" / path.name
    copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    copy.touch(mode=0o600)
    copy.write_bytes(path.read_bytes())
    return copy
