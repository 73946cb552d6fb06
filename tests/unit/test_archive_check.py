"""What a helper accepts as a checkpoint archive: crafted tars, no cluster.

The e2e tier sends such archives over SSH into a real helper; here each rule
is pinned on its own, for every compression podman writes.
"""

from __future__ import annotations

import asyncio
import tarfile
from pathlib import Path
from typing import Any

import pytest
from archives import COMPRESSIONS, UNSAFE, add_file, add_special, checkpoint_archive
from ferry_helper.archive_check import (
    StreamingCheck,
    UnsafeArchive,
    check_checkpoint_archive,
)


def _check(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "archive"
    path.write_bytes(data)
    return check_checkpoint_archive(path)


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_a_podman_shaped_archive_passes(tmp_path: Path, compression: str) -> None:
    rootfs = checkpoint_archive(
        rootfs=lambda t: (
            add_file(t, "app/data"),
            add_special(t, "app/link", tarfile.SYMTYPE, "/usr/bin/env"),
            add_special(t, "app/hard", tarfile.LNKTYPE, "app/data"),
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
    big = checkpoint_archive(lambda t: add_file(t, "checkpoint/pages-2.img", b"\1" * (4 << 20)))
    assert _stream(big) == 5
    # A refusal early in a long stream: the receiver still writes every byte.
    refused = checkpoint_archive(
        lambda t: (
            add_file(t, "/etc/passwd"),
            add_file(t, "checkpoint/pages-3.img", b"\2" * (4 << 20)),
        )
    )
    with pytest.raises(UnsafeArchive, match="absolute"):
        _stream(refused)
    with pytest.raises(UnsafeArchive, match="not a checkpoint archive"):
        _stream(b"\x42" * (1 << 20))


class _Stingy:
    """A pipe end that takes at most 1000 bytes per write, as an interrupted write does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def write(self, data: memoryview) -> int:
        written: int = self.inner.write(data[:1000])
        return written

    @property
    def closed(self) -> bool:
        return bool(self.inner.closed)

    def close(self) -> None:
        self.inner.close()


def test_a_pipe_write_that_takes_part_of_a_chunk_loses_nothing() -> None:
    big = checkpoint_archive(lambda t: add_file(t, "checkpoint/pages-2.img", b"\1" * (1 << 20)))

    async def feed() -> int:
        check = StreamingCheck()
        check._writer = _Stingy(check._writer)  # type: ignore[assignment]
        for start in range(0, len(big), 1 << 16):
            await check.feed(big[start : start + (1 << 16)])
        return await check.finish()

    assert asyncio.run(feed()) == 5
