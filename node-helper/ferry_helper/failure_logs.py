"""The full logs of failed steps, kept on the node for a while and handed out compressed.

A failed checkpoint or restore leaves CRIU's log inside the container's
storage, where the next attempt or the container's removal erases it, and
podman's own output nowhere at all. When a step fails, the helper copies both
into ``<stateDir>/logs/<uid>/`` (``<step>.criu.log``, ``<step>.podman.txt``),
so they outlive the container; the operator asks for them with
``fetch-logs`` and puts them next to the failed resource. Directories older
than the retention are pruned whenever a new one is written and at start.
"""

from __future__ import annotations

import gzip
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .drivers.errors import RuntimeCommandError
from .staging import UID_PATTERN

logger = logging.getLogger(__name__)

#: The tail of a log kept on the node (CRIU's debug logs of big processes grow large).
MAX_KEPT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class LogFile:
    """One kept log, gzip-compressed, possibly cut to its tail to fit a budget."""

    name: str
    gzipped: bytes
    size_bytes: int
    truncated: bool


def read_tail(path: Path, limit: int = MAX_KEPT_BYTES) -> bytes | None:
    """The last ``limit`` bytes of ``path``; None if it cannot be read."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - limit))
            return handle.read()
    except OSError:
        return None


def _compressed_tail(data: bytes, budget: int) -> tuple[bytes, bool]:
    """``data`` gzipped, cut to a shrinking tail until it fits ``budget`` bytes."""
    keep = len(data)
    while True:
        packed = gzip.compress(data[len(data) - keep :], compresslevel=6, mtime=0)
        if len(packed) <= budget or keep == 0:
            return packed, keep < len(data)
        keep = int(keep * budget / len(packed) * 0.9)


class FailureLogs:
    def __init__(self, root: Path, *, retention_seconds: float) -> None:
        self.root = root
        self.retention_seconds = retention_seconds
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _directory(self, uid: str) -> Path:
        if not UID_PATTERN.match(uid):
            raise ValueError(f"not a resource UID: {uid!r}")
        return self.root / uid

    def keep(self, uid: str, step: str, error: RuntimeCommandError) -> None:
        """Keep what ``error`` knows of the failed ``step`` of ``uid``; never raises."""
        try:
            directory = self._directory(uid)
            directory.mkdir(mode=0o700, exist_ok=True)
            tool = error.action().split(" ", 1)[0] or "podman"
            report = (
                f"command: {' '.join(error.command)}\n"
                f"exit code: {error.exit_code}\n"
                f"decisive line: {error.decisive_line}\n\n{error.stderr}"
            )
            (directory / f"{step}.{tool}.txt").write_text(report, encoding="utf-8")
            if error.criu_log_tail is not None:
                (directory / f"{step}.criu.log").write_bytes(error.criu_log_tail)
            self.prune()
        except (OSError, ValueError) as problem:
            logger.warning("could not keep the logs of %s %s: %s", step, uid, problem)

    def prune(self, now: float | None = None) -> list[str]:
        """Remove the logs older than the retention; the UIDs removed."""
        limit = (time.time() if now is None else now) - self.retention_seconds
        removed = []
        for directory in self.root.iterdir():
            try:
                if directory.stat().st_mtime < limit:
                    shutil.rmtree(directory)
                    removed.append(directory.name)
            except OSError as problem:
                logger.warning("could not prune %s: %s", directory, problem)
        return removed

    def read(self, uid: str, *, budget_bytes: int) -> list[LogFile]:
        """The logs of ``uid``, compressed, together at most about ``budget_bytes``.

        The budget is shared evenly; a file over its share keeps its tail,
        where CRIU writes why it stopped.
        """
        directory = self._directory(uid)
        if not directory.is_dir():
            return []
        paths = sorted(p for p in directory.iterdir() if p.is_file())
        files = []
        for path in paths:
            data = path.read_bytes()
            packed, truncated = _compressed_tail(data, budget_bytes // len(paths))
            files.append(LogFile(path.name, packed, len(data), truncated))
        return files
