"""The operator's install-time jobs against the real API server."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest
from ferry_api import constants
from ferry_cluster import deploy
from ferry_cluster.config import ClusterConfig
from ferry_operator.cleanup import cleanup
from ferry_operator.keygen import ensure_ssh_secrets
from ferry_operator.kube import Kube
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import create_migration

pytestmark = pytest.mark.integration


def _data(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, bytes]:
    import base64  # noqa: PLC0415

    secret = core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def test_keygen_makes_both_secrets_once_and_keeps_them(
    admin_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    names = {"operator_secret": "op-ssh", "node_helper_secret": "nh-ssh"}

    def ensure_ssh_secrets_() -> list[str]:
        return asyncio.run(ensure_ssh_secrets(Kube(admin_api), namespace=namespace, **names))

    first = ensure_ssh_secrets_()
    assert len(first) == 2
    operator, helper = _data(core, namespace, "op-ssh"), _data(core, namespace, "nh-ssh")
    assert set(operator) == {"operator"}, "the helpers' Secret must not hold the operator key"
    assert set(helper) == {"operator.pub"}, "helpers hold no private key at all"
    derived = asyncssh.import_private_key(operator["operator"]).export_public_key()
    assert helper["operator.pub"] == derived

    assert ensure_ssh_secrets_() == []
    assert _data(core, namespace, "op-ssh") == operator

    # Rotation of the operator's key: delete its Secret, run again.
    core.delete_namespaced_secret("op-ssh", namespace)
    ensure_ssh_secrets_()
    rotated = _data(core, namespace, "op-ssh")["operator"]
    assert rotated != operator["operator"]
    assert (
        _data(core, namespace, "nh-ssh")["operator.pub"]
        == asyncssh.import_private_key(rotated).export_public_key()
    )


def test_uninstall_cleanup_leaves_no_migration_stuck(
    local_cluster: ClusterConfig, admin_api: client.ApiClient, namespace: str
) -> None:
    deploy.apply_crds(local_cluster)
    custom = client.CustomObjectsApi(admin_api)
    create_migration(
        custom,
        namespace,
        "stuck",
        {"source": {"node": "node-a", "container": "web"}},
        finalizers=[constants.MIGRATION_FINALIZER],
    )
    # With no operator to release it, the finalizer is stripped after the timeout
    # (with one running, the operator releases it first: gone either way).
    asyncio.run(cleanup(Kube(admin_api), grace_seconds=2))
    with pytest.raises(ApiException) as gone:
        custom.get_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            namespace,
            constants.CONTAINER_MIGRATION_PLURAL,
            "stuck",
        )
    assert gone.value.status == 404
