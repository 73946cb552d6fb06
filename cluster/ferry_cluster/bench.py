"""``make bench``: a ContainerMigration against the seed's manual procedure, in one run.

The baseline is what a user would script without Ferry: ``podman container
checkpoint --export`` on the source node, ``scp`` of the archive to the target
node (OpenSSH between the nodes' own addresses), ``podman container restore
--import`` there. Ferry moves the same kind of container with a
ContainerMigration. Two sizes: a tiny counter, and a counter that also holds
256 MiB of random bytes (incompressible, so zstd cannot flatter either side)
in a tmpfs, which the checkpoint must carry.

Numbers are medians over a few runs; ratios compare Ferry with the baseline
measured in the same process. Results go to the terminal and to a JSON file.
Nothing here asserts a time: it measures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ferry_api import constants
from kubernetes import client

from . import cluster, deploy, images, workloads
from .config import ClusterConfig, NodeSpec
from .workloads import counter_script

# Not logging: the log would grow the archive a little at every run.
COUNTER = counter_script(log=False)
SIZES = {"tiny": 0, "256MiB": 256 * 1024 * 1024}
NAMESPACE = "bench"
SSH_OPTS = "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/root/.ssh/known_hosts"


@dataclass(frozen=True, kw_only=True)
class Sample:
    downtime: float
    total: float
    archive_bytes: int


def sh(node: NodeSpec, script: str, *, timeout: float = 600) -> str:
    return workloads.sh(node, script, timeout=timeout)


def start(node: NodeSpec, name: str, size: int) -> None:
    fill = f"head -c {size} /dev/urandom > /data/blob; " if size else ""
    sh(
        node,
        f"podman rm -f -t 0 -i {name}; podman run -d --name {name} "
        f"--label {constants.NAMESPACE_LABEL}={NAMESPACE} --tmpfs /data:size={size + 2**26} "
        f"{images.BUSYBOX_IMAGE} sh -c '{fill}{COUNTER}'",
    )
    workloads.wait_counting(node, name, above=0, timeout=120)


def setup_ssh(source: NodeSpec, target: NodeSpec) -> None:
    """OpenSSH as a user would have it: sshd on the target, a key on the source."""
    sh(
        target,
        "ssh-keygen -A >/dev/null; mkdir -p /run/sshd /root/.ssh; chmod 700 /root/.ssh; "
        "pgrep -x sshd >/dev/null || /usr/sbin/sshd",
    )
    sh(
        source,
        "mkdir -p /root/.ssh; chmod 700 /root/.ssh; "
        "[ -f /root/.ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519",
    )
    public = sh(source, "cat /root/.ssh/id_ed25519.pub")
    sh(
        target,
        f"grep -qF '{public}' /root/.ssh/authorized_keys 2>/dev/null || "
        f"echo '{public}' >> /root/.ssh/authorized_keys; chmod 600 /root/.ssh/authorized_keys",
    )


def manual(source: NodeSpec, target: NodeSpec, size: int) -> Sample:
    name = f"manual-{uuid.uuid4().hex[:6]}"
    start(source, name, size)
    sh(target, f"podman rm -f -t 0 -i {name}")
    archive = f"/root/{name}.tar.zst"  # in the node
    began = time.monotonic()
    sh(source, f"podman container checkpoint --export {archive} {name}")
    sh(source, f"scp -q {SSH_OPTS} {archive} root@{target.address}:{archive}")
    sh(target, f"podman container restore --import {archive}")
    ended = time.monotonic()
    archive_bytes = int(sh(target, f"stat -c %s {archive}"))
    sh(source, f"podman rm -f -t 0 {name}; rm -f {archive}")
    sh(target, f"podman rm -f -t 0 {name}; rm -f {archive}")
    return Sample(downtime=ended - began, total=ended - began, archive_bytes=archive_bytes)


def with_ferry(
    custom: client.CustomObjectsApi, source: NodeSpec, target: NodeSpec, size: int
) -> Sample:
    name = f"ferry-{uuid.uuid4().hex[:6]}"
    start(source, name, size)
    sh(target, f"podman rm -f -t 0 -i {name}")
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {"name": name},
        "spec": {
            "source": {"node": source.name, "container": name},
            "target": {"node": target.name},
            "timeoutSeconds": 600,
        },
    }
    custom.create_namespaced_custom_object(
        constants.GROUP, constants.VERSION, NAMESPACE, constants.CONTAINER_MIGRATION_PLURAL, body
    )
    deadline = time.monotonic() + 600
    while True:
        found = custom.get_namespaced_custom_object(
            constants.GROUP,
            constants.VERSION,
            NAMESPACE,
            constants.CONTAINER_MIGRATION_PLURAL,
            name,
        )
        status: dict[str, Any] = (found.get("status") if isinstance(found, dict) else None) or {}
        if status.get("phase") in ("Succeeded", "Failed", "Cancelled"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not finish: {status}")
        time.sleep(0.1)
    if status["phase"] != "Succeeded":
        raise RuntimeError(f"{name} ended {status['phase']}: {status.get('message')}")
    sh(target, f"podman rm -f -t 0 {name}")
    timings = status["timings"]
    return Sample(
        downtime=float(timings["downtimeSeconds"]),
        total=float(timings["totalSeconds"]),
        archive_bytes=int(status["archive"]["bytes"]),
    )


def median(samples: list[Sample]) -> dict[str, float]:
    return {
        "downtimeSeconds": round(statistics.median(s.downtime for s in samples), 3),
        "totalSeconds": round(statistics.median(s.total for s in samples), 3),
        "archiveBytes": int(statistics.median(s.archive_bytes for s in samples)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per size and method")
    parser.add_argument("--output", default="bench-results.json")
    parser.add_argument("--keep", action="store_true", help="keep the bench cluster up")
    args = parser.parse_args(argv)

    config = ClusterConfig(name="bench", nodes=2)
    cluster.up(config, lambda m: print(f"==> {m}", flush=True))
    deploy.deploy(config)
    source, target = config.node_specs()
    setup_ssh(source, target)
    results: dict[str, Any] = {"runs": args.runs, "sizes": {}}
    try:
        with cluster.api_client(config) as api:
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            if NAMESPACE not in {
                n.metadata.name for n in core.list_namespace().items if n.metadata
            }:
                core.create_namespace(
                    client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
                )
            for label, size in SIZES.items():
                print(f"==> {label}: {args.runs} runs each", flush=True)
                baseline = [manual(source, target, size) for _ in range(args.runs)]
                ferry = [with_ferry(custom, source, target, size) for _ in range(args.runs)]
                entry: dict[str, Any] = {
                    "manual": median(baseline),
                    "ferry": median(ferry),
                    "samples": {
                        "manual": [asdict(s) for s in baseline],
                        "ferry": [asdict(s) for s in ferry],
                    },
                }
                for key in ("downtimeSeconds", "totalSeconds"):
                    entry[f"{key}Ratio"] = round(entry["ferry"][key] / entry["manual"][key], 3)
                results["sizes"][label] = entry
    finally:
        if not args.keep:
            cluster.down(config)
    print(f"\n{'size':8} {'method':8} {'downtime s':>11} {'total s':>9} {'archive':>10}")
    for label, entry in results["sizes"].items():
        for method in ("manual", "ferry"):
            row = entry[method]
            print(
                f"{label:8} {method:8} {row['downtimeSeconds']:11.3f} {row['totalSeconds']:9.3f} "
                f"{row['archiveBytes'] / 2**20:8.1f}Mi"
            )
        print(
            f"{label:8} {'ratio':8} {entry['downtimeSecondsRatio']:11.3f} "
            f"{entry['totalSecondsRatio']:9.3f}   (ferry / manual, lower is better)"
        )
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
