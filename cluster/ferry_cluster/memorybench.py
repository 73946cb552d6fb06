"""``make bench-memory``: memoryTransfer Archive against PageServer (TLS and plain TCP), in one run.

The workload is memhog (:mod:`.memhog`): a process holding N MiB of random
bytes in its own memory, counting every 100 ms and recording the longest gap
between two of its ticks, i.e. the downtime as the workload itself saw it.
For each size the strategies take turns, so the load of the moment (the
cores may be shared) falls on all of them alike. The archive is not
compressed: random memory does not shrink, and compressing it only adds time
to the Archive path.

Per run: the operator's downtime (``status.timings.downtimeSeconds``: from
the freeze to the restored copy running), the workload's own longest gap, the
step timings, the archive's and the pages' bytes. Medians go to the terminal,
everything to a JSON file. Nothing here asserts a time: it measures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ferry_api import constants
from kubernetes import client

from . import cluster, deploy, memhog, workloads
from .config import ClusterConfig, NodeSpec

NAMESPACE = "bench"
#: Strategy name -> the spec fields that choose it.
STRATEGIES: dict[str, dict[str, Any]] = {
    "Archive": {"memoryTransfer": "Archive"},
    "PageServer-TLS": {"memoryTransfer": "PageServer", "pageServerTls": True},
    "PageServer-plain": {"memoryTransfer": "PageServer", "pageServerTls": False},
}


def start(node: NodeSpec, name: str, mib: int) -> None:
    workloads.sh(
        node,
        f"podman rm -f -t 0 -i {name}; podman run -d --name {name} "
        f"--label {constants.NAMESPACE_LABEL}={NAMESPACE} {memhog.IMAGE} memhog {mib}",
    )
    workloads.wait_counting(node, name, above=5, timeout=300)


def wait_final(custom: client.CustomObjectsApi, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
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
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not finish: {status}")
        time.sleep(0.2)


def one_run(
    custom: client.CustomObjectsApi,
    source: NodeSpec,
    target: NodeSpec,
    mib: int,
    strategy: str,
) -> dict[str, Any]:
    name = f"mem-{uuid.uuid4().hex[:6]}"
    start(source, name, mib)
    workloads.sh(target, f"podman rm -f -t 0 -i {name}")
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {"name": name},
        "spec": {
            "source": {"node": source.name, "container": name},
            "target": {"node": target.name},
            "compression": "none",
            "timeoutSeconds": 900,
            **STRATEGIES[strategy],
        },
    }
    custom.create_namespaced_custom_object(
        constants.GROUP, constants.VERSION, NAMESPACE, constants.CONTAINER_MIGRATION_PLURAL, body
    )
    status = wait_final(custom, name, 900)
    try:
        if status["phase"] != "Succeeded":
            raise RuntimeError(f"{name} ({strategy}) ended {status['phase']}: {status['message']}")
        gap_ms = int(workloads.sh(target, f"podman exec {name} cat /tmp/gap"))
    finally:
        workloads.sh(source, f"podman rm -f -t 0 -i {name}")
        workloads.sh(target, f"podman rm -f -t 0 -i {name}")
    timings = status["timings"]
    return {
        "strategy": strategy,
        "downtimeSeconds": timings["downtimeSeconds"],
        "workloadGapSeconds": gap_ms / 1000,
        "checkpointSeconds": timings["checkpointSeconds"],
        "transferSeconds": timings["transferSeconds"],
        "restoreSeconds": timings["restoreSeconds"],
        "archiveBytes": status["archive"]["bytes"],
        "pagesBytes": status.get("pagesBytes", 0),
    }


#: What a run measures, summarised by its median.
MEASURES = (
    "downtimeSeconds",
    "workloadGapSeconds",
    "checkpointSeconds",
    "transferSeconds",
    "restoreSeconds",
    "archiveBytes",
    "pagesBytes",
)


def summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in MEASURES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cluster", default="bench", help="the local cluster to use (made if need be)"
    )
    parser.add_argument("--nodes", type=int, default=2, help="its size, if it is made")
    parser.add_argument("--sizes", default="64,1024", help="memory held, MiB, comma-separated")
    parser.add_argument("--runs", type=int, default=2, help="runs per size and strategy")
    parser.add_argument("--output", default="bench-memory-results.json")
    args = parser.parse_args(argv)

    config = ClusterConfig(name=args.cluster, nodes=args.nodes)
    cluster.up(config, lambda m: print(f"==> {m}", flush=True))
    deploy.deploy(config)
    source, target = config.node_specs()[:2]
    for node in (source, target):
        memhog.ensure_loaded(config, node)
    results: dict[str, Any] = {"runs": args.runs, "sizes": {}}
    with cluster.api_client(config) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        if NAMESPACE not in {n.metadata.name for n in core.list_namespace().items if n.metadata}:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        for mib in (int(s) for s in args.sizes.split(",")):
            samples: dict[str, list[dict[str, Any]]] = {s: [] for s in STRATEGIES}
            for round_ in range(args.runs):
                for strategy in STRATEGIES:
                    run = one_run(custom, source, target, mib, strategy)
                    print(f"{mib} MiB, round {round_ + 1}: {json.dumps(run)}", flush=True)
                    samples[strategy].append(run)
            results["sizes"][f"{mib}MiB"] = {
                s: {"median": summary(r), "samples": r} for s, r in samples.items()
            }
    header = f"{'size':8} {'strategy':17} {'downtime s':>10} {'workload gap s':>14} "
    print("\n" + header + f"{'archive':>10} {'pages':>10}")
    for label, entry in results["sizes"].items():
        for strategy, data in entry.items():
            row = data["median"]
            print(
                f"{label:8} {strategy:17} {row['downtimeSeconds']:10.3f} "
                f"{row['workloadGapSeconds']:14.3f} {row['archiveBytes'] / 2**20:8.2f}Mi "
                f"{row['pagesBytes'] / 2**20:8.1f}Mi"
            )
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
