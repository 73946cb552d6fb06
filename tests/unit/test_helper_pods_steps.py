"""A pod's steps on the helper, through its dispatcher, with a fake ctr and a fake kubelet.

The fakes stand for the node's CRI containerd (its tasks and images, as
``ctr`` would print them) and the kubelet's checkpoint API (an archive file
per call, or an error). What is pinned: the pod runs again after any failed
checkpoint, a rollback thaws only what this migration froze, a repeated
step answers from the journal, and the bundle is what ``send`` streams.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from archives import checkpoint_archive
from ferry_helper.cri import CriCommandError, Ctr
from ferry_helper.failure_logs import FailureLogs
from ferry_helper.kubelet import Kubelet, KubeletError, criu_errors
from ferry_helper.operations import Channel, Operations
from ferry_helper.staging import Staging
from ferry_wire import Reason, RemoteError, Reply, Request
from ferry_wire.migration import Checkpointed, CleanupRequest, FinishSourceRequest, Received
from ferry_wire.pods import (
    PodCheckpointRequest,
    PodContainer,
    PodImages,
    PodImagesRequest,
    PodThawed,
    PodThawRequest,
)

UID = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
WEB, SIDECAR = "a" * 64, "b" * 64
CONTAINERS = (
    PodContainer(name="web", container_id=WEB),
    PodContainer(name="sidecar", container_id=SIDECAR),
)


class FakeCtr(Ctr):
    """The node's containerd as ctr shows it: tasks and images, every command logged."""

    def __init__(self, tasks: dict[str, str]) -> None:
        super().__init__()
        object.__setattr__(self, "state", {"tasks": tasks, "images": set(), "log": []})

    @property
    def tasks_(self) -> dict[str, str]:
        return self.state["tasks"]  # type: ignore[attr-defined,no-any-return]

    @property
    def log(self) -> list[tuple[str, ...]]:
        return self.state["log"]  # type: ignore[attr-defined,no-any-return]

    @property
    def image_set(self) -> set[str]:
        return self.state["images"]  # type: ignore[attr-defined,no-any-return]

    def present(self) -> bool:
        return True

    async def run(self, *args: str, limit: float = 0) -> str:
        self.log.append(args)
        tasks = self.tasks_
        match args:
            case ("tasks", "ls"):
                rows = [f"{i}  1  {s}" for i, s in tasks.items()]
                return "\n".join(["TASK  PID  STATUS", *rows]) + "\n"
            case ("tasks", "pause", task):
                tasks[task] = "PAUSED"
            case ("tasks", "resume", task):
                if tasks.get(task) != "PAUSED":
                    raise CriCommandError(f"ctr tasks resume {task}: not paused")
                tasks[task] = "RUNNING"
            case ("tasks", "kill", *_, task):
                tasks[task] = "PAUSED"  # pending until thawed
            case ("images", "import", "--local", layout):
                with tarfile.open(layout) as tar:
                    index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
                self.image_set.add(index["manifests"][0]["annotations"]["io.containerd.image.name"])
            case ("images", "ls", "--quiet"):
                return "\n".join(sorted(self.image_set))
            case ("images", "rm", *references):
                self.image_set.difference_update(references)
            case _:
                raise AssertionError(args)
        return ""


@dataclass(frozen=True, kw_only=True)
class FakeKubelet(Kubelet):
    """Writes a checkpoint archive per container, or fails for the names in ``fail``."""

    directory: Path = Path()
    fail: set[str] = field(default_factory=set)
    written: list[Path] = field(default_factory=list)

    def checkpoint_sync(self, namespace: str, pod: str, container: str, timeout: int) -> str:
        if container in self.fail:
            raise KubeletError(f"kubelet: HTTP 500: checkpointing {container} failed: criu says no")
        path = self.directory / f"checkpoint-{pod}_{namespace}-{container}.tar"
        path.write_bytes(checkpoint_archive())
        self.written.append(path)
        return str(path)


def _node(tmp_path: Path, ctr: FakeCtr, *, fail: set[str] | None = None) -> Operations:
    (tmp_path / "kubelet").mkdir(parents=True, exist_ok=True)
    return Operations(
        node="node-a",
        drivers={},
        staging=Staging(tmp_path / "staging"),
        store=Staging(tmp_path / "checkpoints"),
        logs=FailureLogs(tmp_path / "logs", retention_seconds=3600),
        cri=ctr,
        kubelet=FakeKubelet(
            url="https://k:10250", directory=tmp_path / "kubelet", fail=fail or set()
        ),
    )


def _run(operations: Operations, request: Request[Any]) -> Reply:
    return asyncio.run(operations.run(request, Channel()))


def _refused(operations: Operations, request: Request[Any]) -> RemoteError:
    with pytest.raises(RemoteError) as refused:
        _run(operations, request)
    return refused.value


CHECKPOINT = PodCheckpointRequest(uid=UID, namespace="ns", pod="web-1", containers=CONTAINERS)


def test_a_pod_is_frozen_checkpointed_and_bundled_once(tmp_path: Path) -> None:
    ctr = FakeCtr({WEB: "RUNNING", SIDECAR: "RUNNING"})
    node = _node(tmp_path, ctr)
    done = _run(node, CHECKPOINT)
    assert isinstance(done, Checkpointed)
    assert ctr.tasks_ == {WEB: "PAUSED", SIDECAR: "PAUSED"}, "frozen until thawed or deleted"
    staging = node.context.staging
    with tarfile.open(staging.archive(UID)) as tar:
        assert tar.getnames() == ["web.tar", "sidecar.tar"]
    assert done.size_bytes == staging.archive(UID).stat().st_size
    assert (staging.holder(WEB), staging.holder(SIDECAR)) == (UID, UID)
    assert not list((tmp_path / "kubelet").iterdir()), "the kubelet's archives are removed"
    calls = len(ctr.log)
    assert _run(node, CHECKPOINT) == done, "asked again: the journaled answer"
    assert len(ctr.log) == calls, "and nothing is frozen twice"


def test_a_failed_checkpoint_resumes_the_pod_and_says_why_and_where(tmp_path: Path) -> None:
    other_pause = "c" * 64
    ctr = FakeCtr({WEB: "RUNNING", SIDECAR: "RUNNING", other_pause: "PAUSED"})
    node = _node(tmp_path, ctr, fail={"sidecar"})
    error = _refused(node, CHECKPOINT)
    assert error.reason == Reason.KUBELET_CHECKPOINT_FAILED
    assert "node-a" in error.message
    assert "criu says no" in error.message
    assert ctr.tasks_ == {WEB: "RUNNING", SIDECAR: "RUNNING", other_pause: "PAUSED"}
    staging = node.context.staging
    assert staging.holder(WEB) is None
    assert not staging.archive(UID).exists()
    assert not list((tmp_path / "kubelet").iterdir())


def test_a_container_without_a_task_fails_before_anything_is_frozen(tmp_path: Path) -> None:
    ctr = FakeCtr({WEB: "RUNNING"})
    error = _refused(_node(tmp_path, ctr), CHECKPOINT)
    assert error.reason == Reason.CRI_UNAVAILABLE
    assert "sidecar" in error.message
    assert ctr.tasks_ == {WEB: "RUNNING"}


def test_a_container_another_migration_holds_is_busy(tmp_path: Path) -> None:
    node = _node(tmp_path, FakeCtr({WEB: "RUNNING", SIDECAR: "RUNNING"}))
    node.context.staging.claim(SIDECAR, "1b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b")
    assert _refused(node, CHECKPOINT).reason == Reason.CONTAINER_BUSY
    assert node.context.staging.holder(WEB) is None, "its own claims released"


def test_thaw_resumes_what_this_migration_froze_and_closes_it(tmp_path: Path) -> None:
    ctr = FakeCtr({WEB: "RUNNING", SIDECAR: "RUNNING"})
    node = _node(tmp_path, ctr)
    _run(node, CHECKPOINT)
    ctr.tasks_.pop(SIDECAR)  # gone meanwhile: not an error
    thawed = _run(node, PodThawRequest(uid=UID, containers=CONTAINERS))
    assert thawed == PodThawed(resumed=("web",))
    assert ctr.tasks_ == {WEB: "RUNNING"}
    assert node.context.staging.holder(WEB) is None
    assert not node.context.staging.archive(UID).exists()
    again = _run(node, PodThawRequest(uid=UID, containers=CONTAINERS))
    assert again == PodThawed(resumed=()), "a running task is left alone"
    assert _refused(node, CHECKPOINT).reason == Reason.MIGRATION_CLOSED


def test_thaw_with_kill_kills_the_frozen_tasks_before_thawing_them(tmp_path: Path) -> None:
    ctr = FakeCtr({WEB: "RUNNING", SIDECAR: "RUNNING"})
    node = _node(tmp_path, ctr)
    _run(node, CHECKPOINT)
    _run(node, PodThawRequest(uid=UID, containers=CONTAINERS, kill=True))
    kills = [c for c in ctr.log if c[:2] == ("tasks", "kill")]
    resumes = [c for c in ctr.log if c[:2] == ("tasks", "resume")]
    assert [c[-1] for c in kills] == [WEB, SIDECAR] == [c[-1] for c in resumes]
    assert ctr.log.index(kills[0]) < ctr.log.index(resumes[0])


def test_finish_source_ends_a_pods_migration_without_a_runtime(tmp_path: Path) -> None:
    node = _node(tmp_path, FakeCtr({WEB: "RUNNING", SIDECAR: "RUNNING"}))
    _run(node, CHECKPOINT)
    _run(node, FinishSourceRequest(uid=UID, container="web-1", remove_container=False))
    assert node.context.staging.holder(WEB) is None
    assert not node.context.staging.archive(UID).exists()


def _received(tmp_path: Path, node: Operations) -> None:
    """The source's bundle, as ``receive`` leaves it on the target."""
    source = _node(tmp_path / "source", FakeCtr({WEB: "RUNNING", SIDECAR: "RUNNING"}))
    done = _run(source, CHECKPOINT)
    assert isinstance(done, Checkpointed)
    staging = node.context.staging
    staging.archive(UID).write_bytes(source.context.staging.archive(UID).read_bytes())
    staging.record_model(UID, "receive", Received(size_bytes=done.size_bytes, sha256=done.sha256))


IMAGES = PodImagesRequest(uid=UID, namespace="ns", pod="web-1", containers=("web", "sidecar"))


def test_images_are_made_from_the_received_bundle_and_removed_by_cleanup(tmp_path: Path) -> None:
    ctr = FakeCtr({})
    node = _node(tmp_path / "target", ctr)
    assert _refused(node, IMAGES).reason == Reason.NO_ARCHIVE
    _received(tmp_path, node)
    images = _run(node, IMAGES)
    assert isinstance(images, PodImages)
    assert images.images == {
        "web": "localhost/ferry-checkpoint/ns-web-1-web:0b6f7b8e",
        "sidecar": "localhost/ferry-checkpoint/ns-web-1-sidecar:0b6f7b8e",
    }
    imports = [c for c in ctr.log if c[:2] == ("images", "import")]
    assert len(imports) == 2
    assert not any(Path(c[-1]).exists() for c in imports), "the layouts are removed"
    assert _run(node, IMAGES) == images, "asked again: the journaled answer"
    assert ctr.image_set == set(images.images.values())
    _run(node, CleanupRequest(uid=UID, remove_restored=False))
    assert set(images.images.values()) <= ctr.image_set, "kept: the replacement runs from them"


def test_cleanup_removing_the_restored_copy_removes_the_images(tmp_path: Path) -> None:
    ctr = FakeCtr({})
    node = _node(tmp_path / "target", ctr)
    _received(tmp_path, node)
    images = _run(node, IMAGES)
    assert isinstance(images, PodImages)
    ctr.image_set.add("docker.io/library/busybox:latest")
    _run(node, CleanupRequest(uid=UID, remove_restored=True))
    assert ctr.image_set == {"docker.io/library/busybox:latest"}


def test_a_node_without_its_cri_runtime_says_so(tmp_path: Path) -> None:
    node = Operations(
        node="node-a",
        drivers={},
        staging=Staging(tmp_path / "staging"),
        store=Staging(tmp_path / "checkpoints"),
        logs=FailureLogs(tmp_path / "logs", retention_seconds=3600),
    )
    error = _refused(node, CHECKPOINT)
    assert error.reason == Reason.CRI_UNAVAILABLE
    assert "node-a" in error.message


def test_a_failed_kubelet_checkpoint_says_what_criu_logged(tmp_path: Path) -> None:
    log = tmp_path / "criu-dump.log"
    log.write_text(
        "(00.001) Dumping task\n"
        "(00.002) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self\n"
        "(00.020) Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using "
        "--tcp-established option.\n"
        "(00.021) Error (criu/cr-dump.c:1620): Dump files (pid: 7) failed with -1\n"
    )
    message = f"runc did not terminate successfully: criu failed: type DUMP errno 0 path= {log})"
    found = criu_errors(message)
    assert found.startswith("; CRIU: inet: Connected TCP socket, consider using --tcp-established")
    assert "RLIMIT_NOFILE" not in found, "the noise of every run is left out"
    assert "Dump files (pid: 7) failed" in found
    assert criu_errors("no log named here") == ""
    assert criu_errors(f"path= {tmp_path}/gone.log") == ""
