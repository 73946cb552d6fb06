"""Helper to helper: an archive streamed into a target, and memory pages taken back.

Two helpers on loopback, each with its own host key and a fake driver: the
source streams as the ``peer`` user under a grant the target made, over
``ferry_wire.ssh.connect`` (host key pinned), with the typed headers. What
breaks the stream is the stream's reason; what the target decided passes.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import asyncssh
from archives import checkpoint_archive
from ferry_api.runtime import Runtime
from ferry_helper.operations.pages import CheckpointStarted, PagesOpened
from ferry_wire import Peer
from ferry_wire.migration import Checkpointed, Received, Sent, TransferProgress
from ferry_wire.pages import PagesFetched
from helper_fakes import CONTAINER_ID, PodmanLike, docker_only, helper_operations, serving

UID = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
PEER_KEY = asyncssh.generate_private_key("ssh-ed25519")


def credential() -> str:
    return PEER_KEY.export_private_key().decode()


def stage_checkpoint(tmp_path: Path, *, sha256: str | None = None) -> tuple[Any, bytes]:
    """A source whose migration checkpointed ``web`` into an archive (journaled)."""
    source, _ = docker_only(tmp_path / "source")
    archive = checkpoint_archive()
    source.context.staging.archive(UID).write_bytes(archive)
    checkpointed = Checkpointed(
        size_bytes=len(archive),
        sha256=sha256 or hashlib.sha256(archive).hexdigest(),
        seconds=0.2,
        container_id=CONTAINER_ID,
    )
    source.context.staging.record_model(UID, "checkpoint", checkpointed)
    return source, archive


def send(tmp_path: Path, *, sha256: str | None = None, target_port: int | None = None) -> Any:
    """The operator's ``send`` on the source, into a target that granted PEER_KEY."""
    source, archive = stage_checkpoint(tmp_path, sha256=sha256)
    target, _ = docker_only(tmp_path / "target")
    target.grants.authorize(UID, PEER_KEY, 60)

    async def scenario() -> Any:
        async with serving(target) as (served, _), serving(source) as (_, run):
            into = (
                served if target_port is None else served.model_copy(update={"port": target_port})
            )
            request = {"uid": UID, "target": into.to_json(), "credential": credential()}
            events, code = await run("send", request)
            again = await run("send", request) if code == 0 else None
            return events, code, again

    events, code, again = asyncio.run(scenario())
    return source, target, archive, events, code, again


def test_an_archive_streams_into_its_target_checked_and_journaled(tmp_path: Path) -> None:
    _, target, archive, events, code, again = send(tmp_path)
    assert code == 0, events
    progress = [TransferProgress.model_validate(e["data"]) for e in events[:-1]]
    assert progress, "the stream reported its progress"
    assert progress[-1].bytes_sent == progress[-1].bytes_total == len(archive)
    assert {p.what for p in progress} == {"archive"}
    sent = Sent.model_validate(events[-1]["data"])
    assert sent.bytes == len(archive)
    received = target.context.staging.recorded_model(UID, "receive", Received)
    assert received == Received(size_bytes=len(archive), sha256=hashlib.sha256(archive).hexdigest())
    assert target.context.staging.archive(UID).read_bytes() == archive
    repeated_events, _ = again
    assert [e["type"] for e in repeated_events] == ["result"], "answered from the journal"


def test_a_target_that_cannot_be_reached_fails_the_transfer_not_the_helper(
    tmp_path: Path,
) -> None:
    _, _, _, events, code, _ = send(tmp_path, target_port=1)
    assert code == 1
    [event] = events
    assert event["reason"] == "TransferFailed"
    assert event["message"].startswith("streaming to node-d: HelperUnreachable: ")


def test_what_the_target_refused_reaches_the_operator_as_it_said(tmp_path: Path) -> None:
    _, target, _, events, code, _ = send(tmp_path, sha256="0" * 64)
    assert code == 1
    assert events[-1]["reason"] == "ChecksumMismatch"
    assert not target.context.staging.archive(UID).exists(), "nothing of it kept"


def test_memory_pages_come_back_from_the_target_for_a_rollback(tmp_path: Path) -> None:
    driver = PodmanLike(tmp_path / "containers")
    source = helper_operations(tmp_path / "source", {Runtime.PODMAN: driver}, node="node-a")
    source.context.staging.record_model(
        UID, "checkpoint-started", CheckpointStarted(container_id=CONTAINER_ID, page_server=True)
    )
    target = helper_operations(tmp_path / "target", {Runtime.PODMAN: PodmanLike(tmp_path)})
    pages = tmp_path / "target-pages"
    pages.mkdir()
    (pages / "pagemap-1.img").write_bytes(b"m" * 450)
    (pages / "pages-1.img").write_bytes(bytes(range(256)) * 64)
    (pages / "core-1.img").write_bytes(b"not a page image")
    opened = PagesOpened(
        address="127.0.0.1", port=1, container_id=CONTAINER_ID, directory=str(pages)
    )
    target.context.staging.record_model(UID, "pages-open", opened)
    target.grants.authorize(UID, PEER_KEY, 60)

    async def scenario() -> list[Any]:
        async with serving(target) as (target_peer, _), serving(source) as (_, run):
            asked = await run("pages-fetch", {"uid": UID})
            request = {"uid": UID, "target": target_peer.to_json(), "credential": credential()}
            fetched = await run("pages-fetch", request)
            gone = Peer(**{**target_peer.model_dump(), "port": 1})
            other = UID.replace("0b6f", "2b6f")
            source.context.staging.record_model(
                other,
                "checkpoint-started",
                CheckpointStarted(container_id=CONTAINER_ID, page_server=True),
            )
            unreachable = await run(
                "pages-fetch", {"uid": other, "target": gone.to_json(), "credential": credential()}
            )
            return [asked, fetched, unreachable]

    asked, fetched, unreachable = asyncio.run(scenario())
    assert PagesFetched.model_validate(asked[0][-1]["data"]) == PagesFetched(needed=True)
    assert fetched[1] == 0, fetched
    reply = PagesFetched.model_validate(fetched[0][-1]["data"])
    assert reply == PagesFetched(needed=True, files=2, bytes=450 + 256 * 64)
    into = tmp_path / "containers" / CONTAINER_ID / "checkpoint"
    assert sorted(p.name for p in into.iterdir()) == ["pagemap-1.img", "pages-1.img"]
    assert (into / "pages-1.img").read_bytes() == (pages / "pages-1.img").read_bytes()
    [event] = unreachable[0]
    assert event["reason"] == "PagesUnreachable", event
    assert "HelperUnreachable" in event["message"]
