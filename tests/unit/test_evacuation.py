"""NodeEvacuation's decisions and loop against a fake API server (no cluster).

What an admin checks: never more migrations out of the node than the limit,
a workload a target refused before the freeze goes to the next node, one no
node takes or whose migration failed is reported (it runs where it was), and
the evacuation ends Succeeded only when everything moved.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from ferry_api import constants
from ferry_api.evacuation import (
    EvacuatedWorkload,
    WorkloadKind,
    WorkloadState,
    parse_node_evacuation,
)
from ferry_operator.evacuation import Evacuator, plan
from ferry_operator.policy import ApiError
from operator_fakes import SETTINGS, T0, Clock, FakeEvents, FakeHelpers, FakeKube

NODE = "node-a"


def workload(name: str, **more: Any) -> EvacuatedWorkload:
    return EvacuatedWorkload(
        kind=WorkloadKind.CONTAINER, namespace="team-a", name=name, state=WorkloadState.PENDING
    ).model_copy(update=more)


def test_a_migration_refused_by_its_target_before_the_freeze_tries_another_node() -> None:
    refused = plan.ending(
        {
            "phase": "Failed",
            "conditions": [{"type": "Succeeded", "reason": "TargetNotReady", "message": "stale"}],
        }
    )
    assert refused is not None
    assert refused.retry_elsewhere
    own = plan.ending(
        {"phase": "Failed", "conditions": [{"type": "Succeeded", "reason": "UnsupportedOwner"}]}
    )
    assert own is not None
    assert (own.state, own.retry_elsewhere) == (WorkloadState.REFUSED, False)
    after_freeze = plan.ending(
        {
            "phase": "Failed",
            "freezeTime": T0.isoformat(),
            "conditions": [{"type": "Succeeded", "reason": "RestoreFailed"}],
        }
    )
    assert after_freeze is not None
    assert after_freeze.state == WorkloadState.FAILED
    assert plan.ending({"phase": "Transferring"}) is None
    moved = plan.ending({"phase": "Succeeded", "timings": {"downtimeSeconds": 0.4}})
    assert moved is not None
    assert (moved.state, moved.downtime_seconds) == (WorkloadState.MOVED, 0.4)


def test_the_next_target_is_the_least_loaded_untried_node() -> None:
    w = workload("web", tried=("node-b",))
    assert plan.next_target(w, ["node-b", "node-c", "node-d"], load={"node-c": 1}) == "node-d"
    assert plan.next_target(w, ["node-b"], load={}) is None


def test_child_names_are_dns_names_stable_per_attempt() -> None:
    w = workload("My_Web.1")
    name = plan.child_name("drain-node-a", w)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), name
    assert name == plan.child_name("drain-node-a", w)
    assert name != plan.child_name("drain-node-a", w.model_copy(update={"tried": ("node-b",)}))


class Cluster(FakeKube):
    """The API server as an evacuation sees it: children created, their statuses set."""

    children: dict[str, dict[str, Any]]

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        self.children.setdefault(body["metadata"]["name"], {"body": body, "status": {}})
        return True

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        child = self.children.get(name)
        return None if child is None else {"status": child["status"]}

    def running(self) -> list[str]:
        return [n for n, c in self.children.items() if c["status"].get("phase") is None]

    def end(self, name: str, **status: Any) -> None:
        self.children[name]["status"] = status


def evacuation(workloads: list[EvacuatedWorkload], limit: int) -> tuple[Evacuator, Cluster]:
    kube = Cluster(Clock())
    kube.children = {}
    resource = parse_node_evacuation(
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.NODE_EVACUATION_KIND,
            "metadata": {"name": "drain-node-a", "uid": "e" * 8 + "-1111-2222-3333-" + "4" * 12},
            "spec": {"nodeName": NODE},
            "status": {
                "phase": "Evacuating",
                "maxParallel": limit,
                "workloads": [w.model_dump(mode="json", by_alias=True) for w in workloads],
            },
        }
    )
    return (
        Evacuator(
            resource=resource,
            kube=kube,  # type: ignore[arg-type]
            helpers=FakeHelpers(),
            settings=SETTINGS,
            events=FakeEvents(),
            clock=kube.clock,
        ),
        kube,
    )


def test_never_more_than_the_limit_and_a_refused_target_is_replaced() -> None:
    evacuator, kube = evacuation([workload(f"w{i}") for i in range(4)], limit=2)
    assert not asyncio.run(evacuator.step())
    assert len(kube.running()) == 2, "the limit"
    first, second = kube.running()
    targets = {kube.children[n]["body"]["spec"]["target"]["node"] for n in (first, second)}
    assert targets == {"node-b", "node-c"}, "spread over the least loaded nodes"
    assert all(kube.children[n]["body"]["metadata"]["labels"] for n in (first, second))

    kube.end(first, phase="Succeeded", timings={"downtimeSeconds": 0.5})
    kube.end(
        second,
        phase="Failed",
        conditions=[{"type": "Succeeded", "reason": "TargetNotReady", "message": "stale"}],
    )
    assert not asyncio.run(evacuator.step())
    assert len(kube.running()) == 2, "two more started, still two at once"
    retried = next(w for w in evacuator.status.workloads if w.name == "w1")
    assert retried.state == WorkloadState.MIGRATING
    assert retried.tried
    assert retried.target not in retried.tried

    for name in kube.running():
        kube.end(name, phase="Succeeded")
    while not asyncio.run(evacuator.step()):
        for name in kube.running():
            kube.end(name, phase="Succeeded")
    assert evacuator.status.moved == 4
    assert all(w.state == WorkloadState.MOVED for w in evacuator.status.workloads)


def test_a_workload_no_node_takes_is_refused_and_reported_and_the_rest_go_on() -> None:
    evacuator, kube = evacuation([workload("stuck"), workload("fine")], limit=1)
    refusal = {
        "phase": "Failed",
        "conditions": [{"type": "Succeeded", "reason": "IncompatibleCpu", "message": "avx512"}],
    }
    for _ in range(4):
        asyncio.run(evacuator.step())
        for name in kube.running():
            body = kube.children[name]["body"]
            if body["spec"]["source"]["container"] == "stuck":
                kube.end(name, **refusal)
            else:
                kube.end(name, phase="Succeeded")
    assert asyncio.run(evacuator.step())
    stuck = next(w for w in evacuator.status.workloads if w.name == "stuck")
    assert stuck.state == WorkloadState.REFUSED
    assert stuck.reason == "IncompatibleCpu"
    assert set(stuck.tried) == {"node-b", "node-c"}
    assert "avx512" in (stuck.message or "")
    assert (evacuator.status.moved, evacuator.status.refused) == (1, 1)


def test_a_workload_whose_migration_cannot_be_created_is_refused_not_stuck() -> None:
    evacuator, kube = evacuation([workload("lost"), workload("fine")], limit=2)

    async def create(plural: str, namespace: str, body: dict[str, Any]) -> bool:
        if body["spec"]["source"]["container"] == "lost":
            raise ApiError(404, 'namespaces "team-a" not found')
        kube.children[body["metadata"]["name"]] = {"body": body, "status": {}}
        return True

    kube.create = create  # type: ignore[method-assign]
    asyncio.run(evacuator.step())
    lost = next(w for w in evacuator.status.workloads if w.name == "lost")
    assert lost.state == WorkloadState.REFUSED
    assert lost.reason == "MigrationNotCreated"
    assert len(kube.running()) == 1, "the other one goes on"
