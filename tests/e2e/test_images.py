"""The images a cluster admin installs, built from the Containerfiles without a registry.

The build runs for real (podman in a node, Debian packages and PyPI through
the host's network, a debootstrap base); the archives are then loaded on
another node and what each image must provide is run there.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from ferry_cluster import cluster, imagebuild
from ferry_cluster.config import ClusterConfig, NodeSpec
from ferry_cluster.workloads import sh

pytestmark = pytest.mark.e2e

HELM_CHART = "charts/ferry"


@pytest.fixture(scope="module")
def loaded(local_cluster: ClusterConfig) -> tuple[NodeSpec, dict[str, str]]:
    builder, runner = local_cluster.node_specs()[0], local_cluster.node_specs()[1]
    built = imagebuild.build(local_cluster, builder)
    for image in built:
        cluster.load_image(runner, image.archive)
    return runner, {image.reference.split(":")[0]: image.reference for image in built}


def run(node: NodeSpec, image: str, command: str) -> str:
    return sh(node, f"podman run --rm --network=host {image} {command}", timeout=120)


def test_the_operator_image_runs_its_commands_as_the_unprivileged_user(
    loaded: tuple[NodeSpec, dict[str, str]],
) -> None:
    node, images = loaded
    operator = images["ferry/operator"]
    assert run(node, operator, "id -u") == "65532", "the chart's restricted PSS expects 65532"
    usage = run(node, operator, "ferry-operator --help")
    for command in ("run", "keygen", "uninstall-cleanup"):
        assert command in usage
    config = json.loads(sh(node, f"podman image inspect {operator}"))[0]["Config"]
    assert config["Cmd"] == ["ferry-operator"]
    assert absent(node, operator, "ferry_helper", "ferry_cluster", "ferry_kubectl") == "True"


def test_the_helper_image_carries_the_helper_and_nsenter_and_no_runtime_of_its_own(
    loaded: tuple[NodeSpec, dict[str, str]],
) -> None:
    """The helper runs the node's podman, docker and CRIU (node_tools.py): its image has
    none of them, only Python, the helper and nsenter."""
    node, images = loaded
    helper = images["ferry/node-helper"]
    assert "util-linux" in run(node, helper, "nsenter --version")
    missing = run(node, helper, "sh -c 'command -v podman docker criu crun || echo none'")
    assert missing == "none", missing
    assert run(node, helper, "python3 -c 'import ferry_helper.server; print(1)'") == "1"
    assert absent(node, helper, "ferry_operator", "ferry_cluster", "ferry_kubectl") == "True"
    config = json.loads(sh(node, f"podman image inspect {helper}"))[0]["Config"]
    assert config["Cmd"] == ["ferry-helper"]
    assert "FERRY_NODE_TOOLS=nsenter" in config["Env"]


def absent(node: NodeSpec, image: str, *modules: str) -> str:
    """ "True" when none of ``modules`` can be imported in ``image``: it carries only what
    it runs (the other component, the test harness and the plugin stay out)."""
    names = ", ".join(repr(m) for m in modules)
    check = f"import importlib.util as u; print(all(u.find_spec(m) is None for m in ({names},)))"
    return run(node, image, f'python3 -c "{check}"')


def test_the_chart_defaults_name_the_built_images(
    local_cluster: ClusterConfig, loaded: tuple[NodeSpec, dict[str, str]]
) -> None:
    _, images = loaded
    rendered = subprocess.run(
        [
            str(local_cluster.bin_dir / "helm"),
            "template",
            "ferry",
            HELM_CHART,
            "--kube-version=1.34.4",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for reference in images.values():
        qualified = f"docker.io/{reference}"  # the chart's defaults name the registry
        assert f"image: {qualified}" in rendered or f'image: "{qualified}"' in rendered, reference
