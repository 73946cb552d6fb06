from __future__ import annotations

from pathlib import Path

from ferry_cluster.cgroups import parse_mountinfo

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
