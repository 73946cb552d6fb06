from __future__ import annotations

import pytest
from ferry_cluster.config import MAX_NODES, SERVICE_CIDR, ClusterConfig


def test_default_cluster_takes_the_well_known_names() -> None:
    config = ClusterConfig()
    assert config.bridge == "ferry0"
    assert str(config.gateway) == "10.213.0.1"
    assert config.apiserver_port == 6443
    assert [str(n.address) for n in config.node_specs()] == ["10.213.0.10", "10.213.0.11"]
    assert [n.name for n in config.node_specs()] == ["node-a", "node-b"]


def test_clusters_with_different_names_do_not_collide() -> None:
    a, b = ClusterConfig(name="test"), ClusterConfig(name="life")
    assert a.index != b.index
    assert a.subnet != b.subnet
    assert a.apiserver_port != b.apiserver_port
    assert a.bridge != b.bridge


@pytest.mark.parametrize("name", ["ferry", "test", "life", "abcdefghij"])
def test_interface_names_fit_the_kernel_limit(name: str) -> None:
    config = ClusterConfig(name=name, nodes=MAX_NODES)
    for node in config.node_specs():
        assert len(node.host_veth + "p") <= 15
    assert len(config.bridge) <= 15


@pytest.mark.parametrize(("name", "nodes"), [("Bad", 2), ("x" * 11, 2), ("ok", 0), ("ok", 5)])
def test_bad_names_and_sizes_are_refused(name: str, nodes: int) -> None:
    with pytest.raises(ValueError, match=r"cluster name|nodes"):
        ClusterConfig(name=name, nodes=nodes)


def test_pod_networks_never_overlap_between_nodes_clusters_or_services() -> None:
    clusters = [ClusterConfig(name=n, nodes=MAX_NODES) for n in ("ferry", "test", "life")]
    ranges = [node.pod_cidr for c in clusters for node in c.node_specs()]
    for i, one in enumerate(ranges):
        assert not one.overlaps(SERVICE_CIDR)
        for other in ranges[i + 1 :]:
            assert not one.overlaps(other), (one, other)
    for config in clusters:
        assert all(n.pod_cidr.subnet_of(config.pod_network) for n in config.node_specs())
        assert not config.pod_network.overlaps(config.subnet)
