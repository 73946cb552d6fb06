"""ContainerCheckpoint and ContainerRestore on the real local cluster.

What a user checks: a counter checkpointed at X that ran on to Y, restored from
that checkpoint, counts on from X (the same process history: its log reads 1,
2, ... with no restart); a checkpoint restored on another node under a new name
runs there while the original runs on; deleting a checkpoint removes what it
stored; bad input ends Failed with a reason and changes nothing.
"""

from __future__ import annotations

import itertools
import shlex
import time
from typing import Any

import pytest
from ferry_api import constants
from ferry_cluster import images, registry
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import (
    container_state,
    counted_without_restart,
    logged_counts,
    read_count,
    run_counter,
    sh,
    wait_counting,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import (
    create_resource,
    get_resource,
    restore_checkpoint,
    take_checkpoint,
    wait_resource_phase,
)

pytestmark = pytest.mark.e2e

STAGING = "/var/lib/ferry-helper/staging"
#: Where a helper keeps ContainerCheckpoints' archives (apart from migrations' staging).
STORE = "/var/lib/ferry-helper/checkpoints"
HTTP_NOT_FOUND = 404


def exists(custom: client.CustomObjectsApi, namespace: str, plural: str, name: str) -> bool:
    try:
        get_resource(custom, namespace, plural, name)
    except ApiException as error:
        if error.status == HTTP_NOT_FOUND:
            return False
        raise
    return True


def delete_checkpoint(custom: client.CustomObjectsApi, namespace: str, name: str) -> None:
    """Delete a ContainerCheckpoint and wait until its finalizer has let it go."""
    plural = constants.CONTAINER_CHECKPOINT_PLURAL
    custom.delete_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, plural, name
    )
    deadline = time.monotonic() + 60
    while exists(custom, namespace, plural, name):
        assert time.monotonic() < deadline, f"the finalizer never let {name} go"
        time.sleep(0.2)


def stored(node: NodeSpec, uids: list[str]) -> str:
    """Which of these checkpoints' directories are still in ``node``'s store."""
    paths = " ".join(f"{STORE}/{uid}" for uid in uids)
    return sh(node, f"for d in {paths}; do [ -e $d ] && echo $d; done; true")


def reason(status: dict[str, Any], type_: str) -> str:
    return str(next(c["reason"] for c in status["conditions"] if c["type"] == type_))


def resumed_once(logged: list[int]) -> bool:
    """The log of one process that was restored from a checkpoint it had passed.

    The log exported with a leave-running checkpoint may hold a line or two
    printed after the dump; the restored process then repeats them. So: it
    starts at 1 and never again, counts by one, and steps back once at most.
    """
    steps = [b - a for a, b in itertools.pairwise(logged)]
    back = [d for d in steps if d != 1]
    return (
        logged[:1] == [1] and logged.count(1) == 1 and len(back) <= 1 and all(d <= 0 for d in back)
    )


def checkpoint(
    custom: client.CustomObjectsApi, namespace: str, name: str, node: NodeSpec, container: str
) -> dict[str, Any]:
    return take_checkpoint(custom, namespace, name, node.name, container, compression="zstd")


restore = restore_checkpoint


def test_a_checkpoint_restored_in_place_takes_the_counter_back(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    run_counter(node, "rewind", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, "rewind", above=3)
    before = read_count(node, "rewind")
    status = checkpoint(custom, namespace, "rewind-cp", node, "rewind")
    assert status["phase"] == "Ready", status
    assert reason(status, "Ready") == "Stored"
    assert status["archive"]["bytes"] > 0
    assert status["node"] == node.name
    after = read_count(node, "rewind")
    assert container_state(node, "rewind") == "running", "leaveRunning is the default"
    # It runs on to Y, well past the checkpoint; then the user throws it away.
    ran_to = wait_counting(node, "rewind", above=after + 20, timeout=30)
    sh(node, "podman rm -f -t 0 rewind")

    done = restore(custom, namespace, "rewind-rs", {"checkpointRef": {"name": "rewind-cp"}})
    assert done["phase"] == "Succeeded", done
    assert (done["node"], done["containerName"]) == (node.name, "rewind")
    value = read_count(node, "rewind")
    assert before <= value < ran_to, f"back to ~{before}..{after}, not {ran_to}: {value}"
    wait_counting(node, "rewind", above=value)
    assert resumed_once(logged_counts(node, "rewind"))
    sh(node, "podman rm -f -t 0 rewind")


def test_a_checkpoint_starts_a_copy_on_another_node_under_a_new_name(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    sh(node_b, "podman rm -f -t 0 -i warm-copy")
    run_counter(node_a, "warm", labels={constants.NAMESPACE_LABEL: namespace}, blob_bytes=32 << 20)
    wait_counting(node_a, "warm", above=3, timeout=60)
    assert checkpoint(custom, namespace, "warm-cp", node_a, "warm")["phase"] == "Ready"

    done = restore(
        custom,
        namespace,
        "warm-rs",
        {
            "checkpointRef": {"name": "warm-cp"},
            "node": node_b.name,
            "name": "warm-copy",
            "ttlSecondsAfterFinished": 5,
        },
    )
    assert done["phase"] == "Succeeded", done
    assert done["transferSeconds"] > 0, "the checkpoint crossed to node-b"
    assert done["restoreSeconds"] > 0
    assert container_state(node_b, "warm-copy") == "running"
    wait_counting(node_b, "warm-copy", above=read_count(node_b, "warm-copy"))
    assert resumed_once(logged_counts(node_b, "warm-copy"))
    assert container_state(node_a, "warm") == "running", "the original runs on"
    # node-b keeps the container and nothing of the transfer.
    assert sh(node_b, f"find {STAGING} -name 'checkpoint.*'") == ""
    # ttlSecondsAfterFinished removes the finished restore, not what it restored.
    deadline = time.monotonic() + 60
    while exists(custom, namespace, constants.CONTAINER_RESTORE_PLURAL, "warm-rs"):
        assert time.monotonic() < deadline, "ttlSecondsAfterFinished never removed it"
        time.sleep(0.5)
    assert container_state(node_b, "warm-copy") == "running"
    for node, name in ((node_a, "warm"), (node_b, "warm-copy")):
        sh(node, f"podman rm -f -t 0 {name}")


def test_a_checkpoint_says_what_it_holds(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    # Two processes: a shell holding 3 MB in a variable, and a TCP listener.
    script = (
        "nc -ll -p 7100 -e true & x=$(head -c 3000000 /dev/zero | tr '\\0' a); "
        "while true; do sleep 600; done"
    )
    sh(node, "podman rm -f -t 0 -i holder")
    sh(
        node,
        f"podman run -d --name holder --label {constants.NAMESPACE_LABEL}={namespace} "
        f"{images.BUSYBOX_IMAGE} sh -c {shlex.quote(script)}",
    )
    deadline = time.monotonic() + 30
    while "sleep" not in sh(node, "podman top holder comm 2>/dev/null || true"):
        assert time.monotonic() < deadline, "the holder never filled its memory"
        time.sleep(0.3)
    status = checkpoint(custom, namespace, "holder-cp", node, "holder")
    assert status["phase"] == "Ready", status
    summary = status["summary"]
    assert summary["processes"] == 3, summary  # sh, nc and sleep
    assert summary["threads"] == 3, summary
    assert summary["memoryBytes"] >= 3_000_000, summary
    assert summary["sockets"]["tcpListening"] == 1, summary
    assert summary["sockets"]["tcpEstablished"] == 0, summary
    assert summary["runtime"]["name"] == "podman"
    assert summary["criuVersion"].startswith("4."), summary
    assert summary["kernel"], summary
    sh(node, "podman rm -f -t 0 holder")


def test_deleting_a_checkpoint_removes_its_archive(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    run_counter(node, "brief", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, "brief", above=0)
    assert checkpoint(custom, namespace, "brief-cp", node, "brief")["phase"] == "Ready"
    uid = get_resource(custom, namespace, constants.CONTAINER_CHECKPOINT_PLURAL, "brief-cp")[
        "metadata"
    ]["uid"]
    assert sh(node, f"ls {STORE}/{uid}"), "the archive is stored under the checkpoint's UID"
    delete_checkpoint(custom, namespace, "brief-cp")
    assert sh(node, f"ls {STORE}/{uid} 2>/dev/null || true") == ""
    assert container_state(node, "brief") == "running"
    sh(node, "podman rm -f -t 0 brief")


def test_bad_input_fails_with_a_reason_and_changes_nothing(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    missing = checkpoint(custom, namespace, "ghost-cp", node, "no-such-container")
    assert (missing["phase"], reason(missing, "Ready")) == ("Failed", "ContainerNotFound")

    unknown = restore(custom, namespace, "nowhere-rs", {"checkpointRef": {"name": "nope"}})
    assert (unknown["phase"], reason(unknown, "Succeeded")) == ("Failed", "CheckpointNotFound")

    run_counter(node, "taken", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, "taken", above=0)
    assert checkpoint(custom, namespace, "taken-cp", node, "taken")["phase"] == "Ready"
    before = read_count(node, "taken")
    clash = restore(custom, namespace, "clash-rs", {"checkpointRef": {"name": "taken-cp"}})
    assert (clash["phase"], reason(clash, "Succeeded")) == ("Failed", "TargetNameTaken")
    # The running container was not touched: it counts on from where it was.
    wait_counting(node, "taken", above=before)
    assert counted_without_restart(logged_counts(node, "taken"))
    sh(node, "podman rm -f -t 0 taken")


def test_a_checkpoint_in_the_registry_restores_elsewhere_and_goes_with_its_resource(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    repository = f"checkpoints/{namespace}"
    sh(node_b, "podman rm -f -t 0 -i pulled")
    run_counter(node_a, "pushed", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node_a, "pushed", above=3)
    create_resource(
        custom,
        namespace,
        constants.CONTAINER_CHECKPOINT_PLURAL,
        "pushed-cp",
        {
            "source": {"node": node_a.name, "container": "pushed"},
            "storage": {
                "type": "Registry",
                "repository": f"{registry.address(ferry)}/{repository}",
            },
        },
    )
    status = wait_resource_phase(
        custom,
        namespace,
        constants.CONTAINER_CHECKPOINT_PLURAL,
        "pushed-cp",
        phases=("Ready", "Failed"),
    )
    assert status["phase"] == "Ready", status
    image = status["checkpointImage"]
    assert image["reference"].startswith(f"{registry.address(ferry)}/{repository}:pushed-cp-")
    assert image["digest"].startswith("sha256:")
    assert registry.manifest_exists(ferry, repository, image["digest"])
    assert image["bytes"] > 0
    assert status["summary"]["processes"] >= 1, status["summary"]
    assert status["summary"]["memoryBytes"] > 0, status["summary"]
    uid = get_resource(custom, namespace, constants.CONTAINER_CHECKPOINT_PLURAL, "pushed-cp")[
        "metadata"
    ]["uid"]
    assert sh(node_a, f"find {STORE}/{uid} -name 'checkpoint.*' 2>/dev/null || true") == ""

    done = restore(
        custom,
        namespace,
        "pulled-rs",
        {"checkpointRef": {"name": "pushed-cp"}, "node": node_b.name, "name": "pulled"},
    )
    assert done["phase"] == "Succeeded", done
    wait_counting(node_b, "pulled", above=read_count(node_b, "pulled"))
    # A checkpoint image carries no log: the restored process logs from where it was.
    logged = logged_counts(node_b, "pulled")
    assert logged[0] > 1, f"started over: {logged[:5]}"
    assert logged == list(range(logged[0], logged[0] + len(logged)))
    assert container_state(node_a, "pushed") == "running"

    delete_checkpoint(custom, namespace, "pushed-cp")
    assert not registry.manifest_exists(ferry, repository, image["digest"]), "image left behind"
    for node, name in ((node_a, "pushed"), (node_b, "pulled")):
        sh(node, f"podman rm -f -t 0 {name}")


def test_an_unreachable_registry_fails_the_checkpoint_and_the_container_runs_on(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    run_counter(node, "stranded", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, "stranded", above=0)
    create_resource(
        custom,
        namespace,
        constants.CONTAINER_CHECKPOINT_PLURAL,
        "stranded-cp",
        {
            "source": {"node": node.name, "container": "stranded"},
            # Nothing listens on port 1 of the host.
            "storage": {"type": "Registry", "repository": f"{ferry.gateway}:1/checkpoints/x"},
        },
    )
    status = wait_resource_phase(
        custom,
        namespace,
        constants.CONTAINER_CHECKPOINT_PLURAL,
        "stranded-cp",
        phases=("Ready", "Failed"),
    )
    assert status["phase"] == "Failed", status
    assert reason(status, "Ready") == "CheckpointFailed"
    assert f"{ferry.gateway}:1" in status["message"], "the message names the registry"
    before = read_count(node, "stranded")
    wait_counting(node, "stranded", above=before)
    assert counted_without_restart(logged_counts(node, "stranded"))
    sh(node, "podman rm -f -t 0 stranded")


def test_a_schedule_makes_checkpoints_and_keeps_only_the_newest(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    plural = constants.CONTAINER_CHECKPOINT_PLURAL
    run_counter(node, "nightly", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, "nightly", above=0)
    create_resource(
        custom,
        namespace,
        plural,
        "nightly",
        # Every 2 seconds (a leading sixth field is seconds), keeping 2.
        {
            "source": {"node": node.name, "container": "nightly"},
            "schedule": "*/2 * * * * *",
            "keep": 2,
        },
    )
    assert (
        wait_resource_phase(custom, namespace, plural, "nightly", phases=("Scheduled", "Failed"))[
            "phase"
        ]
        == "Scheduled"
    )

    def children() -> dict[str, str]:
        listed = custom.list_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            namespace,
            plural,
            label_selector=f"{constants.SCHEDULE_LABEL}=nightly",
        )["items"]
        return {c["metadata"]["name"]: c["metadata"]["uid"] for c in listed}

    seen: dict[str, str] = {}
    deadline = time.monotonic() + 90
    while len(seen) < 4:
        assert time.monotonic() < deadline, f"only {sorted(seen)} in 90s"
        seen |= children()
        time.sleep(0.3)
    # Pruned down to the newest two, each of them a Ready checkpoint.
    deadline = time.monotonic() + 30
    while len(kept := children()) > 2:
        assert time.monotonic() < deadline, kept
        time.sleep(0.3)
    assert sorted(kept) == sorted(seen)[-len(kept) :], "the newest are the ones kept"
    for name in kept:
        assert (
            wait_resource_phase(custom, namespace, plural, name, phases=("Ready", "Failed"))[
                "phase"
            ]
            == "Ready"
        )
    pruned = [uid for name, uid in seen.items() if name not in kept and name < min(kept)]
    assert pruned, seen
    deadline = time.monotonic() + 30
    while left := stored(node, pruned):
        assert time.monotonic() < deadline, f"pruned checkpoints still stored: {left}"
        time.sleep(0.3)
    status = get_resource(custom, namespace, plural, "nightly")["status"]
    assert status["lastScheduleTime"]

    # Deleting the schedule deletes its checkpoints, and what they stored.
    custom.delete_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, plural, "nightly"
    )
    deadline = time.monotonic() + 60
    while exists(custom, namespace, plural, "nightly") or children():
        assert time.monotonic() < deadline, children()
        time.sleep(0.3)
    assert stored(node, list(seen.values())) == ""
    wait_counting(node, "nightly", above=read_count(node, "nightly"))
    assert counted_without_restart(logged_counts(node, "nightly"))
    sh(node, "podman rm -f -t 0 nightly")


def test_a_checkpoint_schedule_can_be_suspended_shrunk_and_deleted_keeping_its_checkpoints(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    plural, schedules = constants.CONTAINER_CHECKPOINT_PLURAL, constants.CHECKPOINT_SCHEDULE_PLURAL
    run_counter(node, "hourly", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, "hourly", above=0)
    # Every 3 seconds (a leading sixth field is seconds), keeping 3.
    create_resource(
        custom,
        namespace,
        schedules,
        "hourly",
        {
            "schedule": "*/3 * * * * *",
            "keep": 3,
            "checkpointTemplate": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {"source": {"node": node.name, "container": "hourly"}},
            },
        },
    )

    def children() -> list[str]:
        listed = custom.list_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            namespace,
            plural,
            label_selector=f"{constants.SCHEDULE_LABEL}=hourly,team=a",
        )["items"]
        return sorted(c["metadata"]["name"] for c in listed)

    def patch(spec: dict[str, Any]) -> None:
        custom.patch_namespaced_custom_object(
            constants.GROUP, constants.VERSION, namespace, schedules, "hourly", {"spec": spec}
        )

    deadline = time.monotonic() + 90
    while len(children()) < 3:
        assert time.monotonic() < deadline, children()
        time.sleep(0.3)
    # Suspended: no new checkpoint; the ones kept stay, and status says why.
    patch({"suspend": True})
    deadline = time.monotonic() + 30
    while (
        get_resource(custom, namespace, schedules, "hourly")["status"].get("message")
        != "suspended: no checkpoint is made"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    held = children()
    time.sleep(7)  # two runs' worth
    assert children() == held, "nothing made while suspended"
    # A lowered keep prunes at once (no run needed: it is still suspended).
    patch({"keep": 1})
    deadline = time.monotonic() + 30
    while len(children()) > 1:
        assert time.monotonic() < deadline, children()
        time.sleep(0.3)
    (last,) = children()
    assert last == held[-1], "the newest is the one kept"
    assert wait_resource_phase(custom, namespace, plural, last, phases=("Ready", "Failed"))[
        "phase"
    ] == ("Ready")
    # Deleting the schedule keeps its checkpoints (unlike the deprecated scheduled kind).
    custom.delete_namespaced_custom_object(
        constants.GROUP, constants.VERSION, namespace, schedules, "hourly"
    )
    deadline = time.monotonic() + 30
    while exists(custom, namespace, schedules, "hourly"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    time.sleep(2)
    assert children() == [last]
    delete_checkpoint(custom, namespace, last)
    sh(node, "podman rm -f -t 0 hourly")
