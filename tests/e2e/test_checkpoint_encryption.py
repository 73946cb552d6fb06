"""Checkpoints encrypted at rest, on the real local cluster (checkpoints.encryption).

What an admin checks: the archive on the node is ciphertext, not a tar; it
restores, on its own node and on another, with the key it was sealed with; a
helper given another key refuses it and starts nothing; a byte flipped in the
stored archive is refused before anything runs. Each node-helper reads the key
from the Secret the chart mounts; the operator never has it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ferry_pods
import pytest
from ferry_api import constants
from ferry_cluster import deploy, nodes
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import (
    container_state,
    logged_counts,
    read_count,
    run_counter,
    sh,
    wait_counting,
)
from kubernetes import client
from support import get_resource, restore_checkpoint, take_checkpoint

pytestmark = pytest.mark.e2e

STORE = "/var/lib/ferry-helper/checkpoints"
KEYS = f"{deploy.RELEASE}-checkpoint-keys"
OTHER_KEYS = f"{deploy.RELEASE}-checkpoint-keys-other"


def key_secret(config: ClusterConfig, name: str) -> None:
    """A Secret holding one AES-256 key, ``key``, as the chart's README says to make it."""
    with tempfile.TemporaryDirectory() as scratch:
        key = Path(scratch) / "key"
        key.write_bytes(os.urandom(32))
        ferry_pods.kubectl(
            config, "delete", "secret", name, "-n", deploy.NAMESPACE, "--ignore-not-found"
        )
        ferry_pods.kubectl(
            config,
            "create",
            "secret",
            "generic",
            name,
            "-n",
            deploy.NAMESPACE,
            f"--from-file=key={key}",
        )


def with_keys(config: ClusterConfig, secret: str) -> None:
    deploy.deploy(config, extra={"checkpoints.encryption.secretName": secret})


@pytest.fixture(scope="module")
def ferry(local_cluster: ClusterConfig) -> Iterator[ClusterConfig]:
    """Ferry whose helpers seal stored checkpoints with the key in KEYS."""
    ferry_pods.kubectl(local_cluster, "create", "namespace", deploy.NAMESPACE, check=False)
    key_secret(local_cluster, KEYS)
    key_secret(local_cluster, OTHER_KEYS)
    with_keys(local_cluster, KEYS)
    yield local_cluster
    deploy.deploy(local_cluster)  # the chart's defaults again, for the modules after this
    for secret in (KEYS, OTHER_KEYS):
        ferry_pods.kubectl(local_cluster, "delete", "secret", secret, "-n", deploy.NAMESPACE)


def checkpoint(
    custom: client.CustomObjectsApi, namespace: str, name: str, node: NodeSpec, container: str
) -> dict[str, Any]:
    return take_checkpoint(custom, namespace, name, node.name, container)


restore = restore_checkpoint


def stored_archive(custom: client.CustomObjectsApi, namespace: str, name: str) -> str:
    uid = get_resource(custom, namespace, constants.CONTAINER_CHECKPOINT_PLURAL, name)["metadata"][
        "uid"
    ]
    return f"{STORE}/{uid}/checkpoint.tar"


def reason(status: dict[str, Any]) -> str:
    return str(status["conditions"][0]["reason"])


def test_an_encrypted_checkpoint_restores_with_its_key_here_and_on_another_node(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    run_counter(node_a, "sealed", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node_a, "sealed", above=3)
    status = checkpoint(custom, namespace, "sealed-cp", node_a, "sealed")
    assert status["phase"] == "Ready", status
    assert status["encryption"]["keyName"] == "key"
    assert status["encryption"]["algorithm"] == "AES-256-GCM-STREAM-1MiB"
    print(
        f"tiny: checkpoint {status['checkpointSeconds']:.3f} s, "
        f"sealing {status['encryption']['seconds']:.3f} s, {status['archive']['bytes']} bytes"
    )
    archive = stored_archive(custom, namespace, "sealed-cp")
    assert sh(node_a, f"head -c 10 {archive}") == "FERRYSEAL1", "stored in clear"
    assert "checkpoint" not in sh(node_a, f"tar -tf {archive} 2>/dev/null || true")

    done = restore(
        custom,
        namespace,
        "sealed-there",
        {"checkpointRef": {"name": "sealed-cp"}, "node": node_b.name, "name": "sealed-copy"},
    )
    assert done["phase"] == "Succeeded", done
    wait_counting(node_b, "sealed-copy", above=read_count(node_b, "sealed-copy"))
    assert logged_counts(node_b, "sealed-copy")[:1] == [1]

    sh(node_a, "podman rm -f -t 0 sealed")
    done = restore(custom, namespace, "sealed-here", {"checkpointRef": {"name": "sealed-cp"}})
    assert done["phase"] == "Succeeded", done
    wait_counting(node_a, "sealed", above=read_count(node_a, "sealed"))
    # No plaintext outlives a restore on either node.
    for node in (node_a, node_b):
        assert sh(node, "find /var/lib/ferry-helper/staging -name '*opened*'") == ""
    sh(node_a, "podman rm -f -t 0 sealed")
    sh(node_b, "podman rm -f -t 0 sealed-copy")


def test_a_helper_with_another_key_refuses_the_checkpoint_and_starts_nothing(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    run_counter(node, "keyed", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, "keyed", above=3)
    status = checkpoint(custom, namespace, "keyed-cp", node, "keyed")
    assert status["phase"] == "Ready", status
    key_id = status["encryption"]["keyID"]
    sh(node, "podman rm -f -t 0 keyed")

    with_keys(ferry, OTHER_KEYS)
    try:
        refused = restore(custom, namespace, "keyed-wrong", {"checkpointRef": {"name": "keyed-cp"}})
        assert refused["phase"] == "Failed", refused
        assert reason(refused) == "CheckpointKeyMissing", refused
        assert key_id in refused["message"]
        assert container_state(node, "keyed") == "", "a container was started anyway"
    finally:
        with_keys(ferry, KEYS)

    done = restore(custom, namespace, "keyed-right", {"checkpointRef": {"name": "keyed-cp"}})
    assert done["phase"] == "Succeeded", done
    wait_counting(node, "keyed", above=read_count(node, "keyed"))
    sh(node, "podman rm -f -t 0 keyed")


def test_a_flipped_byte_in_a_stored_archive_is_refused_before_the_restore(
    ferry: ClusterConfig, custom: client.CustomObjectsApi, namespace: str
) -> None:
    node = ferry.node_specs()[0]
    run_counter(node, "flipped", labels={constants.NAMESPACE_LABEL: namespace})
    wait_counting(node, "flipped", above=3)
    assert checkpoint(custom, namespace, "flipped-cp", node, "flipped")["phase"] == "Ready"
    sh(node, "podman rm -f -t 0 flipped")
    archive = stored_archive(custom, namespace, "flipped-cp")
    # One byte in the middle of the first chunk, flipped in place (size unchanged).
    with nodes.host_path(node, archive).open("r+b") as file:
        file.seek(4096)
        byte = file.read(1)
        file.seek(4096)
        file.write(bytes([byte[0] ^ 0xFF]))

    refused = restore(custom, namespace, "flipped-rs", {"checkpointRef": {"name": "flipped-cp"}})
    assert refused["phase"] == "Failed", refused
    assert reason(refused) == "CheckpointTampered", refused
    assert "changed since it was stored" in refused["message"]
    assert container_state(node, "flipped") == "", "a container was started from it"
