"""ContainerMigration manifests: built from ``migrate``'s flags, or read from a file.

Either way the spec is validated with the API model before anything is sent,
so a mistake is named client-side (by its flag when it came from one) instead
of coming back as a 422 from the API server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from ferry_api import constants, to_wire
from ferry_api.migration import CONTAINER_PATTERN, NODE_NAME_PATTERN, ContainerMigrationSpec
from ferry_api.podmigration import PodMigrationSpec
from pydantic import ValidationError

from ferry_kubectl.errors import PluginError

Body = dict[str, Any]

#: metadata.name of a custom resource: a DNS-1123 subdomain.
NAME_PATTERN = re.compile(NODE_NAME_PATTERN)
MAX_NAME = 253
#: generateName prefixes stay short, so names read well in ``kubectl get``.
MAX_PREFIX = 40

#: The flag each spec field comes from in ``migrate``.
FLAGS = {
    "source.container": "CONTAINER",
    "source.node": "--from",
    "podName": "pod/NAME",
    "target.node": "--to",
    "compression": "--compression",
    "runtime": "--runtime",
    "memoryTransfer": "--memory-transfer",
    "timeoutSeconds": "--timeout",
    "ttlSecondsAfterFinished": "--ttl",
}

_PATTERN_MEANING = {
    NODE_NAME_PATTERN: "a node name (lowercase letters, digits, '-' and '.')",
    CONTAINER_PATTERN: "a container name or ID (letters, digits, '_', '.' and '-')",
}


@dataclass(frozen=True)
class MigrateFlags:
    """``kubectl ferry migrate``'s choices, as parsed from the command line."""

    container: str
    source: str
    target: str | None = None
    name: str | None = None
    leave_running: bool = False
    tcp_established: bool = False
    file_locks: bool = False
    keep_checkpoint: bool = False
    compression: str | None = None
    runtime: str | None = None
    memory_transfer: str | None = None
    page_server_tls: bool = True
    timeout: int | None = None
    ttl: int | None = None


def _problem(error: Mapping[str, Any], *, by_flag: bool) -> str:
    path = ".".join(str(part) for part in error["loc"])
    pattern = (error.get("ctx") or {}).get("pattern")
    message = str(error["msg"]).removeprefix("Value error, ")
    if pattern in _PATTERN_MEANING:
        meaning = _PATTERN_MEANING[pattern]
        if path == "podName":  # a pod's name follows the node name's rule
            meaning = meaning.replace("node", "pod")
        message = f"{error['input']!r} is not {meaning}"
    if not path:
        return message
    where = FLAGS.get(path, f"spec.{path}") if by_flag else f"spec.{path}"
    return f"{where}: {message}"


def validate_spec(spec: Any, *, by_flag: bool = False) -> ContainerMigrationSpec:
    """The spec as the API model reads it; ``PluginError`` naming every wrong field."""
    if not isinstance(spec, Mapping):
        raise PluginError("invalid ContainerMigration: spec must be a mapping")
    try:
        return ContainerMigrationSpec.model_validate(dict(spec))
    except ValidationError as error:
        problems = "; ".join(_problem(e, by_flag=by_flag) for e in error.errors())
        raise PluginError(f"invalid ContainerMigration: {problems}") from error


def check_name(name: str, *, what: str = "name") -> str:
    if len(name) > MAX_NAME or not NAME_PATTERN.match(name):
        raise PluginError(
            f"invalid {what} {name!r}: use lowercase letters, digits, '-' and '.' "
            f"(at most {MAX_NAME})"
        )
    return name


def generate_name(container: str) -> str:
    """A generateName prefix from a container name: ``My_App`` gives ``my-app-``."""
    base = re.sub(r"[^a-z0-9-]+", "-", container.lower())[:MAX_PREFIX].strip("-")
    return f"{base or 'migration'}-"


def _body(metadata: Body, spec: ContainerMigrationSpec) -> Body:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": metadata,
        "spec": to_wire(spec),
    }


def from_flags(flags: MigrateFlags, namespace: str | None) -> Body:
    """The ContainerMigration ``migrate`` creates; metadata.namespace only when given."""
    wire: Body = {"source": {"node": flags.source, "container": flags.container}}
    optional = {
        "target": {"node": flags.target} if flags.target else None,
        "leaveRunning": flags.leave_running or None,
        "tcpEstablished": flags.tcp_established or None,
        "fileLocks": flags.file_locks or None,
        "keepCheckpoint": flags.keep_checkpoint or None,
        "compression": flags.compression,
        "runtime": flags.runtime,
        "memoryTransfer": flags.memory_transfer,
        "pageServerTls": None if flags.page_server_tls else False,
        "timeoutSeconds": flags.timeout,
        "ttlSecondsAfterFinished": flags.ttl,
    }
    wire.update({key: value for key, value in optional.items() if value is not None})
    spec = validate_spec(wire, by_flag=True)
    metadata: Body = (
        {"name": check_name(flags.name)}
        if flags.name
        else {"generateName": generate_name(flags.container)}
    )
    if namespace:
        metadata["namespace"] = namespace
    return _body(metadata, spec)


def pod_migration(
    pod: str,
    *,
    target: str | None,
    name: str | None,
    timeout: int | None,
    ttl: int | None,
    namespace: str | None,
) -> Body:
    """The PodMigration ``migrate pod/NAME`` creates; metadata.namespace only when given."""
    wire: Body = {"podName": pod}
    optional = {
        "target": {"node": target} if target else None,
        "timeoutSeconds": timeout,
        "ttlSecondsAfterFinished": ttl,
    }
    wire.update({key: value for key, value in optional.items() if value is not None})
    try:
        spec = PodMigrationSpec.model_validate(wire)
    except ValidationError as error:
        problems = "; ".join(_problem(e, by_flag=True) for e in error.errors())
        raise PluginError(f"invalid PodMigration: {problems}") from error
    metadata: Body = {"name": check_name(name)} if name else {"generateName": generate_name(pod)}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.POD_MIGRATION_KIND,
        "metadata": metadata,
        "spec": to_wire(spec),
    }


def from_document(document: Any, *, source: str) -> Body:
    """One manifest document, checked: kind, apiVersion, a name (or generateName), the spec."""
    if not isinstance(document, Mapping):
        raise PluginError(f"{source}: a manifest must be a mapping, not {type(document).__name__}")
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if kind != constants.CONTAINER_MIGRATION_KIND or api_version != constants.API_VERSION:
        raise PluginError(
            f"{source}: expected kind {constants.CONTAINER_MIGRATION_KIND} "
            f"({constants.API_VERSION}), got {kind} ({api_version})"
        )
    raw_metadata = document.get("metadata") or {}
    if not isinstance(raw_metadata, Mapping):
        raise PluginError(f"{source}: metadata must be a mapping")
    metadata: Body = dict(raw_metadata)
    if metadata.get("name"):
        check_name(str(metadata["name"]))
    elif metadata.get("generateName"):
        check_name(f"{metadata['generateName']}x", what="generateName")
    else:
        raise PluginError(f"{source}: metadata.name (or generateName) is required")
    try:
        spec = validate_spec(document.get("spec"))
    except PluginError as error:
        raise PluginError(f"{source}: {error}") from error
    return _body(metadata, spec)


def load(text: str, *, source: str) -> list[Body]:
    """Every ContainerMigration in a YAML (or JSON) stream; empty documents are skipped."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise PluginError(f"{source}: not YAML: {error}") from error
    if not documents:
        raise PluginError(f"{source}: no manifest in it")
    return [from_document(d, source=source) for d in documents]


def place(body: Body, namespace: str, *, explicit: bool) -> str:
    """The namespace ``body`` goes to: its own, or ``namespace``; they must agree when explicit."""
    own = body["metadata"].get("namespace")
    if own and explicit and own != namespace:
        raise PluginError(
            f'the manifest\'s namespace "{own}" does not match the namespace "{namespace}" '
            "given with -n"
        )
    chosen = str(own or namespace)
    body["metadata"]["namespace"] = chosen
    return chosen


def dump(bodies: Iterable[Body], *, output: str) -> str:
    """Manifests as ``--dry-run`` prints them: YAML documents, or JSON (a list when several)."""
    listed = list(bodies)
    if output == "json":
        return json.dumps(listed[0] if len(listed) == 1 else listed, indent=2)
    return "---\n".join(yaml.safe_dump(b, sort_keys=False) for b in listed).rstrip("\n")
