"""The helper's dispatch of typed requests, over its real SSH server and without root.

A helper here has no podman: a docker-like fake driver (the archive
checkpointer every runtime is, nothing more) stands for a node with docker
alone. What a page server or a registry needs is refused by capability, with
the reason users read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from ferry_api.runtime import Runtime
from ferry_helper.drivers.capabilities import (
    CheckpointImageCapable,
    Driver,
    PageServerCapable,
)
from ferry_helper.drivers.docker import DockerDriver
from ferry_helper.drivers.podman import PodmanDriver
from ferry_helper.drivers.records import ContainerInfo
from ferry_helper.operations import Channel, Operations
from ferry_helper.server import HelperServer
from ferry_wire import OPERATOR_USER, PEER_USER, PROTOCOL_VERSION, Peer, Reason, RemoteError
from ferry_wire.containers import Container, ContainerList, InspectRequest, ListContainersRequest
from ferry_wire.contract import REQUESTS
from ferry_wire.migration import CheckpointRequest, PageServerLink
from ferry_wire.node import ProbeReply, ProbeRequest
from ferry_wire.operations import Operation
from ferry_wire.pages import PagesOpenRequest
from ferry_wire.ssh import connect
from ferry_wire.stored import StoreCheckpointRequest
from helper_fakes import (
    CONTAINER_ID,
    OPERATOR_KEY,
    DockerLike,
    PodmanLike,
    Run,
    docker_only,
    helper_operations,
    serving,
)

UID = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
OTHER_UID = "1b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
KEY_BODY = "AAAA-very-secret"


def refusal(call: Awaitable[Any]) -> RemoteError:
    async def run() -> RemoteError:
        with pytest.raises(RemoteError) as refused:
            await call
        return refused.value

    return asyncio.run(run())


# --- capabilities, checked by type


def test_podman_has_every_capability_and_docker_only_the_archive() -> None:
    podman = PodmanDriver(podman="/nonexistent/podman")
    docker = DockerDriver(docker="/nonexistent/docker", runc_conf=Path("/nonexistent/runc.conf"))
    assert isinstance(podman, Driver)
    assert isinstance(podman, PageServerCapable)
    assert isinstance(podman, CheckpointImageCapable)
    assert isinstance(docker, Driver)
    assert not isinstance(docker, PageServerCapable)
    assert not isinstance(docker, CheckpointImageCapable)
    assert isinstance(DockerLike(), Driver)
    assert isinstance(PodmanLike(Path("/nowhere")), PageServerCapable)


def test_every_operation_of_the_contract_has_a_handler(tmp_path: Path) -> None:
    operations, _ = docker_only(tmp_path)
    assert set(REQUESTS) == set(Operation), "every operation has its request model"
    assert [op for op, model in REQUESTS.items() if not operations.serves(model)] == []


# --- a node with docker and no podman, through the real dispatcher


def test_a_docker_only_node_probes_and_inspects_without_podman(tmp_path: Path) -> None:
    operations, _ = docker_only(tmp_path)
    reply = asyncio.run(operations.run(ProbeRequest(), Channel()))
    assert isinstance(reply, ProbeReply)
    assert [runtime.name for runtime in reply.status.runtimes] == [Runtime.DOCKER]
    assert reply.status.runtimes[0].version == "26.1.5"
    assert reply.status.protocol_version == PROTOCOL_VERSION

    found = asyncio.run(operations.run(InspectRequest(container="web"), Channel()))
    assert isinstance(found, Container)
    assert (found.id, found.runtime, found.migrating_by) == (CONTAINER_ID, Runtime.DOCKER, None)
    assert found.to_json()["imageName"] == "busybox"

    missing = refusal(operations.run(InspectRequest(container="nope"), Channel()))
    assert missing.reason == Reason.CONTAINER_NOT_FOUND
    assert "docker" in missing.message
    no_podman = refusal(
        operations.run(InspectRequest(container="web", runtime=Runtime.PODMAN), Channel())
    )
    assert no_podman.reason == Reason.RUNTIME_UNAVAILABLE
    assert "has no podman (it has docker)" in no_podman.message


def test_a_page_server_dump_of_a_docker_container_is_refused_before_anything(
    tmp_path: Path,
) -> None:
    operations, driver = docker_only(tmp_path)
    request = CheckpointRequest(
        uid=UID,
        container="web",
        runtime=Runtime.DOCKER,
        page_server=PageServerLink(address="10.0.0.2", port=27000),
    )
    refused = refusal(operations.run(request, Channel()))
    assert refused.reason == Reason.PAGE_SERVER_NEEDS_PODMAN
    assert "docker on node node-d cannot send memory to a page server" in refused.message
    assert "memoryTransfer: Archive" in refused.message
    assert driver.checkpoints == []
    assert operations.context.staging.holder(CONTAINER_ID) is None, "nothing claimed"


def test_a_page_server_on_a_node_without_the_capability_is_refused(tmp_path: Path) -> None:
    operations, _ = docker_only(tmp_path)
    refused = refusal(
        operations.run(PagesOpenRequest(uid=UID, container_id=CONTAINER_ID), Channel())
    )
    assert refused.reason == Reason.PAGE_SERVER_NEEDS_PODMAN
    assert "node node-d has no runtime" in refused.message


def test_a_checkpoint_image_of_a_docker_container_is_refused(tmp_path: Path) -> None:
    operations, driver = docker_only(tmp_path)
    request = StoreCheckpointRequest(
        uid=UID, container="web", runtime=Runtime.DOCKER, image_reference="reg.example/cp:1"
    )
    refused = refusal(operations.run(request, Channel()))
    assert refused.reason == Reason.REGISTRY_NEEDS_PODMAN
    assert "docker on node node-d makes no checkpoint images" in refused.message
    assert driver.checkpoints == []


def test_a_closed_migration_refuses_a_late_checkpoint(tmp_path: Path) -> None:
    operations, driver = docker_only(tmp_path)
    operations.context.staging.close(UID)
    request = CheckpointRequest(uid=UID, container="web", runtime=Runtime.DOCKER)
    assert refusal(operations.run(request, Channel())).reason == Reason.MIGRATION_CLOSED
    assert driver.checkpoints == []


# --- the SSH server: typed requests in, events out


@asynccontextmanager
async def helper(tmp_path: Path) -> AsyncIterator[tuple[Operations, Run]]:
    """A docker-only helper served on loopback, and a way to run one operation there."""
    operations, _ = docker_only(tmp_path)
    async with serving(operations) as (_, run):
        yield operations, run


def test_the_server_answers_a_typed_request_with_its_typed_reply(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        async with helper(tmp_path) as (_, run):
            return await run("inspect", {"container": "web", "memory": True})

    events, code = asyncio.run(scenario())
    assert code == 0
    assert [event["type"] for event in events] == ["result"]
    found = Container.model_validate(events[0]["data"])
    assert (found.id, found.runtime) == (CONTAINER_ID, Runtime.DOCKER)
    assert "imageId" in events[0]["data"], "camelCase on the wire"


def test_a_bad_request_is_refused_without_echoing_its_credential(tmp_path: Path) -> None:
    credential = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_BODY}\n"

    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        async with helper(tmp_path) as (_, run):
            request = {"uid": UID, "credential": credential, "target": "nowhere"}
            return await run("send", request)

    events, code = asyncio.run(scenario())
    assert code == 1
    [event] = events
    assert (event["type"], event["reason"]) == ("error", "BadRequest")
    assert "target" in event["message"]
    assert KEY_BODY not in json.dumps(event)


def test_an_unknown_operation_and_a_stranger_are_refused(tmp_path: Path) -> None:
    async def scenario() -> list[list[dict[str, Any]]]:
        async with helper(tmp_path) as (_, run):
            return [(await run("frobnicate", {}))[0], (await run("receive", {"uid": UID}))[0]]

    unknown, pushed = asyncio.run(scenario())
    assert (unknown[0]["reason"], unknown[0]["message"]) == (
        "UnknownOperation",
        "no operation 'frobnicate'",
    )
    assert pushed[0]["reason"] == "Forbidden", "the operator may not push archives"


def test_a_peer_may_stream_into_its_own_migration_only(tmp_path: Path) -> None:
    peer_key = asyncssh.generate_private_key("ssh-ed25519")

    async def scenario() -> dict[str, dict[str, Any]]:
        async with helper(tmp_path) as (operations, run):
            operations.grants.authorize(UID, peer_key, 60)
            answers = {}
            for command, request in [
                ("probe", {}),
                ("checkpoint", {"uid": UID, "container": "web"}),
                ("rollback", {"uid": UID, "container": "web"}),
                ("send-stored", {}),
                ("receive", {"uid": OTHER_UID, "sizeBytes": 0, "sha256": "0" * 64}),
                ("pages-out", {"uid": OTHER_UID}),
            ]:
                events, code = await run(command, request, user=PEER_USER, key=peer_key)
                assert code == 1
                answers[f"{command} {request.get('uid', '')}".strip()] = events[-1]
            return answers

    answers = asyncio.run(scenario())
    assert {name: event["reason"] for name, event in answers.items()} == {
        "probe": "Forbidden",
        f"checkpoint {UID}": "Forbidden",
        f"rollback {UID}": "Forbidden",
        "send-stored": "Forbidden",
        f"receive {OTHER_UID}": "Forbidden",
        f"pages-out {OTHER_UID}": "Forbidden",
    }
    assert "not granted for migration" in answers[f"receive {OTHER_UID}"]["message"]


class SlowDocker(DockerLike):
    """Its inspect waits until released: an operation in flight when the helper stops."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def inspect(self, container: str) -> ContainerInfo | None:
        self.started.set()
        await self.release.wait()
        return await super().inspect(container)


def test_a_stopping_helper_lets_the_operation_in_flight_end(tmp_path: Path) -> None:
    """A rolling update's SIGTERM: no new session, and the one running finishes first."""

    async def scenario() -> tuple[int, int, list[str]]:
        driver = SlowDocker()
        operations = helper_operations(tmp_path, {Runtime.DOCKER: driver})
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        server = HelperServer(
            operations=operations, host_key=host_key, operator_keys=[OPERATOR_KEY]
        )
        acceptor = await server.start("127.0.0.1", 0)
        peer = Peer(
            node=operations.node,
            address="127.0.0.1",
            port=acceptor.sockets[0].getsockname()[1],
            host_key=host_key.export_public_key().decode(),
        )
        async with connect(peer, username=OPERATOR_USER, client_key=OPERATOR_KEY) as conn:
            process = await conn.create_process("inspect", encoding=None)
            process.stdin.write(json.dumps({"container": "web", "memory": False}).encode() + b"\n")
            await driver.started.wait()
            acceptor.close()
            waited = await server.drain(0.05)
            driver.release.set()
            left = await server.drain(5)
            out = await process.stdout.read()
        return waited, left, [json.loads(line)["type"] for line in out.splitlines()]

    waited, left, events = asyncio.run(scenario())
    assert waited == 1, "the stop must wait for the inspect in flight"
    assert left == 0
    assert events == ["result"], "and its client still gets the answer"


def test_list_containers_finds_the_running_containers_a_label_selects(tmp_path: Path) -> None:
    """What a NodeEvacuation moves: every running container labelled ferry.dev/namespace."""
    operations, _ = docker_only(tmp_path)
    listed = asyncio.run(
        operations.run(ListContainersRequest(label="ferry.dev/namespace"), Channel())
    )
    assert isinstance(listed, ContainerList)
    assert [(c.name, c.runtime) for c in listed.containers] == [("web", Runtime.DOCKER)]
    assert listed.containers[0].labels["ferry.dev/namespace"] == "team-a"
    none = asyncio.run(operations.run(ListContainersRequest(label="app"), Channel()))
    assert isinstance(none, ContainerList)
    assert none.containers == ()
