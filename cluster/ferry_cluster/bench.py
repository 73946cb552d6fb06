"""``make bench``: the performance report, a ContainerMigration against the manual procedure.

The baseline is what a user would script without Ferry: ``podman container
checkpoint --export`` on the source node, ``scp`` of the archive to the target
node (OpenSSH between the nodes' own addresses), ``podman container restore
--import`` there. Ferry moves the same container with a ContainerMigration.
Both run in the same process, alternating, on the same two nodes.

The workload is ``memhog`` (see :mod:`.memhog`): a counter holding 0, 256 MiB or
1 GiB of random memory in its own process. For each run the report gives:

* freeze to running: from the freeze on the source to the container running
  on the target (manual: checkpoint + copy + restore; Ferry: its measured
  ``downtimeSeconds``);
* downtime seen by the workload: the longest gap between two of its clock
  readings, 10 ms apart, which it records itself;
* total: from the start of the move to its end (Ferry: creating the resource
  to seeing it Succeeded);
* bytes moved, and throughput (bytes over freeze to running);
* Ferry's overhead: its total minus checkpoint, transfer and restore.

Medians go to the terminal, everything to a JSON file, and a PNG plots the
workload's downtime against its memory size for both. Nothing asserts a
time: the targets of issue 8 are printed as met or missed.
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

from . import cluster, deploy, memhog, workloads
from .config import ClusterConfig, NodeSpec

SIZES_MIB = {"tiny": 0, "64MiB": 64, "256MiB": 256, "1GiB": 1024}
DEFAULT_SIZES = "tiny,256MiB,1GiB"
NAMESPACE = "bench"
MIGRATIONS = constants.CONTAINER_MIGRATION_PLURAL
#: The steps of a migration whose durations are not Ferry's own overhead.
STEPS = ("checkpointSeconds", "transferSeconds", "restoreSeconds")
SSH_OPTS = "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/root/.ssh/known_hosts"
#: How each way of moving is named in the report; the Ferry ones by their memoryTransfer.
METHODS = {
    "manual": "manual export/scp/import",
    "ferry": "ContainerMigration, memoryTransfer: Archive",
    "pageserver": "ContainerMigration, memoryTransfer: PageServer (TLS)",
    "plain": "ContainerMigration, memoryTransfer: PageServer (plain TCP)",
    "auto": "ContainerMigration, memoryTransfer: Auto",
}
DEFAULT_METHODS = "manual,ferry,pageserver,auto"
#: Each Ferry method: its name in the targets, and the spec fields that choose it.
FERRY_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "ferry": ("Archive", {"memoryTransfer": "Archive"}),
    "pageserver": ("PageServer", {"memoryTransfer": "PageServer"}),
    "plain": ("PageServer plain", {"memoryTransfer": "PageServer", "pageServerTLS": False}),
    "auto": ("Auto", {"memoryTransfer": "Auto"}),
}
#: Issue 8's targets: (what, threshold), met when below.
TARGETS = (
    ("tiny: downtime {} / manual", 0.8),
    ("1GiB: downtime {} / manual", 0.5),
    ("{} overhead, median seconds", 0.3),
)
TARGET_THROUGHPUT_1GIB = 300e6


@dataclass(frozen=True, kw_only=True)
class Sample:
    freeze_to_running: float
    workload_downtime: float
    total: float
    bytes_moved: int
    #: Ferry only: total minus checkpoint, transfer and restore.
    overhead: float | None = None
    #: Seconds per step: checkpoint, copy/transfer, restore.
    steps: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def throughput(self) -> float:
        return self.bytes_moved / self.freeze_to_running if self.freeze_to_running else 0.0


def sh(node: NodeSpec, script: str, *, timeout: float = 900) -> str:
    return workloads.sh(node, script, timeout=timeout)


def start(node: NodeSpec, name: str, mib: int) -> None:
    """memhog holding ``mib`` MiB, running and ticking (its memory filled) on ``node``."""
    sh(
        node,
        f"podman rm -f -t 0 -i {name}; podman run -d --name {name} "
        f"--label {constants.NAMESPACE_LABEL}={NAMESPACE} {memhog.IMAGE} "
        f"/bin/memhog {mib}",
    )
    deadline = time.monotonic() + 300
    while ticks(node, name)[0] < 3:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never started ticking on {node.name}")
        time.sleep(0.2)


def ticks(node: NodeSpec, name: str) -> tuple[int, float]:
    """memhog's (count, longest gap in seconds); (0, 0) before its first tick."""
    text = sh(node, f"podman exec {name} sh -c 'cat /tmp/count /tmp/gap 2>/dev/null; true'")
    if len(text.split()) != 2:
        return 0, 0.0
    count, gap_ms = text.split()
    return int(count), float(gap_ms) / 1000


def workload_downtime(node: NodeSpec, name: str) -> float:
    """The longest gap the workload saw, once it ticked a few times on ``node``."""
    first, _ = ticks(node, name)
    deadline = time.monotonic() + 60
    while (current := ticks(node, name))[0] < first + 3:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} does not tick on {node.name}")
        time.sleep(0.1)
    return current[1]


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


def manual(source: NodeSpec, target: NodeSpec, mib: int) -> Sample:
    name = f"manual-{uuid.uuid4().hex[:6]}"
    start(source, name, mib)
    sh(target, f"podman rm -f -t 0 -i {name}")
    archive = f"/root/{name}.tar"  # in the node; podman's default compression (zstd)
    began = time.monotonic()
    sh(source, f"podman container checkpoint --export {archive} {name}")
    dumped = time.monotonic()
    sh(source, f"scp -q {SSH_OPTS} {archive} root@{target.address}:{archive}")
    copied = time.monotonic()
    sh(target, f"podman container restore --import {archive}")
    ended = time.monotonic()
    seen = workload_downtime(target, name)
    moved = int(sh(target, f"stat -c %s {archive}"))
    sh(source, f"podman rm -f -t 0 {name}; rm -f {archive}")
    sh(target, f"podman rm -f -t 0 {name}; rm -f {archive}")
    took = ended - began
    return Sample(
        freeze_to_running=took,
        workload_downtime=seen,
        total=took,
        bytes_moved=moved,
        steps=(dumped - began, copied - dumped, ended - copied),
    )


def _wait_final(custom: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 900
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
        time.sleep(0.05)


def with_ferry(
    custom: client.CustomObjectsApi,
    source: NodeSpec,
    target: NodeSpec,
    mib: int,
    *,
    choice: dict[str, Any] | None = None,
) -> Sample:
    name = f"ferry-{uuid.uuid4().hex[:6]}"
    start(source, name, mib)
    sh(target, f"podman rm -f -t 0 -i {name}")
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.CONTAINER_MIGRATION_KIND,
        "metadata": {"name": name},
        "spec": {
            "source": {"node": source.name, "container": name},
            "target": {"node": target.name},
            "timeoutSeconds": 900,
            **(choice or {}),
        },
    }
    began = time.monotonic()
    custom.create_namespaced_custom_object(
        constants.GROUP, constants.VERSION, NAMESPACE, MIGRATIONS, body
    )
    status = _wait_final(custom, name)
    total = time.monotonic() - began
    if status["phase"] != "Succeeded":
        raise RuntimeError(f"{name} ended {status['phase']}: {status.get('message')}")
    seen = workload_downtime(target, name)
    sh(target, f"podman rm -f -t 0 {name}")
    timings = status["timings"]
    checkpoint, transfer, restore = (float(timings[step]) for step in STEPS)
    moved = int(status["archive"]["bytes"]) + int(status.get("pagesBytes") or 0)
    return Sample(
        freeze_to_running=float(timings["downtimeSeconds"]),
        workload_downtime=seen,
        total=total,
        bytes_moved=moved,
        overhead=float(timings["totalSeconds"]) - checkpoint - transfer - restore,
        steps=(checkpoint, transfer, restore),
    )


def medians(samples: list[Sample]) -> dict[str, float]:
    row = {
        "freezeToRunningSeconds": statistics.median(s.freeze_to_running for s in samples),
        "workloadDowntimeSeconds": statistics.median(s.workload_downtime for s in samples),
        "totalSeconds": statistics.median(s.total for s in samples),
        "bytesMoved": statistics.median(s.bytes_moved for s in samples),
        "throughputBytesPerSecond": statistics.median(s.throughput for s in samples),
    }
    overheads = [s.overhead for s in samples if s.overhead is not None]
    if overheads:
        row["overheadSeconds"] = statistics.median(overheads)
    return {key: round(value, 3) for key, value in row.items()}


def ratio(ferry: float, manual: float) -> float:
    return round(ferry / manual, 3) if manual else 0.0


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 8's targets, as met or missed by this run (a report, not an assertion)."""
    sizes = results["sizes"]
    found: list[dict[str, Any]] = []

    def add(what: str, value: float | None, limit: float, *, below: bool = True) -> None:
        if value is None:
            return
        met = value <= limit if below else value >= limit
        found.append({"target": what, "value": value, "limit": limit, "met": met})

    for method, (transfer, _) in FERRY_METHODS.items():
        if not any(method in entry for entry in sizes.values()):
            continue
        ratio_key = f"{method}DowntimeRatio" if method != "ferry" else "downtimeRatio"
        add(TARGETS[0][0].format(transfer), sizes.get("tiny", {}).get(ratio_key), TARGETS[0][1])
        add(TARGETS[1][0].format(transfer), sizes.get("1GiB", {}).get(ratio_key), TARGETS[1][1])
        overheads = [s["overhead"] for e in sizes.values() for s in e["samples"].get(method, [])]
        median = round(statistics.median(overheads), 3) if overheads else None
        add(TARGETS[2][0].format(transfer), median, TARGETS[2][1])
        big = sizes.get("1GiB", {}).get(method, {}).get("throughputBytesPerSecond")
        add(f"1GiB: {transfer} throughput, bytes/s", big, TARGET_THROUGHPUT_1GIB, below=False)
    return found


def plot(results: dict[str, Any], out: Path) -> bool:
    """Downtime seen by the workload against its memory, both methods; False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional: only the report needs it

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError:
        return False
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for method, style in zip(METHODS, ("o--", "s-", "^-", "v-", "D-"), strict=True):
        points = [
            (entry["memoryMiB"], entry[method]["workloadDowntimeSeconds"])
            for entry in results["sizes"].values()
            if method in entry
        ]
        if points:
            axes.plot(*zip(*points, strict=True), style, label=METHODS[method])
    axes.set_xlabel("memory held by the process (MiB, random)")
    axes.set_ylabel("downtime seen by the workload (s)")
    axes.set_title("Moving a container between nodes: downtime against memory")
    axes.grid(visible=True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    return True


def report(results: dict[str, Any]) -> None:
    head = f"{'size':7} {'method':7} {'freeze→run s':>12} {'seen s':>7} {'total s':>8}"
    print(f"\n{head} {'moved MiB':>10} {'MB/s':>7} {'overhead s':>11}")
    for label, entry in results["sizes"].items():
        for method in [m for m in METHODS if m in entry]:
            row = entry[method]
            overhead = row.get("overheadSeconds")
            print(
                f"{label:7} {method:7} {row['freezeToRunningSeconds']:12.3f} "
                f"{row['workloadDowntimeSeconds']:7.3f} {row['totalSeconds']:8.3f} "
                f"{row['bytesMoved'] / 2**20:10.1f} {row['throughputBytesPerSecond'] / 1e6:7.1f} "
                f"{'' if overhead is None else f'{overhead:11.3f}'}"
            )
        print(
            f"{label:7} {'ratio':7} {entry['freezeToRunningRatio']:12.3f} "
            f"{entry['downtimeRatio']:7.3f} {entry['totalRatio']:8.3f}   (Archive / manual)"
        )
        for method, (transfer, _) in FERRY_METHODS.items():
            if f"{method}DowntimeRatio" in entry:
                ratio_text = f"{entry[f'{method}DowntimeRatio']:7.3f}"
                print(f"{label:7} {'ratio':7} {'':12} {ratio_text} {'':8}   ({transfer} / manual)")
    print()
    for target in results["targets"]:
        verdict = "met" if target["met"] else "MISSED"
        print(f"target {target['target']}: {target['value']} (limit {target['limit']}): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs per size and method (tiny: 5+)")
    parser.add_argument(
        "--sizes", default=DEFAULT_SIZES, help=f"comma-separated, of {', '.join(SIZES_MIB)}"
    )
    parser.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma-separated, of {', '.join(METHODS)}"
    )
    parser.add_argument("--output", default="bench-results.json")
    parser.add_argument("--plot", default="bench-downtime.png")
    parser.add_argument("--keep", action="store_true", help="keep the bench cluster up")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    if methods[:2] != ["manual", "ferry"] or not set(methods) <= set(METHODS):
        parser.error(f"--methods: manual,ferry first, then any of {', '.join(METHODS)}")

    config = ClusterConfig(name="bench", nodes=2)
    cluster.up(config, lambda m: print(f"==> {m}", flush=True))
    deploy.deploy(config)
    source, target = config.node_specs()
    for node in (source, target):
        memhog.ensure_loaded(config, node)
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
            for label in args.sizes.split(","):
                mib = SIZES_MIB[label]
                # A tiny move lasts half a second: more runs, for a steadier median.
                runs = max(args.runs, 5) if mib == 0 else args.runs
                print(f"==> {label}: {runs} runs of each, alternating", flush=True)
                samples: dict[str, list[Sample]] = {method: [] for method in methods}
                for _ in range(runs):
                    samples["manual"].append(manual(source, target, mib))
                    for method in methods[1:]:
                        choice = FERRY_METHODS[method][1]
                        samples[method].append(
                            with_ferry(custom, source, target, mib, choice=choice)
                        )
                entry: dict[str, Any] = {
                    "memoryMiB": mib,
                    **{method: medians(found) for method, found in samples.items()},
                    "samples": {m: [asdict(s) for s in found] for m, found in samples.items()},
                }
                for key, field in (
                    ("freezeToRunningRatio", "freezeToRunningSeconds"),
                    ("downtimeRatio", "workloadDowntimeSeconds"),
                    ("totalRatio", "totalSeconds"),
                ):
                    entry[key] = ratio(entry["ferry"][field], entry["manual"][field])
                for method in methods[2:]:
                    entry[f"{method}DowntimeRatio"] = ratio(
                        entry[method]["workloadDowntimeSeconds"],
                        entry["manual"]["workloadDowntimeSeconds"],
                    )
                results["sizes"][label] = entry
    finally:
        if not args.keep:
            cluster.down(config)
    results["targets"] = targets(results)
    report(results)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.output}")
    if plot(results, Path(args.plot)):
        print(f"plotted to {args.plot}")
    else:
        print("no plot: matplotlib is missing (pip install '.[dev]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
