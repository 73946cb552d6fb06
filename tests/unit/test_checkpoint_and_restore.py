"""ContainerCheckpoint and ContainerRestore handlers against fakes at the typed wire boundary.

Which requests reach which node for each way a checkpoint is kept and brought
back (on its node, across nodes, from a registry), and what the status says.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf
import pytest
from ferry_api.checkpoint import parse_container_checkpoint, parse_container_restore
from ferry_operator.checkpoint import CheckpointTaker
from ferry_operator.restore import Restorer
from ferry_operator.settings import Settings
from ferry_wire import Reason, RemoteError
from ferry_wire.containers import InspectRequest
from ferry_wire.migration import Restored, RestoreRequest, Sent
from ferry_wire.stored import (
    RestoreImageRequest,
    RestoreStoredRequest,
    SendStoredRequest,
    StoreCheckpointRequest,
    Stored,
)
from operator_fakes import (
    IMAGE_ID,
    NAMESPACE,
    RESTORED_ID,
    SETTINGS,
    UID,
    Call,
    Clock,
    FakeEvents,
    FakeHelpers,
    FakeKube,
)

CHECKPOINT_UID = "1b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
ARCHIVE_SHA256 = "a" * 64


class Checkpoints(FakeKube):
    """A FakeKube that also serves one ContainerCheckpoint to a restore."""

    checkpoint: dict[str, Any] | None = None

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.checkpoint


def stored_checkpoint(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerCheckpoint",
        "metadata": {"name": "snap", "namespace": NAMESPACE, "uid": CHECKPOINT_UID},
        "spec": {"source": {"node": "node-a", "container": "web"}},
        "status": {
            "phase": "Ready",
            "node": "node-a",
            "containerName": "web",
            "runtime": "podman",
            "image": {"id": IMAGE_ID, "name": "localhost/busybox:latest"},
            "archive": {"bytes": 4096, "sha256": ARCHIVE_SHA256, "compression": "zstd"},
            **status,
        },
    }


def restore(
    *, elapsed_seconds: float = 0.0, answers: dict[Any, Any] | None = None, **spec: Any
) -> tuple[FakeHelpers, Checkpoints, dict[str, Any]]:
    clock = Clock()
    helpers, kube = FakeHelpers(), Checkpoints(clock)
    kube.checkpoint = stored_checkpoint()
    restored = Restored(container_id=RESTORED_ID, name="copy", seconds=0.2)
    for model in (RestoreStoredRequest, RestoreImageRequest, RestoreRequest):
        helpers.answers[model] = restored
    helpers.answers[SendStoredRequest] = Sent(seconds=0.3, bytes=1000)
    helpers.answers[("node-b", InspectRequest)] = RemoteError(Reason.CONTAINER_NOT_FOUND, "no")
    helpers.answers[("node-a", InspectRequest)] = RemoteError(Reason.CONTAINER_NOT_FOUND, "no")
    helpers.answers.update(answers or {})
    body = {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerRestore",
        "metadata": {"name": "back", "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": {"checkpointRef": {"name": "snap"}, "name": "copy", **spec},
    }
    restorer = Restorer(
        resource=parse_container_restore(body),
        events=FakeEvents(),
        kube=kube,  # type: ignore[arg-type]
        helpers=helpers,
        settings=SETTINGS,
        clock=clock,
        elapsed_seconds=elapsed_seconds,
    )
    asyncio.run(restorer.run())
    return helpers, kube, kube.last


def test_a_restore_past_its_timeout_ends_failed_and_removes_what_it_started() -> None:
    async def hangs(*_: Any) -> Restored:
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    class Hanging(FakeHelpers):
        async def call(self, peer: Any, request: Any, **kwargs: Any) -> Any:
            if isinstance(request, RestoreStoredRequest):
                self.calls.append(Call(peer.node, request))
                return await hangs()
            return await super().call(peer, request, **kwargs)

    clock = Clock()
    helpers, kube = Hanging(), Checkpoints(clock)
    kube.checkpoint = stored_checkpoint()
    helpers.answers[("node-a", InspectRequest)] = RemoteError(Reason.CONTAINER_NOT_FOUND, "no")
    restorer = Restorer(
        resource=parse_container_restore(
            {
                "apiVersion": "ferry.dev/v1alpha1",
                "kind": "ContainerRestore",
                "metadata": {"name": "back", "namespace": NAMESPACE, "uid": UID},
                "spec": {"checkpointRef": {"name": "snap"}, "timeoutSeconds": 60},
            }
        ),
        events=FakeEvents(),
        kube=kube,  # type: ignore[arg-type]
        helpers=helpers,
        settings=SETTINGS,
        clock=clock,
        elapsed_seconds=59.7,  # kopf's runtime: the handler began 59.7 s ago
    )
    asyncio.run(restorer.run())
    assert kube.last["phase"] == "Failed"
    assert kube.last["conditions"][0]["reason"] == "Timeout"
    assert "60s (spec.timeoutSeconds)" in kube.last["message"]
    cleanup = [c.request for c in helpers.calls if c.operation == "cleanup"]
    assert cleanup
    assert cleanup[-1].remove_restored  # type: ignore[attr-defined]


def test_a_helper_not_heard_is_retried_only_until_the_restores_deadline() -> None:
    unheard = {RestoreStoredRequest: RemoteError(Reason.HELPER_UNREACHABLE, "no route")}
    with pytest.raises(kopf.TemporaryError):
        restore(elapsed_seconds=10, answers=unheard)
    _, _, status = restore(elapsed_seconds=295, answers=unheard)
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["reason"] == "HelperUnreachable"
    assert "giving up" in status["message"]


def test_a_restore_begun_past_its_deadline_fails_without_asking_any_node() -> None:
    helpers, _, status = restore(elapsed_seconds=301)
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["reason"] == "Timeout"
    assert helpers.calls == []


def test_a_checkpoint_is_restored_in_place_from_its_nodes_store() -> None:
    helpers, _, status = restore()
    assert status["phase"] == "Succeeded", status
    assert status["startTime"] <= status["completionTime"]
    asked = next(c.request for c in helpers.calls if c.operation == "restore-stored")
    assert isinstance(asked, RestoreStoredRequest)
    assert (asked.checkpoint_uid, asked.name) == (CHECKPOINT_UID, "copy")
    assert asked.sha256 == ARCHIVE_SHA256, "the helper checks the archive against the status"
    assert helpers.ops("node-a")[-2:] == ["restore-stored", "cleanup"]


def test_a_restore_on_another_node_is_a_migration_without_the_freeze() -> None:
    helpers, _, status = restore(node="node-b")
    assert status["phase"] == "Succeeded", status
    assert status["transferSeconds"] == 0.3
    assert helpers.ops("node-a") == ["send-stored"], "nothing on the source but the stream"
    sent = next(c.request for c in helpers.calls if c.operation == "send-stored")
    assert sent.sha256 == ARCHIVE_SHA256  # type: ignore[attr-defined]
    assert helpers.ops("node-b") == [
        "inspect",
        "authorize-peer",
        "image-has",
        "restore",
        "cleanup",
    ]


def test_a_checkpoint_in_a_registry_is_pulled_wherever_it_goes() -> None:
    helpers, kube, _ = restore(node="node-b")
    kube.checkpoint = stored_checkpoint(
        checkpointImage={"reference": "registry:5000/cp:snap", "digest": "sha256:" + "f" * 64}
    )
    helpers.calls.clear()
    restorer = Restorer(
        resource=parse_container_restore(
            {
                "apiVersion": "ferry.dev/v1alpha1",
                "kind": "ContainerRestore",
                "metadata": {"name": "pull", "namespace": NAMESPACE, "uid": UID},
                "spec": {"checkpointRef": {"name": "snap"}, "node": "node-b", "name": "copy"},
            }
        ),
        events=FakeEvents(),
        kube=kube,  # type: ignore[arg-type]
        helpers=helpers,
        settings=SETTINGS,
        clock=kube.clock,
    )
    asyncio.run(restorer.run())
    assert kube.last["phase"] == "Succeeded", kube.last
    assert helpers.ops("node-a") == [], "the checkpoint's own node is not needed"
    asked = next(c.request for c in helpers.calls if c.operation == "restore-image")
    assert isinstance(asked, RestoreImageRequest)
    assert asked.reference == "registry:5000/cp:snap"
    assert asked.digest == "sha256:" + "f" * 64, "pulled by the digest it was pushed with"


def test_a_failed_restore_cleans_the_target_and_says_why() -> None:
    clock = Clock()
    helpers, kube = FakeHelpers(), Checkpoints(clock)
    kube.checkpoint = stored_checkpoint()
    helpers.answers[("node-b", InspectRequest)] = RemoteError(Reason.CONTAINER_NOT_FOUND, "no")
    helpers.answers[SendStoredRequest] = Sent(seconds=0.3, bytes=1000)
    helpers.answers[RestoreRequest] = RemoteError(Reason.RESTORE_FAILED, "a bind mount is missing")
    restorer = Restorer(
        resource=parse_container_restore(
            {
                "apiVersion": "ferry.dev/v1alpha1",
                "kind": "ContainerRestore",
                "metadata": {"name": "back", "namespace": NAMESPACE, "uid": UID},
                "spec": {"checkpointRef": {"name": "snap"}, "node": "node-b"},
            }
        ),
        events=FakeEvents(),
        kube=kube,  # type: ignore[arg-type]
        helpers=helpers,
        settings=SETTINGS,
        clock=clock,
    )
    asyncio.run(restorer.run())
    assert kube.last["phase"] == "Failed"
    assert kube.last["conditions"][0]["reason"] == "RestoreFailed"
    cleanup = [c.request for c in helpers.calls if c.operation == "cleanup"]
    assert cleanup, "what the failed restore left on node-b stays there"
    assert cleanup[-1].remove_restored  # type: ignore[attr-defined]


def test_a_checkpoint_is_stored_with_what_it_holds() -> None:
    clock = Clock()
    helpers, kube = FakeHelpers(), FakeKube(clock)
    helpers.answers[StoreCheckpointRequest] = Stored.model_validate(
        {
            "seconds": 0.25,
            "sizeBytes": 4096,
            "sha256": "b" * 64,
            "containerName": "web",
            "imageId": IMAGE_ID,
            "imageName": "localhost/busybox:latest",
            "contents": {"processes": 2, "threads": 3, "memoryBytes": 8192, "sockets": {"udp": 1}},
        }
    )
    body = stored_checkpoint()
    body["status"] = {}
    taker = CheckpointTaker(
        resource=parse_container_checkpoint(body),
        events=FakeEvents(),
        kube=kube,  # type: ignore[arg-type]
        helpers=helpers,
        settings=SETTINGS,
        clock=clock,
    )
    asyncio.run(taker.run())
    status = kube.last
    assert status["phase"] == "Ready", status
    assert status["archive"]["bytes"] == 4096
    assert status["summary"]["processes"] == 2
    assert status["summary"]["sockets"]["udp"] == 1
    assert status["summary"]["runtime"]["name"] == "podman"
    assert helpers.ops("node-a") == ["inspect", "store-checkpoint"]


def take(
    spec: dict[str, Any] | None = None,
    *,
    settings: Settings = SETTINGS,
    elapsed_seconds: float = 0.0,
    answers: dict[Any, Any] | None = None,
) -> tuple[FakeHelpers, dict[str, Any]]:
    clock = Clock()
    helpers, kube = FakeHelpers(), FakeKube(clock)
    helpers.answers.update(answers or {})
    body = stored_checkpoint()
    body["status"] = {}
    body["spec"].update(spec or {})
    asyncio.run(
        CheckpointTaker(
            resource=parse_container_checkpoint(body),
            events=FakeEvents(),
            kube=kube,  # type: ignore[arg-type]
            helpers=helpers,
            settings=settings,
            clock=clock,
            elapsed_seconds=elapsed_seconds,
        ).run()
    )
    return helpers, kube.last


def test_a_registry_not_on_the_allow_list_is_refused_before_any_node_is_asked() -> None:
    allowing = dataclasses.replace(SETTINGS, allowed_registries=("registry.local:5000/team",))
    registry = {"storage": {"type": "Registry", "repository": "evil.example.com/loot"}}
    helpers, status = take(registry, settings=allowing)
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["reason"] == "RegistryNotAllowed"
    assert "registry.local:5000/team" in status["message"]
    assert helpers.calls == []
    assert allowing.registry_allowed("registry.local:5000/team/web")
    assert not allowing.registry_allowed("registry.local:5000/teamb")


def test_a_checkpoints_helper_not_heard_is_retried_for_300_seconds_then_failed() -> None:
    unheard = {StoreCheckpointRequest: RemoteError(Reason.HELPER_UNREACHABLE, "no route")}
    with pytest.raises(kopf.TemporaryError):
        take(elapsed_seconds=100, answers=unheard)
    _, status = take(elapsed_seconds=295, answers=unheard)
    assert status["phase"] == "Failed"
    assert "giving up" in status["message"]


def test_an_encrypted_archive_says_with_which_key() -> None:
    sealed = Stored.model_validate(
        {
            "seconds": 0.3,
            "sizeBytes": 5000,
            "sha256": "c" * 64,
            "containerName": "web",
            "imageId": IMAGE_ID,
            "sealing": {"keyName": "key", "keyId": "0123456789abcdef"},
            "sealSeconds": 0.02,
        }
    )
    _, status = take(answers={StoreCheckpointRequest: sealed})
    assert status["phase"] == "Ready", status
    assert status["encryption"]["keyName"] == "key"
    assert status["encryption"]["keyID"] == "0123456789abcdef"
    assert status["encryption"]["algorithm"] == "AES-256-GCM-STREAM-1MiB"
    assert status["archive"]["sha256"] == "c" * 64
    assert "encrypted with key 'key'" in status["message"]
