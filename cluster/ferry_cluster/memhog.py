"""The memhog image: a process holding N MiB of random bytes in its own memory, counting.

What the page-server path moves: memory that lives in a process (a tmpfs is
carried by CRIU as a file, never as pages) and does not compress. The image
is busybox (for ``podman exec ... cat``) plus ``memhog`` (``scripts/memhog.c``),
compiled statically with the host's C compiler. The archive is keyed by the
source and the node root's busybox and cached, so only the first build costs
anything; loading into a node is skipped when the node has the image already.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from . import cluster, images, nodes, procs
from .config import ClusterConfig, NodeSpec

IMAGE = "localhost/ferry/memhog:latest"


def _source() -> Path:
    return Path(str(resources.files("ferry_cluster") / "scripts" / "memhog.c"))


def _root(tree: Path, busybox: Path) -> None:
    """The image's root filesystem in ``tree``: memhog, busybox and its applets."""
    (tree / "bin").mkdir(parents=True)
    procs.run(["cc", "-static", "-O2", "-o", tree / "bin/memhog", _source()], timeout=300)
    for directory in ("etc", "tmp", "proc", "sys", "dev", "run", "var", "data"):
        (tree / directory).mkdir()
    (tree / "tmp").chmod(0o1777)
    shutil.copy2(busybox, tree / "bin/busybox")
    for applet in images.BUSYBOX_APPLETS:
        (tree / "bin" / applet).symlink_to("busybox")
    (tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tree / "etc/group").write_text("root:x:0:\n")


def _image_id(path: Path) -> str:
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise ValueError(f"{path} has no manifest.json")
        manifest = json.loads(member.read())
    return str(manifest[0]["Config"]).removesuffix(".json")


def archive(config: ClusterConfig, rootfs: Path) -> images.ImageArchive:
    """The image as a docker-archive in the cache, built if missing."""
    busybox = rootfs / "usr/bin/busybox"
    key = hashlib.sha256(_source().read_bytes() + busybox.read_bytes()).hexdigest()[:12]
    out = config.cache_dir / "images" / f"memhog-{key}.tar"
    if not out.exists():
        with tempfile.TemporaryDirectory(prefix="ferry-memhog-") as tmp:
            tree = Path(tmp) / "root"
            _root(tree, busybox)
            partial = out.with_name(f".{out.name}.partial")
            layer = images.layer_from_tree(tree)
            images.write_docker_archive(
                partial, layer=layer, reference=IMAGE, cmd=["/bin/memhog", "0"]
            )
            partial.replace(out)
    return images.ImageArchive(path=out, reference=IMAGE, image_id=_image_id(out))


def ensure_loaded(config: ClusterConfig, node: NodeSpec) -> None:
    """Load the memhog image into ``node``'s podman unless it has it."""
    built = archive(config, cluster.ensure_rootfs())
    present = nodes.run_in(node, ["podman", "image", "exists", built.image_id], check=False)
    if present.returncode != 0:
        cluster.load_image(node, built.path)
