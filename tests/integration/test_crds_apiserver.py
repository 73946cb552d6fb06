"""The generated CRDs on a real kube-apiserver: accepted, defaulted, and strict.

The files in crds/ (what a user applies) go to the API server with server-side
apply, so a kept cluster that already has them is updated, not refused. Each
test works in its own namespace.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_api import constants
from ferry_api.base import to_wire
from ferry_api.conditions import Condition, ConditionStatus, set_condition
from ferry_api.migration import (
    IMMUTABLE_SPEC_MESSAGE,
    SAME_NODE_MESSAGE,
    Archive,
    Compression,
    ContainerMigrationSpec,
    ContainerMigrationStatus,
    CriuStatistics,
    Phase,
    PhaseTransition,
    Progress,
    Timings,
    parse_container_migration,
)
from ferry_api.nodehelper import (
    CgroupVersion,
    CpuInfo,
    CriuFeatures,
    CriuInfo,
    NodeHelperStatus,
    RuntimeInfo,
    parse_node_helper,
)
from ferry_api.runtime import Runtime
from ferry_cluster.config import ClusterConfig
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import retry_while_status

pytestmark = pytest.mark.integration

CRDS = Path(__file__).resolve().parents[2] / "crds"
GROUP, VERSION = constants.GROUP, constants.VERSION
PLURAL = constants.CONTAINER_MIGRATION_PLURAL
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc0bWVzdGFtcHN0YW1wc3RhbXBzdGFtcHN0YW1w ferry"


def _apply_crds(ext: client.ApiextensionsV1Api) -> list[dict[str, Any]]:
    crds = [yaml.safe_load(path.read_text()) for path in sorted(CRDS.glob("*.yaml"))]
    for crd in crds:
        ext.patch_custom_resource_definition(
            crd["metadata"]["name"],
            crd,
            field_manager="ferry-tests",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    return crds


def _wait_established(
    ext: client.ApiextensionsV1Api, name: str
) -> client.V1CustomResourceDefinition:
    deadline = time.monotonic() + 30
    while True:
        crd = ext.read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            return crd
        assert time.monotonic() < deadline, f"{name} not established: {conditions}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def crds(admin_api: client.ApiClient) -> list[dict[str, Any]]:
    ext = client.ApiextensionsV1Api(admin_api)
    applied = _apply_crds(ext)
    for crd in applied:
        _wait_established(ext, crd["metadata"]["name"])
    return applied


@pytest.fixture
def custom(admin_api: client.ApiClient, crds: list[dict[str, Any]]) -> client.CustomObjectsApi:
    assert crds
    return client.CustomObjectsApi(admin_api)


def _migration(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def _create(custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> Any:
    # A CRD that was just established can take a moment to be served.
    return retry_while_status(
        lambda: custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body),
        404,
    )


def _refused(custom: client.CustomObjectsApi, namespace: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as refused:
        _create(custom, namespace, _migration("bad", spec))
    assert refused.value.status == 422, refused.value.body
    body: str = refused.value.body
    return body


def _kubectl(config: ClusterConfig, *args: str) -> str:
    result = subprocess.run(
        [str(config.bin_dir / "kubectl"), f"--kubeconfig={config.admin_kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_crds_apply_again_without_change(
    admin_api: client.ApiClient, crds: list[dict[str, Any]]
) -> None:
    ext = client.ApiextensionsV1Api(admin_api)
    before = {c["metadata"]["name"]: _wait_established(ext, c["metadata"]["name"]) for c in crds}
    _apply_crds(ext)
    for name, old in before.items():
        new = _wait_established(ext, name)
        assert new.metadata.generation == old.metadata.generation, f"{name} changed on re-apply"


def test_a_valid_migration_is_accepted_and_defaulted(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    _create(
        custom,
        namespace,
        _migration("move-web", {"source": {"node": "node-a", "container": "web"}}),
    )
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "move-web")
    assert got["spec"] == {
        "source": {"node": "node-a", "container": "web"},
        "leaveRunning": False,
        "tcpEstablished": False,
        "fileLocks": False,
        "compression": "zstd",
        "keepCheckpoint": False,
        "timeoutSeconds": 300,
    }
    assert "runtime" not in got["spec"], "no default: the runtime that has the container"
    assert "memoryTransfer" not in got["spec"], "no default: a MigrationPolicy's, else Archive"
    # The API server's defaults are the models' defaults: the body parses back to itself.
    parsed = parse_container_migration(got)
    assert parsed.metadata.namespace == namespace
    assert to_wire(parsed.spec) == got["spec"]
    assert parsed.spec == ContainerMigrationSpec.model_validate(
        {"source": {"node": "node-a", "container": "web"}}
    )


def test_a_renamed_field_is_kept_under_its_former_name_and_both_are_refused(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    source = {"node": "node-a", "container": "web"}
    _create(custom, namespace, _migration("old-name", {"source": source, "pageServerTls": False}))
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "old-name")
    assert got["spec"]["pageServerTls"] is False, "not pruned: a GitOps repo keeps working"
    assert parse_container_migration(got).spec.pages_over_tls is False
    body = _refused(
        custom, namespace, {"source": source, "pageServerTls": False, "pageServerTLS": True}
    )
    assert "former name of pageServerTLS" in body


def test_a_missing_container_is_refused(custom: client.CustomObjectsApi, namespace: str) -> None:
    body = _refused(custom, namespace, {"source": {"node": "node-a"}})
    assert "spec.source.container" in body
    assert "Required value" in body


def test_an_unknown_compression_is_refused(custom: client.CustomObjectsApi, namespace: str) -> None:
    body = _refused(
        custom, namespace, {"source": {"node": "node-a", "container": "web"}, "compression": "lz4"}
    )
    assert "spec.compression" in body
    assert "lz4" in body


def test_a_too_short_timeout_is_refused(custom: client.CustomObjectsApi, namespace: str) -> None:
    body = _refused(
        custom, namespace, {"source": {"node": "node-a", "container": "web"}, "timeoutSeconds": 5}
    )
    assert "spec.timeoutSeconds" in body
    assert "greater than or equal to 10" in body


def test_the_target_must_be_another_node(custom: client.CustomObjectsApi, namespace: str) -> None:
    body = _refused(
        custom,
        namespace,
        {"source": {"node": "node-a", "container": "web"}, "target": {"node": "node-a"}},
    )
    assert SAME_NODE_MESSAGE in body
    assert "spec.target.node" in body
    # Another node, or none at all, is fine.
    for name, target in (("to-b", {"node": "node-b"}), ("anywhere", {})):
        spec = {"source": {"node": "node-a", "container": "web"}, "target": target}
        _create(custom, namespace, _migration(name, spec))


def test_the_spec_cannot_be_edited_but_metadata_and_status_can(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    _create(
        custom, namespace, _migration("once", {"source": {"node": "node-a", "container": "web"}})
    )
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "once", {"spec": {"leaveRunning": True}}
        )
    assert refused.value.status == 422
    assert IMMUTABLE_SPEC_MESSAGE in refused.value.body

    # What the operator must still be able to write: its finalizer and the status.
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "once",
        {"metadata": {"finalizers": [constants.MIGRATION_FINALIZER]}},
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "once", {"status": {"phase": "Validating"}}
    )
    got = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "once", {"metadata": {"finalizers": None}}
    )
    assert got["status"]["phase"] == "Validating"
    assert got["metadata"]["generation"] == 1


def _full_status() -> ContainerMigrationStatus:
    conditions = set_condition(
        (),
        Condition(type="Restored", status=ConditionStatus.TRUE, reason="Running", message="ok"),
        now=T0,
    )
    conditions = set_condition(
        conditions,
        Condition(type="Succeeded", status=ConditionStatus.TRUE, reason="Migrated", message="ok"),
        now=T0,
    )
    return ContainerMigrationStatus(
        phase=Phase.SUCCEEDED,
        conditions=conditions,
        observed_generation=1,
        source_node="node-a",
        target_node="node-b",
        start_time=T0,
        completion_time=T0,
        phase_transitions=(
            PhaseTransition(phase=Phase.PENDING, time=T0),
            PhaseTransition(phase=Phase.SUCCEEDED, time=T0),
        ),
        timings=Timings(
            checkpoint_seconds=0.3,
            transfer_seconds=0.1,
            restore_seconds=0.2,
            downtime_seconds=0.412,
            total_seconds=1.5,
        ),
        archive=Archive(bytes=1700000, sha256="a" * 64, compression=Compression.ZSTD),
        criu_statistics=CriuStatistics.model_validate(
            {"freezing_time": 1200, "frozen_time": 260000, "pages_lazy": 3}
        ),
        progress=Progress(bytes_sent=1700000, bytes_total=1700000),
        message="moved",
    )


def test_status_written_from_the_models_is_stored_whole_and_shown_by_kubectl(
    local_cluster: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    _create(
        custom, namespace, _migration("shown", {"source": {"node": "node-a", "container": "web"}})
    )
    status = _full_status()
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "shown", {"status": to_wire(status)}
    )
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "shown")
    assert got["status"] == to_wire(status)  # nothing pruned: the schema knows every field
    assert parse_container_migration(got).status == status

    table = _kubectl(local_cluster, "get", "containermigrations", "-n", namespace).splitlines()
    assert table[0].split() == ["NAME", "PHASE", "SOURCE", "TARGET", "REASON", "DOWNTIME", "AGE"]
    assert table[1].split()[:6] == ["shown", "Succeeded", "node-a", "node-b", "Migrated", "0.412"]
    wide = _kubectl(local_cluster, "get", "cmig", "-n", namespace, "-o", "wide").splitlines()
    assert "CONTAINER" in wide[0].split()
    explained = _kubectl(local_cluster, "explain", "containermigration.spec.source")
    assert "Name of the node the container runs on now." in explained


def test_a_node_helper_publishes_its_status(
    local_cluster: ClusterConfig, custom: client.CustomObjectsApi
) -> None:
    name = f"node-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.NODE_HELPER_KIND,
        "metadata": {"name": name},
    }
    plural = constants.NODE_HELPER_PLURAL
    retry_while_status(
        lambda: custom.create_cluster_custom_object(GROUP, VERSION, plural, body), 404
    )
    try:
        status = NodeHelperStatus(
            node_name=name,
            address="10.213.0.10",
            ssh_port=2222,
            ssh_host_key=HOST_KEY,
            heartbeat_time=T0,
            runtimes=(
                RuntimeInfo(
                    name=Runtime.PODMAN,
                    version="5.4.2",
                    oci_runtime="crun",
                    oci_runtime_version="1.21",
                ),
            ),
            criu=CriuInfo(version="4.2.1", features=CriuFeatures(lazy_pages=True, uffd=True)),
            kernel="6.18.0",
            cgroup_version=CgroupVersion.V2,
            cpu=CpuInfo(model="Test CPU", flags=("sse4_2", "avx2")),
            conditions=set_condition(
                (),
                Condition(
                    type=constants.CONDITION_READY, status=ConditionStatus.TRUE, reason="Probed"
                ),
                now=T0,
            ),
        )
        custom.patch_cluster_custom_object_status(
            GROUP, VERSION, plural, name, {"status": to_wire(status)}
        )
        got = custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
        assert parse_node_helper(got).status == status

        table = _kubectl(local_cluster, "get", "nodehelpers", name).splitlines()
        assert table[0].split() == [
            "NAME",
            "READY",
            "ADDRESS",
            "CRIU",
            "PODMAN",
            "HEARTBEAT",
            "AGE",
        ]
        assert table[1].split()[:5] == [name, "True", "10.213.0.10", "4.2.1", "5.4.2"]

        # A bad host key is refused by the schema, not only by the models.
        with pytest.raises(ApiException) as refused:
            custom.patch_cluster_custom_object_status(
                GROUP, VERSION, plural, name, {"status": {"sshHostKey": "ssh-ed25519 not-a-key"}}
            )
        assert refused.value.status == 422
        assert "status.sshHostKey" in refused.value.body
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)
