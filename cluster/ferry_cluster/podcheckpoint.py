"""Upstream's pieces for moving a pod's container, driven by hand: what PodMigration builds on.

1. The kubelet's checkpoint API (KEP-2008): ``POST /checkpoint/{ns}/{pod}/{container}``
   on the source node's kubelet writes a CRIU archive under
   ``/var/lib/kubelet/checkpoints`` through containerd and runc.
2. A *checkpoint image*: an OCI image whose only layer is that archive, annotated
   ``org.criu.checkpoint.container.name``, imported into the target's containerd
   (``ctr images import --local``: unpacked into the CRI snapshotter).
3. A pod on the target whose container's image is that checkpoint image:
   containerd 2.1 restores the process instead of starting the command. It
   pulls the container's base image by the ``NAME@DIGEST`` recorded in the
   archive first, so the pod must have run an image from a registry
   (``registry.pull_address``).
"""

from __future__ import annotations

import hashlib
import io
import json
import ssl
import tarfile
import urllib.request
from pathlib import Path

from . import nodes
from .config import ClusterConfig, NodeSpec
from .pki import Pki

KUBELET_PORT = 10250
CHECKPOINT_ANNOTATION = "org.criu.checkpoint.container.name"
KUBELET_SERVING_CERT = "/var/lib/kubelet/pki/kubelet.crt"


def _kubelet_context(config: ClusterConfig, node: NodeSpec) -> ssl.SSLContext:
    """The API server's client certificate for kubelets; the node's self-signed cert pinned."""
    pki = Pki(directory=config.pki_dir)
    context = ssl.create_default_context(cafile=str(nodes.host_path(node, KUBELET_SERVING_CERT)))
    context.check_hostname = False  # pinned: the one certificate this kubelet serves
    context.load_cert_chain(
        str(pki.directory / "apiserver-kubelet-client.crt"),
        str(pki.directory / "apiserver-kubelet-client.key"),
    )
    return context


def kubelet_checkpoint(
    config: ClusterConfig,
    node: NodeSpec,
    *,
    namespace: str,
    pod: str,
    container: str,
    timeout: int = 60,
) -> str:
    """Ask ``node``'s kubelet to checkpoint a container; the archive's path in the node."""
    url = (
        f"https://{node.address}:{KUBELET_PORT}/checkpoint/{namespace}/{pod}/{container}"
        f"?timeout={timeout}"
    )
    request = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(  # noqa: S310 - https, our own kubelet
        request, context=_kubelet_context(config, node), timeout=timeout + 10
    ) as response:
        items: list[str] = json.loads(response.read())["items"]
    return items[0]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def checkpoint_image(archive: bytes, *, container: str, reference: str) -> bytes:
    """An OCI layout (as a tar) of the checkpoint image holding ``archive``."""
    annotations = {CHECKPOINT_ANNOTATION: container}
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [_digest(archive)]},
            "config": {},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(archive),
                    "size": len(archive),
                }
            ],
            "annotations": annotations,
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "org.opencontainers.image.ref.name": reference,
                        "io.containerd.image.name": reference,
                        **annotations,
                    },
                }
            ],
        }
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
        files |= {f"blobs/sha256/{_digest(b)[7:]}": b for b in (archive, config, manifest)}
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_checkpoint_image(
    source: NodeSpec, archive: str, *, container: str, reference: str, out: Path
) -> Path:
    """The checkpoint image of ``archive`` (a path in ``source``): an OCI layout tar, ``out``."""
    data = nodes.host_path(source, archive).read_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(checkpoint_image(data, container=container, reference=reference))
    return out
