"""Faults a migration must survive, and strangers the helpers must refuse.

The operator killed in any phase resumes (the helpers' journal answers the
repeated step) and the container runs in exactly one place. A helper refuses
a client whose key it does not know, a client refuses a helper whose host key
is not the published one, the peers' key cannot run anything but an incoming
stream, and what it streams in is refused if damaged or if it would reach
outside the staging area. (Faults on the wire and helpers killed mid-step:
test_faults_transport.py; load: test_load.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
import uuid
from typing import Any

import asyncssh
import ferry_pods
import pytest
from archives import COMPRESSIONS, UNSAFE
from ferry_api import constants
from ferry_cluster import procs
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import container_state, logged_counts, run_counter, sh, wait_counting
from ferry_operator.helperclient import HelperClient
from ferry_wire import (
    OPERATOR_USER,
    PEER_USER,
    Operation,
    Peer,
    Reason,
    RemoteError,
    Reply,
    Request,
)
from ferry_wire.migration import CleanupRequest
from ferry_wire.node import AuthorizePeerRequest, ProbeRequest
from kubernetes import client
from support import create_migration, wait_migration

pytestmark = pytest.mark.e2e


def running(node: NodeSpec, name: str) -> bool:
    return container_state(node, name) == "running"


def peer(ferry: ClusterConfig, node: NodeSpec) -> Peer:
    out = procs.run(
        [
            str(ferry.bin_dir / "kubectl"),
            f"--kubeconfig={ferry.admin_kubeconfig}",
            "get",
            "nodehelper",
            node.name,
            "-o",
            "json",
        ]
    ).stdout
    status = json.loads(out)["status"]
    return Peer(
        node=node.name,
        address=status["address"],
        port=status["sshPort"],
        host_key=status["sshHostKey"],
    )


@pytest.mark.parametrize("phase", ["Validating", "Checkpointing", "Transferring", "Restoring"])
def test_the_operator_killed_in_any_phase_resumes_and_one_copy_runs(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str, phase: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    name = f"survivor-{phase.lower()}"
    sh(node_b, f"podman rm -f -t 0 -i {name}")
    run_counter(node_a, name, labels={constants.NAMESPACE_LABEL: namespace}, blob_bytes=128 << 20)
    wait_counting(node_a, name, above=0, timeout=60)
    custom = client.CustomObjectsApi(admin_api)
    create_migration(
        custom,
        namespace,
        name,
        {
            "source": {"node": "node-a", "container": name},
            "target": {"node": "node-b"},
            "compression": "none",
        },
    )
    if phase != "Validating":  # that one lasts milliseconds: kill at once
        wait_migration(custom, namespace, name, lambda s: s.get("phase") == phase, poll=0.02)
    ferry_pods.kill_operator(ferry)

    status = wait_migration(custom, namespace, name, poll=0.2)
    on_a, on_b = running(node_a, name), running(node_b, name)
    assert on_a != on_b, f"exactly one copy must run (node-a {on_a}, node-b {on_b})"
    # The new operator resumed the step in flight (the helper's journal gave it the
    # step's result) instead of failing or freezing the source a second time.
    assert status["phase"] == "Succeeded", status
    assert on_b
    logged = logged_counts(node_b, name)
    assert logged == list(range(1, len(logged) + 1)), "the process started over"
    for node in (node_a, node_b):
        sh(node, f"podman rm -f -t 0 -i {name}")
        left = sh(node, "find /var/lib/ferry-helper/staging -name 'checkpoint.*'")
        assert left == "", f"{node.name} keeps {left}"


def _call(peer_: Peer, key: asyncssh.SSHKey, request: Request[Any]) -> Reply:
    return asyncio.run(HelperClient(key).call(peer_, request))


def test_a_client_key_the_helper_does_not_know_is_refused(ferry: ClusterConfig) -> None:
    node = ferry.node_specs()[0]
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(RemoteError) as refused:
        _call(peer(ferry, node), stranger, ProbeRequest())
    # Its own reason, and not retried: a refused key stays refused (it was "unreachable").
    assert refused.value.reason is Reason.HELPER_AUTHENTICATION_FAILED
    assert "ermission denied" in refused.value.message or "auth" in refused.value.message.lower()


def test_a_helper_whose_host_key_is_not_the_published_one_is_refused(
    ferry: ClusterConfig,
) -> None:
    node = ferry.node_specs()[0]
    operator_key = asyncssh.import_private_key(ferry_pods.operator_private_key(ferry))
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    wrong = peer(ferry, node).model_copy(update={"host_key": impostor})
    with pytest.raises(RemoteError) as refused:
        _call(wrong, operator_key, ProbeRequest())
    assert "host key" in refused.value.message.lower()
    assert refused.value.reason is Reason.HELPER_HOST_KEY_MISMATCH
    # With the published key the same client is let in.
    probed = _call(peer(ferry, node), operator_key, ProbeRequest())
    assert probed.status.runtimes  # type: ignore[attr-defined]


def operator_key(ferry: ClusterConfig) -> asyncssh.SSHKey:
    return asyncssh.import_private_key(ferry_pods.operator_private_key(ferry))


def grant(ferry: ClusterConfig, node: NodeSpec, uid: str) -> asyncssh.SSHKey:
    """What the operator does before a stream: a fresh key, granted on ``node`` for ``uid``."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    request = AuthorizePeerRequest(
        uid=uid, public_key=key.export_public_key().decode(), ttl_seconds=60
    )
    _call(peer(ferry, node), operator_key(ferry), request)
    return key


def run_as_peer(
    ferry: ClusterConfig, node: NodeSpec, key: asyncssh.SSHKey, operation: Operation, stdin: bytes
) -> dict[str, Any]:
    """Run ``operation`` on ``node``'s helper as the ``peer`` user with ``key``; its answer."""
    target = peer(ferry, node)

    async def stream() -> str:
        async with asyncssh.connect(
            target.address,
            target.port,
            username=PEER_USER,
            client_keys=[key],
            known_hosts=([asyncssh.import_public_key(target.host_key)], [], []),
        ) as conn:
            process = await conn.create_process(operation.value, encoding=None)
            # A refusal may close the channel before the request is even sent.
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(stdin)
                process.stdin.write_eof()
            return (await process.stdout.read()).decode()

    answer: dict[str, Any] = json.loads(asyncio.run(stream()).splitlines()[-1])
    return answer


def send_as_peer(
    ferry: ClusterConfig, node: NodeSpec, header: dict[str, Any], payload: bytes
) -> dict[str, Any]:
    """Stream ``payload`` into ``node``'s helper with a key granted for the header's UID."""
    key = grant(ferry, node, header["uid"])
    stdin = json.dumps(header).encode() + b"\n" + payload
    return run_as_peer(ferry, node, key, Operation.RECEIVE, stdin)


def test_a_granted_peer_key_streams_into_its_own_migration_only(ferry: ClusterConfig) -> None:
    node = ferry.node_specs()[0]
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    key = grant(ferry, node, mine)
    # Nothing but streaming in: refused before the request is even read.
    assert run_as_peer(ferry, node, key, Operation.CHECKPOINT, b"")["reason"] == "Forbidden"
    # Not into another migration.
    header = {"uid": other, "sizeBytes": 1, "sha256": "0" * 64}
    answer = run_as_peer(ferry, node, key, Operation.RECEIVE, json.dumps(header).encode() + b"\n")
    assert (answer["type"], answer["reason"]) == ("error", "Forbidden"), answer
    # A key nobody granted is not let in at all.
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        run_as_peer(ferry, node, stranger, Operation.RECEIVE, b"")
    # The grant ends with the migration on this node.
    _call(peer(ferry, node), operator_key(ferry), CleanupRequest(uid=mine))
    with pytest.raises(asyncssh.PermissionDenied):
        run_as_peer(ferry, node, key, Operation.RECEIVE, b"")
    assert OPERATOR_USER != PEER_USER


def test_logs_carry_no_keys_or_tokens_and_no_archive_outlives_a_migration(
    ferry: ClusterConfig,
) -> None:
    secrets = [
        ferry_pods.operator_private_key(ferry).splitlines()[1],  # a line of its private key
    ]
    token = ferry_pods.operator_token(ferry)
    logs = ferry_pods.all_logs(ferry)
    assert all(logs), "every pod has logged something"
    for text in logs:
        assert "PRIVATE KEY" not in text
        assert token[:40] not in text
        for secret in secrets:
            assert secret not in text
    # Every migration so far has ended: no archive is left in any staging area.
    for node in ferry.node_specs():
        left = sh(node, "find /var/lib/ferry-helper/staging -name 'checkpoint.tar*' | head")
        assert left == "", f"{node.name} keeps {left}"
        mode = sh(node, "stat -c %a /var/lib/ferry-helper/staging")
        assert mode == "700"


def test_two_migrations_of_one_container_one_proceeds_the_other_is_refused(
    ferry: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    sh(node_b, "podman rm -f -t 0 -i contested")
    run_counter(
        node_a, "contested", labels={constants.NAMESPACE_LABEL: namespace}, blob_bytes=64 << 20
    )
    wait_counting(node_a, "contested", above=0, timeout=60)
    custom = client.CustomObjectsApi(admin_api)
    spec = {
        "source": {"node": "node-a", "container": "contested"},
        "target": {"node": "node-b"},
        "compression": "none",
    }
    create_migration(custom, namespace, "first", spec)
    create_migration(custom, namespace, "second", spec)

    def final(name: str) -> dict[str, Any]:
        deadline = time.monotonic() + 180
        while True:
            body = custom.get_namespaced_custom_object(
                constants.GROUP,
                constants.VERSION,
                namespace,
                constants.CONTAINER_MIGRATION_PLURAL,
                name,
            )
            found: dict[str, Any] = body.get("status") or {}
            if found.get("phase") in ("Succeeded", "Failed"):
                return found
            assert time.monotonic() < deadline, found
            time.sleep(0.2)

    outcomes = {name: final(name) for name in ("first", "second")}
    phases = sorted(s["phase"] for s in outcomes.values())
    assert phases == ["Failed", "Succeeded"], outcomes
    refused = next(s for s in outcomes.values() if s["phase"] == "Failed")
    reason = next(c["reason"] for c in refused["conditions"] if c["type"] == "Succeeded")
    assert reason == "ContainerBusy", refused
    on_a, on_b = running(node_a, "contested"), running(node_b, "contested")
    assert (on_a, on_b) == (False, True), "exactly one copy, on the target"
    logged = logged_counts(node_b, "contested")
    assert logged == list(range(1, len(logged) + 1))
    sh(node_b, "podman rm -f -t 0 contested")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [("corrupted", "ChecksumMismatch"), ("truncated", "SizeMismatch")],
)
def test_a_damaged_archive_is_refused_and_nothing_of_it_kept(
    ferry: ClusterConfig, damage: str, reason: str
) -> None:
    node = ferry.node_specs()[1]
    archive = os.urandom(3 << 20)
    digest = hashlib.sha256(archive).hexdigest()
    sent = archive[:-1] + bytes([archive[-1] ^ 0xFF]) if damage == "corrupted" else archive[:-7]
    uid = str(uuid.uuid4())
    header = {"uid": uid, "sizeBytes": len(archive), "sha256": digest}
    answer = send_as_peer(ferry, node, header, sent)
    assert answer["type"] == "error"
    assert answer["reason"] == reason
    assert sh(node, f"ls -A /var/lib/ferry-helper/staging/{uid}") == ""


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_an_archive_reaching_outside_staging_is_refused_by_a_real_helper(
    ferry: ClusterConfig, case: str
) -> None:
    """A sender with the peers' key and a correct checksum still cannot plant files."""
    node = ferry.node_specs()[1]
    archive = COMPRESSIONS["zstd"](UNSAFE[case][0])
    uid = str(uuid.uuid4())
    header = {"uid": uid, "sizeBytes": len(archive), "sha256": hashlib.sha256(archive).hexdigest()}
    answer = send_as_peer(ferry, node, header, archive)
    assert (answer["type"], answer["reason"]) == ("error", "UnsafeArchive"), answer
    assert sh(node, f"ls -A /var/lib/ferry-helper/staging/{uid}") == ""
    assert sh(node, "ls /etc/cron.d/x /root/.ssh/authorized_keys 2>/dev/null || true") == ""
