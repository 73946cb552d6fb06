"""The Helm chart, rendered with the real helm: what it grants, runs and refuses.

Every test renders ``charts/ferry`` with ``helm template`` (the same binary the
local cluster uses) and reads the objects back, so the checks hold for what a
cluster admin would install, not for the template text. They render as for an
API server of ``KUBE_VERSION``, which serves ValidatingAdmissionPolicy (``helm
template`` alone knows no kinds: ``--api-versions`` says so). A missing helm
fails the tests: run ``make prepare``.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from ferry_api.diagnostics import LOGS_LABEL
from ferry_cluster.config import ClusterConfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ferry"
CRDS = ROOT / "crds"
CHART_CRDS = CHART / "crds-src"
VALUES_DOC = ROOT / "docs" / "chart-values.md"
HELM = ClusterConfig().bin_dir / "helm"
RELEASE = "ferry"
NAMESPACE = "ferry-system"
KUBE_VERSION = "1.34.4"
#: The kind the chart's admission policies need; an API server of KUBE_VERSION serves it.
VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
CLUSTER_API_VERSIONS = (VAP_API,)

LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "helm.sh/chart",
)
HOOK_DELETE_POLICY = "before-hook-creation,hook-succeeded"
#: The kinds the operator serves and holds with its finalizer (plurals).
OPERATED = (
    "containermigrations",
    "containercheckpoints",
    "containercheckpointschedules",
    "containerrestores",
    "podmigrations",
)
#: Volume types the `restricted` Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
OPERATOR_ENV = [
    {"name": "FERRY_SSH_KEY", "value": "/etc/ferry/ssh/operator"},
    {"name": "FERRY_ALLOW_ANY_NAMESPACE", "value": "false"},
    {"name": "FERRY_HELPER_STALE_SECONDS", "value": "120"},
    {"name": "FERRY_MAX_MIGRATIONS_PER_NODE", "value": "2"},
    {"name": "FERRY_METRICS_PORT", "value": "8080"},
    {"name": "FERRY_ALLOWED_REGISTRIES", "value": ""},
    {"name": "FERRY_WEBHOOK_PORT", "value": "9443"},
    {"name": "FERRY_WEBHOOK_CERT_DIR", "value": "/etc/ferry/webhook"},
    {"name": "FERRY_LOG_LEVEL", "value": "info"},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
]
HELPER_ENV = [
    {"name": "FERRY_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    {"name": "FERRY_ADDRESS", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
    {"name": "FERRY_SSH_PORT", "value": "7022"},
    {"name": "FERRY_SSH_DIR", "value": "/etc/ferry/ssh"},
    {"name": "FERRY_STATE_DIR", "value": "/var/lib/ferry-helper"},
    {"name": "FERRY_HEARTBEAT_SECONDS", "value": "30"},
    {"name": "FERRY_LOG_RETENTION_HOURS", "value": "72"},
    {"name": "FERRY_NODE_TOOLS", "value": "nsenter"},
    {"name": "FERRY_DRAIN_SECONDS", "value": "110"},
    {"name": "FERRY_CRI_SOCKET", "value": "/run/containerd/containerd.sock"},
    {"name": "FERRY_CTR", "value": "ctr"},
]
#: Value sets that switch templates on and off: every check on all objects runs on each.
VARIANTS = {
    "defaults": (),
    "everything-off": (
        "crds.enabled=false",
        "ssh.create=false",
        "operator.metrics.port=0",
        "operator.evictionWebhook.enabled=false",
    ),
    "overrides": (
        "fullnameOverride=ship",
        "operator.serviceAccount.create=false",
        "nodeHelper.serviceAccount.create=false",
        "ssh.operatorSecretName=op-keys",
        "ssh.nodeHelperSecretName=helper-keys",
    ),
    "monitoring": (
        "operator.metrics.serviceMonitor.enabled=true",
        "grafana.dashboards.enabled=true",
        "commonLabels.team=platform",
        "operator.podLabels.tier=control",
        "nodeHelper.podLabels.tier=node",
    ),
}


def _helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"helm is missing at {HELM}: run `make prepare` (builds and caches it)")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def _template(
    *values: str, check: bool = True, api_versions: tuple[str, ...] = CLUSTER_API_VERSIONS
) -> subprocess.CompletedProcess[str]:
    sets = [arg for value in values for arg in ("--set", value)]
    apis = [arg for api in api_versions for arg in ("--api-versions", api)]
    return _helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        *apis,
        *sets,
        check=check,
    )


@functools.cache
def _render_with_sources(
    *values: str, api_versions: tuple[str, ...] = CLUSTER_API_VERSIONS
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """(template file, object) for every object ``helm template`` renders."""
    rendered = []
    for document in _template(*values, api_versions=api_versions).stdout.split("\n---\n"):
        source = re.search(r"^# Source: (\S+)$", document, re.MULTILINE)
        loaded = yaml.safe_load(document)
        if loaded:
            assert source, document
            rendered.append((source.group(1), loaded))
    return tuple(rendered)


def _render(
    *values: str, api_versions: tuple[str, ...] = CLUSTER_API_VERSIONS
) -> list[dict[str, Any]]:
    return [obj for _, obj in _render_with_sources(*values, api_versions=api_versions)]


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]


def _names(objects: list[dict[str, Any]], kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objects if o["kind"] == kind}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _workloads(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (o for o in objects if o["kind"] in {"Deployment", "DaemonSet", "Job"})


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = _pod_spec(obj)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _hooks(obj: dict[str, Any]) -> str | None:
    hook: str | None = obj["metadata"].get("annotations", {}).get("helm.sh/hook")
    return hook


# --- the binary and the linter ---------------------------------------------------


def test_a_missing_helm_fails_and_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "HELM", Path("/nonexistent/helm"))
    with pytest.raises(pytest.fail.Exception, match=r"make prepare"):
        _helm("version")


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_passes(strict: bool, variant: str) -> None:
    sets = [arg for value in VARIANTS[variant] for arg in ("--set", value)]
    result = _helm("lint", str(CHART), *(["--strict"] if strict else []), *sets, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


# --- every object ------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_object_and_pod_carries_the_labels(variant: str) -> None:
    for obj in _render(*VARIANTS[variant]):
        where = f"{obj['kind']} {obj['metadata']['name']}"
        labels = obj["metadata"].get("labels", {})
        assert [k for k in LABELS if k not in labels] == [], where
        assert labels["app.kubernetes.io/instance"] == RELEASE, where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        if obj["kind"] in {"Deployment", "DaemonSet", "Job"}:
            pod_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert [k for k in LABELS if k not in pod_labels] == [], f"pods of {where}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_one_resource_per_template_file(variant: str) -> None:
    sources = [source for source, _ in _render_with_sources(*VARIANTS[variant])]
    repeated = sorted(s for s in set(sources) if sources.count(s) > 1)
    # The webhook's TLS Secret and its configuration hold one generated CA: one rendering.
    assert [s for s in repeated if s != "ferry/templates/operator-webhook.yaml"] == []


def test_namespaced_objects_live_in_the_release_namespace() -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
    }
    for obj in _render():
        namespace = obj["metadata"].get("namespace")
        assert namespace == (None if obj["kind"] in cluster_scoped else NAMESPACE), obj["kind"]


def test_fullname_override_renames_everything() -> None:
    for obj in _render("fullnameOverride=ship"):
        if obj["kind"] != "CustomResourceDefinition":
            assert obj["metadata"]["name"].startswith("ship-"), obj["metadata"]["name"]


# --- the operator ------------------------------------------------------------------


def test_operator_deployment() -> None:
    deployment = _one(_render(), "Deployment", "ferry-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "operator"
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    pod = _pod_spec(deployment)
    assert pod["serviceAccountName"] == "ferry-operator"
    container = _container(deployment)
    assert container["image"] == "docker.io/ferry/operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["ferry-operator"]
    assert "args" not in container
    assert container["env"] == OPERATOR_ENV
    assert container["ports"] == [
        {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
        {"name": "webhook", "containerPort": 9443, "protocol": "TCP"},
    ]
    assert container["readinessProbe"]["tcpSocket"] == {"port": "webhook"}
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert {"name": "ssh", "mountPath": "/etc/ferry/ssh", "readOnly": True} in container[
        "volumeMounts"
    ]
    ssh = next(v for v in pod["volumes"] if v["name"] == "ssh")
    assert ssh["secret"] == {
        "secretName": "ferry-operator-ssh",
        "defaultMode": 0o400,
        "items": [{"key": "operator", "path": "operator", "mode": 0o400}],
    }


def test_operator_values_reach_its_environment() -> None:
    deployment = _one(
        _render(
            "operator.allowAnyNamespace=true",
            "operator.helperStaleSeconds=300",
            "operator.maxMigrationsPerNode=5",
            "operator.metrics.port=9090",
            "operator.image.tag=dev",
            "operator.image.repository=registry.example/ferry-op",
            "operator.logLevel=debug",
            "storage.allowedRegistries={registry.example.com/team,localhost:5000}",
        ),
        "Deployment",
    )
    container = _container(deployment)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env == {
        "FERRY_SSH_KEY": "/etc/ferry/ssh/operator",
        "FERRY_ALLOW_ANY_NAMESPACE": "true",
        "FERRY_HELPER_STALE_SECONDS": "300",
        "FERRY_MAX_MIGRATIONS_PER_NODE": "5",
        "FERRY_METRICS_PORT": "9090",
        "FERRY_ALLOWED_REGISTRIES": "registry.example.com/team,localhost:5000",
        "FERRY_WEBHOOK_PORT": "9443",
        "FERRY_WEBHOOK_CERT_DIR": "/etc/ferry/webhook",
        "FERRY_LOG_LEVEL": "debug",
    }
    assert container["ports"][0]["containerPort"] == 9090
    assert container["image"] == "registry.example/ferry-op:dev"


def test_metrics_off_means_no_port_and_no_probe() -> None:
    objects = _render("operator.metrics.port=0")
    container = _container(_one(objects, "Deployment"))
    assert [p["name"] for p in container["ports"]] == ["webhook"]
    assert "livenessProbe" not in container
    assert {"name": "FERRY_METRICS_PORT", "value": "0"} in container["env"]
    assert [p["name"] for p in _one(objects, "Service")["spec"]["ports"]] == ["webhook"]
    both_off = _render("operator.metrics.port=0", "operator.evictionWebhook.enabled=false")
    assert "ports" not in _container(_one(both_off, "Deployment"))
    assert _names(both_off, "Service") == set()


def test_the_eviction_webhook_reaches_the_operator_over_tls_it_trusts() -> None:
    objects = _render()
    service = _one(objects, "Service", "ferry-operator")
    deployment = _one(objects, "Deployment", "ferry-operator")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"} in service[
        "spec"
    ]["ports"]
    config = _one(objects, "ValidatingWebhookConfiguration", "ferry-evictions")
    (hook,) = config["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": "ferry-operator",
        "namespace": NAMESPACE,
        "path": "/evictions",
        "port": 443,
    }
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods/eviction"],
            "scope": "Namespaced",
        }
    ]
    assert (hook["failurePolicy"], hook["sideEffects"], hook["timeoutSeconds"]) == (
        "Ignore",
        "NoneOnDryRun",
        10,
    )
    # The served certificate is signed by the CA the API server is given, for the Service.
    secret = _one(objects, "Secret", "ferry-webhook-tls")
    assert secret["data"]["ca.crt"] == hook["clientConfig"]["caBundle"]
    certificate = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    authority = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    certificate.verify_directly_issued_by(authority)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert f"ferry-operator.{NAMESPACE}.svc" in names.value.get_values_for_type(x509.DNSName)
    mount = {"name": "webhook-tls", "mountPath": "/etc/ferry/webhook", "readOnly": True}
    assert mount in _container(deployment)["volumeMounts"]
    volume = next(v for v in _pod_spec(deployment)["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == "ferry-webhook-tls"
    # Creating the evacuation a drain starts is the one write it adds to the operator's role.
    role = _one(objects, "ClusterRole", "ferry-operator")
    rule = next(r for r in role["rules"] if r["resources"] == ["nodeevacuations"])
    assert "create" in rule["verbs"]


def test_the_eviction_webhook_can_fail_closed_or_be_left_out() -> None:
    closed = _render("operator.evictionWebhook.failurePolicy=Fail")
    config = _one(closed, "ValidatingWebhookConfiguration")
    assert config["webhooks"][0]["failurePolicy"] == "Fail"
    off = _render("operator.evictionWebhook.enabled=false")
    assert _names(off, "ValidatingWebhookConfiguration") == set()
    assert "ferry-webhook-tls" not in _names(off, "Secret")
    container = _container(_one(off, "Deployment"))
    assert {"name": "FERRY_WEBHOOK_PORT", "value": "0"} in container["env"]
    assert "readinessProbe" not in container
    role = _one(off, "ClusterRole", "ferry-operator")
    rule = next(r for r in role["rules"] if r["resources"] == ["nodeevacuations"])
    assert "create" not in rule["verbs"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_operator_image_pods_pass_the_restricted_pod_security_standard(variant: str) -> None:
    """The checks of `restricted` that a pod spec shows (the operator and the hook Jobs)."""
    objects = _render(*VARIANTS[variant])
    checked = [o for o in _workloads(objects) if o["kind"] != "DaemonSet"]
    assert "Deployment" in {o["kind"] for o in checked}
    for obj in checked:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        pod = _pod_spec(obj)
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(host), f"{where}: {host}"
        volume_types = {k for v in pod.get("volumes", []) for k in v if k != "name"}
        assert volume_types <= RESTRICTED_VOLUMES, f"{where}: {volume_types}"
        pod_context = pod["securityContext"]
        assert pod_context["runAsNonRoot"] is True, where
        assert pod_context["runAsUser"] != 0, where
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context.get("privileged", False) is False, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["runAsNonRoot"] is True, where
            assert context.get("runAsUser", pod_context["runAsUser"]) != 0, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert not [p for p in container.get("ports", []) if "hostPort" in p], where


# --- the node-helper ---------------------------------------------------------------


def test_daemonset_environment_is_exactly_what_the_helper_reads() -> None:
    daemonset = _one(_render(), "DaemonSet", "ferry-node-helper")
    container = _container(daemonset)
    assert container["name"] == "node-helper"
    assert container["command"] == ["ferry-helper"]
    assert "args" not in container
    assert container["env"] == HELPER_ENV
    assert container["image"] == "docker.io/ferry/node-helper:0.1.0"


def test_daemonset_values_reach_its_environment() -> None:
    daemonset = _one(
        _render(
            "nodeHelper.sshPort=2222",
            "nodeHelper.heartbeatSeconds=10",
            "nodeHelper.stateDir=/data/ferry",
        ),
        "DaemonSet",
    )
    container = _container(daemonset)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FERRY_SSH_PORT"] == "2222"
    assert env["FERRY_HEARTBEAT_SECONDS"] == "10"
    assert env["FERRY_STATE_DIR"] == "/var/lib/ferry-helper"  # the path inside the container
    assert container["ports"] == [{"name": "ssh", "containerPort": 2222, "protocol": "TCP"}]
    state = next(v for v in _pod_spec(daemonset)["volumes"] if v["name"] == "state")
    assert state["hostPath"] == {"path": "/data/ferry", "type": "DirectoryOrCreate"}


def test_daemonset_is_privileged_on_the_host_namespaces() -> None:
    daemonset = _one(_render(), "DaemonSet")
    pod = _pod_spec(daemonset)
    assert pod["hostNetwork"] is True
    assert pod["hostPID"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["serviceAccountName"] == "ferry-node-helper"
    assert _container(daemonset)["securityContext"] == {"privileged": True}
    assert daemonset["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }


def test_daemonset_mounts() -> None:
    daemonset = _one(_render(), "DaemonSet")
    pod = _pod_spec(daemonset)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in _container(daemonset)["volumeMounts"]}
    assert volumes["ssh"]["secret"] == {
        "secretName": "ferry-node-helper-ssh",
        "defaultMode": 0o400,
        "items": [
            {"key": "operator.pub", "path": "operator.pub", "mode": 0o400},
        ],
    }
    assert mounts["/etc/ferry/ssh"] == {
        "name": "ssh",
        "mountPath": "/etc/ferry/ssh",
        "readOnly": True,
    }
    assert volumes[mounts["/var/lib/ferry-helper"]["name"]]["hostPath"] == {
        "path": "/var/lib/ferry-helper",
        "type": "DirectoryOrCreate",
    }
    storage = mounts["/var/lib/containers"]
    assert storage["mountPropagation"] == "Bidirectional"
    assert volumes[storage["name"]]["hostPath"]["path"] == "/var/lib/containers"
    assert mounts["/etc/containers"]["readOnly"] is True
    for path in ("/run/containers", "/run/libpod", "/run/crun", "/etc/containers"):
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    # The operator's private key never reaches a node.
    assert all(
        v.get("secret", {}).get("secretName") != "ferry-operator-ssh" for v in pod["volumes"]
    )


def test_docker_mounts_only_when_enabled() -> None:
    off = _container(_one(_render(), "DaemonSet"))
    assert not [m for m in off["volumeMounts"] if "docker" in m["mountPath"]]
    daemonset = _one(_render("nodeHelper.docker.enabled=true"), "DaemonSet")
    volumes = {v["name"]: v for v in _pod_spec(daemonset)["volumes"]}
    mounts = {m["mountPath"]: m for m in _container(daemonset)["volumeMounts"]}
    expected = {
        "/run/docker.sock": "Socket",
        "/var/lib/docker": "Directory",
        "/run/containerd": "Directory",
        "/etc/criu": "DirectoryOrCreate",
    }
    for path, kind in expected.items():
        assert volumes[mounts[path]["name"]]["hostPath"] == {"path": path, "type": kind}
    assert mounts["/var/lib/docker"]["mountPropagation"] == "Bidirectional"


def test_daemonset_scheduling_defaults_and_values() -> None:
    pod = _pod_spec(_one(_render(), "DaemonSet"))
    assert "tolerations" not in pod
    assert "priorityClassName" not in pod
    assert "affinity" not in pod
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "limits" not in _pod_spec(_one(_render(), "DaemonSet"))["containers"][0]["resources"]
    pod = _pod_spec(
        _one(
            _render(
                "nodeHelper.tolerations[0].operator=Exists",
                "nodeHelper.priorityClassName=system-node-critical",
                "nodeHelper.nodeSelector.ferry\\.dev/helper=yes",
                "nodeHelper.resources.limits.memory=2Gi",
                "imagePullSecrets[0].name=pull",
            ),
            "DaemonSet",
        )
    )
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "ferry.dev/helper": "yes"}
    assert pod["containers"][0]["resources"]["limits"] == {"memory": "2Gi"}
    assert pod["imagePullSecrets"] == [{"name": "pull"}]


# --- RBAC --------------------------------------------------------------------------


def _rules(objects: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = _one(objects, kind, name)["rules"]
    return rules


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_wildcards_in_any_role(variant: str) -> None:
    for obj in _render(*VARIANTS[variant]):
        for rule in obj.get("rules", []):
            for field in ("verbs", "resources", "apiGroups", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{obj['metadata']['name']}: {rule}"
            assert "nonResourceURLs" not in rule


def test_operator_cannot_touch_secrets_or_exec() -> None:
    grants = _grants(_rules(_render(), "ClusterRole", "ferry-operator"))
    resources = {resource for _, resource, _ in grants}
    assert not resources & {"secrets", "pods/exec", "pods/attach", "nodes/checkpoint"}
    # A PodMigration makes the replacement pod, hands it the source's labels, deletes the
    # source, and reads the ReplicaSet that owns them; it never reaches a kubelet.
    assert {v for g, r, v in grants if (g, r) == ("", "pods")} == {
        "get",
        "list",
        "create",
        "patch",
        "delete",
    }
    assert {(r, v) for g, r, v in grants if g == "apps"} == {("replicasets", "get")}
    # ConfigMaps (failure logs) it may write but never read.
    assert {v for g, r, v in grants if (g, r) == ("", "configmaps")} == {
        "create",
        "patch",
        "delete",
    }
    # It writes only its own resources, their status, events and the logs ConfigMaps.
    writes = {(g, r) for g, r, v in grants if v not in {"get", "list", "watch"}}
    assert writes == {
        *(("ferry.dev", plural) for plural in OPERATED),
        *(("ferry.dev", f"{plural}/status") for plural in OPERATED),
        ("", "events"),
        ("events.k8s.io", "events"),
        ("", "configmaps"),
        ("", "pods"),
        # A NodeEvacuation: its status, and the cordon of its node.
        ("ferry.dev", "nodeevacuations"),
        ("ferry.dev", "nodeevacuations/status"),
        ("", "nodes"),
    }
    assert {v for g, r, v in grants if (g, r) == ("", "nodes")} == {"get", "list", "patch"}


def test_operator_serves_each_of_its_kinds_alike() -> None:
    grants = _grants(_rules(_render(), "ClusterRole", "ferry-operator"))
    for plural in OPERATED:
        verbs = {v for g, r, v in grants if (g, r) == ("ferry.dev", plural)}
        status_verbs = {v for g, r, v in grants if (g, r) == ("ferry.dev", f"{plural}/status")}
        extra = {
            "containercheckpoints": {"create", "delete"},  # schedules and their retention
            # ttlSecondsAfterFinished; a NodeEvacuation creates one per workload
            "containermigrations": {"delete", "create"},
            "containerrestores": {"delete"},  # ttlSecondsAfterFinished
            "podmigrations": {"delete", "create"},
        }.get(plural, set())
        assert verbs == {"get", "list", "watch", "patch"} | extra, plural
        assert status_verbs == {"get", "patch"}, plural


def test_node_helper_only_describes_its_node() -> None:
    grants = _grants(_rules(_render(), "ClusterRole", "ferry-node-helper"))
    assert grants == {
        # Its own kubelet's checkpoint API, for the pods a PodMigration moves.
        ("", "nodes/checkpoint", "create"),
        ("ferry.dev", "nodehelpers", "get"),
        ("ferry.dev", "nodehelpers", "create"),
        # Owned by its Node: the Node's UID read, an older NodeHelper given that owner.
        ("", "nodes", "get"),
        ("ferry.dev", "nodehelpers", "patch"),
        ("ferry.dev", "nodehelpers/status", "get"),
        ("ferry.dev", "nodehelpers/status", "patch"),
    }


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bindings_name_existing_roles_and_their_own_accounts(variant: str) -> None:
    objects = _render(*VARIANTS[variant])
    roles = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for binding in (o for o in objects if o["kind"] in {"ClusterRoleBinding", "RoleBinding"}):
        ref = binding["roleRef"]
        assert (ref["kind"], ref["name"]) in roles
        assert ref["name"] == binding["metadata"]["name"]
        assert _hooks(binding) == _hooks(_one(objects, ref["kind"], ref["name"]))
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert subject["namespace"] == NAMESPACE


def test_each_pod_runs_as_its_own_service_account() -> None:
    objects = _render()
    accounts = {
        _pod_spec(o)["serviceAccountName"]: o["metadata"]["name"] for o in _workloads(objects)
    }
    assert accounts == {
        "ferry-operator": "ferry-operator",
        "ferry-node-helper": "ferry-node-helper",
        "ferry-ssh-keygen": "ferry-ssh-keygen",
        "ferry-uninstall-cleanup": "ferry-uninstall-cleanup",
    }
    assert set(accounts) == _names(objects, "ServiceAccount")


def test_service_accounts_can_be_brought() -> None:
    objects = _render(*VARIANTS["overrides"])
    assert _names(objects, "ServiceAccount") == {"ship-ssh-keygen", "ship-uninstall-cleanup"}
    assert _pod_spec(_one(objects, "Deployment"))["serviceAccountName"] == "ship-operator"
    binding = _one(objects, "ClusterRoleBinding", "ship-node-helper")
    assert binding["subjects"][0]["name"] == "ship-node-helper"


# --- users' roles, aggregated into Kubernetes' default ones -------------------------

AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def _aggregated_into(role: dict[str, Any]) -> set[str]:
    labels: dict[str, str] = role["metadata"]["labels"]
    aggregated = {k: v for k, v in labels.items() if k.startswith(AGGREGATE)}
    assert set(aggregated.values()) == {"true"}, labels  # a string, as labels are
    return {k.removeprefix(AGGREGATE) for k in aggregated}


def test_namespace_users_get_ferry_through_the_default_roles() -> None:
    objects = _render()
    view = _one(objects, "ClusterRole", "ferry-view")
    edit = _one(objects, "ClusterRole", "ferry-edit")
    assert _aggregated_into(view) == {"view", "edit", "admin"}
    assert _aggregated_into(edit) == {"edit", "admin"}
    # The five namespaced kinds only: no status, no NodeHelpers, nothing else.
    assert _grants(view["rules"]) == {
        ("ferry.dev", plural, verb) for plural in OPERATED for verb in ("get", "list", "watch")
    }
    assert _grants(edit["rules"]) == {
        ("ferry.dev", plural, verb)
        for plural in OPERATED
        for verb in ("create", "update", "patch", "delete", "deletecollection")
    }
    # Nothing binds them: the default roles take their rules in.
    bound = {o["roleRef"]["name"] for o in objects if o["kind"].endswith("RoleBinding")}
    assert not bound & {"ferry-view", "ferry-edit"}


def test_aggregated_roles_can_be_left_out() -> None:
    objects = _render("rbac.aggregateToDefaultRoles=false")
    assert _names(objects, "ClusterRole") == {
        "ferry-operator",
        "ferry-node-helper",
        "ferry-uninstall-cleanup",
    }
    renamed = _render("fullnameOverride=ship")
    assert {"ship-view", "ship-edit"} <= _names(renamed, "ClusterRole")


# --- admission policies -------------------------------------------------------------

HELPER_POLICY = "ferry-node-helper-own-nodehelper"
OPERATOR_POLICY = "ferry-operator-log-configmaps"
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def _policy(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = _one(objects, "ValidatingAdmissionPolicy", name)["spec"]
    return spec


def _match_users(spec: dict[str, Any]) -> list[str]:
    users = []
    for condition in spec["matchConditions"]:
        matched = re.fullmatch(r"request\.userInfo\.username == '([^']+)'", condition["expression"])
        assert matched, condition
        users.append(matched.group(1))
    return users


@pytest.mark.parametrize(
    ("values", "names", "users"),
    [
        (
            (),
            (HELPER_POLICY, OPERATOR_POLICY),
            (
                f"system:serviceaccount:{NAMESPACE}:ferry-node-helper",
                f"system:serviceaccount:{NAMESPACE}:ferry-operator",
            ),
        ),
        (
            VARIANTS["overrides"]
            + ("nodeHelper.serviceAccount.name=helpers", "operator.serviceAccount.name=op"),
            ("ship-node-helper-own-nodehelper", "ship-operator-log-configmaps"),
            (
                f"system:serviceaccount:{NAMESPACE}:helpers",
                f"system:serviceaccount:{NAMESPACE}:op",
            ),
        ),
    ],
)
def test_each_policy_binds_and_judges_only_its_service_account(
    values: tuple[str, ...], names: tuple[str, str], users: tuple[str, str]
) -> None:
    objects = _render(*values)
    for kind in POLICY_KINDS:
        named = {n for n in _names(objects, kind) if not n.endswith("-deprecated-fields")}
        assert named == set(names), kind
    for name, user in zip(names, users, strict=True):
        policy = _one(objects, "ValidatingAdmissionPolicy", name)
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
        spec = policy["spec"]
        assert spec["failurePolicy"] == "Fail"
        assert _match_users(spec) == [user]
        assert "paramKind" not in spec
        for validation in spec["validations"]:
            assert validation["reason"] == "Forbidden"
            assert validation["message"]
            assert validation["messageExpression"]
        binding = _one(objects, "ValidatingAdmissionPolicyBinding", name)
        assert binding["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}


def test_node_helper_policy_ties_each_nodehelper_write_to_the_tokens_node() -> None:
    spec = _policy(_render(), HELPER_POLICY)
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["ferry.dev"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["nodehelpers", "nodehelpers/status"],
        }
    ]
    variables = {v["name"]: " ".join(v["expression"].split()) for v in spec["variables"]}
    claim = "request.userInfo.extra['authentication.kubernetes.io/node-name']"
    # The claim is read only where it exists (extra is absent from a user without any).
    assert variables["boundNode"] == (
        "has(request.userInfo.extra)"
        " && 'authentication.kubernetes.io/node-name' in request.userInfo.extra"
        f" && size({claim}) > 0 ? {claim}[0] : ''"
    )
    # A DELETE has no object: the old one names the NodeHelper.
    assert variables["target"] == (
        "request.operation == 'DELETE' ? oldObject.metadata.name : object.metadata.name"
    )
    [validation] = spec["validations"]
    # No claim, no write.
    assert validation["expression"] == (
        "variables.boundNode != '' && variables.boundNode == variables.target"
    )
    message = validation["messageExpression"]
    assert "variables.boundNode" in message
    assert "variables.target" in message


def test_operator_policy_keeps_it_to_its_failure_log_configmaps() -> None:
    spec = _policy(_render(), OPERATOR_POLICY)
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "resources": ["configmaps"],
        }
    ]
    variables = {v["name"]: " ".join(v["expression"].split()) for v in spec["variables"]}
    # The label the operator puts on them.
    assert LOGS_LABEL == "ferry.dev/logs-of"
    label = f"'{LOGS_LABEL}'"
    assert variables["oldLabelled"] == (
        "request.operation == 'CREATE'"
        f" || (has(oldObject.metadata.labels) && {label} in oldObject.metadata.labels)"
    )
    assert variables["newLabelled"] == (
        "request.operation == 'DELETE'"
        f" || (has(object.metadata.labels) && {label} in object.metadata.labels)"
    )
    [validation] = spec["validations"]
    assert validation["expression"] == "variables.oldLabelled && variables.newLabelled"
    assert " ".join(validation["messageExpression"].split()) == (
        "'the Ferry operator writes only its own failure-log ConfigMaps"
        " (label ferry.dev/logs-of); ' + request.namespace + '/' + variables.name"
        " + ' is not one'"
    )


@pytest.mark.parametrize(
    ("values", "api_versions"),
    [
        (("admissionPolicies.enabled=false",), CLUSTER_API_VERSIONS),
        # An API server without ValidatingAdmissionPolicy: RBAC alone.
        ((), ()),
    ],
    ids=["disabled", "not-served"],
)
def test_policies_are_left_out_when_off_or_not_served(
    values: tuple[str, ...], api_versions: tuple[str, ...]
) -> None:
    objects = _render(*values, api_versions=api_versions)
    for kind in POLICY_KINDS:
        assert _names(objects, kind) == set(), kind
    # RBAC stays as it is.
    for role in ("ferry-node-helper", "ferry-operator"):
        assert _rules(objects, "ClusterRole", role) == _rules(_render(), "ClusterRole", role)


# --- SSH identities and the keygen hook --------------------------------------------


def test_keygen_job_makes_both_secrets_before_install_and_upgrade() -> None:
    objects = _render()
    job = _one(objects, "Job", "ferry-ssh-keygen")
    assert _container(job)["command"] == [
        "ferry-operator",
        "keygen",
        "--namespace",
        NAMESPACE,
        "--operator-secret",
        "ferry-operator-ssh",
        "--node-helper-secret",
        "ferry-node-helper-ssh",
    ]
    assert _container(job)["image"] == "docker.io/ferry/operator:0.1.0"
    assert _pod_spec(job)["restartPolicy"] == "Never"
    # The chart makes no SSH Secret: Helm cannot derive an OpenSSH public key (the
    # webhook's TLS Secret is the only one it renders).
    assert _names(objects, "Secret") == {"ferry-webhook-tls"}
    rbac = [o for o in objects if o["metadata"]["name"] == "ferry-ssh-keygen"]
    assert sorted(o["kind"] for o in rbac) == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    for obj in rbac:
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == HOOK_DELETE_POLICY
        # The account and its grant exist before the Job starts.
        weight = int(annotations["helm.sh/hook-weight"])
        assert (weight == 0) if obj["kind"] == "Job" else (weight < 0), obj["kind"]


def test_keygen_role_reaches_only_the_two_secrets() -> None:
    rules = _rules(_render(), "Role", "ferry-ssh-keygen")
    assert rules == [
        # Create cannot be limited by name; it stands alone.
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["ferry-operator-ssh", "ferry-node-helper-ssh"],
            "verbs": ["get", "patch"],
        },
    ]


def test_secret_names_follow_the_values() -> None:
    objects = _render(*VARIANTS["overrides"])
    command = _container(_one(objects, "Job", "ship-ssh-keygen"))["command"]
    assert command[-4:] == ["--operator-secret", "op-keys", "--node-helper-secret", "helper-keys"]
    assert _rules(objects, "Role", "ship-ssh-keygen")[1]["resourceNames"] == [
        "op-keys",
        "helper-keys",
    ]
    operator_volumes = _pod_spec(_one(objects, "Deployment"))["volumes"]
    helper_volumes = _pod_spec(_one(objects, "DaemonSet"))["volumes"]
    assert {v.get("secret", {}).get("secretName") for v in operator_volumes} >= {"op-keys"}
    assert {v.get("secret", {}).get("secretName") for v in helper_volumes} >= {"helper-keys"}


def test_ssh_create_off_renders_no_keygen() -> None:
    objects = _render("ssh.create=false")
    assert [o for o in objects if "keygen" in o["metadata"]["name"]] == []
    assert _one(objects, "Deployment")  # the workloads still mount the Secrets


# --- uninstall ---------------------------------------------------------------------


def test_pre_delete_hook_clears_migrations_with_its_own_narrow_role() -> None:
    objects = _render()
    job = _one(objects, "Job", "ferry-uninstall-cleanup")
    assert _container(job)["command"] == [
        "ferry-operator",
        "uninstall-cleanup",
        "--operator-deployment=ferry-operator",
        "--namespace=ferry-system",
    ]
    assert _grants(_rules(objects, "ClusterRole", "ferry-uninstall-cleanup")) == {
        ("ferry.dev", plural, verb)
        for plural in (*OPERATED, "nodeevacuations")
        for verb in ("get", "list", "delete", "patch")
    }
    # In its own namespace: the operator's Deployment by name (to stop it), and pods
    # (to see it gone).
    role = _rules(objects, "Role", "ferry-uninstall-cleanup")
    assert _grants(role) == {
        ("apps", "deployments", "get"),
        ("apps", "deployments", "patch"),
        ("", "pods", "list"),
    }
    assert role[0]["resourceNames"] == ["ferry-operator"]
    hooked = [o for o in objects if o["metadata"]["name"] == "ferry-uninstall-cleanup"]
    assert sorted(o["kind"] for o in hooked) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Job",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    for obj in hooked:
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == HOOK_DELETE_POLICY
        weight = int(annotations["helm.sh/hook-weight"])
        assert (weight == 0) if obj["kind"] == "Job" else (weight < 0), obj["kind"]


def test_uninstall_keeps_checkpoints_unless_told() -> None:
    objects = _render("uninstall.deleteCheckpoints=true")
    job = _one(objects, "Job", "ferry-uninstall-cleanup")
    assert _container(job)["command"][-1] == "--delete-checkpoints"
    # The same grants either way: deleting a checkpoint is a delete it has already.
    assert _rules(objects, "ClusterRole", "ferry-uninstall-cleanup") == _rules(
        _render(), "ClusterRole", "ferry-uninstall-cleanup"
    )


def test_only_the_hooks_are_hooks() -> None:
    for obj in _render():
        name = obj["metadata"]["name"]
        hooked = name.endswith(("-ssh-keygen", "-uninstall-cleanup"))
        assert (_hooks(obj) is not None) == hooked, f"{obj['kind']} {name}"


# --- values and their schema -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("operator.allowAnyNamespace=maybe", "got string, want boolean"),
        ("operator.replicas=two", "additional properties 'replicas' not allowed"),
        ("surprise=1", "additional properties 'surprise' not allowed"),
        ("nodeHelper.image.surprise=1", "additional properties 'surprise' not allowed"),
        ("operator.metrics.port=70000", "maximum"),
        ("nodeHelper.sshPort=0", "minimum"),
        ("nodeHelper.heartbeatSeconds=fast", "want integer"),
        ("nodeHelper.stateDir=relative", "does not match pattern"),
        ("operator.image.pullPolicy=Sometimes", "value must be one of"),
        ("operator.resources.limits.memory=lots", "does not match pattern"),
        ("nodeHelper.tolerations[0].operater=Exists", "additional properties 'operater'"),
        ("rbac.aggregateToDefaultRoles=maybe", "got string, want boolean"),
        ("admissionPolicies.enabled=maybe", "got string, want boolean"),
        ("admissionPolicies.validate=true", "additional properties 'validate' not allowed"),
        ("uninstall.deleteCheckpoints=yes", "got string, want boolean"),
        ("storage.allowedRegistries=registry.example.com", "got string, want array"),
        ("storage.allowedRegistries[0]=https://registry.example.com", "does not match pattern"),
        ("storage.allowedRegistries[0]=a.example\\,b.example", "does not match pattern"),
        ("checkpoints.encryption.secretName=Keys", "does not match pattern"),
        ("checkpoints.encryption.activeKey=", "does not match pattern"),
        ("checkpoints.encryption.activeKey=a/b", "does not match pattern"),
        ("checkpoints.encryption.activeKey=..data", "does not match pattern"),
        ("checkpoints.encryption.key=k", "additional properties 'key' not allowed"),
        ("commonLabels.app\\.kubernetes\\.io/component=x", "invalid propertyName"),
        ("operator.podLabels.helm\\.sh/chart=x", "invalid propertyName"),
        ("commonLabels.team=1", "got number, want string"),
        ("operator.image.digest=latest", "does not match pattern"),
        ("nodeHelper.image.digest=sha256:abc", "does not match pattern"),
        ("operator.logLevel=chatty", "value must be one of"),
        ("operator.metrics.serviceMonitor.interval=1 minute", "does not match pattern"),
        ("operator.metrics.podMonitor.scrape=1s", "additional properties 'scrape' not allowed"),
        ("operator.extraEnv[0].value=x", "missing property 'name'"),
        ("operator.topologySpreadConstraints[0].maxSkew=1", "missing propert"),
        ("grafana.dashboards.enabled=yes", "got string, want boolean"),
    ],
)
def test_schema_refuses(value: str, words: str) -> None:
    result = _template(value, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert words in result.stderr


def test_a_stale_limit_below_the_heartbeat_is_refused() -> None:
    result = _template("operator.helperStaleSeconds=30", check=False)
    assert result.returncode != 0
    assert "must exceed nodeHelper.heartbeatSeconds" in result.stderr


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        resolved: dict[str, Any] = _schema()["definitions"][node["$ref"].rsplit("/", 1)[1]]
        return resolved
    return node


def _walk_schema(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    node = _resolve(node)
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk_schema(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk_schema(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk_schema(node["additionalProperties"], f"{path}{{}}")


def test_schema_closes_every_object() -> None:
    schema = _schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    for path, node in _walk_schema(schema):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path or "(top)"


def _leaves(
    schema: dict[str, Any], values: dict[str, Any], prefix: str = ""
) -> Iterator[tuple[str, Any]]:
    """(path, default) of every value: a group is an inline object schema with properties."""
    properties = schema["properties"]
    assert set(values) <= set(properties), f"{prefix or '(top)'}: values outside the schema"
    for name, sub in properties.items():
        if name == "global":  # Helm's own, for parent charts
            continue
        path = f"{prefix}{name}"
        assert name in values, f"{path} is in the schema but not in values.yaml"
        if "$ref" not in sub and sub.get("type") == "object" and "properties" in sub:
            yield from _leaves(sub, values[name], f"{path}.")
        else:
            yield path, values[name]


def _values() -> list[tuple[str, Any]]:
    return list(_leaves(_schema(), yaml.safe_load((CHART / "values.yaml").read_text())))


def test_every_value_has_a_comment_starting_with_its_name() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: dict[str, int] = {}
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        key = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not key:
            continue
        indent = len(key.group(1))
        stack = [(i, k) for i, k in stack if i < indent]
        stack.append((indent, key.group(2)))
        path = ".".join(k for _, k in stack)
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#"):
            above -= 1
        block = lines[above + 1 : number]
        if block and block[0].strip().startswith(f"# {path} -- "):
            documented[path] = number
    missing = [path for path, _ in _values() if path not in documented]
    assert missing == []


def _doc_rows() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+)` \| `(.*?)` \|", VALUES_DOC.read_text(), re.MULTILINE)
    return dict(rows)


def test_values_table_lists_every_value_with_its_default() -> None:
    expected = {path: json.dumps(default, separators=(", ", ": ")) for path, default in _values()}
    assert _doc_rows() == expected, f"{VALUES_DOC} is out of step with charts/ferry/values.yaml"


# --- CRDs --------------------------------------------------------------------------


def test_chart_crds_are_a_copy_of_the_generated_ones() -> None:
    generated = {p.name: p.read_text() for p in sorted(CRDS.glob("*.yaml"))}
    copied = {p.name: p.read_text() for p in sorted(CHART_CRDS.glob("*.yaml"))}
    assert generated, CRDS
    assert copied == generated, (
        "charts/ferry/crds-src/ differs from crds/: run `cp crds/*.yaml charts/ferry/crds-src/`"
    )


def _without_chart_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in crd["metadata"].items() if k not in {"labels", "annotations"}}
    return {**crd, "metadata": meta}


def test_templated_crds_are_the_generated_ones_kept_on_uninstall() -> None:
    rendered = _render_with_sources()
    generated = [yaml.safe_load(p.read_text()) for p in sorted(CRDS.glob("*.yaml"))]
    by_name = {
        o["metadata"]["name"]: o for _, o in rendered if o["kind"] == "CustomResourceDefinition"
    }
    assert sorted(by_name) == sorted(c["metadata"]["name"] for c in generated)
    assert set(by_name) == {
        f"{plural}.ferry.dev"
        for plural in (*OPERATED, "nodehelpers", "nodeevacuations", "migrationpolicies")
    }
    # One template per CRD, named after it.
    assert {
        source: obj["metadata"]["name"]
        for source, obj in rendered
        if obj["kind"] == "CustomResourceDefinition"
    } == {f"ferry/templates/crd-{name.split('.')[0]}.yaml": name for name in by_name}
    for crd in generated:
        templated = by_name[crd["metadata"]["name"]]
        assert _without_chart_metadata(templated) == crd
        assert templated["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert templated["metadata"]["labels"]["app.kubernetes.io/component"] == "crds"


def test_crds_keep_off_drops_the_policy() -> None:
    for crd in (o for o in _render("crds.keep=false") if o["kind"] == "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


def test_crds_disabled_renders_no_crd() -> None:
    assert _names(_render("crds.enabled=false"), "CustomResourceDefinition") == set()
    # Nor does the chart ship any in crds/, which Helm would install regardless.
    assert not (CHART / "crds").exists()


# --- notes -------------------------------------------------------------------------


def test_notes_say_how_to_check_and_migrate() -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "kubectl get nodehelpers" in notes
    assert "kubectl apply -f examples/containermigration.yaml" in notes
    assert "ferry.dev/namespace=" in notes
    assert "pod-security.kubernetes.io/enforce=privileged" in notes


def test_registry_credentials_are_mounted_only_when_named() -> None:
    plain = _one(_render(), "DaemonSet")
    assert "registry-auth" not in {v["name"] for v in _pod_spec(plain)["volumes"]}
    daemonset = _one(_render("nodeHelper.registryAuthSecret=reg-auth"), "DaemonSet")
    volumes = {v["name"]: v for v in _pod_spec(daemonset)["volumes"]}
    assert volumes["registry-auth"]["secret"] == {
        "secretName": "reg-auth",
        "defaultMode": 0o400,
        "items": [{"key": "auth.json", "path": "auth.json", "mode": 0o400}],
    }
    mounts = {m["mountPath"]: m for m in _container(daemonset)["volumeMounts"]}
    assert mounts["/etc/ferry/registry"] == {
        "name": "registry-auth",
        "mountPath": "/etc/ferry/registry",
        "readOnly": True,
    }


# --- where checkpoints go, and their encryption ------------------------------------


def test_allowed_registries_reach_the_operator_alone() -> None:
    objects = _render("storage.allowedRegistries={registry.example.com/team,localhost:5000}")
    env = {e["name"]: e.get("value") for e in _container(_one(objects, "Deployment"))["env"]}
    assert env["FERRY_ALLOWED_REGISTRIES"] == "registry.example.com/team,localhost:5000"
    helper_env = _container(_one(objects, "DaemonSet"))["env"]
    assert "FERRY_ALLOWED_REGISTRIES" not in {e["name"] for e in helper_env}


def test_checkpoint_keys_are_mounted_only_when_named() -> None:
    plain = _one(_render(), "DaemonSet")
    assert "checkpoint-keys" not in {v["name"] for v in _pod_spec(plain)["volumes"]}
    assert _container(plain)["env"] == HELPER_ENV
    objects = _render(
        "checkpoints.encryption.secretName=ferry-checkpoint-keys",
        "checkpoints.encryption.activeKey=2025-06",
    )
    daemonset = _one(objects, "DaemonSet")
    volumes = {v["name"]: v for v in _pod_spec(daemonset)["volumes"]}
    # Every key of the Secret: the active one encrypts, all of them decrypt.
    assert volumes["checkpoint-keys"]["secret"] == {
        "secretName": "ferry-checkpoint-keys",
        "defaultMode": 0o400,
    }
    mounts = {m["mountPath"]: m for m in _container(daemonset)["volumeMounts"]}
    assert mounts["/etc/ferry/checkpoint-keys"] == {
        "name": "checkpoint-keys",
        "mountPath": "/etc/ferry/checkpoint-keys",
        "readOnly": True,
    }
    assert _container(daemonset)["env"] == [
        *HELPER_ENV,
        {"name": "FERRY_CHECKPOINT_KEYS_DIR", "value": "/etc/ferry/checkpoint-keys"},
        {"name": "FERRY_CHECKPOINT_KEY", "value": "2025-06"},
    ]
    # The operator never sees a key.
    operator = _one(objects, "Deployment")
    assert "ferry-checkpoint-keys" not in json.dumps(operator)
    assert "FERRY_CHECKPOINT" not in json.dumps(operator)


# --- operability: labels, annotations, images, extra settings ------------------------

DIGEST = "sha256:" + "ab" * 32


def test_common_labels_reach_every_object_and_pod_but_no_selector() -> None:
    objects = _render(*VARIANTS["monitoring"])
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        assert obj["metadata"]["labels"]["team"] == "platform", where
        if "template" in obj.get("spec", {}):
            assert obj["spec"]["template"]["metadata"]["labels"]["team"] == "platform", where
        if "selector" in obj.get("spec", {}) and obj["kind"] in {"Deployment", "DaemonSet"}:
            assert "team" not in obj["spec"]["selector"]["matchLabels"], where
            assert "tier" not in obj["spec"]["selector"]["matchLabels"], where
    assert "team" not in _one(objects, "Service")["spec"]["selector"]
    assert "team" not in json.dumps(_one(objects, "ServiceMonitor")["spec"]["selector"])


def test_pod_labels_and_annotations_go_to_their_component_s_pods_alone() -> None:
    objects = _render(
        "operator.podLabels.tier=control",
        "operator.podAnnotations.example\\.com/scrape=yes",
        "nodeHelper.podLabels.tier=node",
        "nodeHelper.podAnnotations.example\\.com/owner=infra",
    )
    operator, helper = _one(objects, "Deployment"), _one(objects, "DaemonSet")
    assert operator["spec"]["template"]["metadata"]["labels"]["tier"] == "control"
    assert operator["spec"]["template"]["metadata"]["annotations"] == {"example.com/scrape": "yes"}
    assert helper["spec"]["template"]["metadata"]["labels"]["tier"] == "node"
    assert helper["spec"]["template"]["metadata"]["annotations"] == {"example.com/owner": "infra"}
    assert "tier" not in operator["metadata"]["labels"]
    for job in (o for o in objects if o["kind"] == "Job"):
        assert "tier" not in job["spec"]["template"]["metadata"]["labels"]
    plain = _render()
    for workload in (_one(plain, "Deployment"), _one(plain, "DaemonSet")):
        assert "annotations" not in workload["spec"]["template"]["metadata"]


def test_service_account_annotations() -> None:
    objects = _render(
        "operator.serviceAccount.annotations.iam\\.example/role=ferry-operator",
        "nodeHelper.serviceAccount.annotations.iam\\.example/role=ferry-helper",
    )
    assert _one(objects, "ServiceAccount", "ferry-operator")["metadata"]["annotations"] == {
        "iam.example/role": "ferry-operator"
    }
    assert _one(objects, "ServiceAccount", "ferry-node-helper")["metadata"]["annotations"] == {
        "iam.example/role": "ferry-helper"
    }
    for account in (o for o in _render() if o["kind"] == "ServiceAccount" and not _hooks(o)):
        assert "annotations" not in account["metadata"], account["metadata"]["name"]


def test_images_are_fully_qualified_and_a_digest_replaces_the_tag() -> None:
    for obj in _workloads(_render()):
        registry = _container(obj)["image"].split("/")[0]
        assert "." in registry or ":" in registry, f"{obj['metadata']['name']}: {registry}"
    objects = _render(
        f"operator.image.digest={DIGEST}",
        f"nodeHelper.image.digest={DIGEST}",
        "operator.image.tag=ignored",
    )
    for obj in _workloads(objects):
        name = "node-helper" if obj["kind"] == "DaemonSet" else "operator"
        assert _container(obj)["image"] == f"docker.io/ferry/{name}@{DIGEST}", obj["kind"]


def test_extra_args_and_env_come_after_the_chart_s_own() -> None:
    objects = _render(
        "operator.extraArgs={--instance=blue}",
        "operator.extraEnv[0].name=HTTPS_PROXY",
        "operator.extraEnv[0].value=http://proxy:3128",
        "operator.extraEnv[1].name=NO_PROXY",
        "operator.extraEnv[1].value=.svc",
        "nodeHelper.extraEnv[0].name=TZ",
        "nodeHelper.extraEnv[0].value=UTC",
    )
    operator = _container(_one(objects, "Deployment"))
    assert operator["command"] == ["ferry-operator"]
    assert operator["args"] == ["--instance=blue"]
    assert operator["env"] == [
        *OPERATOR_ENV,
        {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
        {"name": "NO_PROXY", "value": ".svc"},
    ]
    helper = _container(_one(objects, "DaemonSet"))
    assert "args" not in helper, "ferry-helper reads no flags: settings come from env"
    assert helper["env"] == [*HELPER_ENV, {"name": "TZ", "value": "UTC"}]
    # The hook Jobs run the operator's image, not its arguments or environment.
    for job in (o for o in objects if o["kind"] == "Job"):
        assert "HTTPS_PROXY" not in json.dumps(job)


def test_topology_spread_counts_the_operator_s_own_pods_unless_told() -> None:
    deployment = _one(
        _render(
            "operator.topologySpreadConstraints[0].maxSkew=1",
            "operator.topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
            "operator.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
            "operator.topologySpreadConstraints[1].maxSkew=2",
            "operator.topologySpreadConstraints[1].topologyKey=kubernetes.io/hostname",
            "operator.topologySpreadConstraints[1].whenUnsatisfiable=DoNotSchedule",
            "operator.topologySpreadConstraints[1].labelSelector.matchLabels.app=other",
        ),
        "Deployment",
    )
    first, second = _pod_spec(deployment)["topologySpreadConstraints"]
    assert first == {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }
    assert second["labelSelector"] == {"matchLabels": {"app": "other"}}
    assert "topologySpreadConstraints" not in _pod_spec(_one(_render(), "Deployment"))


# --- Prometheus and Grafana ------------------------------------------------------------

#: The Prometheus Operator's duration pattern (monitoring.coreos.com/v1 `Duration`).
PROMETHEUS_DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)


def test_no_monitor_unless_asked() -> None:
    kinds = {o["kind"] for o in _render()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "ConfigMap"}


def test_service_monitor_scrapes_the_metrics_port_of_the_operator_service() -> None:
    objects = _render(
        "operator.metrics.serviceMonitor.enabled=true",
        "operator.metrics.serviceMonitor.namespace=monitoring",
        "operator.metrics.serviceMonitor.labels.release=kube-prometheus-stack",
        "operator.metrics.serviceMonitor.interval=30s",
        "operator.metrics.serviceMonitor.scrapeTimeout=10s",
    )
    monitor = _one(objects, "ServiceMonitor", "ferry-operator")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "monitoring"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) == {"namespaceSelector", "selector", "endpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # It selects the operator Service, and that Service alone.
    services = [o for o in objects if o["kind"] == "Service"]
    selected = [
        s
        for s in services
        if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["ferry-operator"]
    port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
    assert spec["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "scheme": "http",
            "interval": "30s",
            "scrapeTimeout": "10s",
        }
    ]
    assert spec["endpoints"][0]["port"] in port_names
    for field in ("interval", "scrapeTimeout"):
        assert PROMETHEUS_DURATION.match(spec["endpoints"][0][field])


def test_service_monitor_defaults_are_prometheus_durations() -> None:
    monitor = _one(_render("operator.metrics.serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("60s", "30s")
    empty = _render(
        "operator.metrics.serviceMonitor.enabled=true",
        "operator.metrics.serviceMonitor.interval=",
        "operator.metrics.serviceMonitor.scrapeTimeout=",
    )
    assert _one(empty, "ServiceMonitor")["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "scheme": "http"}
    ]


def test_pod_monitor_scrapes_the_operator_pod() -> None:
    objects = _render("operator.metrics.podMonitor.enabled=true")
    monitor = _one(objects, "PodMonitor", "ferry-operator")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert _names(objects, "ServiceMonitor") == set()
    deployment = _one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] in {p["name"] for p in _container(deployment)["ports"]}
    assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (("operator.metrics.serviceMonitor.enabled=true", "operator.metrics.port=0"), "port"),
        (("operator.metrics.podMonitor.enabled=true", "operator.metrics.port=0"), "port"),
        (
            (
                "operator.metrics.serviceMonitor.enabled=true",
                "operator.metrics.podMonitor.enabled=true",
            ),
            "not both",
        ),
    ],
)
def test_a_monitor_that_cannot_scrape_is_refused(values: tuple[str, ...], words: str) -> None:
    result = _template(*values, check=False)
    assert result.returncode != 0
    assert words in result.stderr


DASHBOARD = CHART / "dashboards" / "ferry.json"


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_the_dashboard_configmap_is_for_grafana_s_sidecar() -> None:
    objects = _render(
        "grafana.dashboards.enabled=true",
        "grafana.dashboards.namespace=monitoring",
        "grafana.dashboards.annotations.grafana_folder=Ferry",
    )
    config_map = _one(objects, "ConfigMap", "ferry-grafana-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Ferry"}
    assert json.loads(config_map["data"]["ferry.json"]) == json.loads(DASHBOARD.read_text())


def test_the_dashboard_asks_only_for_metrics_the_operator_exports() -> None:
    from ferry_operator import metrics  # noqa: PLC0415 - prometheus_client registers on import

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {
        family.name + suffix
        for collector in (metrics.MIGRATIONS, metrics.DOWNTIME, metrics.DURATION, metrics.BYTES)
        for family in collector.describe()
        for suffix in suffixes[family.type]
    }
    asked = {name for expr in _dashboard_queries() for name in re.findall(r"ferry_\w+", expr)}
    assert asked, "the dashboard queries no Ferry metric"
    assert asked <= exported, asked - exported
    # Each metric the operator exports has a panel.
    for family in (
        "ferry_migrations_total",
        "ferry_migration_downtime_seconds_bucket",
        "ferry_migration_duration_seconds_bucket",
        "ferry_migration_bytes_total",
    ):
        assert family in asked, family


def test_the_dashboard_renderer_reads_every_query_and_interpolates_as_prometheus() -> None:
    """hack/render-dashboard.py draws docs/dashboard.png: it must read every query."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location(
        "render_dashboard", ROOT / "hack" / "render-dashboard.py"
    )
    assert spec
    assert spec.loader
    render = importlib.util.module_from_spec(spec)
    sys.modules["render_dashboard"] = render
    spec.loader.exec_module(render)
    buckets = {"0.5": 0.0, "1.0": 2.0, "2.0": 3.0, "+Inf": 4.0}
    scrape = render.Scrape(
        100.0,
        {
            "ferry_migration_downtime_seconds_bucket": {
                frozenset({("le", le)}): count for le, count in buckets.items()
            },
            "ferry_migrations_total": {
                frozenset({("outcome", "succeeded"), ("reason", "Succeeded")}): 3.0,
                frozenset({("outcome", "failed"), ("reason", "ContainerNotFound")}): 1.0,
            },
        },
    )
    window = render.Window(range=100.0, rate_interval=20.0)
    for expr in _dashboard_queries():
        render.Parser(expr).parse()([scrape], 100.0, window)
    quantile = (
        "histogram_quantile(0.25, sum by (le) "
        "(increase(ferry_migration_downtime_seconds_bucket[$__range])))"
    )
    # Rank 1 of 4 falls in (0.5, 1], which holds 2: a quarter of the way in, as Prometheus.
    assert render.Parser(quantile).parse()([scrape], 100.0, window) == {frozenset(): 0.75}
    ratio = render.Parser(
        'sum(increase(ferry_migrations_total{outcome="succeeded"}[$__range]))'
        " / sum(increase(ferry_migrations_total[$__range]))"
    ).parse()([scrape], 100.0, window)
    assert ratio == {frozenset(): 0.75}


def test_a_renamed_field_under_its_former_name_is_warned_about_never_refused() -> None:
    objects = _render()
    policy = _policy(objects, "ferry-deprecated-fields")
    assert policy["failurePolicy"] == "Ignore"
    (rule,) = policy["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["containermigrations", "containercheckpoints"]
    tls, schedule = policy["validations"]
    assert tls["expression"].endswith("!has(object.spec.pageServerTls)")
    assert "rename it spec.pageServerTLS" in tls["message"]
    assert schedule["expression"].endswith("!has(object.spec.schedule)")
    assert "use a ContainerCheckpointSchedule" in schedule["message"]
    binding = _one(objects, "ValidatingAdmissionPolicyBinding", "ferry-deprecated-fields")
    assert binding["spec"]["validationActions"] == ["Warn"]
