"""What a helper writes into its NodeHelper's status at each heartbeat."""

from __future__ import annotations

import datetime

from ferry_api.nodehelper import CriInfo, NodeHelperStatus
from ferry_helper.publisher import Publisher
from kubernetes import client

NOW = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)


def test_what_the_node_no_longer_has_is_sent_as_null_so_the_merge_patch_drops_it() -> None:
    publisher = Publisher(client.ApiClient(), node="node-a")
    had = publisher.status_body(
        NodeHelperStatus(node_name="node-a", cri=CriInfo(runtime="containerd", version="2.1.9")),
        now=NOW,
    )
    assert had["cri"] == {"runtime": "containerd", "version": "2.1.9", "checkpointImages": False}
    lost = publisher.status_body(NodeHelperStatus(node_name="node-a"), now=NOW)
    assert lost["cri"] is None, "a merge patch keeps a field it is not told to delete"
    assert lost["criu"] is None
    assert lost["nodeName"] == "node-a"
    assert lost["conditions"][0]["type"] == "Ready"
