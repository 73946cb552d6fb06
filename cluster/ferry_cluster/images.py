"""Container images without a registry, byte-for-byte reproducible.

``podman import`` of one tarball on two nodes yields two image IDs (the config
carries the import time), and a checkpoint restored on a node whose image has
another ID fails with ``image not known``. So images are built here as
docker-archives whose layer and config are deterministic (fixed mtimes, owners
and order): every node that loads one gets the same image ID.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

EPOCH = 0
BUSYBOX_IMAGE = "localhost/ferry/busybox:latest"
BUSYBOX_APPLETS = (
    "sh",
    "ash",
    "cat",
    "echo",
    "sleep",
    "ls",
    "ps",
    "date",
    "wc",
    "head",
    "tail",
    "seq",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "env",
    "true",
    "false",
    "test",
    "[",
    "grep",
    "sed",
    "awk",
    "nc",
    "hostname",
    "id",
    "kill",
    "top",
    "free",
    "dd",
    "ping",
    "printf",
    "expr",
    "tee",
)


@dataclass(frozen=True, kw_only=True)
class ImageArchive:
    path: Path
    reference: str
    image_id: str


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def layer_from_tree(root: Path) -> bytes:
    """A tar of ``root``'s contents, sorted, with fixed owners and times."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            found = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            if found is None:  # a socket: nothing an image can carry
                continue
            info = _normalise(found)
            if info.isfile():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _tar_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _normalise(tarfile.TarInfo(name))
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_docker_archive(
    out: Path, *, layer: bytes, reference: str, cmd: list[str], env: list[str] | None = None
) -> ImageArchive:
    """Write a single-layer docker-archive that ``podman load`` takes."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Cmd": cmd,
            "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "ferry-cluster image"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    image_id = hashlib.sha256(config_bytes).hexdigest()
    layer_dir = diff_id.removeprefix("sha256:")
    manifest = [
        {
            "Config": f"{image_id}.json",
            "RepoTags": [reference],
            "Layers": [f"{layer_dir}/layer.tar"],
        }
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_bytes(tar, f"{image_id}.json", config_bytes)
        _tar_bytes(tar, f"{layer_dir}/layer.tar", layer)
        _tar_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    return ImageArchive(path=out, reference=reference, image_id=image_id)


def busybox_layer(busybox: Path) -> bytes:
    """A root filesystem holding only a static busybox and links to its applets."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "etc", "tmp", "proc", "sys", "dev", "run", "var", "data"):
            info = _normalise(tarfile.TarInfo(directory))
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        data = busybox.read_bytes()
        info = _normalise(tarfile.TarInfo("bin/busybox"))
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in BUSYBOX_APPLETS:
            link = _normalise(tarfile.TarInfo(f"bin/{applet}"))
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
        _tar_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _tar_bytes(tar, "etc/group", b"root:x:0:\n")
    return buffer.getvalue()


def busybox_archive(rootfs: Path, out: Path) -> ImageArchive:
    """The test image: busybox from the nodes' busybox-static package."""
    layer = busybox_layer(rootfs / "usr/bin/busybox")
    return write_docker_archive(out, layer=layer, reference=BUSYBOX_IMAGE, cmd=["/bin/sh"])
