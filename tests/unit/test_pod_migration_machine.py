"""The PodMigration machine against fakes at its boundaries: the API server (pods) and the
helpers (typed wire requests). What the order of its calls guarantees: one copy runs."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from typing import Any

from ferry_api import constants
from ferry_api.nodehelper import CriInfo
from ferry_api.podmigration import parse_pod_migration
from ferry_operator.podmigration import PodMigrationMachine
from ferry_operator.policy import ApiError
from ferry_operator.slots import NodeSlots
from ferry_wire.migration import Checkpointed, CleanedUp, CleanupRequest
from ferry_wire.pods import (
    PodCheckpointRequest,
    PodImages,
    PodImagesRequest,
    PodThawed,
    PodThawRequest,
)
from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter
from operator_fakes import SETTINGS, UID, Clock, FakeEvents, FakeHelpers, FakeKube

CID = "c" * 64
SELECTOR = {"app": "counter", "pod-template-hash": "7d9c8b"}


def source_pod() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "counter-7d9c8b-x2k4p",
            "namespace": "team-a",
            "uid": "source-uid",
            "generateName": "counter-7d9c8b-",
            "labels": dict(SELECTOR),
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "counter-7d9c8b", "controller": True}
            ],
        },
        "spec": {"nodeName": "node-a", "containers": [{"name": "counter", "image": "busybox"}]},
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


@dataclass
class PodKube(FakeKube):
    """FakeKube with pods: what the machine creates, labels and deletes, in order."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)
    #: Set the replacement Ready when it is created (else it stays broken).
    replacement_starts: bool = True
    delete_error: ApiError | None = None

    async def node_helpers(self) -> dict[str, Any]:
        cri = CriInfo(runtime="containerd", version="2.1.9", checkpoint_images=True)
        return {
            name: helper.model_copy(
                update={"status": helper.status.model_copy(update={"cri": cri})}
            )
            for name, helper in (await super().node_helpers()).items()
        }

    async def running_pods(self) -> list[dict[str, Any]]:
        return list(self.pods.values())

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.pods.get(name))

    async def replica_set(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"spec": {"selector": {"matchLabels": SELECTOR}}}

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> bool:
        name = body["metadata"]["name"]
        self.actions.append(f"create {name}")
        made = copy.deepcopy(body)
        made["metadata"]["uid"] = "replacement-uid"
        if self.replacement_starts:
            made["status"] = {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        else:
            made["status"] = {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "counter",
                        "state": {
                            "waiting": {
                                "reason": "CreateContainerError",
                                "message": "restore failed",
                            }
                        },
                    }
                ],
            }
        self.pods[name] = made
        return True

    async def patch_pod_metadata(
        self, namespace: str, name: str, *, labels: Any = None, annotations: Any = None
    ) -> None:
        self.actions.append(
            f"patch {name} labels={sorted(labels or {})} annotations={sorted(annotations or {})}"
        )
        meta = self.pods[name]["metadata"]
        meta.setdefault("labels", {}).update(labels or {})
        for key, value in (annotations or {}).items():
            if value is None:
                meta.setdefault("annotations", {}).pop(key, None)
            else:
                meta.setdefault("annotations", {})[key] = value

    async def delete_pod(
        self, namespace: str, name: str, *, uid: str, grace_seconds: int | None = None
    ) -> None:
        self.actions.append(f"delete {name}")
        if self.delete_error is not None and name == "counter-7d9c8b-x2k4p":
            raise self.delete_error
        if name in self.pods and self.pods[name]["metadata"]["uid"] == uid:
            del self.pods[name]


class Run:
    def __init__(self) -> None:
        self.clock = Clock()
        self.kube = PodKube(self.clock)
        self.kube.pods["counter-7d9c8b-x2k4p"] = source_pod()
        self.helpers = FakeHelpers()
        self.helpers.answers |= {
            PodCheckpointRequest: Checkpointed(
                size_bytes=2000, sha256="b" * 64, seconds=0.3, container_id=CID
            ),
            PodImagesRequest: PodImages(
                images={"counter": "localhost/ferry-checkpoint/x:1"}, seconds=0.1
            ),
            PodThawRequest: PodThawed(resumed=("counter",)),
            CleanupRequest: CleanedUp(),
        }
        self.events = FakeEvents()

    def go(self) -> dict[str, Any]:
        resource = parse_pod_migration(
            {
                "apiVersion": constants.API_VERSION,
                "kind": constants.POD_MIGRATION_KIND,
                "metadata": {"name": "move", "namespace": "team-a", "uid": UID, "generation": 1},
                "spec": {"podName": "counter-7d9c8b-x2k4p", "target": {"node": "node-b"}},
            }
        )
        machine = PodMigrationMachine(
            resource=resource,
            events=self.events,
            kube=self.kube,  # type: ignore[arg-type]
            helpers=self.helpers,
            settings=SETTINGS,
            slots=NodeSlots(2),
            clock=self.clock,
        )
        asyncio.run(machine.run(AsyncFlagWaiter(FlagSetter())))
        return self.kube.last

    def thaws(self) -> list[bool]:
        return [c.request.kill for c in self.helpers.calls if isinstance(c.request, PodThawRequest)]


def test_a_replica_sets_pod_is_handed_over_only_once_its_replacement_is_ready() -> None:
    run = Run()
    status = run.go()
    assert run.kube.phases == [
        "Pending",
        "Validating",
        "Checkpointing",
        "Transferring",
        "Restoring",
        "Verifying",
        "Succeeded",
    ]
    replacement = status["targetPod"]
    assert replacement.startswith("counter-7d9c8b-")
    # Made without the labels its ReplicaSet selects on; given them once Ready, after the
    # source is marked cheapest to delete; only then the source goes.
    assert run.kube.actions == [
        f"create {replacement}",
        "patch counter-7d9c8b-x2k4p labels=[] "
        "annotations=['controller.kubernetes.io/pod-deletion-cost']",
        f"patch {replacement} labels=['app', 'pod-template-hash'] "
        "annotations=['ferry.dev/adopt-labels']",
        "delete counter-7d9c8b-x2k4p",
    ]
    assert run.helpers.ops("node-a") == ["pod-checkpoint", "send", "pod-thaw"]
    assert run.thaws() == [True], "the source's frozen processes are killed, never resumed"
    assert run.helpers.ops("node-b") == ["authorize-peer", "pod-images", "cleanup"]
    assert run.kube.pods[replacement]["metadata"]["labels"]["app"] == "counter"


def test_a_replacement_that_does_not_start_is_removed_and_the_source_thawed() -> None:
    run = Run()
    run.kube.replacement_starts = False
    status = run.go()
    assert status["phase"] == "Failed"
    assert status["failure"]["reason"] == "ReplacementNotRunning"
    replacement = status["targetPod"]
    assert run.kube.actions == [f"create {replacement}", f"delete {replacement}"]
    assert "counter-7d9c8b-x2k4p" in run.kube.pods, "the source was never deleted"
    cleanup = [c.request for c in run.helpers.calls if isinstance(c.request, CleanupRequest)]
    assert [c.remove_restored for c in cleanup] == [True], "its checkpoint images go too"
    assert run.thaws() == [False], "the source resumes"


def test_a_source_deleted_by_someone_mid_move_keeps_the_replacement() -> None:
    run = Run()
    run.kube.replacement_starts = False
    original = run.helpers.answers[PodImagesRequest]

    def images_then_source_gone(peer: Any, request: Any) -> Any:
        del run.kube.pods["counter-7d9c8b-x2k4p"]
        return original

    run.helpers.answers[PodImagesRequest] = images_then_source_gone
    status = run.go()
    assert status["phase"] == "Failed"
    assert "was deleted during the move" in status["message"]
    assert status["targetPod"] in run.kube.pods, "the only copy left is not deleted"
    assert run.thaws() == []


def test_a_failed_source_delete_after_adoption_is_reported_not_rolled_back() -> None:
    run = Run()
    run.kube.delete_error = ApiError(500, "etcd hiccup")
    status = run.go()
    assert status["phase"] == "Succeeded", "adopted: its ReplicaSet deletes the source itself"
    assert status["targetPod"] in run.kube.pods
    assert run.thaws() == [], "not terminating: killed now, its kubelet would restart it"
    assert any("cleaning up after the move failed" in m for _, _, m in run.events.seen)


def test_a_bare_pods_failed_delete_rolls_back_whole() -> None:
    run = Run()
    run.kube.pods["counter-7d9c8b-x2k4p"]["metadata"].pop("ownerReferences")
    run.kube.delete_error = ApiError(500, "etcd hiccup")
    status = run.go()
    assert status["phase"] == "Failed"
    assert status["targetPod"] not in run.kube.pods
    assert run.thaws() == [False]
