"""Least privilege the API server enforces, tried with the tokens the kubelets projected.

RBAC cannot say "this node's NodeHelper" or "Ferry's ConfigMaps": the chart's
ValidatingAdmissionPolicies can. Each case is asked with a real component's
real token (read from its pod, as an attacker on that node would), and what
must be refused is answered 403 by the API server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import ferry_pods
import pytest
from ferry_api import constants
from ferry_cluster import deploy
from ferry_cluster.config import ClusterConfig
from ferry_cluster.pki import Pki
from ferry_operator.kube import Kube, NotOurs
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.e2e

HTTP_FORBIDDEN = 403


@contextlib.contextmanager
def api_as(config: ClusterConfig, token: str) -> Iterator[client.ApiClient]:
    """An API client that presents ``token`` and nothing else."""
    configuration = client.Configuration()
    configuration.host = config.server_url
    configuration.ssl_ca_cert = str(Pki(directory=config.pki_dir).ca_cert)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(configuration) as api:
        yield api


def patch_helper_status(api: client.ApiClient, node: str) -> None:
    client.CustomObjectsApi(api).patch_cluster_custom_object_status(
        constants.GROUP,
        constants.VERSION,
        constants.NODE_HELPER_PLURAL,
        node,
        {"status": {"message": "written by a test"}},
    )


def test_a_helpers_token_writes_its_own_nodehelper_only(ferry: ClusterConfig) -> None:
    node_a, node_b = ferry.node_specs()[:2]
    with api_as(ferry, ferry_pods.helper_token(node_a)) as api:
        patch_helper_status(api, node_a.name)  # its own: allowed
        with pytest.raises(ApiException) as refused:
            patch_helper_status(api, node_b.name)
    assert refused.value.status == HTTP_FORBIDDEN, refused.value.body
    assert node_a.name in refused.value.body
    assert node_b.name in refused.value.body


def test_a_helper_token_not_bound_to_a_node_writes_no_nodehelper(ferry: ClusterConfig) -> None:
    """A token the TokenRequest API mints without a pod carries no node: refused everywhere."""
    node_a = ferry.node_specs()[0]
    token = ferry_pods.kubectl(
        ferry,
        "create",
        "token",
        f"{deploy.RELEASE}-node-helper",
        "-n",
        deploy.NAMESPACE,
        "--duration=10m",
    )
    with api_as(ferry, token) as api, pytest.raises(ApiException) as refused:
        patch_helper_status(api, node_a.name)
    assert refused.value.status == HTTP_FORBIDDEN, refused.value.body


@pytest.fixture
def foreign_config_map(ferry: ClusterConfig, namespace: str) -> Iterator[str]:
    """A ConfigMap some application owns, named as a Ferry failure-log ConfigMap would be."""
    name = "web-move-migration-logs"
    ferry_pods.kubectl(
        ferry, "create", "configmap", name, "-n", namespace, "--from-literal=app=settings"
    )
    yield name
    ferry_pods.kubectl(ferry, "delete", "configmap", name, "-n", namespace, "--wait=false")


def test_the_operator_cannot_change_a_config_map_that_is_not_ferrys(
    ferry: ClusterConfig, namespace: str, foreign_config_map: str
) -> None:
    name = foreign_config_map
    with api_as(ferry, ferry_pods.operator_token(ferry)) as api:
        core = client.CoreV1Api(api)
        for attempt in (
            # RBAC lets it patch and delete every ConfigMap (it cannot name them); the
            # admission policy is what refuses.
            lambda: core.patch_namespaced_config_map(
                name, namespace, {"data": {"app": "overwritten"}}
            ),
            lambda: core.delete_namespaced_config_map(name, namespace),
        ):
            with pytest.raises(ApiException) as refused:
                attempt()
            assert refused.value.status == HTTP_FORBIDDEN, refused.value.body
            assert "ferry.dev/logs-of" in refused.value.body

        # What the operator's own code does with the name: it stops and says so.
        async def write_logs() -> None:
            await Kube(api).put_config_map(
                namespace,
                name,
                labels={"ferry.dev/logs-of": "containermigration"},
                owner={
                    "apiVersion": constants.API_VERSION,
                    "kind": constants.CONTAINER_MIGRATION_KIND,
                    "name": "move",
                    "uid": "1b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b",
                },
                binary_data={"node-a.criu.log.gz": ""},
            )

        with pytest.raises(NotOurs, match="not Ferry's"):
            asyncio.run(write_logs())
    data = ferry_pods.kubectl(
        ferry, "get", "configmap", name, "-n", namespace, "-o", "jsonpath={.data.app}"
    )
    assert data == "settings", "the application's ConfigMap was changed"


def test_namespace_users_get_ferry_through_the_default_roles(
    ferry: ClusterConfig, namespace: str
) -> None:
    """A user bound to the built-in `edit` role in a namespace may migrate there, not more."""
    user = f"system:serviceaccount:{namespace}:developer"
    ferry_pods.kubectl(
        ferry,
        "create",
        "rolebinding",
        "developer-edit",
        "--clusterrole=edit",
        f"--serviceaccount={namespace}:developer",
        "-n",
        namespace,
    )

    def can(verb: str, resource: str, where: str, *more: str) -> bool:
        answer = ferry_pods.kubectl(
            ferry, "auth", "can-i", verb, resource, f"--as={user}", "-n", where, *more, check=False
        )
        return answer == "yes"

    for resource in (
        "containermigrations.ferry.dev",
        "podmigrations.ferry.dev",
        "containercheckpoints.ferry.dev",
        "containerrestores.ferry.dev",
    ):
        assert can("create", resource, namespace), resource
        assert can("delete", resource, namespace), resource
        assert not can("create", resource, "default"), f"{resource} outside its namespace"
    assert not can("patch", "containermigrations.ferry.dev", namespace, "--subresource=status")
    assert not can("list", "nodehelpers.ferry.dev", namespace)
