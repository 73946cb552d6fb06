"""The e2e tier's shared fixtures: Ferry deployed on the local cluster, and its API."""

from __future__ import annotations

import pytest
from ferry_cluster import deploy
from ferry_cluster.config import ClusterConfig
from kubernetes import client


@pytest.fixture(scope="module")
def ferry(local_cluster: ClusterConfig) -> ClusterConfig:
    """Ferry installed with the chart's defaults (a module wanting other values overrides it)."""
    deploy.deploy(local_cluster)
    return local_cluster


@pytest.fixture(scope="module")
def custom(admin_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(admin_api)
