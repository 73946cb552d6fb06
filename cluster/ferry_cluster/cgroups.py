"""A cgroup per node, in every hierarchy the host has mounted.

Each node's processes (its init, podman, conmon, the containers) live below
``<hierarchy>/ferry-<cluster>/<node>``: the node sees that as its cgroup root
(cgroup namespace), and teardown can prove that no process is left by finding
those cgroups empty. Works on cgroup v1, hybrid and pure v2 hosts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, kw_only=True)
class Hierarchy:
    """A mounted cgroup hierarchy: its directory under /sys/fs/cgroup, type and options."""

    mountpoint: Path
    fstype: str
    options: str

    def spec(self) -> str:
        """The ``DIR:FSTYPE:OPTIONS`` form node-init.sh takes ("-" for a pure v2 host)."""
        if self.mountpoint == CGROUP_ROOT:
            return f"-:{self.fstype}:"
        return f"{self.mountpoint.name}:{self.fstype}:{self.options}"


def parse_mountinfo(text: str) -> list[Hierarchy]:
    """The cgroup hierarchies mounted under /sys/fs/cgroup, from /proc/self/mountinfo."""
    found = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mountpoint, fstype, superopts = Path(fields[4]), tail[0], tail[2]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        if CGROUP_ROOT not in (mountpoint, mountpoint.parent):
            continue
        opts = ",".join(o for o in superopts.split(",") if o not in ("rw", "ro"))
        found.append(Hierarchy(mountpoint=mountpoint, fstype=fstype, options=opts))
    return found


def hierarchies() -> list[Hierarchy]:
    return parse_mountinfo(Path("/proc/self/mountinfo").read_text())


def _copy_cpuset(directory: Path) -> None:
    """A v1 cpuset cgroup takes no tasks until its cpus and mems are set."""
    for knob in ("cpuset.cpus", "cpuset.mems"):
        target = directory / knob
        if target.exists() and not target.read_text().strip():
            target.write_text((directory.parent / knob).read_text())


def ensure(relative: str) -> list[Path]:
    """Create ``relative`` (e.g. ``ferry-x/node-a``) in every hierarchy; return the paths."""
    paths = []
    for h in hierarchies():
        current = h.mountpoint
        for part in Path(relative).parts:
            current /= part
            current.mkdir(exist_ok=True)
            _copy_cpuset(current)
        paths.append(current)
    return paths


def procs_below(relative: str) -> list[int]:
    """Every pid in ``relative`` or any cgroup below it, in any hierarchy."""
    pids: set[int] = set()
    for h in hierarchies():
        top = h.mountpoint / relative
        if not top.is_dir():
            continue
        for procs_file in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs_file.read_text().split())
    return sorted(pids)


def thaw_below(relative: str) -> list[Path]:
    """Thaw every frozen cgroup in or below ``relative``; the ones thawed.

    A frozen process (a paused container, a pod a failed test left frozen) never
    dies of SIGKILL while frozen on cgroup v1, so a node is thawed before it is stopped.
    """
    thawed = []
    for h in hierarchies():
        top = h.mountpoint / relative
        if not top.is_dir():
            continue
        for knob, frozen, thaw in (
            ("freezer.state", ("FROZEN", "FREEZING"), "THAWED"),
            ("cgroup.freeze", ("1",), "0"),
        ):
            for path in top.rglob(knob):
                with contextlib.suppress(OSError):
                    if path.read_text().strip() in frozen:
                        path.write_text(thaw)
                        thawed.append(path.parent)
    return thawed


def existing(relative: str) -> list[Path]:
    return [h.mountpoint / relative for h in hierarchies() if (h.mountpoint / relative).exists()]


def remove(relative: str) -> None:
    """Remove ``relative`` and all cgroups below it (they must hold no process)."""
    for top in existing(relative):
        for directory in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()
        with contextlib.suppress(FileNotFoundError):
            top.rmdir()
