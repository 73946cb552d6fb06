"""A checkpoint image: a container's checkpoint archive as an OCI image layout tar.

containerd (2.1 and newer) restores a CRI container instead of starting it
when the container's image is one of these. What it takes, as tried with
containerd 2.1.9 (see docs/ and ``ferry_cluster.podcheckpoint``):

* the image's top-level target is an OCI **index**; its manifest's
  descriptor carries ``org.criu.checkpoint.container.name: <container>``
  (annotations on the manifest alone are ignored), besides
  ``org.opencontainers.image.ref.name`` and ``io.containerd.image.name``,
  which name the image when the layout is imported;
* the manifest, annotated the same way, has one layer: the kubelet's archive
  as it is (``application/vnd.oci.image.layer.v1.tar``, so its diff ID is its
  digest).

Archives can be hundreds of MiB: the layer is streamed twice (its digest
first, which names its blob, then into the layout) and never held in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHECKPOINT_ANNOTATION = "org.criu.checkpoint.container.name"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CHUNK = 1 << 20
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def architecture() -> str:
    """This node's architecture as OCI names it."""
    machine = platform.machine()
    return _ARCHITECTURES.get(machine, machine)


@dataclass(frozen=True)
class Blob:
    """A blob's digest (``sha256:...``) and size."""

    digest: str
    size: int

    @classmethod
    def of(cls, data: bytes) -> Blob:
        return cls("sha256:" + hashlib.sha256(data).hexdigest(), len(data))

    @property
    def path(self) -> str:
        return "blobs/sha256/" + self.digest.removeprefix("sha256:")


def measure(stream: IO[bytes]) -> Blob:
    """The digest and size of what ``stream`` holds to its end, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return Blob("sha256:" + digest.hexdigest(), size)


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def documents(layer: Blob, *, container: str, reference: str, arch: str) -> dict[str, bytes]:
    """The layout's small files (``oci-layout``, ``index.json``, config, manifest) by path."""
    annotations = {CHECKPOINT_ANNOTATION: container}
    config = _json(
        {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            "config": {},
        }
    )
    config_blob = Blob.of(config)
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config_blob.digest,
                "size": config_blob.size,
            },
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer.digest, "size": layer.size}],
            "annotations": annotations,
        }
    )
    manifest_blob = Blob.of(manifest)
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [
                {
                    "mediaType": MANIFEST_MEDIA_TYPE,
                    "digest": manifest_blob.digest,
                    "size": manifest_blob.size,
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {
                        "org.opencontainers.image.ref.name": reference,
                        "io.containerd.image.name": reference,
                        **annotations,
                    },
                }
            ],
        }
    )
    return {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        config_blob.path: config,
        manifest_blob.path: manifest,
        "index.json": index,
    }


def write_layout(
    out: IO[bytes],
    layer: IO[bytes],
    blob: Blob,
    *,
    container: str,
    reference: str,
    arch: str | None = None,
) -> None:
    """Write the checkpoint image of ``layer`` (``blob`` measured it) into ``out`` as a tar.

    ``layer`` is copied in chunks from where it stands; it must hold ``blob.size`` bytes.
    """
    small = documents(blob, container=container, reference=reference, arch=arch or architecture())
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name in ("oci-layout", *(n for n in small if n.startswith("blobs/"))):
            _add(tar, name, io.BytesIO(small[name]), len(small[name]))
        _add(tar, blob.path, layer, blob.size)
        _add(tar, "index.json", io.BytesIO(small["index.json"]), len(small["index.json"]))


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    tar.addfile(info, data)


def write_layout_file(
    archive: Path, out: Path, *, container: str, reference: str, arch: str | None = None
) -> Blob:
    """The checkpoint image of the archive at ``archive``, written to ``out``; its layer."""
    with archive.open("rb") as layer:
        blob = measure(layer)
        layer.seek(0)
        with out.open("wb") as sink:
            write_layout(sink, layer, blob, container=container, reference=reference, arch=arch)
    return blob
