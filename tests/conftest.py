"""Shared fixtures: one real local cluster for the integration and e2e tiers.

The tests bring up their own cluster (named ``test``) so a developer's demo
cluster is left alone. Missing prerequisites fail, they never skip: a test
tier that silently skips proves nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from ferry_cluster import cluster
from ferry_cluster.config import ClusterConfig
from kubernetes import client

TEST_CLUSTER = os.environ.get("FERRY_TEST_CLUSTER", "test")


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration and e2e tests need root (namespaces, mounts, cgroups)")


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[ClusterConfig]:
    """A three-node cluster, up for the whole session and torn down (verified) after it."""
    _require_root()
    config = ClusterConfig(name=TEST_CLUSTER, nodes=3)
    cluster.up(config, print)
    yield config
    if os.environ.get("FERRY_KEEP_CLUSTER") != "1":
        cluster.down(config)


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> str:
    """A fresh namespace for one test (left in place: the cluster is torn down whole)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin_api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    )
    return name


@pytest.fixture(scope="session")
def admin_api(local_cluster: ClusterConfig) -> Iterator[client.ApiClient]:
    with cluster.api_client(local_cluster) as api:
        yield api
