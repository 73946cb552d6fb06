"""Playing kubelet for Ferry's own workloads: a pod template made into a process.

The local cluster has no kubelet, so the harness reads the pod templates the
chart created (the operator's Deployment, the helpers' DaemonSet, the hook
Jobs) and starts what they describe: the container's command and arguments,
its environment (literal values and the downward API fields a kubelet fills
in), and its Secret volumes written out as files. What a pod would get from
in-cluster config, the process gets as a kubeconfig with a token of the
pod's own ServiceAccount, so the chart's RBAC is what it runs with.

Only what Ferry's chart uses is supported; anything else is an error rather
than a silent difference from a real kubelet.
"""

from __future__ import annotations

import base64
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client


class UnsupportedPodSpec(ValueError):
    """The pod template uses something this stand-in kubelet does not do."""


@dataclass(frozen=True, kw_only=True)
class Container:
    """One container of a pod template, resolved for a given node."""

    service_account: str
    argv: list[str]
    env: dict[str, str]
    #: mount path -> file name -> (content, mode)
    secret_files: dict[str, dict[str, tuple[bytes, int]]]


def pod_spec(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    spec: Mapping[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _container(spec: Mapping[str, Any], name: str | None) -> Mapping[str, Any]:
    containers: list[Mapping[str, Any]] = spec["containers"]
    if name is None:
        return containers[0]
    for container in containers:
        if container["name"] == name:
            return container
    raise UnsupportedPodSpec(f"no container {name!r} in the pod template")


def resolve_env(container: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, str]:
    """The container's environment, downward-API ``fieldRef``s filled from ``fields``."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        field = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field not in fields:
            raise UnsupportedPodSpec(f"env {item['name']}: only fieldRef {sorted(fields)} here")
        env[item["name"]] = fields[field]
    if container.get("envFrom"):
        raise UnsupportedPodSpec("envFrom is not supported by the local kubelet")
    return env


def _secret_data(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, bytes]:
    secret = core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def secret_files(
    core: client.CoreV1Api, namespace: str, spec: Mapping[str, Any], container: Mapping[str, Any]
) -> dict[str, dict[str, tuple[bytes, int]]]:
    """Each Secret volume the container mounts: its files, as a kubelet would write them."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files: dict[str, dict[str, tuple[bytes, int]]] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        source = volume.get("secret")
        if source is None:
            continue  # hostPath and the like: a node process sees the node's own paths
        data = _secret_data(core, namespace, source["secretName"])
        default_mode = int(source.get("defaultMode", 0o644))
        items = source.get("items") or [{"key": k, "path": k} for k in sorted(data)]
        files[mount["mountPath"]] = {
            item["path"]: (data[item["key"]], int(item.get("mode", default_mode))) for item in items
        }
    return files


def console_scripts(source_root: Path) -> dict[str, str]:
    """The project's console scripts, as ``python -m`` module names."""
    scripts: dict[str, str] = {}
    for pyproject in sorted(source_root.glob("*/pyproject.toml")):
        scripts |= tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {})
    return {
        name: target.split(":")[0].removesuffix(".__main__") for name, target in scripts.items()
    }


def argv(container: Mapping[str, Any], *, python: str, source_root: Path) -> list[str]:
    """The container's command and args, its console script run by ``python``.

    In an image the project is installed and ``ferry-helper`` is on PATH; here
    the same entry point runs from the source tree.
    """
    command = list(container.get("command") or [])
    if not command:
        raise UnsupportedPodSpec("the container has no command (the image's is unknown here)")
    modules = console_scripts(source_root)
    if command[0] not in modules:
        raise UnsupportedPodSpec(f"command {command[0]!r} is not one of {sorted(modules)}")
    return [python, "-m", modules[command[0]], *command[1:], *container.get("args", [])]


def container_for(
    core: client.CoreV1Api,
    workload: Mapping[str, Any],
    *,
    name: str | None,
    fields: Mapping[str, str],
    python: str,
    source_root: Path,
) -> Container:
    spec = pod_spec(workload)
    container = _container(spec, name)
    return Container(
        service_account=str(spec.get("serviceAccountName", "default")),
        argv=argv(container, python=python, source_root=source_root),
        env=resolve_env(container, fields),
        secret_files=secret_files(core, workload["metadata"]["namespace"], spec, container),
    )


def write_files(root: Path, files: Mapping[str, Mapping[str, tuple[bytes, int]]]) -> None:
    """Write secret volume files under ``root`` (``/`` of the pod's filesystem)."""
    for mount, entries in files.items():
        directory = root / mount.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for file_name, (content, mode) in entries.items():
            target = directory / file_name
            target.write_bytes(content)
            target.chmod(mode)
