"""Counter pods on the real cluster: one that runs, and what its counter printed.

A counter prints STARTED once, then counts in memory: a live-migrated copy goes
on from where it was (its log carries over), a restarted one prints STARTED
again and counts from 1.
"""

from __future__ import annotations

import time

from kubernetes import client

COUNTER = "echo STARTED; i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done"


def running_pod(core: client.CoreV1Api, namespace: str, selector: str) -> client.V1Pod:
    """The one live pod ``selector`` names, once it runs with every container ready."""
    deadline = time.monotonic() + 120
    while True:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        if len(live) == 1 and live[0].status.phase == "Running":
            statuses = live[0].status.container_statuses or []
            if statuses and all(s.ready for s in statuses):
                return live[0]
        assert time.monotonic() < deadline, [(p.metadata.name, p.status.phase) for p in pods]
        time.sleep(0.3)


def pod_counts(
    core: client.CoreV1Api, namespace: str, pod: str, container: str = "counter"
) -> list[int]:
    log = core.read_namespaced_pod_log(pod, namespace, container=container)
    return [int(line) for line in log.split() if line.isdigit()]


def counting(
    core: client.CoreV1Api, namespace: str, pod: str, container: str = "counter", *, above: int
) -> list[int]:
    """The counts, once the counter has gone past ``above`` (it runs)."""
    deadline = time.monotonic() + 30
    while (counts := pod_counts(core, namespace, pod, container)) and counts[-1] <= above:
        assert time.monotonic() < deadline, f"{pod}/{container} stopped at {counts[-3:]}"
        time.sleep(0.2)
    return counts
