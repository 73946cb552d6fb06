"""The benchmark's workload, memhog, on a real node: it holds its memory and sees its downtime.

``make bench`` reports the downtime the workload itself saw (the longest gap
between its clock readings, 10 ms apart); this checks that measure against a real checkpoint
and restore, so the report rests on something tested.
"""

from __future__ import annotations

import time

import pytest
from ferry_cluster import memhog
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import sh

pytestmark = pytest.mark.e2e


def ticks(node: NodeSpec) -> tuple[int, float]:
    text = sh(node, "podman exec hog sh -c 'cat /tmp/count /tmp/gap 2>/dev/null; true'")
    if len(text.split()) != 2:
        return 0, 0.0
    count, gap_ms = text.split()
    return int(count), float(gap_ms) / 1000


def wait_ticks(node: NodeSpec, above: int) -> tuple[int, float]:
    deadline = time.monotonic() + 60
    while (seen := ticks(node))[0] <= above:
        assert time.monotonic() < deadline, f"memhog stuck at {seen}"
        time.sleep(0.1)
    return seen


def test_memhog_holds_its_memory_and_sees_a_checkpoint_as_a_gap(
    local_cluster: ClusterConfig,
) -> None:
    node = local_cluster.node_specs()[0]
    memhog.ensure_loaded(local_cluster, node)
    sh(node, f"podman rm -f -t 0 -i hog; podman run -d --name hog {memhog.IMAGE} memhog 32")
    count, gap = wait_ticks(node, 3)
    assert gap < 0.5, "reads the clock every 10 ms"
    resident = int(sh(node, "podman exec hog sh -c 'grep VmRSS /proc/1/status'").split()[1])
    assert resident >= 32 * 1024, f"holds 32 MiB itself: {resident} kB"

    began = time.monotonic()
    sh(node, "podman container checkpoint hog && sleep 1 && podman container restore hog")
    stopped = time.monotonic() - began
    _, gap = wait_ticks(node, count + 5)
    assert stopped - 0.3 <= gap <= stopped + 0.5, (stopped, gap)
    sh(node, "podman rm -f -t 0 hog")
