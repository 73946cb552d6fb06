"""Running a piece of node-helper code for real, inside a simulated node, from a test."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from ferry_cluster import helperlayer, nodes
from ferry_cluster.config import NodeSpec


def drive(node: NodeSpec, program: str, body: str, **args: Any) -> Any:
    """Run ``program`` with ``body`` (the inside of its async ``main``) put in place of BODY,
    with the helper's Python in ``node``; ``args`` reach it as JSON in ``sys.argv[1]``.

    The program prints one JSON document last; that is what this returns.
    """
    code = program.replace("BODY", textwrap.indent(textwrap.dedent(body).strip(), "    "))
    argv = [
        "env",
        f"PYTHONPATH={helperlayer.helper_pythonpath()}",
        f"{helperlayer.VENV}/bin/python",
        "-c",
        code,
        json.dumps(args),
    ]
    result = nodes.run_in(node, argv, check=False, timeout=240)
    assert result.returncode == 0, f"{node.name}: driver program failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])
