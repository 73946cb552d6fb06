"""``kubectl ferry drain`` and ``policies`` without a cluster: the manifest, what is printed."""

from __future__ import annotations

import io
from typing import Any

import pytest
from ferry_api.evacuation import parse_node_evacuation
from ferry_kubectl import drain
from ferry_kubectl.output import Format, Output
from rich.console import Console


def plain() -> tuple[Output, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    return Output(console=console, interactive=False, format=Format.TEXT), buffer


def test_the_manifest_is_a_valid_node_evacuation_named_after_the_node() -> None:
    body = drain.manifest("node-a", name=None, max_parallel=2, cordon=True, timeout=120)
    assert body["metadata"] == {"name": "drain-node-a"}
    parsed = parse_node_evacuation(body)
    assert (parsed.spec.node_name, parsed.spec.max_parallel) == ("node-a", 2)
    assert (parsed.spec.cordon, parsed.spec.timeout_seconds) == (True, 120)


def test_follow_prints_each_workload_once_and_the_summary() -> None:
    def workload(name: str, state: str, **more: Any) -> dict[str, Any]:
        return {"kind": "Container", "namespace": "apps", "name": name, "state": state, **more}

    bodies = iter(
        [
            {
                "spec": {"nodeName": "node-a"},
                "status": {
                    "phase": "Evacuating",
                    "message": "2 workload(s) to move off node-a, 2 at a time",
                    "workloads": [workload("web", "Migrating"), workload("db", "Migrating")],
                },
            },
            {
                "spec": {"nodeName": "node-a"},
                "status": {
                    "phase": "Evacuating",
                    "workloads": [
                        workload("web", "Moved", target="node-b", downtimeSeconds=0.41),
                        workload("db", "Migrating"),
                    ],
                },
            },
            {
                "spec": {"nodeName": "node-a"},
                "status": {
                    "phase": "Incomplete",
                    "message": "1 of 2 workload(s) moved off node-a",
                    "workloads": [
                        workload("web", "Moved", target="node-b", downtimeSeconds=0.41),
                        workload(
                            "db",
                            "Refused",
                            reason="IncompatibleCpu",
                            message="no other node would take it",
                        ),
                    ],
                },
            },
        ]
    )
    out, buffer = plain()
    drain.POLL_SECONDS = 0.0
    final = drain.follow(lambda: next(bodies), out)
    assert final["status"]["phase"] == "Incomplete"
    lines = buffer.getvalue().splitlines()
    assert lines == [
        "2 workload(s) to move off node-a, 2 at a time",
        "container apps/web: moved to node-b (downtime 0.41s)",
        "container apps/db: refused (IncompatibleCpu: no other node would take it); "
        "it still runs on node-a",
        "1 of 2 workload(s) moved off node-a",
    ]


def test_policies_are_listed_with_what_they_select_and_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, buffer = plain()
    drain.print_policies(
        [
            {
                "metadata": {"name": "batch"},
                "spec": {
                    "selector": {"workloadSelector": {"matchLabels": {"tier": "batch"}}},
                    "bandwidthPerMigration": "20Mi",
                    "parallelOutboundMigrationsPerNode": 1,
                },
            }
        ],
        out,
    )
    text = buffer.getvalue() + capsys.readouterr().out
    assert "batch" in text
    assert "tier=batch" in text
    assert "20Mi" in text
