"""The eviction webhook's answers (no cluster): what ``kubectl drain`` hears for each pod.

A pod that did not opt in, or is finishing, is evicted as usual; one that did
is never evicted while its move is under way (429: drain asks again), never
while it could not move with ``migrate`` (403: drain stops and says why), and
evicted after all with ``migrate-or-evict``. Concurrent evictions on one node
share one evacuation.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from ferry_api import constants
from ferry_api.evacuation import NodeEvacuation, parse_node_evacuation
from ferry_operator.evacuation import eviction
from operator_fakes import T0

NODE = "node-a"
LATER = T0 + datetime.timedelta(minutes=5)


def pod(name: str = "web", *, opt: str | None = "migrate", **more: Any) -> dict[str, Any]:
    annotations = {constants.EVACUATION_ANNOTATION: opt} if opt else {}
    body: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "apps",
            "annotations": annotations,
            "creationTimestamp": T0.isoformat(),
        },
        "spec": {"nodeName": NODE},
        "status": {"phase": "Running"},
    }
    for key, value in more.items():
        body[key] = {**body.get(key, {}), **value}
    return body


def evacuation(
    name: str = "drain-node-a-1",
    *,
    created: datetime.datetime = LATER,
    workloads: list[dict[str, Any]] | None = None,
    completed: datetime.datetime | None = None,
    pods: bool = True,
) -> NodeEvacuation:
    status: dict[str, Any] = {}
    if workloads is not None:
        status = {"phase": "Evacuating", "workloads": workloads}
    if completed is not None:
        status |= {"phase": "Incomplete", "completionTime": completed.isoformat()}
    return parse_node_evacuation(
        {
            "apiVersion": constants.API_VERSION,
            "kind": constants.NODE_EVACUATION_KIND,
            "metadata": {"name": name, "creationTimestamp": created.isoformat()},
            "spec": {"nodeName": NODE, "pods": pods},
            "status": status,
        }
    )


def entry(state: str, **more: Any) -> dict[str, Any]:
    return {"kind": "Pod", "namespace": "apps", "name": "web", "state": state, **more}


def test_pods_that_did_not_opt_in_or_are_ending_are_evicted_as_usual() -> None:
    now = LATER
    assert eviction.judge(None, [], now=now).allowed
    assert eviction.judge(pod(opt=None), [], now=now).allowed
    assert eviction.judge(pod(opt="yes please"), [], now=now).allowed
    assert eviction.judge(pod(status={"phase": "Succeeded"}), [], now=now).allowed
    terminating = pod(metadata={"deletionTimestamp": T0.isoformat()})
    assert eviction.judge(terminating, [], now=now).allowed
    assert eviction.judge(pod(spec={"nodeName": None}), [], now=now).allowed


def test_the_first_eviction_starts_an_evacuation_and_asks_drain_to_come_back() -> None:
    verdict = eviction.judge(pod(), [], now=LATER)
    assert (verdict.allowed, verdict.code, verdict.evacuate_node) == (False, 429, NODE)
    assert "live-migrates this pod instead of evicting it" in verdict.message
    body = eviction.evacuation_body(NODE, LATER)
    assert body["spec"] == {"nodeName": NODE, "pods": True, "containers": False}
    assert body["metadata"]["name"] == "drain-node-a-20261204-120500"


def test_while_the_pod_moves_every_eviction_says_where_its_move_is() -> None:
    starting = eviction.judge(pod(), [evacuation()], now=LATER)
    assert (starting.code, starting.evacuate_node) == (429, None)
    assert "is starting" in starting.message
    waiting = eviction.judge(pod(), [evacuation(workloads=[entry("Pending")])], now=LATER)
    assert "waiting its turn" in waiting.message
    moving = evacuation(workloads=[entry("Migrating", target="node-b", migration="m-1")])
    verdict = eviction.judge(pod(), [moving], now=LATER)
    assert (verdict.allowed, verdict.code, verdict.evacuate_node) == (False, 429, None)
    assert "to node-b by PodMigration m-1" in verdict.message


def test_a_pod_that_could_not_move_keeps_running_unless_it_allows_eviction() -> None:
    ended = evacuation(
        workloads=[entry("Refused", reason="NoTarget", message="no other node would take it")],
        completed=LATER,
    )
    now = LATER + datetime.timedelta(seconds=6)
    kept = eviction.judge(pod(), [ended], now=now)
    assert (kept.allowed, kept.code, kept.evacuate_node) == (False, 403, None)
    assert "NoTarget: no other node would take it" in kept.message
    assert f"keeps running on {NODE}" in kept.message
    evicted = eviction.judge(pod(opt="migrate-or-evict"), [ended], now=now)
    assert evicted.allowed
    assert "evicted instead" in evicted.warnings[0]


def test_a_later_drain_tries_again_and_older_evacuations_do_not_count() -> None:
    ended = evacuation(workloads=[entry("Refused", reason="NoTarget")], completed=LATER)
    again = eviction.judge(pod(), [ended], now=LATER + datetime.timedelta(minutes=2))
    assert again.evacuate_node == NODE
    # An evacuation from before this pod existed says nothing about it.
    older = evacuation(created=T0 - datetime.timedelta(hours=1), workloads=[entry("Refused")])
    assert eviction.judge(pod(), [older], now=LATER).evacuate_node == NODE
    # Nor does one of containers only.
    assert eviction.judge(pod(), [evacuation(pods=False)], now=LATER).evacuate_node == NODE


def test_a_dry_run_changes_nothing_and_says_what_would_happen() -> None:
    verdict = eviction.judge(pod(), [], now=LATER, dry_run=True)
    assert verdict.allowed
    assert verdict.evacuate_node is None
    assert "would live-migrate pod apps/web" in verdict.warnings[0]


class Drained:
    """The pods and evacuations an eviction reads, and the evacuations it makes."""

    def __init__(self) -> None:
        self.pods = {("apps", n): pod(n) for n in ("web", "db")}
        self.created: list[dict[str, Any]] = []

    async def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        return self.pods.get((namespace, name))

    async def list_everywhere(self, plural: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        stamp = {"creationTimestamp": LATER.isoformat()}
        return [{**b, "metadata": {**b["metadata"], **stamp}} for b in self.created]

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> bool:
        await asyncio.sleep(0)
        self.created.append(body)
        return True


def test_concurrent_evictions_on_one_node_share_one_evacuation() -> None:
    kube = Drained()

    async def drain() -> list[eviction.Verdict]:
        return await asyncio.gather(
            *(
                eviction.review(kube, "apps", name, now=LATER, dry_run=False)  # type: ignore[arg-type]
                for name in ("web", "db")
            )
        )

    verdicts = asyncio.run(drain())
    assert [v.code for v in verdicts] == [429, 429]
    assert len(kube.created) == 1


def test_the_operator_leaves_a_drained_node_after_the_pods_it_moves() -> None:
    others = [pod("web"), pod("db", opt=None)]
    waits = eviction.operator_leaving(NODE, others, [], now=LATER)
    assert (waits.allowed, waits.code) == (False, 429)
    assert "after the 1 pod(s) it live-migrates" in waits.message
    refused = evacuation(workloads=[entry("Refused", reason="NoTarget")], completed=LATER)
    # A pod that could not move does not hold the operator back (drain reports it).
    assert eviction.operator_leaving(NODE, others, [refused], now=LATER).allowed
    elsewhere = [pod("web", spec={"nodeName": "node-b"})]
    assert eviction.operator_leaving(NODE, elsewhere, [], now=LATER).allowed
