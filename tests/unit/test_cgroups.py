from __future__ import annotations

from pathlib import Path

import pytest
from ferry_cluster import cgroups
from ferry_cluster.cgroups import Hierarchy, parse_mountinfo

HYBRID = """\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
40 25 0:40 / /proc rw - proc proc rw
"""

UNIFIED = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_hybrid_hosts_list_each_hierarchy_with_its_options() -> None:
    found = parse_mountinfo(HYBRID)
    assert [h.spec() for h in found] == [
        "unified:cgroup2:",
        "systemd:cgroup:xattr,name=systemd",
        "cpu,cpuacct:cgroup:cpu,cpuacct",
    ]


def test_a_pure_v2_host_is_one_hierarchy_at_the_top() -> None:
    (only,) = parse_mountinfo(UNIFIED)
    assert only.mountpoint == Path("/sys/fs/cgroup")
    assert only.spec() == "-:cgroup2:"


def test_a_nodes_frozen_cgroups_are_thawed_before_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = Hierarchy(mountpoint=tmp_path / "freezer", fstype="cgroup", options="freezer")
    v2 = Hierarchy(mountpoint=tmp_path / "unified", fstype="cgroup2", options="")
    monkeypatch.setattr(cgroups, "hierarchies", lambda: [v1, v2])
    paused = tmp_path / "freezer/ferry-x/node-a/kubepods/pod1/c1"
    running = tmp_path / "freezer/ferry-x/node-a/kubepods/pod1/c2"
    other = tmp_path / "freezer/ferry-x/node-b/c3"
    frozen_v2 = tmp_path / "unified/ferry-x/node-a/c4"
    for directory, knob, value in (
        (paused, "freezer.state", "FROZEN\n"),
        (running, "freezer.state", "THAWED\n"),
        (other, "freezer.state", "FROZEN\n"),
        (frozen_v2, "cgroup.freeze", "1\n"),
    ):
        directory.mkdir(parents=True)
        (directory / knob).write_text(value)
    assert sorted(cgroups.thaw_below("ferry-x/node-a")) == sorted([paused, frozen_v2])
    assert (paused / "freezer.state").read_text() == "THAWED"
    assert (frozen_v2 / "cgroup.freeze").read_text() == "0"
    assert (other / "freezer.state").read_text() == "FROZEN\n", "another node is not touched"
