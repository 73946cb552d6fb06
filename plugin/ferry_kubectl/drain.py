"""``kubectl ferry drain NODE``: a NodeEvacuation made and followed to its end.

It prints each workload as its move ends (moved where, with its downtime; or
refused or failed, with why, and that it still runs on the node), and exits
0 when every workload moved, 1 when some did not. Running it again for a node
whose evacuation exists follows that one (nothing is created twice); Ctrl-C
stops following, not the evacuation. ``kubectl ferry policies`` lists the
MigrationPolicies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ferry_api import constants

from ferry_kubectl.kinds import EVACUATION
from ferry_kubectl.output import Output

POLL_SECONDS = 1.0
ENDED = {"Moved", "Refused", "Failed"}


def manifest(
    node: str, *, name: str | None, max_parallel: int | None, cordon: bool, timeout: int | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": node, "cordon": cordon}
    if max_parallel is not None:
        spec["maxParallel"] = max_parallel
    if timeout is not None:
        spec["timeoutSeconds"] = timeout
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.NODE_EVACUATION_KIND,
        "metadata": {"name": name or f"drain-{node}"},
        "spec": spec,
    }


def workload_line(workload: dict[str, Any], node: str) -> str:
    what = f"{str(workload.get('kind', '')).lower()} {workload['namespace']}/{workload['name']}"
    state = workload.get("state")
    if state == "Moved":
        downtime = workload.get("downtimeSeconds")
        shown = f" (downtime {downtime:.2f}s)" if isinstance(downtime, int | float) else ""
        return f"{what}: moved to {workload.get('target')}{shown}"
    reason = workload.get("reason") or state
    message = workload.get("message") or ""
    return f"{what}: {str(state).lower()} ({reason}: {message}); it still runs on {node}"


def follow(get: Callable[[], dict[str, Any]], out: Output | None) -> dict[str, Any]:
    """Print each workload once its move ends, and the summary; the last body seen.

    ``out`` None: print nothing (``-o json|yaml|name`` print the end alone).
    """
    shown: set[tuple[str, str, str]] = set()
    started = False
    while True:
        body = get()
        status = body.get("status") or {}
        node = body["spec"]["nodeName"]
        if not started and status.get("workloads") is not None and status.get("phase"):
            if out is not None:
                out.line(status.get("message") or f"evacuating {node}")
            started = True
        for workload in status.get("workloads") or []:
            key = (workload.get("kind"), workload.get("namespace"), workload.get("name"))
            if workload.get("state") in ENDED and key not in shown:
                shown.add(key)
                if out is not None:
                    out.line(workload_line(workload, node))
        if EVACUATION.is_final(body):
            if out is not None:
                out.line(status.get("message") or str(status.get("phase")))
            return body
        time.sleep(POLL_SECONDS)


def policy_row(body: dict[str, Any]) -> list[str]:
    spec = body.get("spec") or {}
    selector = spec.get("selector") or {}
    labels = [
        *(
            f"ns:{k}={v}"
            for k, v in ((selector.get("namespaceSelector") or {}).get("matchLabels") or {}).items()
        ),
        *(
            f"{k}={v}"
            for k, v in ((selector.get("workloadSelector") or {}).get("matchLabels") or {}).items()
        ),
    ]

    def shown(key: str) -> str:
        value = spec.get(key)
        return "-" if value is None else str(value)

    return [
        body["metadata"]["name"],
        ",".join(labels) or "(everything)",
        shown("parallelOutboundMigrationsPerNode"),
        shown("bandwidthPerMigration"),
        shown("progressTimeoutSeconds"),
        shown("completionTimeoutPerGiBSeconds"),
    ]


POLICY_HEADERS = (
    "NAME",
    "SELECTS",
    "OUTBOUND/NODE",
    "BANDWIDTH",
    "PROGRESS-TIMEOUT",
    "TIMEOUT/GIB",
)


def print_policies(policies: list[dict[str, Any]], out: Output) -> None:
    if not policies:
        out.line("No MigrationPolicies: the defaults apply (operator.maxMigrationsPerNode).")
    else:
        out.table(POLICY_HEADERS, [policy_row(p) for p in policies])
