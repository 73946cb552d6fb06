"""Checkpoint-shaped tar archives, safe and hostile, for the unit and e2e tiers."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable

import zstandard

Build = Callable[[tarfile.TarFile], None]


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tar.addfile(info)


def tar_of(build: Build) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        build(tar)
    return out.getvalue()


def checkpoint_archive(extra: Build | None = None, rootfs: Build | None = None) -> bytes:
    """A tar shaped like podman's checkpoint export, with what a test adds."""

    def build(tar: tarfile.TarFile) -> None:
        dump = tarfile.TarInfo("checkpoint")
        dump.type = tarfile.DIRTYPE
        tar.addfile(dump)
        add_file(tar, "checkpoint/pages-1.img", b"\0" * 4096)
        add_file(tar, "config.dump", b"{}")
        add_file(tar, "spec.dump", b"{}")
        if rootfs is not None:
            add_file(tar, "rootfs-diff.tar", tar_of(rootfs))
        if extra is not None:
            extra(tar)

    return tar_of(build)


COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {
    "none": lambda data: data,
    "gzip": gzip.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}

UNSAFE: dict[str, tuple[bytes, str]] = {
    "dotdot": (checkpoint_archive(lambda t: add_file(t, "checkpoint/../../etc/cron.d/x")), "'..'"),
    "absolute": (checkpoint_archive(lambda t: add_file(t, "/etc/passwd")), "absolute"),
    "symlink then write through it": (
        checkpoint_archive(
            lambda t: (
                add_special(t, "checkpoint/out", tarfile.SYMTYPE, "/etc"),
                add_file(t, "checkpoint/out/passwd"),
            )
        ),
        "symlink",
    ),
    "hardlink": (
        checkpoint_archive(lambda t: add_special(t, "shadow", tarfile.LNKTYPE, "/etc/shadow")),
        "hardlink",
    ),
    "device node": (
        checkpoint_archive(lambda t: add_special(t, "checkpoint/sda", tarfile.BLKTYPE)),
        "special",
    ),
    "fifo": (
        checkpoint_archive(lambda t: add_special(t, "checkpoint/p", tarfile.FIFOTYPE)),
        "special",
    ),
    "device node in the rootfs diff": (
        checkpoint_archive(rootfs=lambda t: add_special(t, "dev/sda", tarfile.BLKTYPE)),
        "device node",
    ),
    "dotdot in the rootfs diff": (
        checkpoint_archive(rootfs=lambda t: add_file(t, "../../../root/.ssh/authorized_keys")),
        "'..'",
    ),
    "hardlink out of the rootfs diff": (
        checkpoint_archive(
            rootfs=lambda t: add_special(t, "x", tarfile.LNKTYPE, "../../etc/shadow")
        ),
        "'..'",
    ),
}
