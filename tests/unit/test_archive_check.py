"""What a helper accepts as a checkpoint archive: crafted tars, no cluster.

The e2e tier sends such archives over SSH into a real helper; here each rule
is pinned on its own, for every compression podman writes.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from ferry_helper.archive_check import (
    StreamingCheck,
    UnsafeArchive,
    check_checkpoint_archive,
)

Build = Callable[[tarfile.TarFile], None]


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tar.addfile(info)


def _tar(build: Build) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        build(tar)
    return out.getvalue()


def _checkpoint(extra: Build | None = None, rootfs: Build | None = None) -> bytes:
    """A tar shaped like podman's checkpoint export, with what a test adds."""

    def build(tar: tarfile.TarFile) -> None:
        dump = tarfile.TarInfo("checkpoint")
        dump.type = tarfile.DIRTYPE
        tar.addfile(dump)
        _file(tar, "checkpoint/pages-1.img", b"\0" * 4096)
        _file(tar, "config.dump", b"{}")
        _file(tar, "spec.dump", b"{}")
        if rootfs is not None:
            _file(tar, "rootfs-diff.tar", _tar(rootfs))
        if extra is not None:
            extra(tar)

    return _tar(build)


COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {
    "none": lambda data: data,
    "gzip": gzip.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}

UNSAFE: dict[str, tuple[bytes, str]] = {
    "dotdot": (_checkpoint(lambda t: _file(t, "checkpoint/../../etc/cron.d/x")), "'..'"),
    "absolute": (_checkpoint(lambda t: _file(t, "/etc/passwd")), "absolute"),
    "symlink then write through it": (
        _checkpoint(
            lambda t: (
                _special(t, "checkpoint/out", tarfile.SYMTYPE, "/etc"),
                _file(t, "checkpoint/out/passwd"),
            )
        ),
        "symlink",
    ),
    "hardlink": (
        _checkpoint(lambda t: _special(t, "shadow", tarfile.LNKTYPE, "/etc/shadow")),
        "hardlink",
    ),
    "device node": (
        _checkpoint(lambda t: _special(t, "checkpoint/sda", tarfile.BLKTYPE)),
        "special",
    ),
    "fifo": (_checkpoint(lambda t: _special(t, "checkpoint/p", tarfile.FIFOTYPE)), "special"),
    "device node in the rootfs diff": (
        _checkpoint(rootfs=lambda t: _special(t, "dev/sda", tarfile.BLKTYPE)),
        "device node",
    ),
    "dotdot in the rootfs diff": (
        _checkpoint(rootfs=lambda t: _file(t, "../../../root/.ssh/authorized_keys")),
        "'..'",
    ),
    "hardlink out of the rootfs diff": (
        _checkpoint(rootfs=lambda t: _special(t, "x", tarfile.LNKTYPE, "../../etc/shadow")),
        "'..'",
    ),
}


def _check(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "archive"
    path.write_bytes(data)
    return check_checkpoint_archive(path)


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_a_podman_shaped_archive_passes(tmp_path: Path, compression: str) -> None:
    rootfs = _checkpoint(
        rootfs=lambda t: (
            _file(t, "app/data"),
            _special(t, "app/link", tarfile.SYMTYPE, "/usr/bin/env"),
            _special(t, "app/hard", tarfile.LNKTYPE, "app/data"),
        )
    )
    assert _check(tmp_path, COMPRESSIONS[compression](rootfs)) == 8


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_an_archive_that_reaches_outside_is_refused(
    tmp_path: Path, case: str, compression: str
) -> None:
    data, words = UNSAFE[case]
    with pytest.raises(UnsafeArchive, match=words):
        _check(tmp_path, COMPRESSIONS[compression](data))


def _stream(data: bytes) -> int:
    async def feed() -> int:
        check = StreamingCheck()
        for start in range(0, len(data), 1 << 16):
            await check.feed(data[start : start + (1 << 16)])
        return await check.finish()

    return asyncio.run(feed())


def test_the_streaming_check_agrees_and_never_blocks_the_receiver() -> None:
    big = _checkpoint(lambda t: _file(t, "checkpoint/pages-2.img", b"\1" * (4 << 20)))
    assert _stream(big) == 5
    # A refusal early in a long stream: the receiver still writes every byte.
    refused = _checkpoint(
        lambda t: (
            _file(t, "/etc/passwd"),
            _file(t, "checkpoint/pages-3.img", b"\2" * (4 << 20)),
        )
    )
    with pytest.raises(UnsafeArchive, match="absolute"):
        _stream(refused)
    with pytest.raises(UnsafeArchive, match="not a checkpoint archive"):
        _stream(b"\x42" * (1 << 20))
