"""A migration's steps on its two nodes: checkpoint, send, receive, restore, and their endings.

Every step that changes a node is keyed by the migration's UID and journaled
there: asked again (an operator restarted mid-step) it answers what it did the
first time instead of freezing the container a second time.
"""

from __future__ import annotations

from typing import ClassVar

from ferry_api.migration import Compression, CriuStatistics
from ferry_api.runtime import Runtime
from pydantic import Field

from ferry_wire.base import SHA256_PATTERN, UID_PATTERN, Peer, Reply, Request, WireModel
from ferry_wire.operations import Operation


class PageServerLink(Reply):
    """Where a dump sends its memory: the target's page server, and its certificate (TLS)."""

    address: str
    port: int = Field(gt=0, lt=65536)
    #: The page server's certificate (PEM), the only one the dump trusts; None: plain TCP.
    cert: str | None = None


class Checkpointed(Reply):
    """A checkpoint archive made on the source, and what CRIU measured."""

    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)
    seconds: float = Field(ge=0)
    statistics: CriuStatistics = CriuStatistics()
    container_id: str
    #: The memory went to a page server, not into the archive.
    page_server: bool = False
    #: The average rate the memory went to the page server at, measured by the source's
    #: bandwidth relay (from its first byte to the end); None: no limit, so no relay.
    bytes_per_second: float | None = Field(default=None, ge=0)


class DumpOptions(WireModel):
    """What a dump keeps, shared by a migration's checkpoint and a stored one."""

    uid: str = Field(pattern=UID_PATTERN)
    container: str
    runtime: Runtime = Runtime.PODMAN
    leave_running: bool = False
    tcp_established: bool = False
    file_locks: bool = False
    compression: Compression = Compression.ZSTD


class CheckpointRequest(DumpOptions, Request[Checkpointed]):
    """Checkpoint a migration's source container into its staging archive."""

    operation: ClassVar[Operation] = Operation.CHECKPOINT
    reply: ClassVar[type[Reply]] = Checkpointed

    #: Send the memory to this page server instead of into the archive (podman only).
    page_server: PageServerLink | None = None
    #: The migration's bandwidth limit for the memory sent to ``page_server``: the dump
    #: goes through a local relay that holds it to this rate. None: no limit. Ignored
    #: without a page server: the dump then sends nothing (``send`` has its own limit).
    bandwidth_bytes_per_second: int | None = Field(default=None, gt=0)


class TransferProgress(Reply):
    """A ``progress`` event of a stream: bytes sent of the total."""

    what: str = "archive"
    bytes_sent: int = Field(ge=0)
    bytes_total: int = Field(ge=0)


class Sent(Reply):
    """An archive streamed to the target and checked there (size and sha256)."""

    seconds: float = Field(ge=0)
    bytes: int = Field(ge=0)
    #: The average rate the archive went at, measured by the source from its first byte
    #: to the target's reply (limited or not); None from helpers before it was measured.
    bytes_per_second: float | None = Field(default=None, ge=0)


class SendRequest(Request[Sent]):
    """Stream the migration's archive from this (source) node into ``target``."""

    operation: ClassVar[Operation] = Operation.SEND
    reply: ClassVar[type[Reply]] = Sent

    uid: str = Field(pattern=UID_PATTERN)
    target: Peer
    #: The migration's private peer key (OpenSSH), granted on the target.
    credential: str = Field(repr=False)
    #: The migration's bandwidth limit: the archive is sent at most this fast. None: no limit.
    bandwidth_bytes_per_second: int | None = Field(default=None, gt=0)


class Received(Reply):
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)


class ReceiveRequest(Request[Received]):
    """The header of an archive a peer streams in (its bytes follow)."""

    operation: ClassVar[Operation] = Operation.RECEIVE
    reply: ClassVar[type[Reply]] = Received

    uid: str = Field(pattern=UID_PATTERN)
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)


class Restored(Reply):
    """A container restored and running."""

    container_id: str
    name: str
    seconds: float = Field(default=0.0, ge=0)
    statistics: CriuStatistics = CriuStatistics()
    #: Bytes of memory the page server received (a restore onto received pages).
    pages_bytes: int | None = None


class RestoreOptions(Request[Restored]):
    """How a restore treats what the checkpoint kept, and the name it restores as."""

    uid: str = Field(pattern=UID_PATTERN)
    name: str
    runtime: Runtime = Runtime.PODMAN
    tcp_established: bool = False
    file_locks: bool = False


class RestoreRequest(RestoreOptions):
    """Restore the archive this node received for the migration."""

    operation: ClassVar[Operation] = Operation.RESTORE
    reply: ClassVar[type[Reply]] = Restored

    #: The archive holds no memory: restore it onto the pages this node's page server received.
    onto_pages: bool = False


class RolledBack(Reply):
    container_id: str
    seconds: float = Field(default=0.0, ge=0)
    #: The source was running: nothing to do.
    already_running: bool = False
    #: Another migration (or none) froze it: not this rollback's to bring back.
    not_frozen_by_this_migration: bool = False


class RollbackRequest(Request[RolledBack]):
    """Bring the source container back from its checkpoint, in place."""

    operation: ClassVar[Operation] = Operation.ROLLBACK
    reply: ClassVar[type[Reply]] = RolledBack

    uid: str = Field(pattern=UID_PATTERN)
    container: str
    runtime: Runtime = Runtime.PODMAN
    file_locks: bool = False


class SourceFinished(Reply):
    removed_container: bool


class FinishSourceRequest(Request[SourceFinished]):
    """The target runs its copy: remove the source (unless kept) and end the migration here."""

    operation: ClassVar[Operation] = Operation.FINISH_SOURCE
    reply: ClassVar[type[Reply]] = SourceFinished

    uid: str = Field(pattern=UID_PATTERN)
    container: str
    runtime: Runtime = Runtime.PODMAN
    remove_container: bool
    keep_checkpoint: bool = False


class CleanedUp(Reply):
    #: The ID of the restored copy removed, or empty.
    removed_container: str = ""


class CleanupRequest(Request[CleanedUp]):
    """Undo a migration's traces on a node: its archive, and the container this migration
    restored there (never any other container, whatever its name)."""

    operation: ClassVar[Operation] = Operation.CLEANUP
    reply: ClassVar[type[Reply]] = CleanedUp

    uid: str = Field(pattern=UID_PATTERN)
    runtime: Runtime = Runtime.PODMAN
    remove_restored: bool = False
    keep_checkpoint: bool = False
