"""The local control plane is a real kube-apiserver on etcd, with RBAC enforced."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest
from ferry_cluster import cluster
from ferry_cluster.config import ClusterConfig
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from support import retry_while_status

pytestmark = pytest.mark.integration

CRD_GROUP = "probe.test.ferry.dev"


def _crd() -> dict[str, object]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def test_namespace_and_crd_are_accepted(admin_api: client.ApiClient, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(admin_api)
    with contextlib.suppress(ApiException):  # 409: left by an earlier run on a kept cluster
        ext.create_custom_resource_definition(_crd())
    deadline = time.monotonic() + 30
    while True:
        crd = ext.read_custom_resource_definition(f"widgets.{CRD_GROUP}")
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            break
        assert time.monotonic() < deadline, f"CRD not established: {conditions}"
        time.sleep(0.2)

    custom = client.CustomObjectsApi(admin_api)
    body = {
        "apiVersion": f"{CRD_GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    # A freshly established CRD can take a moment to be served.
    retry_while_status(
        lambda: custom.create_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets", body),
        404,
    )
    got = custom.get_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets", "w1")
    assert got["spec"] == {"size": 3}

    bad = {**body, "metadata": {"name": "w2"}, "spec": {"size": 0}}
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets", bad)
    assert refused.value.status == 422
    assert "spec.size" in refused.value.body


def _service_account_kubeconfig(
    config: ClusterConfig, core: client.CoreV1Api, namespace: str, name: str, out: Path
) -> Path:
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )
    return cluster.service_account_kubeconfig(
        config, namespace=namespace, name=name, seconds=600, out=out
    )


def test_rbac_denies_a_service_account_what_it_was_not_granted(
    local_cluster: ClusterConfig, admin_api: client.ApiClient, tmp_path: Path, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    path = _service_account_kubeconfig(local_cluster, core, namespace, "reader", tmp_path / "kc")
    rbac = client.RbacAuthorizationV1Api(admin_api)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "configmap-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )

    with kube_config.new_client_from_config(str(path)) as sa_api:
        as_sa = client.CoreV1Api(sa_api)
        # RBAC grants take effect through an informer: allow a moment.
        retry_while_status(lambda: as_sa.list_namespaced_config_map(namespace), 403)
        for forbidden in (
            lambda: as_sa.list_namespaced_secret(namespace),
            lambda: as_sa.list_namespaced_config_map("default"),
            as_sa.list_node,
            lambda: as_sa.create_namespaced_config_map(
                namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))
            ),
        ):
            with pytest.raises(ApiException) as denied:
                forbidden()
            assert denied.value.status == 403

    # The same answer from kubectl, as a user would ask it.
    kubectl = str(local_cluster.bin_dir / "kubectl")
    can_i = subprocess.run(
        [kubectl, f"--kubeconfig={path}", "auth", "can-i", "get", "secrets", "-n", namespace],
        capture_output=True,
        text=True,
        check=False,
    )
    assert can_i.stdout.strip() == "no"
    assert can_i.returncode == 1


def test_the_kubelets_registered_their_nodes_ready_on_containerd(
    local_cluster: ClusterConfig, admin_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(admin_api)
    registered = {n.metadata.name: n for n in core.list_node().items}
    for spec in local_cluster.node_specs():
        node = registered[spec.name]
        addresses = {a.type: a.address for a in node.status.addresses}
        assert addresses["InternalIP"] == str(spec.address)
        assert node.metadata.labels["kubernetes.io/hostname"] == spec.name
        ready = {c.type: c.status for c in node.status.conditions}
        assert ready["Ready"] == "True"
        assert node.status.node_info.kubelet_version == "v1.34.4"
        assert node.status.node_info.container_runtime_version.startswith("containerd://2.1.")
        assert node.metadata.labels["ferry.dev/simulated-node"] == local_cluster.name
