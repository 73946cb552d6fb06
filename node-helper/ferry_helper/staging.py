"""The helper's staging area: one private directory per migration, and its journal.

A migration's directory is named by the migration's UID and nothing else, so
no name a user chooses ever becomes a path. Directories are 0700 and archives
0600: a checkpoint holds a process's whole memory. The journal records each
finished step's result, which is what makes the steps idempotent: the operator
may ask again after a restart and get the same answer without a second freeze.

The journal is JSON, one object per step. A step's reply is kept as it went on
the wire (camelCase, :meth:`Staging.record_model`) and read back with its model
(:meth:`Staging.recorded_model`), so a journal written by an earlier helper,
which kept the same keys, still reads. What only the helper itself notes (a
restore begun, a page server opened) is a :class:`JournalEntry`.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

UID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ARCHIVE = "checkpoint.tar"
#: A sealed archive's plaintext, opened for a restore and removed right after it.
OPENED_ARCHIVE = "checkpoint.opened.tar"
#: How long a finished migration's mark is kept (see :meth:`Staging.close`): a week,
#: far beyond the longest timeoutSeconds (an hour) and its rollback's retries.
CLOSED_RETENTION_SECONDS = 7 * 24 * 3600
IMAGE = "image.tar"

ModelT = TypeVar("ModelT", bound=BaseModel)


class JournalEntry(BaseModel):
    """A note the helper keeps for itself in a journal: camelCase keys, as replies have.

    Keys it does not know are ignored, so an entry an earlier helper wrote still reads.
    """

    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore"
    )


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)

    @staticmethod
    def _check(uid: str) -> str:
        if not UID_PATTERN.match(uid):
            raise ValueError(f"not a migration UID: {uid!r}")
        return uid

    def directory(self, uid: str) -> Path:
        path = self.root / self._check(uid)
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def archive(self, uid: str) -> Path:
        return self.directory(uid) / ARCHIVE

    def opened_archive(self, uid: str) -> Path:
        """Where a sealed archive is opened for restore ``uid`` (never kept: see
        :meth:`remove`, which keeps only the archive and the journal)."""
        return self.directory(uid) / OPENED_ARCHIVE

    def uids(self) -> list[str]:
        """The UIDs that have a directory here."""
        return sorted(p.name for p in self.root.iterdir() if UID_PATTERN.match(p.name))

    def image_archive(self, image_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", image_id):
            raise ValueError(f"not an image ID: {image_id!r}")
        images = self.root / "images"
        images.mkdir(mode=0o700, exist_ok=True)
        return images / f"{image_id}.tar"

    def recorded(self, uid: str, step: str) -> dict[str, Any] | None:
        journal = self._journal(uid)
        result = journal.get(step)
        return result if isinstance(result, dict) else None

    def record(self, uid: str, step: str, result: dict[str, Any]) -> None:
        journal = self._journal(uid)
        journal[step] = result
        path = self.directory(uid) / "journal.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(journal))
        tmp.replace(path)

    def record_model(self, uid: str, step: str, entry: BaseModel) -> None:
        """Record ``entry`` (a reply, or a :class:`JournalEntry`) as its camelCase JSON."""
        self.record(uid, step, entry.model_dump(mode="json", by_alias=True, exclude_none=True))

    def recorded_model(self, uid: str, step: str, model: type[ModelT]) -> ModelT | None:
        """What was recorded for ``step``, read as ``model``; None if nothing was."""
        data = self.recorded(uid, step)
        return None if data is None else model.model_validate(data)

    def forget(self, uid: str, step: str) -> None:
        journal = self._journal(uid)
        if journal.pop(step, None) is not None:
            (self.directory(uid) / "journal.json").write_text(json.dumps(journal))

    def close(self, uid: str) -> None:
        """Mark the migration finished here: later steps for it are refused.

        The operator may give up on a step whose request is still on its way
        (a cancelled migration); when it arrives after the rollback, the
        mark stops it from freezing the source a second time.
        """
        closed = self.root / ".closed"
        closed.mkdir(mode=0o700, exist_ok=True)
        (closed / self._check(uid)).touch()
        self.prune_closed()

    def is_closed(self, uid: str) -> bool:
        return (self.root / ".closed" / self._check(uid)).exists()

    def prune_closed(self, *, now: float | None = None) -> list[str]:
        """Forget marks older than :data:`CLOSED_RETENTION_SECONDS`; the UIDs forgotten.

        A mark only has to outlive the requests still on their way for its
        migration, and none is older than a migration's longest timeout.
        """
        closed = self.root / ".closed"
        if not closed.is_dir():
            return []
        limit = (time.time() if now is None else now) - CLOSED_RETENTION_SECONDS
        forgotten = []
        for mark in closed.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if mark.stat().st_mtime < limit:
                    mark.unlink()
                    forgotten.append(mark.name)
        return forgotten

    def _claims(self) -> Path:
        claims = self.root / ".claims"
        claims.mkdir(mode=0o700, exist_ok=True)
        return claims

    def claim(self, container_id: str, uid: str) -> str | None:
        """Claim ``container_id`` for migration ``uid``; the other holder's UID if taken.

        One migration at a time per container: a second one would checkpoint a
        container the first has frozen, and its rollback would then bring back
        a source the first is already restoring elsewhere. Synchronous on
        purpose: nothing else runs between the check and the write.
        """
        if not re.fullmatch(r"[0-9a-f]{64}", container_id):
            raise ValueError(f"not a container ID: {container_id!r}")
        self._check(uid)
        marker = self._claims() / container_id
        if marker.exists():
            holder = marker.read_text().strip()
            if holder != uid:
                return holder
            return None
        marker.write_text(uid)
        return None

    def holder(self, container_id: str) -> str | None:
        marker = self._claims() / container_id
        return marker.read_text().strip() if marker.exists() else None

    def release(self, uid: str) -> None:
        """Give up every claim of migration ``uid``."""
        for marker in self._claims().iterdir():
            if marker.read_text().strip() == uid:
                marker.unlink(missing_ok=True)

    def remove(self, uid: str, *, keep_archive: bool = False) -> None:
        path = self.root / self._check(uid)
        if not path.is_dir():
            return
        if keep_archive:
            for entry in path.iterdir():
                if entry.name not in (ARCHIVE, "journal.json"):
                    entry.unlink()
            return
        shutil.rmtree(path, ignore_errors=True)

    def _journal(self, uid: str) -> dict[str, Any]:
        path = self.root / self._check(uid) / "journal.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
