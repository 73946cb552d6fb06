from __future__ import annotations

import json
import tarfile
from pathlib import Path

from ferry_cluster import images


def _busybox(tmp_path: Path) -> Path:
    fake = tmp_path / "rootfs" / "usr" / "bin" / "busybox"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"\x7fELF not really busybox")
    return tmp_path / "rootfs"


def test_the_same_input_gives_the_same_image_id(tmp_path: Path) -> None:
    rootfs = _busybox(tmp_path)
    first = images.busybox_archive(rootfs, tmp_path / "a.tar")
    second = images.busybox_archive(rootfs, tmp_path / "b.tar")
    assert first.image_id == second.image_id
    assert first.path.read_bytes() == second.path.read_bytes()


def test_the_archive_is_a_docker_archive_podman_can_load(tmp_path: Path) -> None:
    archive = images.busybox_archive(_busybox(tmp_path), tmp_path / "img.tar")
    with tarfile.open(archive.path) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (entry,) = manifest
        assert entry["RepoTags"] == [images.BUSYBOX_IMAGE]
        assert entry["Config"] == f"{archive.image_id}.json"
        layer = tar.extractfile(entry["Layers"][0])
        assert layer is not None
        with tarfile.open(fileobj=layer) as inner:
            names = set(inner.getnames())
    assert {"bin/busybox", "bin/sh", "etc/passwd", "tmp"} <= names


def test_layer_from_tree_ignores_mtimes(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_text("x")
    first = images.layer_from_tree(tree)
    (tree / "d" / "f").touch()
    assert images.layer_from_tree(tree) == first
