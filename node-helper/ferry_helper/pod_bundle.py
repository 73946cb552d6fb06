"""A pod's checkpoint: one archive per container, bundled into the migration's one archive.

The kubelet writes one checkpoint archive per container. The source helper
bundles them into the migration's staging archive, a plain tar with one
member per container, ``<container>.tar``, so the ordinary ``send`` and
``receive`` carry a pod as they carry a container (the receiver's check
sees plain files). The target reads each member where it stands in the
bundle (no copy) to make that container's checkpoint image: first to check
it as a checkpoint archive and measure it, then to copy it into the image.

Everything streams: archives can be hundreds of MiB.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, BinaryIO, cast

from .archive_check import UnsafeArchive, check_checkpoint_stream
from .checkpoint_image import CHUNK, Blob, write_layout
from .criu_stats import CriuStatistics, parse_stats_image

logger = logging.getLogger(__name__)

#: Where CRIU's statistics are in a kubelet's (containerd's) archive, or in podman's.
STATS_MEMBERS = ("stats-dump", "checkpoint/stats-dump")


def member_name(container: str) -> str:
    return f"{container}.tar"


class _Hashing(io.RawIOBase):
    """A file that hashes and counts what passes through it (written or read)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.inner.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    @property
    def blob(self) -> Blob:
        return Blob("sha256:" + self.digest.hexdigest(), self.size)


def bundle(archives: Sequence[tuple[str, Path]], out: Path) -> Blob:
    """Bundle each ``(container, archive)`` into ``out`` (0600); the bundle's digest and size."""
    out.unlink(missing_ok=True)
    out.touch(mode=0o600)
    with out.open("wb") as sink:
        hashing = _Hashing(sink)
        with tarfile.open(fileobj=cast(IO[bytes], hashing), mode="w|") as tar:
            for container, archive in archives:
                with archive.open("rb") as source:
                    info = tarfile.TarInfo(member_name(container))
                    info.size = source.seek(0, io.SEEK_END)
                    info.mode = 0o600
                    source.seek(0)
                    tar.addfile(info, source)
    return hashing.blob


def statistics(archive: Path) -> CriuStatistics:
    """CRIU's statistics in ``archive`` (an uncompressed checkpoint), empty if there are none."""
    try:
        with tarfile.open(archive, "r:") as tar:
            for name in STATS_MEMBERS:
                with contextlib.suppress(KeyError):
                    member = tar.extractfile(name)
                    if member is not None:
                        return parse_stats_image(member.read())
    except (OSError, tarfile.TarError) as error:
        logger.warning("no CRIU statistics in %s: %s", archive, error)
    return CriuStatistics()


def summed(parts: Sequence[CriuStatistics]) -> CriuStatistics:
    """The counters of ``parts`` added up (a pod's containers are dumped one by one)."""
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.as_dict().items():
            total[key] = total.get(key, 0) + value
    return CriuStatistics.model_validate(total)


@contextlib.contextmanager
def _member(tar: tarfile.TarFile, container: str) -> Iterator[IO[bytes]]:
    try:
        info = tar.getmember(member_name(container))
    except KeyError:
        raise KeyError(f"the bundle holds no archive of container {container!r}") from None
    stream = tar.extractfile(info) if info.isfile() else None
    if stream is None:
        raise KeyError(f"the bundle's {member_name(container)} is no file")
    with stream:
        yield stream


def checked_blob(bundle_path: Path, container: str) -> Blob:
    """Read ``container``'s archive in the bundle once: check it (``UnsafeArchive``), measure it."""
    with tarfile.open(bundle_path, "r:") as tar, _member(tar, container) as stream:
        hashing = _Hashing(stream)
        reader = io.BufferedReader(hashing, CHUNK)
        try:
            check_checkpoint_stream(cast(io.BufferedReader, reader))
        except tarfile.TarError as error:
            raise UnsafeArchive(f"{container}: not a checkpoint archive: {error}") from None
        while reader.read(CHUNK):
            pass
        return hashing.blob


def write_image(bundle_path: Path, container: str, out: Path, *, reference: str) -> Blob:
    """The checkpoint image of ``container``'s archive in the bundle, written to ``out``."""
    blob = checked_blob(bundle_path, container)
    with (
        tarfile.open(bundle_path, "r:") as tar,
        _member(tar, container) as stream,
        out.open("wb") as sink,
    ):
        write_layout(cast(BinaryIO, sink), stream, blob, container=container, reference=reference)
    return blob
