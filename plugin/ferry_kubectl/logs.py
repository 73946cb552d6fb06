"""Failure logs: which ConfigMap holds them, and its gzip-compressed files, decoded.

The operator copies a failed step's logs into a ConfigMap next to the failed
resource (see ``ferry_api.diagnostics``): each file is a ``binaryData`` entry
``<file>.gz``. This module reads such a body; fetching it is ``kube``'s job.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ferry_api.checkpoint import (
    ContainerCheckpointStatus,
    ContainerRestoreStatus,
    parse_container_checkpoint,
    parse_container_restore,
)
from ferry_api.diagnostics import LOG_KEY_SUFFIX, FailureLogs
from ferry_api.migration import ContainerMigrationStatus, parse_container_migration

from ferry_kubectl.errors import PluginError


def failure_logs(kind: str, body: Mapping[str, Any]) -> tuple[str, FailureLogs | None]:
    """The resource's phase and where its failure logs are (None when none were recorded)."""
    status: ContainerMigrationStatus | ContainerCheckpointStatus | ContainerRestoreStatus
    if kind == "checkpoint":
        status = parse_container_checkpoint(body).status
    elif kind == "restore":
        status = parse_container_restore(body).status
    else:
        status = parse_container_migration(body).status
    return (status.phase.value if status.phase else "not started yet"), status.failure_logs


def safe_file_name(name: str) -> str:
    """A log's name as a file name in one directory: no path, no ``.``/``..``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise PluginError(f"refusing a log named {name!r}: not a plain file name")
    return name


def decode(config_map: Mapping[str, Any]) -> dict[str, bytes]:
    """Each log of a ConfigMap body: ``binaryData`` ``<file>.gz`` entries, gunzipped, by file."""
    name = config_map.get("metadata", {}).get("name", "(unnamed)")
    files: dict[str, bytes] = {}
    for key, encoded in sorted((config_map.get("binaryData") or {}).items()):
        if not key.endswith(LOG_KEY_SUFFIX):
            continue
        file = safe_file_name(key.removesuffix(LOG_KEY_SUFFIX))
        try:
            files[file] = gzip.decompress(base64.b64decode(encoded, validate=True))
        except (binascii.Error, OSError, EOFError, zlib.error) as error:
            raise PluginError(f"configmap {name}: {key} is not gzip data: {error}") from error
    return files


def select(files: Mapping[str, bytes], wanted: str | None) -> dict[str, bytes]:
    """All files, or the one asked for (by its name, with or without ``.gz``)."""
    if wanted is None:
        return dict(files)
    file = wanted.removesuffix(LOG_KEY_SUFFIX)
    if file not in files:
        known = ", ".join(files) or "none"
        raise PluginError(f"no log named {wanted!r} (the logs: {known})")
    return {file: files[file]}


def as_text(files: Mapping[str, bytes]) -> str:
    """The logs one after another, each under a header line ``==> file <==`` (as tail's)."""
    parts = []
    for file, content in files.items():
        text = content.decode("utf-8", errors="replace")
        if not text.endswith("\n"):
            text += "\n"
        parts.append(f"==> {file} <==\n{text}")
    return "\n".join(parts)


def write(files: Mapping[str, bytes], directory: Path) -> list[Path]:
    """Write each log into ``directory`` (made when missing); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file, content in files.items():
        path = directory / safe_file_name(file)
        path.write_bytes(content)
        written.append(path)
    return written
