"""``make bench``'s pod rows: a PodMigration against upstream's procedure by hand.

The baseline is what a Kubernetes user would script with upstream's pieces
(KEP-2008): the source kubelet's checkpoint API, the archive made into a
checkpoint image and imported into the target's containerd, the source pod
deleted and a pod created on the target from that image (see
:mod:`.podcheckpoint`). Ferry moves the same pod with a PodMigration. Both run
in the same process, alternating, on the bench cluster's two kubelet nodes.

The workload is memhog (see :mod:`.memhog`) in a pod, from the cluster's
registry: containerd's restore pulls the base image by the digest the archive
records. The manual procedure copies the archive to the target with scp, as
the container bench's does. For each run: freeze to running (manual: from the checkpoint request
to the new pod Ready; Ferry: its ``downtimeSeconds``, from the freeze to the
replacement Ready), the longest gap memhog itself saw, the total, and the bytes
of the checkpoint archive(s). Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from ferry_api import constants
from kubernetes import client

from . import cluster, deploy, kubenode, memhog, nodes, podcheckpoint, procs, registry
from .bench import NAMESPACE, SIZES_MIB, SSH_OPTS, Sample, medians, ratio, setup_ssh, sh
from .config import ClusterConfig, NodeSpec

DEFAULT_SIZES = "tiny,256MiB"
PLURAL = constants.POD_MIGRATION_PLURAL


def _pod(name: str, node: str, image: str, mib: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "memhog", "image": image, "command": ["/bin/memhog", str(mib)]}
            ],
        },
    }


def _ready(core: client.CoreV1Api, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = core.read_namespaced_pod(name, NAMESPACE).status
        phase = status.phase if status else None
        statuses = (status.container_statuses if status else None) or []
        if phase == "Running" and statuses and all(s.ready for s in statuses):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never got Ready: {phase}")
        time.sleep(0.05)


def _ticks(config: ClusterConfig, pod: str) -> tuple[int, float]:
    """memhog's (count, longest gap in seconds) in ``pod``; (0, 0) before its first tick."""
    text = procs.run(
        [
            *cluster.kubectl(config),
            "exec",
            "-n",
            NAMESPACE,
            pod,
            "--",
            "sh",
            "-c",
            "cat /tmp/count /tmp/gap 2>/dev/null; true",
        ],
        check=False,
    ).stdout
    if len(text.split()) != 2:
        return 0, 0.0
    count, gap_ms = text.split()
    return int(count), float(gap_ms) / 1000


def _ticking(config: ClusterConfig, pod: str, *, more_than: int = 3) -> float:
    """Once ``pod``'s memhog ticked ``more_than`` times more: the longest gap it saw."""
    first, _ = _ticks(config, pod)
    deadline = time.monotonic() + 300
    while (current := _ticks(config, pod))[0] < first + more_than:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pod} does not tick")
        time.sleep(0.2)
    return current[1]


def _start(config: ClusterConfig, core: client.CoreV1Api, node: str, image: str, mib: int) -> str:
    name = f"memhog-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(NAMESPACE, cast(Any, _pod(name, node, image, mib)))
    _ready(core, name)
    _ticking(config, name)
    return name


def manual(
    config: ClusterConfig,
    core: client.CoreV1Api,
    source: NodeSpec,
    target: NodeSpec,
    *,
    image: str,
    mib: int,
) -> Sample:
    """Upstream's procedure, as a user scripts it: kubelet checkpoint, the archive copied
    to the target node (scp, as the container bench's manual procedure), the checkpoint
    image made there and imported, the source deleted, a pod created from the image."""
    name = _start(config, core, source.name, image, mib)
    reference = f"localhost/checkpoint/{name}:manual"
    copy = f"/root/{name}.tar"
    with tempfile.TemporaryDirectory(prefix="ferry-podbench-") as tmp:
        began = time.monotonic()
        archive = podcheckpoint.kubelet_checkpoint(
            config, source, namespace=NAMESPACE, pod=name, container="memhog"
        )
        dumped = time.monotonic()
        sh(source, f"scp -q {SSH_OPTS} {archive} root@{target.address}:{copy}")
        layout = podcheckpoint.build_checkpoint_image(
            target, copy, container="memhog", reference=reference, out=Path(tmp) / "i.tar"
        )
        kubenode.import_image(target, layout)
        copied = time.monotonic()
        core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
        restored = f"{name}-restored"
        body = _pod(restored, target.name, reference, mib)
        body["spec"]["containers"][0]["imagePullPolicy"] = "Never"
        core.create_namespaced_pod(NAMESPACE, cast(Any, body))
        _ready(core, restored)
        ended = time.monotonic()
        moved = layout.stat().st_size
    seen = _ticking(config, restored)
    core.delete_namespaced_pod(restored, NAMESPACE, grace_period_seconds=0)
    nodes.host_path(source, archive).unlink(missing_ok=True)
    nodes.host_path(target, copy).unlink(missing_ok=True)
    return Sample(
        freeze_to_running=ended - began,
        workload_downtime=seen,
        total=ended - began,
        bytes_moved=moved,
        steps=(dumped - began, copied - dumped, ended - copied),
    )


def with_ferry(
    config: ClusterConfig,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    source: NodeSpec,
    target: NodeSpec,
    *,
    image: str,
    mib: int,
) -> Sample:
    name = _start(config, core, source.name, image, mib)
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.POD_MIGRATION_KIND,
        "metadata": {"name": name},
        "spec": {"podName": name, "target": {"node": target.name}, "timeoutSeconds": 900},
    }
    began = time.monotonic()
    custom.create_namespaced_custom_object(
        constants.GROUP, constants.VERSION, NAMESPACE, PLURAL, body
    )
    deadline = time.monotonic() + 900
    while (status := _status(custom, name)).get("phase") not in ("Succeeded", "Failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not finish: {status}")
        time.sleep(0.05)
    total = time.monotonic() - began
    if status["phase"] != "Succeeded":
        raise RuntimeError(f"{name} ended {status['phase']}: {status.get('message')}")
    seen = _ticking(config, status["targetPod"])
    core.delete_namespaced_pod(status["targetPod"], NAMESPACE, grace_period_seconds=0)
    timings = status["timings"]
    steps = (timings["checkpointSeconds"], timings["transferSeconds"], timings["restoreSeconds"])
    return Sample(
        freeze_to_running=float(timings["downtimeSeconds"]),
        workload_downtime=seen,
        total=total,
        bytes_moved=int(status["archive"]["bytes"]),
        overhead=float(timings["totalSeconds"]) - sum(float(s) for s in steps),
        steps=(float(steps[0]), float(steps[1]), float(steps[2])),
    )


def _status(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    found = custom.get_namespaced_custom_object(
        constants.GROUP, constants.VERSION, NAMESPACE, PLURAL, name
    )
    status = found.get("status") if isinstance(found, dict) else None
    return status or {}


def run(config: ClusterConfig, sizes: list[str], runs: int) -> dict[str, Any]:
    """Both methods for each size, alternating: medians, ratios and every sample."""
    source, target = config.node_specs()[:2]
    setup_ssh(source, target)
    memhog.ensure_loaded(config, source)
    registry.ensure(config)
    image = registry.push(config, source, memhog.IMAGE, "ferry/memhog")
    results: dict[str, Any] = {"runs": runs, "sizes": {}}
    with cluster.api_client(config) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        if NAMESPACE not in {n.metadata.name for n in core.list_namespace().items if n.metadata}:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        for label in sizes:
            mib = SIZES_MIB[label]
            print(f"==> pods, {label}: {runs} runs of each, alternating", flush=True)
            samples: dict[str, list[Sample]] = {"manual": [], "ferry": []}
            for _ in range(runs):
                samples["manual"].append(manual(config, core, source, target, image=image, mib=mib))
                samples["ferry"].append(
                    with_ferry(config, core, custom, source, target, image=image, mib=mib)
                )
            entry: dict[str, Any] = {
                "memoryMiB": mib,
                **{method: medians(found) for method, found in samples.items()},
                "samples": {m: [asdict(s) for s in found] for m, found in samples.items()},
            }
            for key, field in (
                ("freezeToRunningRatio", "freezeToRunningSeconds"),
                ("downtimeRatio", "workloadDowntimeSeconds"),
            ):
                entry[key] = ratio(entry["ferry"][field], entry["manual"][field])
            results["sizes"][label] = entry
    return results


def report(results: dict[str, Any]) -> None:
    print(
        f"\n{'pod':7} {'method':7} {'freeze→ready s':>14} {'seen s':>7} {'total s':>8} "
        f"{'archive MiB':>12} {'steps s (checkpoint, copy, restore)':>36}"
    )
    for label, entry in results["sizes"].items():
        for method in ("manual", "ferry"):
            row = entry[method]
            steps = [s["steps"] for s in entry["samples"][method]]
            middle = steps[len(steps) // 2]
            print(
                f"{label:7} {method:7} {row['freezeToRunningSeconds']:14.3f} "
                f"{row['workloadDowntimeSeconds']:7.3f} {row['totalSeconds']:8.3f} "
                f"{row['bytesMoved'] / 2**20:12.1f} "
                f"{', '.join(f'{s:.3f}' for s in middle):>36}"
            )
        print(
            f"{label:7} {'ratio':7} {entry['freezeToRunningRatio']:14.3f} "
            f"{entry['downtimeRatio']:7.3f}   (PodMigration / manual)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per size and method")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated: tiny, 256MiB, ...")
    parser.add_argument("--output", default="bench-pod-results.json")
    parser.add_argument("--keep", action="store_true", help="keep the bench cluster up")
    parser.add_argument("--cluster", default="bench", help="the local cluster to run on")
    args = parser.parse_args(argv)
    config = ClusterConfig(name=args.cluster, nodes=2)
    cluster.up(config, lambda m: print(f"==> {m}", flush=True))
    deploy.deploy(config)
    try:
        results = run(config, args.sizes.split(","), args.runs)
    finally:
        if not args.keep:
            cluster.down(config)
    report(results)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
