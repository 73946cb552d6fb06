"""Which pods may move and where, and the replacement pod made for them: pure decisions."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from typing import Any

import pytest
from ferry_api import constants
from ferry_api.nodehelper import parse_node_helper
from ferry_operator.podmigration import capacity, placement, replacement
from ferry_operator.policy import Refusal
from ferry_wire import PROTOCOL_VERSION

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVp helper"
CID = "a" * 64
UID = "0b7c6f4e-1d2a-4c3b-9e8f-123456789abc"


def helper(name: str, *, cri: str | None = "2.1.9", restores: bool = True) -> Any:
    status: dict[str, Any] = {
        "address": "10.0.0.1",
        "sshPort": 7022,
        "sshHostKey": HOST_KEY,
        "heartbeatTime": NOW.isoformat(),
        "protocolVersion": PROTOCOL_VERSION,
        "criu": {"version": "4.2.1"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "HelperRunning"}],
    }
    if cri is not None:
        status["cri"] = {"runtime": "containerd", "version": cri, "checkpointImages": restores}
    return parse_node_helper({"metadata": {"name": name}, "status": status})


def pod(**spec: Any) -> dict[str, Any]:
    owner = spec.pop("owner", None)
    meta: dict[str, Any] = {
        "name": "counter-7d9c8b-x2k4p",
        "namespace": "default",
        "uid": "pod-uid",
        "generateName": "counter-7d9c8b-",
        "labels": {"app": "counter", "pod-template-hash": "7d9c8b", "tier": "x"},
        "annotations": {"note": "kept"},
    }
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "counter-7d9c8b", "controller": True}]
    return {
        "metadata": meta,
        "spec": {
            "nodeName": "node-a",
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "counter", "image": "busybox", "imagePullPolicy": "Always"}],
            "volumes": [{"name": "token", "projected": {"sources": []}}],
            "securityContext": {"runAsUser": 1000},
            **spec,
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "counter",
                    "ready": True,
                    "state": {"running": {}},
                    "containerID": f"containerd://{CID}",
                }
            ],
        },
    }


def node(name: str, *, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def test_a_running_pod_of_a_replica_set_is_movable_with_its_containers() -> None:
    movable = placement.check_pod(pod(owner="ReplicaSet"), namespace="default", name="p")
    assert movable.node == "node-a"
    assert movable.owner == "counter-7d9c8b"
    assert movable.containers == (placement.PodContainer(name="counter", container_id=CID),)


@pytest.mark.parametrize(
    ("body", "reason", "words"),
    [
        (None, "PodNotFound", "no pod"),
        (pod(owner="StatefulSet"), "UnsupportedOwner", "StatefulSet"),
        (pod(owner="DaemonSet"), "UnsupportedOwner", "DaemonSet"),
        (pod(volumes=[{"name": "d", "emptyDir": {}}]), "VolumeBoundToNode", "emptyDir"),
        (
            pod(volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "x"}}]),
            "VolumeBoundToNode",
            "persistentVolumeClaim",
        ),
        (pod(hostNetwork=True), "HostNetworkPod", "network"),
    ],
)
def test_pods_that_cannot_move_are_refused_with_the_reason(
    body: dict[str, Any] | None, reason: str, words: str
) -> None:
    with pytest.raises(Refusal) as refused:
        placement.check_pod(body, namespace="default", name="p")
    assert refused.value.reason == reason
    assert words in refused.value.message


def test_a_pod_not_running_or_of_another_runtime_is_refused() -> None:
    pending = pod()
    pending["status"]["phase"] = "Pending"
    with pytest.raises(Refusal, match="Pending"):
        placement.check_pod(pending, namespace="default", name="p")
    cri_o = pod()
    cri_o["status"]["containerStatuses"][0]["containerID"] = f"cri-o://{CID}"
    with pytest.raises(Refusal) as refused:
        placement.check_pod(cri_o, namespace="default", name="p")
    assert refused.value.reason == "UnsupportedRuntime"


def test_the_target_honours_selector_affinity_taints_cordon_and_the_helpers_cri() -> None:
    body = pod(
        nodeSelector={"disk": "ssd"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}
                    ]
                }
            }
        },
    )
    fits = {"disk": "ssd", "zone": "z1"}
    nodes = [
        node("node-a", labels=fits),
        node("node-b", labels=fits, unschedulable=True),
        node("node-c", labels={"disk": "hdd", "zone": "z1"}),
        node("node-d", labels={"disk": "ssd", "zone": "z2"}),
        node("node-e", labels=fits, taints=[{"key": "x", "effect": "NoSchedule"}]),
        node("node-f", labels=fits),
        node("node-g", labels=fits, taints=[{"key": "gpu", "effect": "NoSchedule"}]),
    ]
    helpers = {n["metadata"]["name"]: helper(n["metadata"]["name"]) for n in nodes}
    helpers["node-f"] = helper("node-f", cri="1.7.24", restores=False)

    def choose(asked: str | None = None) -> str:
        return placement.choose_target(
            body,
            source="node-a",
            asked=asked,
            nodes=nodes,
            helpers=helpers,
            now=NOW,
            stale_seconds=60,
        )

    assert choose() == "node-g"
    with pytest.raises(Refusal) as refused:
        choose("node-f")
    assert refused.value.reason == "TargetUnfit"
    assert "cannot restore a container from a checkpoint image" in refused.value.message
    for asked, words in [
        ("node-b", "cordoned"),
        ("node-c", "nodeSelector disk=ssd"),
        ("node-d", "required node affinity"),
        ("node-e", "taint x:NoSchedule"),
        ("node-a", "already runs"),
    ]:
        with pytest.raises(Refusal, match=words):
            choose(asked)
    with pytest.raises(Refusal) as refused:
        choose("node-z")
    assert refused.value.reason == "TargetNodeNotFound"


def test_a_target_whose_helper_reaches_no_cri_is_refused() -> None:
    nodes = [node("node-a"), node("node-b")]
    helpers = {"node-a": helper("node-a"), "node-b": helper("node-b", cri=None)}
    with pytest.raises(Refusal) as refused:
        placement.choose_target(
            pod(),
            source="node-a",
            asked=None,
            nodes=nodes,
            helpers=helpers,
            now=NOW,
            stale_seconds=60,
        )
    assert refused.value.reason == "NoEligibleTarget"
    assert "reaches no CRI runtime" in refused.value.message


def test_the_replacement_runs_the_spec_on_the_target_from_checkpoint_images() -> None:
    source = pod(owner="ReplicaSet")
    selector = {"app": "counter", "pod-template-hash": "7d9c8b"}
    body = replacement.replacement_pod(
        source,
        uid=UID,
        migration="move",
        target="node-b",
        images={"counter": "localhost/ferry-checkpoint/x:1"},
        selector=selector,
    )
    meta, spec = body["metadata"], body["spec"]
    assert meta["name"].startswith("counter-7d9c8b-")
    assert len(meta["name"]) == 20
    assert meta["name"] == replacement.replacement_name(source, UID), "the same every time"
    # What the ReplicaSet selects on waits until the replacement is Ready.
    assert meta["labels"] == {"tier": "x", constants.POD_MIGRATION_UID_LABEL: UID}
    assert replacement.adoption_labels(body) == selector
    assert json.loads(meta["annotations"][replacement.ADOPT_LABELS]) == selector
    assert meta["annotations"]["note"] == "kept"
    assert spec["nodeName"] == "node-b"
    assert "initContainers" not in spec
    assert spec["containers"] == [
        {
            "name": "counter",
            "image": "localhost/ferry-checkpoint/x:1",
            "imagePullPolicy": "Never",
        }
    ]
    assert spec["securityContext"] == {"runAsUser": 1000}, "the spec's, not the archive's"
    assert source["spec"]["containers"][0]["image"] == "busybox", "the source is not touched"


def test_a_replacement_that_will_not_start_says_why() -> None:
    body = pod()
    assert replacement.broken(body) is None
    assert not replacement.ready(body)
    body["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert replacement.ready(body)
    body["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": "CreateContainerError", "message": "failed to restore"}
    }
    assert replacement.broken(body) == "container counter: CreateContainerError: failed to restore"
    assert replacement.broken(None) == "the replacement pod is gone"


def test_a_base_image_the_target_cannot_pull_is_named_with_what_to_do() -> None:
    body = pod()
    body["status"]["containerStatuses"][0]["state"] = {
        "waiting": {
            "reason": "CreateContainerError",
            "message": "failed to pull checkpoint base image sha256:7f99: failed to resolve",
        }
    }
    why = replacement.broken(body) or ""
    assert why.startswith("container counter: CreateContainerError: failed to pull checkpoint")
    assert "run the pod from an image in a registry the target can pull from" in why


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", "0.1"),
        ("2", "2"),
        ("128Mi", str(128 << 20)),
        ("1Gi", str(1 << 30)),
        ("1.5", "1.5"),
        ("2e3", "2000"),
        ("500M", "500000000"),
        (3, "3"),
    ],
)
def test_quantities_read_as_kubernetes_writes_them(text: str | int, value: str) -> None:
    assert capacity.quantity(text) == Decimal(value)


def test_a_node_without_room_for_the_pods_requests_is_no_target() -> None:
    body = pod()
    body["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "500m", "memory": "1Gi"}}
    body["spec"]["initContainers"][0]["resources"] = {"requests": {"cpu": "4"}}
    full = {"cpu": "2", "memory": "4Gi", "pods": "110"}
    nodes = [
        node("node-a"),
        {**node("node-b"), "status": {"allocatable": full}},
        {**node("node-c"), "status": {"allocatable": full}},
    ]
    helpers = {n: helper(n) for n in ("node-a", "node-b", "node-c")}
    busy = pod()
    busy["spec"]["nodeName"] = "node-b"
    busy["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1600m"}}
    used = capacity.used_by_node([busy])
    assert used["node-b"].cpu == Decimal("1.6")  # its init container's 0 does not count
    chosen = placement.choose_target(
        body,
        source="node-a",
        asked=None,
        nodes=nodes,
        helpers=helpers,
        now=NOW,
        stale_seconds=60,
        used=used,
    )
    assert chosen == "node-c", "the replacement has no init container: 500m fits on node-c"
    with pytest.raises(Refusal, match=r"node-b has no room: the pod requests cpu 0.5"):
        placement.choose_target(
            body,
            source="node-a",
            asked="node-b",
            nodes=nodes,
            helpers=helpers,
            now=NOW,
            stale_seconds=60,
            used=used,
        )
