"""Checkpoints kept for later (ContainerCheckpoint) and restores from them (ContainerRestore).

A stored checkpoint is an archive in the node's store, keyed by the
checkpoint's UID, or a checkpoint image pushed to a registry. A restore is
keyed by the restore's UID, like a migration.
"""

from __future__ import annotations

from typing import ClassVar

from ferry_api.diagnostics import SocketCounts
from ferry_api.migration import CriuStatistics
from pydantic import Field

from ferry_wire.base import SHA256_PATTERN, UID_PATTERN, Peer, Reply, Request
from ferry_wire.migration import DumpOptions, Restored, RestoreOptions, Sent
from ferry_wire.operations import Operation


class CheckpointContents(Reply):
    """What a checkpoint's CRIU images hold, as the helper read them."""

    processes: int = Field(default=0, ge=0)
    threads: int = Field(default=0, ge=0)
    memory_bytes: int = Field(default=0, ge=0)
    open_files: int = Field(default=0, ge=0)
    sockets: SocketCounts = SocketCounts()


class Stored(Reply):
    """A checkpoint kept on this node (an archive) or pushed to a registry (an image)."""

    seconds: float = Field(ge=0)
    statistics: CriuStatistics = CriuStatistics()
    #: The archive's size (on the node), or the image's (in a registry) when known.
    size_bytes: int | None = Field(default=None, ge=0)
    #: The archive's sha256; None for an image.
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    #: The image pushed (``repository:tag``) and its digest; None for an archive.
    checkpoint_image: str | None = None
    digest: str | None = None
    contents: CheckpointContents | None = None
    #: The container checkpointed, and the image it runs (for a restore elsewhere).
    container_name: str
    image_id: str
    image_name: str = ""


class StoreCheckpointRequest(DumpOptions, Request[Stored]):
    """Checkpoint a container into this node's store, or as an image pushed to a registry."""

    operation: ClassVar[Operation] = Operation.STORE_CHECKPOINT
    reply: ClassVar[type[Reply]] = Stored

    #: Push the checkpoint as this image (podman only) instead of keeping an archive here.
    image_reference: str | None = None


class RestoreStoredRequest(RestoreOptions):
    """Restore, as restore ``uid``, the checkpoint stored here under ``checkpoint_uid``."""

    operation: ClassVar[Operation] = Operation.RESTORE_STORED
    reply: ClassVar[type[Reply]] = Restored

    checkpoint_uid: str = Field(pattern=UID_PATTERN)


class RestoreImageRequest(RestoreOptions):
    """Restore, as restore ``uid``, from the checkpoint image ``reference`` (pulled first)."""

    operation: ClassVar[Operation] = Operation.RESTORE_IMAGE
    reply: ClassVar[type[Reply]] = Restored

    reference: str


class SendStoredRequest(Request[Sent]):
    """Stream the checkpoint stored here under ``checkpoint_uid`` into restore ``uid`` on
    ``target``."""

    operation: ClassVar[Operation] = Operation.SEND_STORED
    reply: ClassVar[type[Reply]] = Sent

    uid: str = Field(pattern=UID_PATTERN)
    checkpoint_uid: str = Field(pattern=UID_PATTERN)
    target: Peer
    credential: str = Field(repr=False)


class Deleted(Reply):
    #: Whether this node had the checkpoint.
    deleted: bool


class DeleteStoredRequest(Request[Deleted]):
    """Delete a stored checkpoint: its archive here, or its image from the registry.

    With ``image_reference`` and ``digest`` any helper can delete the image,
    not only the one that pushed it.
    """

    operation: ClassVar[Operation] = Operation.DELETE_STORED
    reply: ClassVar[type[Reply]] = Deleted

    uid: str = Field(pattern=UID_PATTERN)
    image_reference: str | None = None
    digest: str | None = None
