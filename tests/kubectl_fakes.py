"""A fake API server for ``kubectl ferry``'s unit tests, and the bodies it serves.

``FakeCluster`` stands in for :class:`ferry_kubectl.kube.Cluster`: it keeps
objects in memory, creates and server-side applies them as the API server
would (a generated name, ``created``/``configured``/``unchanged``, an
immutable spec refused), and plays a list of states to whoever follows one.
"""

from __future__ import annotations

import base64
import copy
import gzip
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ferry_api import constants
from ferry_kubectl import cli, session
from ferry_kubectl.errors import ApiError
from ferry_kubectl.follow import Event
from ferry_kubectl.kinds import Kind
from ferry_kubectl.kube import immutable, verdict

Body = dict[str, Any]

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PHASES = [
    "Pending",
    "Validating",
    "ImageStaging",
    "Checkpointing",
    "Transferring",
    "Restoring",
    "Verifying",
]


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def migration_body(phase: str = "Succeeded", **status: Any) -> dict[str, Any]:
    phases = [*PHASES, phase] if phase in ("Succeeded", "Failed") else PHASES[:3]
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {
            "name": "web-x7k2p",
            "namespace": "apps",
            "resourceVersion": "42",
            "creationTimestamp": at(0),
        },
        "spec": {"source": {"node": "node-a", "container": "web"}, "target": {"node": "node-b"}},
        "status": {
            "phase": phase,
            "sourceNode": "node-a",
            "targetNode": "node-b",
            "phaseTransitions": [{"phase": p, "time": at(i * 0.25)} for i, p in enumerate(phases)],
            **status,
        },
    }


def succeeded_body() -> dict[str, Any]:
    return migration_body(
        "Succeeded",
        timings={
            "checkpointSeconds": 0.412,
            "transferSeconds": 0.051,
            "restoreSeconds": 0.733,
            "downtimeSeconds": 1.301,
            "totalSeconds": 2.874,
        },
        archive={"bytes": 38211, "sha256": "a" * 64, "compression": "zstd"},
        criuStatistics={"frozenTime": 371000, "pagesWritten": 120},
        progress={"bytesSent": 38211, "bytesTotal": 38211},
        conditions=[{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": ""}],
    )


def failed_body() -> dict[str, Any]:
    return migration_body(
        "Failed",
        timings={"checkpointSeconds": 0.2, "totalSeconds": 0.9},
        conditions=[
            {
                "type": "Succeeded",
                "status": "False",
                "reason": "CheckpointFailed",
                "message": "inet: Connected TCP socket; to fix: set spec.tcpEstablished: true",
            }
        ],
        failureLogs={"configMap": "web-x7k2p-logs", "nodes": ["node-a"], "files": ["dump.log"]},
    )


def helper_body(node: str, *, ready: str = "True") -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.NODE_HELPER_KIND,
        "metadata": {"name": node},
        "status": {
            "nodeName": node,
            "address": "10.213.0.10",
            "sshPort": 7022,
            "runtimes": [
                {
                    "name": "podman",
                    "version": "5.4.2",
                    "ociRuntime": "crun",
                    "ociRuntimeVersion": "1.21",
                }
            ],
            "criu": {
                "version": "4.2.1",
                "features": {"lazyPages": True, "uffd": True, "dirtyPageTracking": True},
            },
            "kernel": "6.18.0",
            "cgroupVersion": "v2",
            "conditions": [{"type": "Ready", "status": ready, "reason": "Probed"}],
        },
    }


def checkpoint_body(*, summary: bool) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Ready",
        "node": "node-a",
        "containerName": "web",
        "image": {"id": "0123456789abcdef0123", "name": "localhost/ferry/busybox:latest"},
        "archive": {"bytes": 2_500_000, "sha256": "b" * 64, "compression": "zstd"},
        "checkpointTime": at(10),
        "checkpointSeconds": 0.5,
    }
    if summary:
        status["summary"] = {
            "processes": 2,
            "threads": 3,
            "memoryBytes": 12_582_912,
            "openFiles": 9,
            "sockets": {"tcpListening": 1, "unix": 2},
            "runtime": {"name": "podman", "version": "5.4.2", "ociRuntime": "crun"},
            "criuVersion": "4.2.1",
            "kernel": "6.18.0",
        }
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_CHECKPOINT_KIND,
        "metadata": {"name": "nightly-web", "namespace": "apps"},
        "spec": {"source": {"node": "node-a", "container": "web"}},
        "status": status,
    }


def logs_config_map(files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web-x7k2p-logs", "namespace": "apps"},
        "binaryData": {
            f"{name}.gz": base64.b64encode(gzip.compress(content)).decode()
            for name, content in files.items()
        },
    }


class FakeCluster:
    """What an API server would answer, from bodies held in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Body] = {}
        self.config_maps: dict[str, Body] = {}
        self.helpers: list[Body] = []
        self.created: list[Body] = []
        self.applied: list[tuple[Body, bool]] = []
        self.deleted: list[str] = []
        self.dry_runs: list[Body] = []
        #: What a follower sees: the first from the list, the rest as watch events.
        self.states: list[Body] = []
        #: After the states, a DELETED event with the last one (a cancel's end).
        self.gone_after_states = False
        self.version = 1

    def get(self, kind: Kind, name: str, namespace: str) -> Body:
        found = self.find(kind, name, namespace)
        if found is None:
            raise ApiError(f"{kind.describe(name, namespace)} not found")
        return found

    def find(self, kind: Kind, name: str, namespace: str) -> Body | None:
        return self.objects.get((kind.plural, name))

    def list(self, kind: Kind, namespace: str | None, *, selector: str | None = None) -> list[Body]:
        if kind.plural == constants.NODE_HELPER_PLURAL:
            return self.helpers
        found = [b for (plural, _), b in self.objects.items() if plural == kind.plural]
        if selector:
            key, _, value = selector.partition("=")
            found = [b for b in found if (b["metadata"].get("labels") or {}).get(key) == value]
        return found

    def _stored(self, body: Body, namespace: str) -> Body:
        self.version += 1
        metadata = {**body["metadata"], "namespace": namespace}
        metadata["resourceVersion"] = str(self.version)
        if not metadata.get("name"):
            metadata["name"] = f"{metadata.pop('generateName')}x7k2p"
        return {**copy.deepcopy(body), "metadata": metadata}

    def create(self, kind: Kind, namespace: str, body: Body, *, dry_run: bool = False) -> Body:
        made = self._stored(body, namespace)
        if dry_run:
            self.dry_runs.append(made)
            return made
        self.created.append(body)
        self.objects[(kind.plural, made["metadata"]["name"])] = made
        return made

    def apply(
        self, kind: Kind, namespace: str, body: Body, *, dry_run: bool = False
    ) -> tuple[Body, str]:
        before = self.find(kind, body["metadata"]["name"], namespace)
        self.applied.append((body, dry_run))
        if before is not None and before["spec"] != body["spec"]:
            raise ApiError(immutable(kind, kind.describe(body["metadata"]["name"], namespace)))
        after = before if before is not None else self._stored(body, namespace)
        if not dry_run:
            self.objects[(kind.plural, after["metadata"]["name"])] = after
        return after, verdict(before, after)

    def delete(self, kind: Kind, name: str, namespace: str) -> None:
        self.get(kind, name, namespace)
        self.deleted.append(name)

    def config_map(self, name: str, namespace: str) -> Body | None:
        return self.config_maps.get(name)

    def list_one(self, kind: Kind, name: str, namespace: str) -> tuple[Body | None, str]:
        return (self.states[0] if self.states else None), "1"

    def watch_one(self, kind: Kind, name: str, namespace: str, version: str) -> Iterator[Event]:
        for i, body in enumerate(self.states[1:], start=2):
            yield Event("MODIFIED", body, str(i))
        if self.gone_after_states:
            yield Event("DELETED", self.states[-1], "99")

    def server_version(self) -> Body:
        return {"gitVersion": "v1.34.4", "platform": "linux/amd64"}

    def operator_deployments(self) -> list[Body]:
        return [
            {
                "metadata": {
                    "namespace": "ferry-system",
                    "name": "ferry-operator",
                    "labels": {"app.kubernetes.io/version": "0.1.0"},
                },
                "spec": {
                    "replicas": 1,
                    "template": {
                        "spec": {
                            "containers": [
                                {"image": "ferry/operator:0.1.0", "command": ["ferry-operator"]}
                            ]
                        }
                    },
                },
                "status": {"readyReplicas": 1},
            }
        ]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    cluster = FakeCluster()
    monkeypatch.setattr(session.Env, "cluster", property(lambda _: cluster))
    return cluster


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``kubectl ferry -n apps ARGV``: the exit code, stdout and stderr."""
    code = cli.main(["-n", "apps", *argv])
    out, err = capsys.readouterr()
    return code, out, err
