"""Manifests: from ``migrate``'s, ``checkpoint``'s or ``restore``'s flags, or from a file.

Either way the spec is validated with the API model before anything is sent,
so a mistake is named client-side (by its flag when it came from one) instead
of coming back as a 422 from the API server. A file may hold the kinds that
run to an end: ContainerMigration, PodMigration, ContainerCheckpoint and
ContainerRestore.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from ferry_api import constants, to_wire
from ferry_api.checkpoint import ContainerCheckpointSpec, ContainerRestoreSpec
from ferry_api.migration import CONTAINER_PATTERN, NODE_NAME_PATTERN, ContainerMigrationSpec
from ferry_api.podmigration import PodMigrationSpec
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

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
    "checkpointRef.name": "CHECKPOINT",
    "node": "--node",
    "name": "--container-name",
    "storage.repository": "--registry",
}

#: The model of each kind's spec a manifest may hold.
SPECS: dict[str, type[BaseModel]] = {
    constants.CONTAINER_MIGRATION_KIND: ContainerMigrationSpec,
    constants.POD_MIGRATION_KIND: PodMigrationSpec,
    constants.CONTAINER_CHECKPOINT_KIND: ContainerCheckpointSpec,
    constants.CONTAINER_RESTORE_KIND: ContainerRestoreSpec,
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
    # The wire's names, whichever the input used (flags are given by Python name).
    path = ".".join(to_camel(part) if isinstance(part, str) else str(part) for part in error["loc"])
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


def validate_spec(
    spec: Any, *, by_flag: bool = False, kind: str = constants.CONTAINER_MIGRATION_KIND
) -> BaseModel:
    """The spec as the API model reads it; ``PluginError`` naming every wrong field."""
    if not isinstance(spec, Mapping):
        raise PluginError(f"invalid {kind}: spec must be a mapping")
    try:
        return SPECS[kind].model_validate(dict(spec))
    except ValidationError as error:
        problems = "; ".join(_problem(e, by_flag=by_flag) for e in error.errors())
        raise PluginError(f"invalid {kind}: {problems}") from error


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


def _body(metadata: Body, spec: BaseModel, kind: str = constants.CONTAINER_MIGRATION_KIND) -> Body:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "spec": to_wire(spec),
    }


def _metadata(name: str | None, base: str, namespace: str | None) -> Body:
    """``name`` when given, else a generateName from ``base``; the namespace when given."""
    metadata: Body = {"name": check_name(name)} if name else {"generateName": generate_name(base)}
    if namespace:
        metadata["namespace"] = namespace
    return metadata


def from_flags(flags: MigrateFlags, namespace: str | None) -> Body:
    """The ContainerMigration ``migrate`` creates; metadata.namespace only when given.

    NB: the fields by their Python names, not the wire's: a wire name the API
    renames (an acronym's casing) then needs no edit here.
    """
    wire: Body = {"source": {"node": flags.source, "container": flags.container}}
    optional = {
        "target": {"node": flags.target} if flags.target else None,
        "leave_running": flags.leave_running or None,
        "tcp_established": flags.tcp_established or None,
        "file_locks": flags.file_locks or None,
        "keep_checkpoint": flags.keep_checkpoint or None,
        "compression": flags.compression,
        "runtime": flags.runtime,
        "memory_transfer": flags.memory_transfer,
        "page_server_tls": None if flags.page_server_tls else False,
        "timeout_seconds": flags.timeout,
        "ttl_seconds_after_finished": flags.ttl,
    }
    wire.update({key: value for key, value in optional.items() if value is not None})
    spec = validate_spec(wire, by_flag=True)
    return _body(_metadata(flags.name, flags.container, namespace), spec)


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
    wire: Body = {"pod_name": pod}
    optional = {
        "target": {"node": target} if target else None,
        "timeout_seconds": timeout,
        "ttl_seconds_after_finished": ttl,
    }
    wire.update({key: value for key, value in optional.items() if value is not None})
    spec = validate_spec(wire, by_flag=True, kind=constants.POD_MIGRATION_KIND)
    return _body(_metadata(name, pod, namespace), spec, constants.POD_MIGRATION_KIND)


@dataclass(frozen=True)
class CheckpointFlags:
    """``kubectl ferry checkpoint``'s choices."""

    container: str
    node: str
    name: str | None = None
    stop: bool = False
    tcp_established: bool = False
    file_locks: bool = False
    compression: str | None = None
    runtime: str | None = None
    registry: str | None = None


def checkpoint(flags: CheckpointFlags, namespace: str | None) -> Body:
    """The ContainerCheckpoint ``checkpoint`` creates; metadata.namespace only when given."""
    wire: Body = {
        "source": {"node": flags.node, "container": flags.container},
        "leave_running": not flags.stop,
        "tcp_established": flags.tcp_established,
        "file_locks": flags.file_locks,
    }
    optional = {
        "compression": flags.compression,
        "runtime": flags.runtime,
        "storage": {"type": "Registry", "repository": flags.registry} if flags.registry else None,
    }
    wire.update({key: value for key, value in optional.items() if value is not None})
    spec = validate_spec(wire, by_flag=True, kind=constants.CONTAINER_CHECKPOINT_KIND)
    metadata = _metadata(flags.name, flags.container, namespace)
    return _body(metadata, spec, constants.CONTAINER_CHECKPOINT_KIND)


@dataclass(frozen=True)
class RestoreFlags:
    """``kubectl ferry restore``'s choices."""

    checkpoint: str
    node: str | None = None
    name: str | None = None
    container_name: str | None = None
    tcp_established: bool = False
    file_locks: bool = False
    timeout: int | None = None
    ttl: int | None = None


def restore(flags: RestoreFlags, namespace: str | None) -> Body:
    """The ContainerRestore ``restore`` creates; metadata.namespace only when given."""
    wire: Body = {
        "checkpoint_ref": {"name": flags.checkpoint},
        "tcp_established": flags.tcp_established,
        "file_locks": flags.file_locks,
    }
    optional = {
        "node": flags.node,
        "name": flags.container_name,
        "timeout_seconds": flags.timeout,
        "ttl_seconds_after_finished": flags.ttl,
    }
    wire.update({key: value for key, value in optional.items() if value is not None})
    spec = validate_spec(wire, by_flag=True, kind=constants.CONTAINER_RESTORE_KIND)
    metadata = _metadata(flags.name, flags.checkpoint, namespace)
    return _body(metadata, spec, constants.CONTAINER_RESTORE_KIND)


def from_document(document: Any, *, source: str) -> Body:
    """One manifest document, checked: kind, apiVersion, a name (or generateName), the spec."""
    if not isinstance(document, Mapping):
        raise PluginError(f"{source}: a manifest must be a mapping, not {type(document).__name__}")
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if kind not in SPECS or api_version != constants.API_VERSION:
        expected = ", ".join(SPECS)
        raise PluginError(
            f"{source}: expected kind {expected} ({constants.API_VERSION}), "
            f"got {kind} ({api_version})"
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
        spec = validate_spec(document.get("spec"), kind=str(kind))
    except PluginError as error:
        raise PluginError(f"{source}: {error}") from error
    return _body(metadata, spec, str(kind))


def load(text: str, *, source: str) -> list[Body]:
    """Every resource in a YAML (or JSON) stream; empty documents are skipped.

    A ``List`` (what ``-o yaml`` prints for several) gives its items.
    """
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise PluginError(f"{source}: not YAML: {error}") from error
    documents = [
        item
        for d in documents
        for item in (
            d.get("items") or [] if isinstance(d, Mapping) and d.get("kind") == "List" else [d]
        )
    ]
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
