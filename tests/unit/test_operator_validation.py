from __future__ import annotations

import datetime
from typing import Any

import pytest
from ferry_api.migration import ContainerMigrationSpec, MemoryTransfer
from ferry_api.nodehelper import parse_node_helper
from ferry_api.runtime import Runtime
from ferry_operator.validation import (
    Refusal,
    check_compatible,
    check_container,
    check_memory_transfer,
    check_source,
    check_target_free,
    check_target_id_free,
    check_tcp_established,
    choose_memory_transfer,
    choose_target,
)
from ferry_wire import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
from ferry_wire.containers import Container

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVp helper"


def helper(
    name: str,
    *,
    criu: str = "4.2.1",
    age: float = 1,
    ready: str = "True",
    runtime: str = "podman",
    cgroups: str = "hybrid",
    flags: tuple[str, ...] = ("fpu", "sse2", "avx2"),
    protocol: int | None = PROTOCOL_VERSION,
) -> Any:
    beat = (NOW - datetime.timedelta(seconds=age)).isoformat()
    return parse_node_helper(
        {
            "metadata": {"name": name},
            "status": {
                "nodeName": name,
                "address": "10.0.0.1",
                "sshPort": 7022,
                "sshHostKey": HOST_KEY,
                "heartbeatTime": beat,
                **({"protocolVersion": protocol} if protocol is not None else {}),
                "runtimes": [{"name": runtime, "version": "5.4.2"}],
                "criu": {"version": criu},
                "cgroupVersion": cgroups,
                "cpu": {"model": "Test CPU", "flags": list(flags)},
                "conditions": [{"type": "Ready", "status": ready, "reason": "HelperRunning"}],
            },
        }
    )


def spec(**fields: Any) -> ContainerMigrationSpec:
    body = {"source": {"node": "node-a", "container": "web"}, **fields}
    return ContainerMigrationSpec.model_validate(body)


NODES = ["node-a", "node-b", "node-c"]


PODMAN = Runtime.PODMAN


def helpers(**overrides: Any) -> dict[str, Any]:
    found = {n: helper(n) for n in NODES}
    found.update(overrides)
    return {k: v for k, v in found.items() if v is not None}


def test_an_empty_target_picks_the_first_eligible_other_node() -> None:
    assert (
        choose_target(
            spec(), runtime=PODMAN, nodes=NODES, helpers=helpers(), now=NOW, stale_seconds=60
        )
        == "node-b"
    )


def test_a_stale_or_unready_helper_is_skipped() -> None:
    chosen = choose_target(
        spec(),
        runtime=PODMAN,
        nodes=NODES,
        now=NOW,
        stale_seconds=60,
        helpers=helpers(**{"node-b": helper("node-b", age=600)}),
    )
    assert chosen == "node-c"
    chosen = choose_target(
        spec(),
        runtime=PODMAN,
        nodes=NODES,
        now=NOW,
        stale_seconds=60,
        helpers=helpers(**{"node-b": helper("node-b", ready="False")}),
    )
    assert chosen == "node-c"


@pytest.mark.parametrize(
    ("target", "found", "reason"),
    [
        ("node-z", {}, "TargetNodeNotFound"),
        ("node-b", {"node-b": None}, "TargetNotReady"),
        ("node-b", {"node-b": helper("node-b", runtime="docker")}, "IncompatibleRuntime"),
    ],
)
def test_an_asked_target_that_cannot_restore_is_refused(
    target: str, found: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Refusal) as refused:
        choose_target(
            spec(target={"node": target}),
            runtime=PODMAN,
            nodes=NODES,
            helpers=helpers(**found),
            now=NOW,
            stale_seconds=60,
        )
    assert refused.value.reason == reason
    assert refused.value.message


def test_no_eligible_target_is_refused_with_a_pointer() -> None:
    with pytest.raises(Refusal, match="nodehelpers") as refused:
        choose_target(
            spec(),
            runtime=PODMAN,
            nodes=["node-a", "node-b"],
            now=NOW,
            stale_seconds=60,
            helpers=helpers(**{"node-b": None}),
        )
    assert refused.value.reason == "NoEligibleTarget"


@pytest.mark.parametrize("protocol", [None, 1, MIN_PROTOCOL_VERSION - 1])
def test_a_helper_older_than_the_operators_protocol_is_no_source_and_no_target(
    protocol: int | None,
) -> None:
    old = helpers(**{"node-a": helper("node-a", protocol=protocol)})
    with pytest.raises(Refusal) as refused:
        check_source(spec(), nodes=NODES, helpers=old, now=NOW, stale_seconds=60)
    assert refused.value.reason == "SourceNotReady"
    needs = f"speaks protocol {protocol or 1} and this operator needs {MIN_PROTOCOL_VERSION}"
    assert needs in refused.value.message
    assert "upgrade the node-helper DaemonSet" in refused.value.message
    old = helpers(**{"node-b": helper("node-b", protocol=protocol)})
    chosen = choose_target(
        spec(), runtime=PODMAN, nodes=NODES, helpers=old, now=NOW, stale_seconds=60
    )
    assert chosen == "node-c"


def test_an_unknown_source_node_is_refused() -> None:
    with pytest.raises(Refusal) as refused:
        check_source(
            spec(source={"node": "node-q", "container": "web"}),
            nodes=NODES,
            helpers=helpers(),
            now=NOW,
            stale_seconds=60,
        )
    assert refused.value.reason == "SourceNodeNotFound"


def test_an_older_criu_on_the_target_is_refused() -> None:
    with pytest.raises(Refusal) as refused:
        check_compatible(helper("node-a", criu="4.2.1"), helper("node-b", criu="4.1.1"))
    assert refused.value.reason == "IncompatibleCriu"
    check_compatible(helper("node-a", criu="4.1.1"), helper("node-b", criu="4.2.1"))


def test_a_target_cpu_missing_a_source_feature_is_refused_and_names_it() -> None:
    with pytest.raises(Refusal) as refused:
        check_compatible(helper("node-a"), helper("node-b", flags=("fpu", "sse2")))
    assert refused.value.reason == "IncompatibleCpu"
    assert "avx2" in refused.value.message
    # A newer CPU (more flags) on the target is fine.
    check_compatible(helper("node-a"), helper("node-b", flags=("fpu", "sse2", "avx2", "avx512f")))


def test_a_different_cgroup_layout_on_the_target_is_refused() -> None:
    with pytest.raises(Refusal) as refused:
        check_compatible(helper("node-a", cgroups="hybrid"), helper("node-b", cgroups="v2"))
    assert refused.value.reason == "IncompatibleCgroups"
    check_compatible(helper("node-a", cgroups="v1"), helper("node-b", cgroups="hybrid"))


@pytest.mark.parametrize(
    ("info", "allow_any", "reason"),
    [
        (None, False, "ContainerNotFound"),
        ({"labels": {}, "running": True}, False, "NamespaceNotPermitted"),
        (
            {"labels": {"ferry.dev/namespace": "other"}, "running": True},
            False,
            "NamespaceNotPermitted",
        ),
        (
            {"labels": {"ferry.dev/namespace": "team-a"}, "running": False, "state": "exited"},
            False,
            "ContainerNotRunning",
        ),
        (
            {"labels": {"ferry.dev/namespace": "team-a"}, "running": True, "migratingBy": "x"},
            False,
            "ContainerBusy",
        ),
    ],
)
def test_container_checks(info: dict[str, Any] | None, allow_any: bool, reason: str) -> None:
    with pytest.raises(Refusal) as refused:
        check_container(spec(), found(info), namespace="team-a", allow_any_namespace=allow_any)
    assert refused.value.reason == reason


def found(info: dict[str, Any] | None) -> Container | None:
    """A helper's inspect answer with ``info``'s fields (camelCase, as on the wire)."""
    if info is None:
        return None
    base = {"id": "a" * 64, "name": "web", "imageId": "", "imageName": "", "state": "running"}
    return Container.model_validate({**base, "runtime": "podman", **info})


def test_a_labelled_running_container_passes_and_the_label_can_be_waived() -> None:
    check_container(
        spec(),
        found({"labels": {"ferry.dev/namespace": "team-a"}, "running": True}),
        namespace="team-a",
        allow_any_namespace=False,
    )
    check_container(
        spec(), found({"labels": {}, "running": True}), namespace="team-a", allow_any_namespace=True
    )


def test_a_target_that_already_has_the_name_is_refused() -> None:
    check_target_free("web", "node-b", None)
    with pytest.raises(Refusal) as refused:
        check_target_free("web", "node-b", found({"state": "exited", "running": False}))
    assert refused.value.reason == "TargetNameTaken"
    assert "exited" in refused.value.message


def test_a_page_server_migration_of_a_docker_container_is_refused_with_what_to_do() -> None:
    pages = spec(memoryTransfer="PageServer")
    check_memory_transfer(pages, Runtime.PODMAN)
    check_memory_transfer(spec(), Runtime.DOCKER)
    with pytest.raises(Refusal) as refused:
        check_memory_transfer(pages, Runtime.DOCKER)
    assert refused.value.reason == "PageServerNeedsPodman"
    assert "runs in docker" in refused.value.message
    assert "set memoryTransfer: Archive" in refused.value.message


def test_auto_sends_the_memory_of_big_podman_containers_through_the_page_server() -> None:
    big, small = 64 << 20, (64 << 20) - 1
    podman, docker = Runtime.PODMAN, Runtime.DOCKER
    auto = spec(memoryTransfer="Auto")
    assert choose_memory_transfer(auto, podman, big) is MemoryTransfer.PAGE_SERVER
    assert choose_memory_transfer(auto, podman, small) is MemoryTransfer.ARCHIVE
    # What the page server cannot do, or where nothing says it pays: the archive.
    assert choose_memory_transfer(auto, docker, big) is MemoryTransfer.ARCHIVE
    assert choose_memory_transfer(auto, podman, None) is MemoryTransfer.ARCHIVE
    kept = spec(memoryTransfer="Auto", keepCheckpoint=True)
    assert choose_memory_transfer(kept, podman, big) is MemoryTransfer.ARCHIVE
    # An explicit choice stands, whatever the size; the default is the archive.
    assert choose_memory_transfer(spec(), podman, big) is MemoryTransfer.ARCHIVE
    pages = spec(memoryTransfer="PageServer")
    assert choose_memory_transfer(pages, podman, 0) is MemoryTransfer.PAGE_SERVER
    with pytest.raises(Refusal):
        choose_memory_transfer(pages, docker, big)


def test_a_policys_memory_transfer_is_the_default_not_a_demand() -> None:
    big, podman, docker = 64 << 20, Runtime.PODMAN, Runtime.DOCKER
    pages, auto = MemoryTransfer.PAGE_SERVER, MemoryTransfer.AUTO
    unset = spec()
    assert unset.memory_transfer is None
    assert choose_memory_transfer(unset, podman, 0, policy_default=pages) is pages
    assert choose_memory_transfer(unset, podman, big, policy_default=auto) is pages
    # Where the page server cannot go, the policy's default gives way (no refusal).
    assert (
        choose_memory_transfer(unset, docker, big, policy_default=pages) is MemoryTransfer.ARCHIVE
    )
    kept = spec(keepCheckpoint=True)
    assert choose_memory_transfer(kept, podman, big, policy_default=pages) is MemoryTransfer.ARCHIVE
    # The migration's own choice beats the policy's.
    archive = spec(memoryTransfer="Archive")
    assert choose_memory_transfer(archive, podman, big, policy_default=pages) is (
        MemoryTransfer.ARCHIVE
    )


def test_a_target_holding_the_source_containers_id_is_refused() -> None:
    container_id = "9066fe4df646" + "0" * 52
    check_target_id_free(container_id, "node-b", None)
    with pytest.raises(Refusal) as refused:
        check_target_id_free(
            container_id, "node-b", found({"name": "web", "state": "exited", "running": False})
        )
    assert refused.value.reason == "TargetIdTaken"
    assert "9066fe4df646 (web, exited)" in refused.value.message


def test_a_target_without_the_containers_runtime_is_refused_naming_both() -> None:
    with pytest.raises(Refusal) as refused:
        choose_target(
            spec(target={"node": "node-b"}),
            runtime=Runtime.DOCKER,
            nodes=NODES,
            helpers=helpers(),
            now=NOW,
            stale_seconds=60,
        )
    assert refused.value.reason == "IncompatibleRuntime"
    assert "runs in docker on node-a" in refused.value.message
    assert "node node-b has no docker (podman 5.4.2)" in refused.value.message
    # Picking a target itself, it passes over nodes without that runtime.
    with pytest.raises(Refusal) as none:
        choose_target(
            spec(), runtime=Runtime.DOCKER, nodes=NODES, helpers=helpers(), now=NOW,
            stale_seconds=60,
        )  # fmt: skip
    assert none.value.reason == "NoEligibleTarget"
    mixed = helpers(**{"node-c": helper("node-c", runtime="docker")})
    chosen = choose_target(
        spec(), runtime=Runtime.DOCKER, nodes=NODES, helpers=mixed, now=NOW, stale_seconds=60
    )
    assert chosen == "node-c"


def test_tcp_established_is_refused_for_a_migration_the_address_cannot_follow() -> None:
    check_tcp_established(spec(), "node-b")
    with pytest.raises(Refusal) as refused:
        check_tcp_established(spec(tcpEstablished=True), "node-b")
    assert refused.value.reason == "TCPEstablishedAcrossNodes"
    assert "its address stays on node-a's network" in refused.value.message
    assert "Leave tcpEstablished off" in refused.value.message
