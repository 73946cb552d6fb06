"""The delete handler's hold on a deleted migration: its finalizer stays until the source runs.

Against fakes at the typed wire boundary: the daemon's own cancel is waited
for; a migration still not over (no daemon ran: the operator restarted during
the deletion; or the daemon's cancel failed) is cancelled by the handler, and
a cancel that fails again is kopf's TemporaryError, so kopf keeps the
finalizer and asks again.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kopf
import pytest
from ferry_api import constants
from ferry_api.migration import parse_container_migration
from ferry_operator import handlers
from ferry_operator.migration import Migration
from ferry_operator.slots import NodeSlots
from ferry_wire import Reason, RemoteError
from ferry_wire.migration import RollbackRequest
from operator_fakes import (
    NAMESPACE,
    SETTINGS,
    T0,
    UID,
    Clock,
    FakeEvents,
    FakeHelpers,
    FakeKube,
)

PLURAL = constants.CONTAINER_MIGRATION_PLURAL


class Deleted(FakeKube):
    """The API server holding one deleted migration: ``get`` shows its latest status."""

    body: dict[str, Any]

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        current = copy.deepcopy(self.body)
        if self.statuses:
            current["status"] = self.statuses[-1]
        return current


def deleted_in(phase: str) -> tuple[Deleted, FakeHelpers, kopf.Memo, kopf.Body]:
    kube, helpers = Deleted(Clock()), FakeHelpers()
    kube.body = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {
            "name": "move",
            "namespace": NAMESPACE,
            "uid": UID,
            "generation": 1,
            "deletionTimestamp": T0.isoformat(),
            "finalizers": [constants.MIGRATION_FINALIZER],
        },
        "spec": {"source": {"node": "node-a", "container": "web"}, "target": {"node": "node-b"}},
        "status": {
            "phase": phase,
            "startTime": T0.isoformat(),
            "targetNode": "node-b",
            "runtime": "podman",
            "phaseTransitions": [{"phase": "Restoring", "time": T0.isoformat()}],
        },
    }
    memo = kopf.Memo()
    memo.kube = kube
    memo.driving = {}
    return kube, helpers, memo, kopf.Body(copy.deepcopy(kube.body))


def factory(kube: Deleted, helpers: FakeHelpers) -> Any:
    def machine(fresh: dict[str, Any], body: kopf.Body, memo: kopf.Memo) -> Migration:
        return Migration(
            resource=parse_container_migration(fresh),
            events=FakeEvents(),
            kube=kube,  # type: ignore[arg-type]
            helpers=helpers,
            settings=SETTINGS,
            slots=NodeSlots(2),
            clock=kube.clock,
        )

    return machine


def test_a_deletion_no_daemon_saw_is_cancelled_by_the_delete_handler() -> None:
    kube, helpers, memo, body = deleted_in("Restoring")
    asyncio.run(handlers._cancelled(body, memo, 0, PLURAL, factory(kube, helpers)))
    assert kube.phases == ["RollingBack", "Cancelled"]
    assert helpers.ops("node-b") == ["cleanup"], "the target's copy goes first"
    assert helpers.ops("node-a") == ["rollback", "cleanup"]


def test_a_cancel_that_fails_again_is_kopfs_temporary_error_so_the_finalizer_stays() -> None:
    kube, helpers, memo, body = deleted_in("RollingBack")
    helpers.answers[("node-a", RollbackRequest)] = RemoteError(
        Reason.ROLLBACK_FAILED, "crun: the cgroup is busy"
    )
    with pytest.raises(kopf.TemporaryError, match="the cgroup is busy"):
        asyncio.run(handlers._cancelled(body, memo, 3, PLURAL, factory(kube, helpers)))
    assert kube.last["phase"] == "RollingBack"
    assert any(c["reason"] == "CancelFailed" for c in kube.last["conditions"])


def test_the_delete_handler_waits_for_the_daemons_own_cancel_and_adds_nothing() -> None:
    kube, helpers, memo, body = deleted_in("Restoring")

    async def main() -> None:
        memo.driving[UID] = ended = asyncio.Event()
        handler = asyncio.create_task(
            handlers._cancelled(body, memo, 0, PLURAL, factory(kube, helpers))
        )
        await asyncio.sleep(0.1)
        assert not handler.done(), "the handler did not wait for the daemon"
        kube.statuses.append({**kube.body["status"], "phase": "Cancelled"})  # its cancel
        ended.set()
        await handler

    asyncio.run(main())
    assert helpers.calls == [], "cancelled twice"
