"""Remote errors: one CamelCase reason from a closed list, and a message for humans.

The reason ends up as the reason of a resource's condition, so it is part of
the API users read. The transport reasons are decided by the client, not the
helper: it could not connect, the connection ended before an answer, the helper
refused the client's key, or the helper's host key was not the published one.
Only the first two are worth retrying; a refused key or an impostor stays so.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why an operation failed."""

    # -- the transport (decided by the client)
    HELPER_UNREACHABLE = "HelperUnreachable"
    HELPER_DISCONNECTED = "HelperDisconnected"
    HELPER_AUTHENTICATION_FAILED = "HelperAuthenticationFailed"
    HELPER_HOST_KEY_MISMATCH = "HelperHostKeyMismatch"
    # -- the request
    BAD_REQUEST = "BadRequest"
    UNKNOWN_OPERATION = "UnknownOperation"
    FORBIDDEN = "Forbidden"
    HELPER_ERROR = "HelperError"
    MIGRATION_CLOSED = "MigrationClosed"
    # -- containers, runtimes and images
    CONTAINER_NOT_FOUND = "ContainerNotFound"
    CONTAINER_BUSY = "ContainerBusy"
    RUNTIME_UNAVAILABLE = "RuntimeUnavailable"
    RUNTIME_FAILED = "RuntimeFailed"
    CAPABILITY_MISSING = "CapabilityMissing"
    IMAGE_SAVE_FAILED = "ImageSaveFailed"
    IMAGE_LOAD_FAILED = "ImageLoadFailed"
    IMAGE_ID_MISMATCH = "ImageIdMismatch"
    IMAGE_TRANSFER_FAILED = "ImageTransferFailed"
    REGISTRY_NEEDS_PODMAN = "RegistryNeedsPodman"
    REGISTRY_DELETE_FAILED = "RegistryDeleteFailed"
    # -- checkpoint, transfer, restore
    CHECKPOINT_FAILED = "CheckpointFailed"
    NO_CHECKPOINT = "NoCheckpoint"
    CHECKPOINT_NOT_STORED = "CheckpointNotStored"
    TRANSFER_FAILED = "TransferFailed"
    TRANSFER_INTERRUPTED = "TransferInterrupted"
    SIZE_MISMATCH = "SizeMismatch"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    UNSAFE_ARCHIVE = "UnsafeArchive"
    NO_ARCHIVE = "NoArchive"
    RESTORE_FAILED = "RestoreFailed"
    RESTORED_CONTAINER_NOT_RUNNING = "RestoredContainerNotRunning"
    ROLLBACK_FAILED = "RollbackFailed"
    # -- stored checkpoints at rest (sealed with the node's checkpoint key)
    ENCRYPTION_UNSUPPORTED = "EncryptionUnsupported"
    CHECKPOINT_TAMPERED = "CheckpointTampered"
    CHECKPOINT_KEY_MISSING = "CheckpointKeyMissing"
    CHECKPOINT_KEY_INVALID = "CheckpointKeyInvalid"
    # -- pods (the kubelet and the node's CRI containerd)
    KUBELET_CHECKPOINT_FAILED = "KubeletCheckpointFailed"
    CRI_UNAVAILABLE = "CriUnavailable"
    CHECKPOINT_IMAGE_FAILED = "CheckpointImageFailed"
    # -- the page server
    PAGE_SERVER_FAILED = "PageServerFailed"
    PAGE_SERVER_NEEDS_PODMAN = "PageServerNeedsPodman"
    TARGET_ID_TAKEN = "TargetIdTaken"
    PAGES_INCOMPLETE = "PagesIncomplete"
    PAGES_UNREACHABLE = "PagesUnreachable"
    PAGES_CHANGED = "PagesChanged"
    NO_PAGES = "NoPages"
    BAD_PAGES = "BadPages"


#: The helper was not heard: the step may not have run, or may have; asking again is safe
#: (every step is idempotent), so these are worth retrying.
TRANSIENT = frozenset({Reason.HELPER_UNREACHABLE, Reason.HELPER_DISCONNECTED})
#: The helper and the client do not trust each other: no retry changes that.
UNTRUSTED = frozenset({Reason.HELPER_AUTHENTICATION_FAILED, Reason.HELPER_HOST_KEY_MISMATCH})


def reason_of(text: str) -> Reason:
    """The reason named ``text``; a reason this side does not know is a HelperError."""
    try:
        return Reason(text)
    except ValueError:
        return Reason.HELPER_ERROR


class RemoteError(Exception):
    """An operation that ended with an ``error`` event, or whose helper was not reached."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"

    @property
    def transient(self) -> bool:
        """Whether asking again may succeed (the helper was not heard)."""
        return self.reason in TRANSIENT

    @property
    def untrusted(self) -> bool:
        """Whether the helper or this client was refused as the other's peer."""
        return self.reason in UNTRUSTED
