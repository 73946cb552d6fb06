"""Checkpoints kept for later (ContainerCheckpoint) and restores from them (ContainerRestore).

A stored checkpoint is an archive in the node's store, keyed by the
checkpoint's UID, or a checkpoint image pushed to a registry. A restore is
keyed by the restore's UID, like a migration.

On a node with a checkpoint key (``checkpoints.encryption``) an archive is
sealed at rest (:class:`Sealing`), and its sha256 is that of the sealed file:
what is stored and what is sent. Before a restore or a send the helper hashes
the archive against the digest the operator recorded (``CheckpointTampered``
when it differs), and opens a sealed one only once every chunk authenticated.
"""

from __future__ import annotations

from typing import ClassVar

from ferry_api.diagnostics import SocketCounts
from ferry_api.migration import CriuStatistics
from pydantic import Field

from ferry_wire.base import SHA256_PATTERN, UID_PATTERN, Peer, Reply, Request
from ferry_wire.migration import DumpOptions, Restored, RestoreOptions, Sent
from ferry_wire.operations import Operation

#: A registry's digest of a manifest, as ``podman push --digestfile`` writes it.
IMAGE_DIGEST_PATTERN = r"^sha(256:[0-9a-f]{64}|512:[0-9a-f]{128})$"
#: A checkpoint key's id: the first 16 hex digits of HMAC-SHA256(key, "ferry checkpoint key id").
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
#: How a sealed archive is encrypted: AES-256-GCM in the STREAM construction, 1 MiB chunks.
SEALING_ALGORITHM = "AES-256-GCM-STREAM-1MiB"


class Sealing(Reply):
    """How a stored archive is encrypted at rest, and which key opens it.

    The key is named as in the node's checkpoint-keys Secret (the file name)
    and identified by its id, which tells keys apart without revealing them: a
    node that lacks it refuses to restore (``CheckpointKeyMissing``).
    """

    algorithm: str = SEALING_ALGORITHM
    key_name: str
    key_id: str = Field(pattern=KEY_ID_PATTERN)


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
    #: The archive's sha256 (of the sealed file when it is sealed); None for an image.
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    #: The image pushed (``repository:tag``) and its digest; None for an archive.
    checkpoint_image: str | None = None
    digest: str | None = None
    contents: CheckpointContents | None = None
    #: The container checkpointed, and the image it runs (for a restore elsewhere).
    container_name: str
    image_id: str
    image_name: str = ""
    #: How the archive is encrypted at rest; None: stored in clear (or an image).
    sealing: Sealing | None = None
    #: Seconds sealing the archive took, after the dump (the container no longer waits).
    seal_seconds: float | None = Field(default=None, ge=0)


class StoreCheckpointRequest(DumpOptions, Request[Stored]):
    """Checkpoint a container into this node's store, or as an image pushed to a registry."""

    operation: ClassVar[Operation] = Operation.STORE_CHECKPOINT
    reply: ClassVar[type[Reply]] = Stored

    #: Push the checkpoint as this image (podman only) instead of keeping an archive here;
    #: refused (``EncryptionUnsupported``) on a node that encrypts stored checkpoints.
    image_reference: str | None = None


class RestoreStoredRequest(RestoreOptions):
    """Restore, as restore ``uid``, the checkpoint stored here under ``checkpoint_uid``."""

    operation: ClassVar[Operation] = Operation.RESTORE_STORED
    reply: ClassVar[type[Reply]] = Restored

    checkpoint_uid: str = Field(pattern=UID_PATTERN)
    #: The archive's sha256 the operator recorded (the ContainerCheckpoint's status): the
    #: archive must still hash to it (``CheckpointTampered``); None: the helper's own record.
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)


class RestoreImageRequest(RestoreOptions):
    """Restore, as restore ``uid``, from the checkpoint image ``reference`` (pulled first)."""

    operation: ClassVar[Operation] = Operation.RESTORE_IMAGE
    reply: ClassVar[type[Reply]] = Restored

    reference: str
    #: The digest the image was pushed with: pulled and restored by it
    #: (``repository@digest``), so the registry cannot hand over other content.
    digest: str | None = Field(default=None, pattern=IMAGE_DIGEST_PATTERN)


class SendStoredRequest(Request[Sent]):
    """Stream the checkpoint stored here under ``checkpoint_uid`` into restore ``uid`` on
    ``target``."""

    operation: ClassVar[Operation] = Operation.SEND_STORED
    reply: ClassVar[type[Reply]] = Sent

    uid: str = Field(pattern=UID_PATTERN)
    checkpoint_uid: str = Field(pattern=UID_PATTERN)
    target: Peer
    credential: str = Field(repr=False)
    #: The archive's sha256 the operator recorded: checked before anything is sent
    #: (``CheckpointTampered``); None: the helper's own record.
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    #: The restore's bandwidth limit: the archive is sent at most this fast. None: no limit.
    bandwidth_bytes_per_second: int | None = Field(default=None, gt=0)


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
