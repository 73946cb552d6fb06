"""The uninstall hook's order of things (against a fake API server): cancel what is in
flight, keep what is stored, stop the operator, and only then release the finalizers."""

from __future__ import annotations

import asyncio
from typing import Any

from ferry_api import constants
from ferry_operator.cleanup import cleanup

FINALIZER = constants.MIGRATION_FINALIZER


def item(name: str, phase: str | None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team-a", "finalizers": [FINALIZER]},
        "status": {"phase": phase} if phase else {},
    }


class Cluster:
    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {
            constants.NODE_EVACUATION_PLURAL: [],
            constants.CONTAINER_MIGRATION_PLURAL: [item("moving", "Transferring")],
            constants.POD_MIGRATION_PLURAL: [item("done", "Succeeded")],
            constants.CONTAINER_RESTORE_PLURAL: [],
            constants.CONTAINER_CHECKPOINT_PLURAL: [
                item("nightly", "Scheduled"),
                item("snap", "Ready"),
            ],
            # A schedule has no phase: never in flight, released like the rest.
            constants.CHECKPOINT_SCHEDULE_PLURAL: [item("hourly", None)],
        }
        self.log: list[str] = []
        self.operator_pods = ["ferry-operator-abc"]

    async def list_everywhere(self, plural: str) -> list[dict[str, Any]]:
        return self.objects[plural]

    async def delete(self, plural: str, namespace: str, name: str) -> None:
        self.log.append(f"delete {name}")
        # The operator rolls it back and releases it.
        self.objects[plural] = [o for o in self.objects[plural] if o["metadata"]["name"] != name]

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> str:
        self.log.append(f"scale {namespace}/{name} {replicas}")
        return "app.kubernetes.io/component=operator"

    async def pod_names(self, namespace: str, selector: str) -> list[str]:
        pods, self.operator_pods = self.operator_pods, []  # gone on the second look
        return pods

    async def set_finalizers(
        self, plural: str, namespace: str, name: str, finalizers: list[str]
    ) -> None:
        assert not self.operator_pods, "released while the operator could put it back"
        self.log.append(f"release {name}")


def test_in_flight_is_cancelled_stored_is_kept_and_the_operator_stops_before_release() -> None:
    cluster = Cluster()
    done = asyncio.run(
        cleanup(
            cluster,  # type: ignore[arg-type]
            grace_seconds=5,
            operator=("ferry-system", "ferry-operator"),
        )
    )
    assert cluster.log == [
        "delete moving",
        "scale ferry-system/ferry-operator 0",
        "release done",
        "release nightly",
        "release snap",
        "release hourly",
    ]
    assert any("cancelled" in line and "moving" in line for line in done)


def test_delete_checkpoints_deletes_them_too() -> None:
    cluster = Cluster()
    cluster.operator_pods = []  # no operator to stop (not named)
    asyncio.run(cleanup(cluster, grace_seconds=5, delete_checkpoints=True))  # type: ignore[arg-type]
    assert cluster.log == [
        "delete moving",
        "delete nightly",
        "delete snap",
        "delete hourly",
        "release done",
    ]
