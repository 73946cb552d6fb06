"""Stored checkpoints sealed at rest, and every archive checked before it is restored.

On a node with checkpoint keys (``checkpoints.encryption``, see
:mod:`ferry_helper.checkpoint_keys`) a ContainerCheckpoint's archive is sealed
right after its dump (:mod:`ferry_helper.sealing`): the plaintext is replaced,
never kept, and what the operator records (size, sha256) is the sealed file.
Checkpoint images are refused there (``EncryptionUnsupported``): a registry
would get them in clear.

Before a stored archive is restored or sent, it is hashed against the digest
the operator recorded and the one this node journaled (``CheckpointTampered``
when it changed). A sealed archive is then opened into the restore's staging
area, only once every chunk authenticated, and removed after the restore,
whatever happens: a key this node lacks is ``CheckpointKeyMissing``, a chunk
that does not authenticate ``CheckpointTampered``, both before any runtime is
asked to do anything. An archive received from another node is sniffed the
same way (migrations never seal, so theirs pass as they are); its plaintext is
checked as a checkpoint archive once opened, since its ciphertext could not
be while it arrived (:class:`~ferry_helper.archive_check.UnlessSealed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ferry_wire import Reason, RemoteError
from ferry_wire.stored import Sealing

from .. import sealing
from ..archive_check import UnsafeArchive, check_checkpoint_archive
from ..checkpoint_keys import Key, KeyFileError, Keyring
from .context import NodeContext

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class SealedArchive:
    """An archive sealed in place: how, what it is now, and what sealing it cost."""

    sealing: Sealing
    size_bytes: int
    sha256: str
    seconds: float


class SealedArchives:
    def __init__(self, context: NodeContext) -> None:
        self.context = context

    # -- storing

    def refuse_images(self) -> None:
        """``EncryptionUnsupported`` on a node that seals stored checkpoints."""
        if self.context.checkpoint_keys is not None:
            raise RemoteError(
                Reason.ENCRYPTION_UNSUPPORTED,
                f"node {self.context.node} encrypts stored checkpoints "
                "(checkpoints.encryption); checkpoint images pushed to a registry would not be "
                "encrypted, so store it on the node (storage.type: Node)",
            )

    def active_key(self) -> Key | None:
        """The key a new stored checkpoint is sealed with, read now; None: kept in clear."""
        keys = self.context.checkpoint_keys
        if keys is None:
            return None
        try:
            return keys.active()
        except KeyFileError as error:
            reason = (
                Reason.CHECKPOINT_KEY_MISSING if error.missing else Reason.CHECKPOINT_KEY_INVALID
            )
            raise RemoteError(
                reason,
                f"node {self.context.node}: {error} (checkpoints.encryption.secretName)",
            ) from None

    async def seal(self, archive: Path, key: Key) -> SealedArchive:
        """Seal ``archive`` in place with ``key``; on any failure the plaintext is removed."""
        started = time.monotonic()
        try:
            sealed = await _stoppable(sealing.seal, archive, archive, key)
        except BaseException as error:
            _discard(archive)  # the plaintext never stays
            if isinstance(error, OSError | sealing.SealError):
                raise RemoteError(
                    Reason.CHECKPOINT_FAILED,
                    f"sealing the checkpoint on node {self.context.node} failed: {error}",
                ) from None
            raise
        return SealedArchive(
            sealing=Sealing(key_name=key.name, key_id=key.id),
            size_bytes=sealed.size_bytes,
            sha256=sealed.sha256,
            seconds=time.monotonic() - started,
        )

    def sweep(self) -> list[Path]:
        """What a helper that died mid-way left in clear, removed; run at start, before any
        operation. The plaintext of a sealed archive opened for a restore, partial files
        of a seal or an opening, and, on a node that seals, a dump whose store never
        finished (no ``stored`` record: asked again, it is dumped again)."""
        staging, store = self.context.staging, self.context.store
        left: list[Path] = []
        for uid in staging.uids():
            opened = staging.opened_archive(uid)
            left += [opened, *opened.parent.glob(f".{opened.name}.*.partial")]
        for uid in store.uids():
            archive = store.archive(uid)
            left += archive.parent.glob(f".{archive.name}.*.partial")
            if (
                self.context.checkpoint_keys is not None
                and store.recorded(uid, "stored") is None
                and archive.exists()
                and not sealing.is_sealed(archive)
            ):
                left.append(archive)
        removed = [path for path in left if path.exists()]
        for path in removed:
            logger.warning("removing %s, left in clear by an earlier helper", path)
            _discard(path)
        return removed

    # -- before a restore or a send

    async def verify(
        self, archive: Path, what: str, expected: Sequence[tuple[str | None, str]]
    ) -> None:
        """``CheckpointTampered`` unless ``archive`` hashes to every digest of ``expected``
        (a digest, and who recorded it; None: not recorded)."""
        wanted = [(digest, who) for digest, who in expected if digest]
        if not wanted:
            return
        found = await asyncio.to_thread(sealing.file_sha256, archive)
        for digest, who in wanted:
            if digest != found:
                raise RemoteError(
                    Reason.CHECKPOINT_TAMPERED,
                    f"{what} on node {self.context.node} changed since it was stored: expected "
                    f"sha256 {digest} ({who}), found {found}; refused before anything used it",
                )

    @contextlib.asynccontextmanager
    async def opened(
        self, archive: Path, into: Path, *, check: bool = False
    ) -> AsyncIterator[Path]:
        """``archive`` itself when it is in clear; else its plaintext, opened at ``into`` and
        removed when the block ends, whatever happens. ``check``: the plaintext is also
        checked as a checkpoint archive (one received from another node)."""
        if not await asyncio.to_thread(sealing.is_sealed, archive):
            yield archive
            return
        try:
            await self._open(archive, into, check=check)
            yield into
        finally:
            _discard(into)

    async def _open(self, archive: Path, into: Path, *, check: bool) -> None:
        keys = self.context.checkpoint_keys
        keyring = await asyncio.to_thread(keys.keyring) if keys is not None else Keyring()
        node = self.context.node
        started = time.monotonic()
        try:
            await _stoppable(sealing.open_sealed, archive, into, keyring)
            if check:
                await asyncio.to_thread(check_checkpoint_archive, into)
        except sealing.KeyNotFound as error:
            raise RemoteError(Reason.CHECKPOINT_KEY_MISSING, f"node {node}: {error}") from None
        except sealing.SealError as error:
            raise RemoteError(Reason.CHECKPOINT_TAMPERED, f"node {node}: {error}") from None
        except UnsafeArchive as error:
            raise RemoteError(Reason.UNSAFE_ARCHIVE, str(error)) from None
        except tarfile.TarError as error:
            message = f"the opened checkpoint is no checkpoint archive: {error}"
            raise RemoteError(Reason.UNSAFE_ARCHIVE, message) from None
        except OSError as error:
            message = f"cannot open the sealed checkpoint on node {node}: {error}"
            raise RemoteError(Reason.RESTORE_FAILED, message) from None
        logger.info("opened %s in %.2f s", archive, time.monotonic() - started)


def _discard(path: Path) -> None:
    """Remove ``path`` now, in the event loop: also while cancelled, when nothing may be
    awaited any more (an unlink takes no time to speak of)."""
    path.unlink(missing_ok=True)


async def _stoppable(work: Callable[..., T], *args: Any) -> T:
    """``work(*args, stop=...)`` in a thread. Cancelled, the thread is told to stop (between
    two chunks) and waited for, so nothing it writes appears after its caller cleaned up."""
    stop = threading.Event()
    running = asyncio.ensure_future(asyncio.to_thread(work, *args, stop=stop))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await running
        raise
