"""Simulated nodes: an overlay of the cached trixie root in its own namespaces.

A node is one process tree: ``unshare`` (host side) and its child, the node's
PID 1, which owns the node's mount, UTS, IPC, PID, cgroup and network
namespaces. Killing that PID 1 ends every process in the node, and with them
every mount and the network namespace, so teardown cannot leave half a node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from . import cgroups, procs
from .config import ClusterConfig, NodeSpec

START_TIMEOUT = 30.0
#: How long a daemon started in a node (dockerd, containerd, kubelet) may take to answer.
READY_TIMEOUT = 60.0
INIT_MARKER = "node-init.sh"


def _script(name: str) -> Path:
    return Path(str(resources.files("ferry_cluster") / "scripts" / name))


def _joining(cgroup_paths: Sequence[Path]) -> list[str]:
    """An argv prefix that moves the process into ``cgroup_paths`` before it execs the rest.

    Entering a cgroup namespace does not move a process into the cgroup; without
    this, podman run through ``exec`` would compute its cgroups from the host's root.
    """
    join = " ".join(f'echo $$ > "{p}/cgroup.procs";' for p in cgroup_paths)
    return ["sh", "-c", f'{join} exec "$@"', "ferry-join"]


def unshare_pid(node: NodeSpec) -> int | None:
    """The host-side ``unshare`` process of a running node."""
    return procs.read_pid(node.pid_file, str(node.root_mountpoint))


def init_pid(node: NodeSpec) -> int | None:
    """The node's PID 1 (as the host numbers it), once it has become catatonit."""
    parent = unshare_pid(node)
    if parent is None:
        return None
    children = Path(f"/proc/{parent}/task/{parent}/children")
    try:
        pids = [int(p) for p in children.read_text().split()]
    except OSError:
        return None
    for pid in pids:
        if procs.cmdline(pid).startswith("/usr/bin/catatonit"):
            return pid
    return None


def write_etc(config: ClusterConfig, node: NodeSpec) -> None:
    """/etc/hostname and /etc/hosts in the node's upper layer: every node, and the API server."""
    etc = node.upper_dir / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hostname").write_text(f"{node.name}\n")
    lines = ["127.0.0.1 localhost", f"{config.gateway} ferry-apiserver"]
    lines += [f"{n.address} {n.name}" for n in config.node_specs()]
    (etc / "hosts").write_text("\n".join(lines) + "\n")


def start(config: ClusterConfig, node: NodeSpec, layers: Sequence[Path], source: Path) -> int:
    """Start the node and return its init pid once it runs catatonit.

    ``layers`` are the read-only layers of its root, top first; ``source`` is
    the project tree, mounted read-only at /opt/ferry/src.
    """
    storage = (node.containers_dir, node.docker_dir, node.containerd_dir, node.cri_dir)
    for directory in (node.upper_dir, node.work_dir, node.root_mountpoint, *storage):
        directory.mkdir(parents=True, exist_ok=True)
    for directory in storage:
        directory.chmod(0o700)
    write_etc(config, node)
    cgroup_paths = cgroups.ensure(node.cgroup)
    specs = [h.spec() for h in cgroups.hierarchies()]
    # The launcher joins the node's cgroups before unsharing, so the node's
    # cgroup namespace is rooted there.
    args = [
        *_joining(cgroup_paths),
        "unshare",
        "--mount",
        "--uts",
        "--ipc",
        "--pid",
        "--cgroup",
        "--net",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "sh",
        str(_script(INIT_MARKER)),
        ":".join(str(layer) for layer in layers),
        str(node.upper_dir),
        str(node.work_dir),
        str(node.root_mountpoint),
        str(node.containers_dir),
        str(node.docker_dir),
        str(node.containerd_dir),
        str(node.cri_dir),
        str(source),
        node.name,
        *specs,
    ]
    pid = procs.start(args, pid_file=node.pid_file, log_file=node.log_file)
    deadline = time.monotonic() + START_TIMEOUT
    while (init := init_pid(node)) is None:
        # Not cmdline(): it reads empty for an instant while a process execs.
        if not procs.alive(pid):
            log = node.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"node {node.name} failed to start:\n{log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {node.name} did not start in {START_TIMEOUT:.0f}s")
        time.sleep(0.05)
    return init


def stop(config: ClusterConfig, node: NodeSpec) -> None:
    """Kill the node's PID 1 (which ends its whole PID namespace), then its cgroups."""
    cgroups.thaw_below(node.cgroup)
    init = init_pid(node)
    if init is not None:
        procs.stop(init, grace=0)
    parent = unshare_pid(node)
    if parent is not None:
        procs.stop(parent, grace=5)
    # Whatever still sits in the node's cgroups (a crashed run's orphans).
    relative = node.cgroup
    deadline = time.monotonic() + 10
    while pids := cgroups.procs_below(relative):
        for pid in pids:
            procs.stop(pid, grace=0)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of node {node.name} would not exit")
    cgroups.remove(relative)
    node.pid_file.unlink(missing_ok=True)


def remove_state(node: NodeSpec) -> None:
    if node.state_dir.exists():
        shutil.rmtree(node.state_dir)


def exec_args(node: NodeSpec, command: Sequence[str], *, host_network: bool = False) -> list[str]:
    """An argv that runs ``command`` inside the node, as its own processes do.

    ``host_network``: stay in the host's network namespace (the image builds,
    whose package downloads go where the host's do).
    """
    init = init_pid(node)
    if init is None:
        raise RuntimeError(f"node {node.name} is not running (try `ferry-cluster up`)")
    return [
        *_joining(cgroups.existing(node.cgroup)),
        "nsenter",
        f"--target={init}",
        "--mount",
        "--uts",
        "--ipc",
        *([] if host_network else ["--net"]),
        "--pid",
        "--cgroup",
        "--root",
        "--wd",
        "env",
        "-i",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"HOSTNAME={node.name}",
        "HOME=/root",
        "LANG=C.UTF-8",
        # Hybrid-cgroup hosts are what we run on; the warning would drown real errors.
        "PODMAN_IGNORE_CGROUPSV1_WARNING=1",
        *command,
    ]


def run_in(
    node: NodeSpec,
    command: Sequence[str],
    *,
    check: bool = True,
    input_text: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    return procs.run(exec_args(node, command), check=check, input_text=input_text, timeout=timeout)


def host_path(node: NodeSpec, path: str) -> Path:
    """A path inside the running node, as the host can reach it."""
    init = init_pid(node)
    if init is None:
        raise RuntimeError(f"node {node.name} is not running")
    return Path(f"/proc/{init}/root") / path.lstrip("/")


def env_exec(node: NodeSpec, command: Sequence[str]) -> None:
    """Replace this process with ``command`` inside the node (interactive use)."""
    args = exec_args(node, command)
    os.execvp(args[0], args)  # noqa: S606 - an argv, no shell involved


def log_path(node: NodeSpec, log: str) -> Path:
    """Where the host finds a daemon's log (the node's overlay upper directory)."""
    return node.upper_dir / log.lstrip("/")


def detach(node: NodeSpec, command: str, log: str) -> None:
    """Start ``command`` in ``node`` in its own session, output appended to ``log``."""
    run_in(node, ["sh", "-c", f"setsid -f {command} </dev/null >>{log} 2>&1"])


def wait_until(node: NodeSpec, *, daemon: str, ready: str, log: str) -> None:
    """Until the shell test ``ready`` passes in ``node``; fail early if ``daemon`` exits."""
    tries = int(READY_TIMEOUT / 0.1)
    script = (
        f"i=0; until {ready}; do "
        f"pidof {daemon} >/dev/null || {{ echo '{daemon} exited' >&2; exit 1; }}; "
        f"i=$((i+1)); [ $i -lt {tries} ] || {{ echo 'timed out after {READY_TIMEOUT:.0f}s' >&2; "
        "exit 1; }; sleep 0.1; done"
    )
    result = run_in(node, ["sh", "-c", script], check=False, timeout=READY_TIMEOUT + 30)
    if result.returncode != 0:
        path = log_path(node, log)
        tail = path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"
        raise RuntimeError(
            f"{daemon} did not come up on {node.name}: {result.stderr.strip()}; "
            f"its log ({path}) ends:\n{tail}"
        )
