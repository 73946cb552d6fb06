"""The container runtimes Ferry drives: one name for specs, statuses and the wire."""

from __future__ import annotations

from enum import StrEnum


class Runtime(StrEnum):
    """A container runtime on a node: podman or docker."""

    PODMAN = "podman"
    DOCKER = "docker"
