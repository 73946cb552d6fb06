"""The migration machine against fakes at the typed wire boundary: no root, no cluster.

What a user would check: which phases the migration went through, what ran
on which node (was the source rolled back, was it ever frozen twice), the
reason a failure ends with, and the downtime and deadline an operator restart
must not reset.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import kopf
import pytest
from ferry_operator import phases as machine_module
from ferry_operator.migration import Migration
from ferry_operator.phases import CancelFailed
from ferry_operator.policy import ApiError
from ferry_operator.slots import NodeSlots
from ferry_wire import Reason, RemoteError
from ferry_wire.containers import InspectRequest
from ferry_wire.migration import (
    CheckpointRequest,
    RestoreRequest,
    RollbackRequest,
    SendRequest,
)
from kopf._cogs.aiokits.aioenums import AsyncFlagWaiter, FlagSetter
from operator_fakes import (
    SETTINGS,
    T0,
    Call,
    Clock,
    FakeEvents,
    FakeHelpers,
    FakeKube,
    container,
    migration,
)

FORWARD = [
    "Pending",
    "Validating",
    "ImageStaging",
    "Checkpointing",
    "Transferring",
    "Restoring",
    "Verifying",
    "Succeeded",
]


#: The clocks of the runs of the test under way: a retry's wait passes on them.
CLOCKS: list[Clock] = []


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry waits no real time here, but 10 s pass on the fake clock (so a retry loop
    meets its deadline); what is tested is whether retries happen."""

    def backoff(attempt: int) -> float:
        for clock in CLOCKS:
            clock.advance(10)
        return 0.0

    CLOCKS.clear()
    monkeypatch.setattr(machine_module, "backoff", backoff)


class Run:
    def __init__(self, **resource: Any) -> None:
        self.clock = Clock()
        CLOCKS.append(self.clock)
        self.kube = FakeKube(self.clock)
        self.helpers = FakeHelpers()
        self.events = FakeEvents()
        self.resource = migration(**resource)
        self.slots = NodeSlots(2)

    def machine(self) -> Migration:
        return Migration(
            slots=self.slots,
            resource=self.resource,
            events=self.events,
            kube=self.kube,  # type: ignore[arg-type]
            helpers=self.helpers,
            settings=SETTINGS,
            clock=self.clock,
        )

    def go(self, *, delete_after: float | None = None) -> dict[str, Any]:
        async def main() -> None:
            setter: FlagSetter[kopf.DaemonStoppingReason] = FlagSetter()
            stopped = AsyncFlagWaiter(setter)
            machine = self.machine()
            if delete_after is None:
                await machine.run(stopped)
                return
            running = asyncio.create_task(machine.run(stopped))
            await asyncio.sleep(delete_after)
            setter.set(kopf.DaemonStoppingReason.RESOURCE_DELETED)
            await running

        asyncio.run(main())
        return self.kube.last

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.kube.last["conditions"] if c["type"] == type_)


def test_a_migration_walks_the_phases_in_order_and_moves_the_container() -> None:
    run = Run()
    status = run.go()
    assert run.kube.phases == FORWARD
    assert status["phase"] == "Succeeded"
    assert run.helpers.ops("node-a") == ["inspect", "checkpoint", "send", "finish-source"]
    assert run.helpers.ops("node-b") == [
        "inspect",
        "image-has",
        "authorize-peer",
        "restore",
        "inspect",
        "cleanup",
    ]
    assert status["targetNode"] == "node-b"
    assert status["archive"]["bytes"] == 1000
    assert run.condition("Succeeded")["status"] == "True"


def test_an_operator_restarted_mid_migration_keeps_the_downtime_and_the_start() -> None:
    frozen = T0 + datetime.timedelta(seconds=1)
    run = Run(
        status={
            "phase": "Restoring",
            "startTime": T0.isoformat(),
            "freezeTime": frozen.isoformat(),
            "targetNode": "node-b",
            "runtime": "podman",
            "phaseTransitions": [
                {"phase": "Pending", "time": T0.isoformat()},
                {"phase": "Checkpointing", "time": frozen.isoformat()},
                {
                    "phase": "Restoring",
                    "time": (frozen + datetime.timedelta(seconds=1)).isoformat(),
                },
            ],
        }
    )
    # The new operator starts 4 s after the freeze; the restore takes 0.5 s more.
    run.clock.advance(5)
    run.helpers.on_restore = lambda: run.clock.advance(0.5)
    status = run.go()
    assert status["phase"] == "Succeeded"
    assert "checkpoint" not in run.helpers.ops(), "the source was frozen a second time"
    assert status["timings"]["downtimeSeconds"] == 4.5
    assert status["timings"]["totalSeconds"] == 5.5


def test_an_operator_restarted_past_the_deadline_rolls_back_at_once() -> None:
    started = T0 - datetime.timedelta(seconds=400)
    resumed = {
        "phase": "Transferring",
        "startTime": started.isoformat(),
        "targetNode": "node-b",
        "runtime": "podman",
        "phaseTransitions": [{"phase": "Transferring", "time": started.isoformat()}],
    }
    run = Run(spec={"timeoutSeconds": 300}, status=resumed)
    status = run.go()
    assert status["phase"] == "Failed"
    assert run.condition("Succeeded")["reason"] == "Timeout"
    assert "send" not in run.helpers.ops(), "the deadline did not start again"
    assert run.helpers.ops("node-a") == ["rollback", "cleanup"]
    # Within its deadline the same migration goes on.
    later = Run(spec={"timeoutSeconds": 500}, status=resumed)
    assert later.go()["phase"] == "Succeeded"


def test_a_host_key_mismatch_fails_at_once_with_its_own_reason() -> None:
    run = Run()
    mismatch = RemoteError(Reason.HELPER_HOST_KEY_MISMATCH, "the helper on node-a presented ...")
    run.helpers.answers[("node-a", InspectRequest)] = mismatch
    status = run.go()
    assert status["phase"] == "Failed"
    assert run.condition("Succeeded")["reason"] == "HelperHostKeyMismatch"
    assert run.condition("Validated")["status"] == "False"
    assert run.helpers.ops() == ["inspect"], "an untrusted helper was asked again"


def test_a_helper_not_heard_before_the_freeze_is_asked_again() -> None:
    run = Run()
    down = RemoteError(Reason.HELPER_UNREACHABLE, "connection refused")
    run.helpers.answers[("node-a", InspectRequest)] = [down, down, container()]
    status = run.go()
    assert status["phase"] == "Succeeded"
    assert run.helpers.ops("node-a")[:3] == ["inspect", "inspect", "inspect"]
    assert run.events.reasons().count("HelperUnreachable") == 2


def test_a_helper_lost_during_the_freeze_rolls_back_without_retrying_the_step() -> None:
    run = Run()
    run.helpers.answers[SendRequest] = RemoteError(Reason.HELPER_DISCONNECTED, "link cut")
    status = run.go()
    assert run.kube.phases[-2:] == ["RollingBack", "Failed"]
    assert run.condition("Succeeded")["reason"] == "HelperDisconnected"
    assert run.helpers.ops("node-a").count("send") == 1
    assert run.helpers.ops("node-a")[-2:] == ["rollback", "cleanup"]
    assert "cleanup" in run.helpers.ops("node-b")
    assert status["failure"]["reason"] == "HelperDisconnected"


def test_a_resumed_rollback_ends_with_the_first_failures_reason() -> None:
    run = Run(
        status={
            "phase": "RollingBack",
            "startTime": T0.isoformat(),
            "targetNode": "node-b",
            "runtime": "podman",
            "message": "rolling back: rollback on node-a: attempt 3 failed",
            "failure": {"reason": "RestoreFailed", "message": "crun: a bind mount is missing"},
            "phaseTransitions": [{"phase": "Restoring", "time": T0.isoformat()}],
        }
    )
    status = run.go()
    assert status["phase"] == "Failed"
    assert run.condition("Succeeded")["reason"] == "RestoreFailed"
    assert "a bind mount is missing" in status["message"]
    assert run.helpers.ops("node-a") == ["rollback", "cleanup"]


def test_a_refusal_after_the_freeze_rolls_the_source_back() -> None:
    run = Run()
    run.helpers.answers[("node-b", InspectRequest)] = [
        RemoteError(Reason.CONTAINER_NOT_FOUND, "none yet"),
        container(running=False),
    ]
    run.go()
    assert run.kube.phases[-3:] == ["Verifying", "RollingBack", "Failed"]
    assert run.condition("Succeeded")["reason"] == "TargetNotRunning"
    assert "finish-source" not in run.helpers.ops(), "the source went before the target ran"
    assert run.helpers.ops("node-a")[-2:] == ["rollback", "cleanup"]


def test_deleting_a_migration_in_flight_rolls_back_and_ends_cancelled() -> None:
    run = Run()
    hold = asyncio.Event()

    async def never(*_: Any) -> Any:
        await hold.wait()

    real_call = run.helpers.call

    async def call(peer: Any, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, RestoreRequest):
            run.helpers.calls.append(Call(peer.node, request))
            await never()
        return await real_call(peer, request, **kwargs)

    run.helpers.call = call  # type: ignore[method-assign]
    status = run.go(delete_after=0.2)
    assert status["phase"] == "Cancelled"
    assert run.kube.phases[-2:] == ["RollingBack", "Cancelled"]
    assert run.helpers.ops("node-a")[-2:] == ["rollback", "cleanup"]
    assert run.condition("Succeeded")["reason"] == "Cancelled"


def test_a_cancel_whose_rollback_fails_keeps_the_migration_until_a_later_cancel_ends_it() -> None:
    """The delete handler's contract: a failed cancel is recorded and raised (the finalizer
    stays), and a cancel asked again from the recorded status brings the source back."""
    run = Run()
    hold = asyncio.Event()
    real_call = run.helpers.call

    async def call(peer: Any, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, RestoreRequest):
            run.helpers.calls.append(Call(peer.node, request))
            await hold.wait()
        return await real_call(peer, request, **kwargs)

    run.helpers.call = call  # type: ignore[method-assign]
    rolled_back = run.helpers.answers[RollbackRequest]
    run.helpers.answers[("node-a", RollbackRequest)] = [
        RemoteError(Reason.RESTORE_FAILED, "crun: the cgroup is busy"),
        rolled_back,  # type: ignore[list-item]
    ]
    status = run.go(delete_after=0.2)
    assert status["phase"] == "RollingBack", "a failed cancel must not end the migration"
    assert run.condition("Succeeded")["reason"] == "CancelFailed"
    assert "the cgroup is busy" in status["message"]
    assert "finalizer" in status["message"]

    run.resource = migration(status=status)
    again = run.machine()
    asyncio.run(again.cancel())
    assert run.kube.last["phase"] == "Cancelled"
    assert run.helpers.ops("node-a").count("rollback") == 2
    assert run.helpers.ops("node-a")[-1] == "cleanup"


def test_a_cancel_that_cannot_reach_its_rollback_raises_for_the_delete_handler() -> None:
    run = Run()
    run.resource = migration(
        status={
            "phase": "Restoring",
            "startTime": T0.isoformat(),
            "targetNode": "node-b",
            "runtime": "podman",
            "phaseTransitions": [{"phase": "Restoring", "time": T0.isoformat()}],
        }
    )
    run.helpers.answers[("node-a", RollbackRequest)] = [
        RemoteError(Reason.RESTORE_FAILED, "no such checkpoint")
    ]
    with pytest.raises(CancelFailed, match="no such checkpoint"):
        asyncio.run(run.machine().cancel())
    assert run.kube.last["phase"] == "RollingBack"
    assert "CancelFailed" in run.events.reasons()


def test_a_helper_too_old_for_this_operator_is_refused_before_anything_runs() -> None:
    run = Run()
    run.kube.protocol = 1
    status = run.go()
    assert status["phase"] == "Failed"
    assert run.condition("Succeeded")["reason"] == "SourceNotReady"
    assert "speaks protocol 1" in run.condition("Succeeded")["message"]
    assert run.helpers.ops() == []


def test_a_migration_waiting_for_a_slot_stays_validating_and_freezes_nothing() -> None:
    run = Run()
    run.slots = NodeSlots(1)
    other = "9b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"

    async def main() -> None:
        waiting = asyncio.Event()
        told = run.events.normal

        def normal(reason: str, message: str) -> None:
            told(reason, message)
            if reason == "WaitingForNode":
                waiting.set()

        run.events.normal = normal  # type: ignore[method-assign]
        await run.slots.acquire(other, ["node-b"])
        setter: FlagSetter[kopf.DaemonStoppingReason] = FlagSetter()
        running = asyncio.create_task(run.machine().run(AsyncFlagWaiter(setter)))
        await asyncio.wait_for(waiting.wait(), 5)
        assert run.kube.phases == ["Pending", "Validating"]
        assert "checkpoint" not in run.helpers.ops()
        await run.slots.release(other)
        await running

    asyncio.run(main())
    assert run.kube.phases == FORWARD
    assert run.slots.in_flight("node-b") == 0, "the slot outlived the migration"


def test_the_freeze_waits_until_checkpointing_is_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API server does not take Checkpointing for a while: nothing is frozen until it does."""
    monkeypatch.setattr("ferry_operator.status.backoff", lambda attempt: 0.0)
    run = Run()
    refusals = 8  # two writes' worth of attempts
    frozen_before_stored: list[bool] = []
    real_patch = run.kube.patch_status

    async def patch(plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        nonlocal refusals
        if status.get("phase") == "Checkpointing" and refusals:
            refusals -= 1
            raise ApiError(503, "the API server is restarting")
        await real_patch(plural, namespace, name, status)

    real_call = run.helpers.call

    async def call(peer: Any, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, CheckpointRequest):
            frozen_before_stored.append("Checkpointing" not in run.kube.phases)
        return await real_call(peer, request, **kwargs)

    run.kube.patch_status = patch  # type: ignore[method-assign]
    run.helpers.call = call  # type: ignore[method-assign]
    status = run.go()
    assert frozen_before_stored == [False], "the source was frozen before Checkpointing was stored"
    assert status["phase"] == "Succeeded"
    assert "KubernetesApiError" in run.events.reasons()
