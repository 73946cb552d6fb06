"""Archives a driver writes: complete or absent, and read back in chunks.

A checkpoint archive can be many gigabytes and a helper can die while one is
written. So a driver writes under a temporary name and renames once the tool
succeeded (:func:`written_whole`): an archive that exists is complete. Its size
and sha256 are read back from the file in chunks, never held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Bytes read at a time when hashing an archive.
HASH_CHUNK = 1 << 20


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of ``path``, read in chunks (archives can be many gigabytes)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def partial_path(path: Path) -> Path:
    """Where ``path`` is written until it is complete."""
    return path.with_name(f".{path.name}.partial")


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A path to write ``path``'s content to; it becomes ``path`` only if the block succeeds,
    so a file that exists is complete."""
    partial = partial_path(path)
    partial.unlink(missing_ok=True)
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
