"""The archive podman's CLI would have exported, made from the REST API's export.

The libpod API exports a checkpoint uncompressed and without its statistics
(see :mod:`.libpod`). :func:`finish_export` compresses it as the migration
asked, hashing on the way (no second pass over the archive), and reads CRIU's
statistics from the archive's ``stats-dump``. ``podman container restore
--import`` finds the compression by itself, as it does for the CLI's archives.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import zstandard

from ..criu_stats import CriuStatistics, parse_stats_image
from .archives import HASH_CHUNK
from .records import Compression

STATS_MEMBER = "stats-dump"


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Hashing:
    """A file that hashes and counts what is written to it."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        self._sink.flush()


def statistics_in(tar_path: Path) -> CriuStatistics:
    """CRIU's statistics from the ``stats-dump`` of an uncompressed checkpoint archive."""
    try:
        with tarfile.open(tar_path, "r:") as archive:
            member = archive.extractfile(STATS_MEMBER)
            if member is None:
                return CriuStatistics()
            return parse_stats_image(member.read())
    except (KeyError, tarfile.TarError, OSError):
        return CriuStatistics()


def finish_export(
    raw: Path, out: Path, compression: Compression
) -> tuple[int, str, CriuStatistics]:
    """Write ``raw`` (an uncompressed export) to ``out`` compressed; (size, sha256, statistics)."""
    statistics = statistics_in(raw)
    with raw.open("rb") as source, out.open("wb") as sink:
        hashing = _Hashing(sink)
        # Both compressors only write to and flush their file.
        target = cast(BinaryIO, hashing)
        if compression == "zstd":
            with zstandard.ZstdCompressor().stream_writer(target, closefd=False) as zstd:
                _copy(source, zstd)
        elif compression == "gzip":
            with gzip.GzipFile(fileobj=target, mode="wb", mtime=0) as gz:
                _copy(source, gz)
        else:
            _copy(source, hashing)
    return hashing.size, hashing.digest.hexdigest(), statistics


def _copy(source: BinaryIO, sink: _Writable) -> None:
    while chunk := source.read(HASH_CHUNK):
        sink.write(chunk)
