"""The API models: defaults, wire names, refusals, and the condition rule."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml
from ferry_api import constants
from ferry_api.base import InvalidResourceError, to_wire
from ferry_api.checkpoint import (
    ContainerCheckpointSpec,
    ContainerRestoreSpec,
    parse_container_checkpoint,
    parse_container_restore,
)
from ferry_api.conditions import Condition, ConditionStatus, find_condition, set_condition
from ferry_api.migration import (
    Compression,
    ContainerMigrationSpec,
    ContainerMigrationStatus,
    CriuStatistics,
    MemoryTransfer,
    Phase,
    PhaseTransition,
    Timings,
    parse_container_migration,
)
from ferry_api.migrationpolicy import parse_migration_policy
from ferry_api.nodehelper import CgroupVersion, NodeHelperStatus, parse_node_helper
from ferry_api.podmigration import PodMigrationStatus
from ferry_api.runtime import Runtime
from ferry_api.schedule import parse_checkpoint_schedule
from ferry_cluster.config import ClusterConfig
from pydantic import ValidationError

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHc0bWVzdGFtcHN0YW1wc3RhbXBzdGFtcHN0YW1w node-a"


def _body(spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {"name": "move-web", "namespace": "team-a", "uid": "u1", "generation": 1},
        "spec": spec,
        **extra,
    }


def test_spec_defaults() -> None:
    spec = ContainerMigrationSpec.model_validate({"source": {"node": "node-a", "container": "web"}})
    assert spec.target is None
    assert spec.leave_running is False
    assert spec.tcp_established is False
    assert spec.file_locks is False
    assert spec.compression is Compression.ZSTD
    assert spec.keep_checkpoint is False
    assert spec.timeout_seconds == 300
    assert spec.runtime is None, "the runtime that has the container"
    # Unset: a MigrationPolicy's memoryTransfer, else Archive (not Auto: with the page
    # server a rollback needs the target, the memory is there).
    assert spec.memory_transfer is None
    assert spec.page_server_tls is None
    assert spec.pages_over_tls is True


def test_spec_round_trips_through_camel_case_wire_names() -> None:
    wire = {
        "source": {"node": "node-a", "container": "0123abcd"},
        "target": {"node": "node-b"},
        "leaveRunning": True,
        "tcpEstablished": True,
        "fileLocks": True,
        "compression": "gzip",
        "keepCheckpoint": True,
        "timeoutSeconds": 60,
        "runtime": "podman",
        "memoryTransfer": "Archive",
        "pageServerTLS": True,
    }
    spec = ContainerMigrationSpec.model_validate(wire)
    assert spec.tcp_established is True
    assert spec.target is not None
    assert spec.target.node == "node-b"
    assert to_wire(spec) == wire


def test_a_page_server_migration_keeps_no_checkpoint() -> None:
    with pytest.raises(ValidationError, match="keepCheckpoint cannot be used"):
        ContainerMigrationSpec.model_validate(
            {
                "source": {"node": "node-a", "container": "web"},
                "memoryTransfer": "PageServer",
                "keepCheckpoint": True,
            }
        )
    plain = ContainerMigrationSpec.model_validate(
        {
            "source": {"node": "node-a", "container": "web"},
            "memoryTransfer": "PageServer",
            "pageServerTLS": False,
        }
    )
    assert plain.memory_transfer is MemoryTransfer.PAGE_SERVER
    assert plain.pages_over_tls is False


def test_a_renamed_field_is_read_under_its_former_name_but_not_both() -> None:
    """pageServerTls became pageServerTLS (the API conventions' acronyms): a manifest in a
    GitOps repository keeps working for v1alpha1; naming both is refused."""
    source = {"node": "node-a", "container": "web"}
    old = ContainerMigrationSpec.model_validate({"source": source, "pageServerTls": False})
    assert old.pages_over_tls is False
    assert ContainerMigrationSpec.model_validate({"source": source}).pages_over_tls is True
    with pytest.raises(ValidationError, match="former name of pageServerTLS"):
        ContainerMigrationSpec.model_validate(
            {"source": source, "pageServerTls": False, "pageServerTLS": True}
        )
    # Statuses written before the renames still say what they said.
    status = PodMigrationStatus.model_validate({"sourcePodUid": "u-1"})
    assert status.moved_pod_uid == "u-1"
    assert to_wire(PodMigrationStatus(source_pod_uid="u-2"))["sourcePodUID"] == "u-2"


def test_python_code_may_use_field_names() -> None:
    spec = ContainerMigrationSpec.model_validate(
        {"source": {"node": "node-a", "container": "web"}, "leave_running": True}
    )
    assert spec.leave_running is True
    assert to_wire(spec)["leaveRunning"] is True


def test_models_are_frozen() -> None:
    spec = ContainerMigrationSpec.model_validate({"source": {"node": "node-a", "container": "web"}})
    with pytest.raises(ValidationError, match="frozen"):
        spec.leave_running = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"compression": "lz4"}, "compression", "'zstd', 'gzip' or 'none'"),
        ({"timeoutSeconds": 5}, "timeoutSeconds", "greater than or equal to 10"),
        ({"timeoutSeconds": 3601}, "timeoutSeconds", "less than or equal to 3600"),
        ({"runtime": "rkt"}, "runtime", "'podman' or 'docker'"),
        ({"leaveRuning": True}, "leaveRuning", "Extra inputs are not permitted"),
        ({"source": {"node": "node-a"}}, "source.container", "Field required"),
        ({"source": {"node": "Node_A", "container": "web"}}, "source.node", "pattern"),
        ({"source": {"node": "node-a", "container": "-web"}}, "source.container", "pattern"),
        ({"target": {"node": "node-a"}}, "", "target.node must differ from source.node"),
    ],
)
def test_bad_spec_is_refused_naming_the_field(
    change: dict[str, Any], field: str, words: str
) -> None:
    spec = {"source": {"node": "node-a", "container": "web"}, **change}
    with pytest.raises(InvalidResourceError) as refused:
        parse_container_migration(_body(spec))
    message = str(refused.value)
    assert message.startswith("ContainerMigration team-a/move-web is invalid: ")
    assert f"spec.{field}".rstrip(".") + ":" in message
    assert words in message
    assert isinstance(refused.value, ValueError)


def test_every_problem_is_listed() -> None:
    with pytest.raises(InvalidResourceError) as refused:
        parse_container_migration(
            _body({"source": {"node": "node-a"}, "compression": "lz4", "timeoutSeconds": 1})
        )
    paths = [path for path, _ in refused.value.problems]
    assert paths == ["spec.source.container", "spec.compression", "spec.timeoutSeconds"]


def test_a_body_of_another_kind_is_refused() -> None:
    body = {**_body({"source": {"node": "node-a", "container": "web"}}), "kind": "NodeHelper"}
    with pytest.raises(InvalidResourceError, match="kind: expected ContainerMigration"):
        parse_container_migration(body)


def test_parse_reads_a_body_as_the_api_server_returns_it() -> None:
    body = _body(
        {"source": {"node": "node-a", "container": "web"}, "target": {}},
        status={
            "phase": "Transferring",
            "targetNode": "node-b",
            "startTime": "2025-03-01T12:00:00Z",
            "phaseTransitions": [{"phase": "Pending", "time": "2025-03-01T12:00:00Z"}],
            "conditions": [
                {
                    "type": "Checkpointed",
                    "status": "True",
                    "reason": "CheckpointExported",
                    "message": "",
                    "lastTransitionTime": "2025-03-01T12:00:01Z",
                    "observedGeneration": 1,
                }
            ],
            "progress": {"bytesSent": 10, "bytesTotal": 100},
            "kopf": {"progress": {}},  # kopf's bookkeeping, if any, is ignored
        },
    )
    body["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    migration = parse_container_migration(body)
    assert migration.metadata.name == "move-web"
    assert migration.metadata.namespace == "team-a"
    assert migration.spec.target is not None
    assert migration.spec.target.node is None
    assert migration.status.phase is Phase.TRANSFERRING
    assert migration.status.start_time == T0
    assert migration.status.phase_transitions == (PhaseTransition(phase=Phase.PENDING, time=T0),)
    assert migration.status.conditions[0].status is ConditionStatus.TRUE
    assert migration.status.progress is not None
    assert migration.status.progress.bytes_total == 100


def test_a_fresh_resource_has_an_empty_status() -> None:
    migration = parse_container_migration(_body({"source": {"node": "n", "container": "c"}}))
    assert migration.status == ContainerMigrationStatus()
    assert to_wire(migration.status) == {"conditions": [], "phaseTransitions": []}


def test_status_to_wire_leaves_out_unset_fields_and_writes_utc_times() -> None:
    status = ContainerMigrationStatus(
        phase=Phase.SUCCEEDED,
        target_node="node-b",
        completion_time=T0,
        timings=Timings(downtime_seconds=0.41234),
    )
    assert to_wire(status) == {
        "phase": "Succeeded",
        "conditions": [],
        "targetNode": "node-b",
        "completionTime": "2025-03-01T12:00:00Z",
        "phaseTransitions": [],
        "timings": {"downtimeSeconds": 0.412},
    }


def test_times_must_carry_a_timezone() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        PhaseTransition(phase=Phase.PENDING, time=datetime(2025, 3, 1))


def test_timings_are_kept_to_the_millisecond_and_not_negative() -> None:
    assert Timings(checkpoint_seconds=1.23456).checkpoint_seconds == 1.235
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Timings(total_seconds=-1)


def test_criu_statistics_keep_unknown_counters_in_camel_case() -> None:
    stats = CriuStatistics.model_validate(
        {"freezing_time": 1200, "frozen_time": 260000, "pages_written": 42, "pages_lazy": 7}
    )
    assert stats.freezing_time == 1200
    assert stats.frozen_time == 260000
    assert to_wire(stats) == {
        "freezingTime": 1200,
        "frozenTime": 260000,
        "pagesWritten": 42,
        "pagesLazy": 7,
    }
    assert CriuStatistics.model_validate(to_wire(stats)) == stats
    with pytest.raises(ValidationError):
        CriuStatistics.model_validate({"pages_lazy": "many"})


def test_final_phases() -> None:
    assert {p for p in Phase if p.is_final} == {Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED}


def test_node_helper_status_parses_and_checks_the_host_key() -> None:
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.NODE_HELPER_KIND,
        "metadata": {"name": "node-a"},
        "status": {
            "nodeName": "node-a",
            "address": "10.213.0.10",
            "sshPort": 2222,
            "sshHostKey": ED25519,
            "heartbeatTime": "2025-03-01T12:00:00Z",
            "runtimes": [
                {
                    "name": "podman",
                    "version": "5.4.2",
                    "ociRuntime": "crun",
                    "ociRuntimeVersion": "1.21",
                }
            ],
            "criu": {"version": "4.2.1", "features": {"lazyPages": True, "uffd": True}},
            "kernel": "6.18.0",
            "cgroupVersion": "v2",
            "cpu": {"model": "Some CPU", "flags": ["sse4_2", "avx2"]},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Probed"}],
        },
    }
    helper = parse_node_helper(body)
    status = helper.status
    assert status.runtimes[0].name is Runtime.PODMAN
    assert status.criu is not None
    assert status.criu.features.lazy_pages is True
    assert status.criu.features.dirty_page_tracking is False
    assert status.cgroup_version is CgroupVersion.V2
    ready = find_condition(status.conditions, constants.CONDITION_READY)
    assert ready is not None
    assert ready.status is ConditionStatus.TRUE

    body["status"]["sshHostKey"] = "not a key\nssh-ed25519 AAAA"
    body["status"]["sshPort"] = 0
    with pytest.raises(InvalidResourceError) as refused:
        parse_node_helper(body)
    assert [p for p, _ in refused.value.problems] == ["status.sshPort", "status.sshHostKey"]
    assert str(refused.value).startswith("NodeHelper node-a is invalid: ")


@pytest.mark.parametrize("algorithm", ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"])
def test_host_keys_as_asyncssh_exports_them_are_accepted(algorithm: str) -> None:
    line = asyncssh.generate_private_key(algorithm).export_public_key().decode()
    assert line.endswith("\n")
    status = NodeHelperStatus(ssh_host_key=line)
    assert status.ssh_host_key == line.strip()


@pytest.mark.parametrize(
    "line",
    [
        "not a key",
        "ssh-ed25519",
        "ssh-ed25519 not-base64!",
        "ssh-ed25519 BBBBC3NzaC1lZDI1NTE5",
        ED25519 + "\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
    ],
)
def test_anything_but_one_public_key_line_is_refused(line: str) -> None:
    with pytest.raises(ValidationError, match=r"ssh_host_key|sshHostKey"):
        NodeHelperStatus(ssh_host_key=line)


# Conditions ----------------------------------------------------------------


def _ready(status: ConditionStatus, reason: str = "Probed", message: str = "") -> Condition:
    return Condition(type="Ready", status=status, reason=reason, message=message)


def test_a_new_condition_is_appended_with_now() -> None:
    other = Condition(
        type="Other", status=ConditionStatus.FALSE, reason="X", last_transition_time=T0
    )
    later = T0 + timedelta(minutes=5)
    conditions = set_condition((other,), _ready(ConditionStatus.UNKNOWN), now=later)
    assert [c.type for c in conditions] == ["Other", "Ready"]
    assert conditions[0] is other
    assert conditions[1].last_transition_time == later


def test_same_status_keeps_the_transition_time_but_takes_the_new_words() -> None:
    first = set_condition((), _ready(ConditionStatus.TRUE), now=T0)
    again = set_condition(
        first,
        Condition(
            type="Ready",
            status=ConditionStatus.TRUE,
            reason="Heartbeat",
            message="still fine",
            observed_generation=3,
        ),
        now=T0 + timedelta(hours=1),
    )
    assert len(again) == 1
    assert again[0].last_transition_time == T0
    assert (again[0].reason, again[0].message, again[0].observed_generation) == (
        "Heartbeat",
        "still fine",
        3,
    )


def test_a_status_change_moves_the_transition_time() -> None:
    first = set_condition((), _ready(ConditionStatus.TRUE), now=T0)
    later = T0 + timedelta(minutes=1)
    changed = set_condition(first, _ready(ConditionStatus.FALSE, "CriuMissing"), now=later)
    assert changed[0].status is ConditionStatus.FALSE
    assert changed[0].last_transition_time == later
    assert first[0].status is ConditionStatus.TRUE  # the input is left as it was


def test_the_time_a_caller_puts_in_the_new_condition_is_ignored() -> None:
    first = set_condition((), _ready(ConditionStatus.TRUE), now=T0)
    claimed = _ready(ConditionStatus.TRUE).model_copy(
        update={"last_transition_time": T0 + timedelta(days=1)}
    )
    assert set_condition(first, claimed, now=T0 + timedelta(hours=2))[0].last_transition_time == T0


def test_order_is_kept_when_a_condition_in_the_middle_changes() -> None:
    conditions: tuple[Condition, ...] = ()
    for type_ in ("Validated", "Checkpointed", "Restored"):
        conditions = set_condition(
            conditions,
            Condition(type=type_, status=ConditionStatus.UNKNOWN, reason="Pending"),
            now=T0,
        )
    conditions = set_condition(
        conditions,
        Condition(type="Checkpointed", status=ConditionStatus.TRUE, reason="Done"),
        now=T0 + timedelta(seconds=1),
    )
    assert [c.type for c in conditions] == ["Validated", "Checkpointed", "Restored"]
    assert find_condition(conditions, "Checkpointed") == Condition(
        type="Checkpointed",
        status=ConditionStatus.TRUE,
        reason="Done",
        last_transition_time=T0 + timedelta(seconds=1),
    )
    assert find_condition(conditions, "Succeeded") is None


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        set_condition((), _ready(ConditionStatus.TRUE), now=datetime(2025, 3, 1))


@pytest.mark.parametrize(
    ("field", "value"),
    [("reason", "not camel"), ("reason", ""), ("type", "Bad Type"), ("status", "Yes")],
)
def test_condition_fields_follow_metav1(field: str, value: str) -> None:
    fields: dict[str, Any] = {"type": "Ready", "status": "True", "reason": "Probed", field: value}
    with pytest.raises(ValidationError):
        Condition.model_validate(fields)


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    "example", sorted(p.name for p in EXAMPLES.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_every_example_parses_with_its_model(example: str) -> None:
    bodies = [b for b in yaml.safe_load_all((EXAMPLES / example).read_text()) if b]
    assert bodies
    for body in bodies:
        body["metadata"]["uid"] = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
        parse = {
            constants.CONTAINER_MIGRATION_KIND: parse_container_migration,
            constants.CONTAINER_CHECKPOINT_KIND: parse_container_checkpoint,
            constants.CONTAINER_RESTORE_KIND: parse_container_restore,
            constants.MIGRATION_POLICY_KIND: parse_migration_policy,
            constants.CHECKPOINT_SCHEDULE_KIND: parse_checkpoint_schedule,
        }[body["kind"]]
        assert parse(body).metadata.name == body["metadata"]["name"]


def test_the_examples_applied_together_do_not_fight_over_a_container() -> None:
    """A GitOps base applies them all at once: none may move a container another
    checkpoints, and a restore's name must be free where it restores."""
    bodies = [
        b
        for p in sorted(EXAMPLES.glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for b in yaml.safe_load_all(p.read_text())
        if b
    ]
    moved = {
        (b["spec"]["source"]["node"], b["spec"]["source"]["container"])
        for b in bodies
        if b["kind"] == constants.CONTAINER_MIGRATION_KIND
    }
    templates = [
        b["spec"]["checkpointTemplate"]["spec"]
        for b in bodies
        if b["kind"] == constants.CHECKPOINT_SCHEDULE_KIND
    ]
    checkpointed = {
        (spec["source"]["node"], spec["source"]["container"])
        for spec in [
            *(b["spec"] for b in bodies if b["kind"] == constants.CONTAINER_CHECKPOINT_KIND),
            *templates,
        ]
    }
    assert moved
    assert checkpointed
    assert moved.isdisjoint(checkpointed)
    restored = {b["spec"].get("name") for b in bodies if b["kind"] == "ContainerRestore"}
    assert restored.isdisjoint({name for _, name in moved | checkpointed})


def test_checkpoint_and_restore_defaults() -> None:
    checkpoint = ContainerCheckpointSpec.model_validate(
        {"source": {"node": "node-a", "container": "web"}}
    )
    assert checkpoint.leave_running is True
    restore = ContainerRestoreSpec.model_validate({"checkpointRef": {"name": "cp"}})
    assert (restore.node, restore.name, restore.timeout_seconds) == (None, None, 300)
    with pytest.raises(ValidationError):
        ContainerRestoreSpec.model_validate({"checkpointRef": {"name": "cp"}, "name": "../x"})


def test_the_examples_are_one_kustomize_base() -> None:
    kustomization = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in EXAMPLES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present, "every example is in the kustomization, and only those"
    kubectl = ClusterConfig().bin_dir / "kubectl"  # built by `make prepare`, as helm is
    rendered = subprocess.run(
        [str(kubectl), "kustomize", str(EXAMPLES)], capture_output=True, text=True, check=True
    ).stdout
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(rendered) if doc)
    assert kinds == [
        "ContainerCheckpoint",
        "ContainerCheckpointSchedule",
        "ContainerMigration",
        "ContainerRestore",
        "MigrationPolicy",
    ]
