"""The seed's manual procedure works on the simulated nodes: real podman, real CRIU.

A counter runs on node-a, is checkpointed with ``--export``, the archive crosses
the network to node-b (netcat between the nodes' own addresses), and
``restore --import`` there brings back the same process: it counts on from
where it was, it does not start over.
"""

from __future__ import annotations

import hashlib
import subprocess
import time

import pytest
from ferry_cluster import images, nodes
from ferry_cluster.config import ClusterConfig
from ferry_cluster.workloads import logged_counts, run_counter, sh, wait_counting

pytestmark = pytest.mark.e2e

PORT = 18080
# A plain TCP copy between the nodes' addresses, with the nodes' own Python.
RECEIVE = (
    "import socket,sys; s=socket.create_server(('0.0.0.0', {port})); c,_=s.accept(); "
    "f=open(sys.argv[1],'wb'); [f.write(b) for b in iter(lambda: c.recv(1<<16), b'')]; f.close()"
)
SEND = (
    "import socket,sys; c=socket.create_connection((sys.argv[2], {port}), timeout=10); "
    "c.sendall(open(sys.argv[1],'rb').read()); c.close()"
)


def test_counter_moves_between_nodes_and_keeps_counting(local_cluster: ClusterConfig) -> None:
    node_a, node_b = local_cluster.node_specs()[:2]
    name = "counter-e2e"
    for node in (node_a, node_b):
        sh(node, f"podman rm -f -t 0 -i {name}; rm -f /tmp/{name}.tar.gz")
    # Same image ID on both nodes: a restore needs the very image the dump was made on.
    ids = {
        sh(n, f"podman image inspect --format '{{{{.Id}}}}' {images.BUSYBOX_IMAGE}")
        for n in (node_a, node_b)
    }
    assert len(ids) == 1

    run_counter(node_a, name)
    wait_counting(node_a, name, above=15)

    sh(node_a, f"podman container checkpoint --export /tmp/{name}.tar.gz {name}")
    at_checkpoint = int(sh(node_a, f"podman logs {name} | tail -n 1"))
    assert at_checkpoint > 15
    state = sh(node_a, f"podman inspect --format '{{{{.State.Status}}}}' {name}")
    assert state == "exited"  # checkpointed and stopped: it cannot run on both

    digest = sh(node_a, f"sha256sum /tmp/{name}.tar.gz").split()[0]
    archive = f"/tmp/{name}.tar.gz"
    receiver = subprocess.Popen(
        nodes.exec_args(node_b, ["python3", "-c", RECEIVE.format(port=PORT), archive]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while f":{PORT:04X}" not in sh(node_b, "cat /proc/net/tcp"):
            assert time.monotonic() < deadline, "receiver never listened"
            time.sleep(0.05)
        nodes.run_in(
            node_a,
            ["python3", "-c", SEND.format(port=PORT), archive, str(node_b.address)],
            timeout=60,
        )
        assert receiver.wait(timeout=30) == 0
    finally:
        receiver.kill()
        receiver.communicate()
    assert sh(node_b, f"sha256sum /tmp/{name}.tar.gz").split()[0] == digest
    assert len(digest) == len(hashlib.sha256().hexdigest())

    sh(node_b, f"podman container restore --import /tmp/{name}.tar.gz")
    after = wait_counting(node_b, name, above=at_checkpoint)
    assert after > at_checkpoint, "the restored process started over"
    # The log (exported with the checkpoint) reads 1, 2, ... without a second 1:
    # one process, counting on across the move.
    logged = logged_counts(node_b, name)
    assert logged == list(range(1, len(logged) + 1))
    assert logged[-1] > at_checkpoint

    for node in (node_a, node_b):
        sh(node, f"podman rm -f -t 0 -i {name}; rm -f /tmp/{name}.tar.gz")
