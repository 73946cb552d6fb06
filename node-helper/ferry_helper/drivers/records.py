"""What a runtime driver returns, the same records for every runtime.

The helper's operations read these and never a runtime's own output, so they
do not care which runtime ran. They are frozen pydantic models: a driver's
answer is a value, not something a caller updates.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

from ferry_api.migration import Compression
from pydantic import BaseModel, ConfigDict

from ..criu_images import Contents
from ..criu_stats import CriuStatistics

__all__ = [
    "CheckpointOptions",
    "CheckpointResult",
    "Compression",
    "ContainerInfo",
    "ImageCheckpoint",
    "Record",
    "RestoreResult",
    "epoch_seconds",
]


class Record(BaseModel):
    """A frozen value a driver returns."""

    model_config = ConfigDict(frozen=True)


class ContainerInfo(Record):
    """A container as its runtime reports it; ``pid`` is 0 unless it runs."""

    id: str
    name: str
    image_id: str
    image_name: str
    state: str
    running: bool
    labels: dict[str, str]
    pid: int
    #: Stopped by a checkpoint (and not restored since): an in-place restore may work.
    checkpointed: bool = False
    #: podman's directory for the container (``userdata``, holding ``checkpoint/``).
    static_dir: str = ""
    #: When the container was created (seconds since the epoch; 0 if unknown).
    created: float = 0.0


class CheckpointOptions(Record):
    leave_running: bool = False
    tcp_established: bool = False
    file_locks: bool = False
    compression: Compression = Compression.ZSTD


class CheckpointResult(Record):
    """A checkpoint archive; ``seconds`` is the checkpoint command's wall time."""

    archive: Path
    size_bytes: int
    sha256: str
    seconds: float
    statistics: CriuStatistics


class RestoreResult(Record):
    """A restored container; ``seconds`` is the wall time of the restore (0 if none was needed)."""

    container_id: str
    name: str
    seconds: float
    statistics: CriuStatistics


class ImageCheckpoint(Record):
    """A checkpoint pushed as an image; ``seconds`` is the dump's wall time (the push aside)."""

    reference: str
    digest: str
    seconds: float
    statistics: CriuStatistics
    #: The image's size, and what its CRIU images hold, when they could be read.
    size_bytes: int | None = None
    contents: Contents | None = None


_FRACTION = re.compile(r"(\.\d{6})\d+")


def epoch_seconds(text: str) -> float:
    """An RFC 3339 time as podman and docker print it (nanoseconds, ``Z`` or an offset)."""
    if not text:
        return 0.0
    try:
        moment = datetime.datetime.fromisoformat(_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return moment.timestamp()
