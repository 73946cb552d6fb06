"""The wire protocol between the operator and the node-helpers, over SSH exec.

One SSH ``exec`` request is one operation: the command is the operation's name,
standard input starts with one line of JSON (the request), and for the
receiving operations the raw bytes of an archive follow that line. Standard
output is JSON lines: any number of ``progress`` events, then exactly one
``result`` or ``error``. The exit status is 0 for a result, 1 for an error.

One operation streams the other way: ``pages-out`` answers with one
``progress`` event listing the page files and their sizes, then the files'
raw bytes one after the other, then its ``result`` (their sha256).

Two SSH users exist, and the key decides which one a client may be:
``operator`` (the operator's key) may run every operation but the streaming
ones; ``peer`` may only send an archive or an image into a node, or take back
the memory pages of its own migration (``pages-out``). There is no
standing peer key: for each migration the operator makes a key pair, grants
its public half on the target (``authorize-peer``, for that migration's UID
and a limited time) and hands the private half to the source with the
``send`` request. A grant lets its holder stream into that one migration on
that one node, and it is revoked when the migration ends there. A peer can
never checkpoint, restore or remove anything.

Every operation that changes a node is keyed by the migration's UID and is
idempotent: repeating it (after an operator restart) returns the recorded
result instead of freezing the container a second time.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

OPERATOR_USER = "operator"
PEER_USER = "peer"

#: Every SSH connection, on both ends, sends a keepalive this often and drops
#: the connection after KEEPALIVE_COUNT_MAX unanswered ones: a cut link is
#: noticed within about 15-20 s instead of TCP's many minutes.
KEEPALIVE_SECONDS = 5.0
KEEPALIVE_COUNT_MAX = 3
#: How long opening an SSH connection may take.
CONNECT_TIMEOUT_SECONDS = 15.0

UID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
CONTAINER_ID_PATTERN = r"^[0-9a-f]{64}$"


def keepalive_options() -> dict[str, float | int]:
    """asyncssh connection options shared by every Ferry client and server."""
    return {"keepalive_interval": KEEPALIVE_SECONDS, "keepalive_count_max": KEEPALIVE_COUNT_MAX}


#: SSH channel window and largest packet a side accepts. asyncssh's defaults (2 MiB,
#: 32 KiB) cost a Python round per 32 KiB: measured on loopback with aes128-gcm,
#: 16 MiB and 256 KiB carry 560 MB/s where the defaults carry 290 MB/s.
STREAM_WINDOW = 16 << 20
STREAM_MAX_PACKET = 256 << 10


def stream_options() -> dict[str, int]:
    """asyncssh options for connections and channels that carry archives."""
    return {"window": STREAM_WINDOW, "max_pktsize": STREAM_MAX_PACKET}


class Operation(StrEnum):
    PROBE = "probe"
    INSPECT = "inspect"
    IMAGE_HAS = "image-has"
    IMAGE_SEND = "image-send"
    IMAGE_RECEIVE = "image-receive"
    CHECKPOINT = "checkpoint"
    SEND = "send"
    RECEIVE = "receive"
    RESTORE = "restore"
    ROLLBACK = "rollback"
    FINISH_SOURCE = "finish-source"
    CLEANUP = "cleanup"
    AUTHORIZE_PEER = "authorize-peer"
    STORE_CHECKPOINT = "store-checkpoint"
    RESTORE_STORED = "restore-stored"
    SEND_STORED = "send-stored"
    DELETE_STORED = "delete-stored"
    RESTORE_IMAGE = "restore-image"
    FETCH_LOGS = "fetch-logs"
    PAGES_IDENTITY = "pages-identity"
    PAGES_OPEN = "pages-open"
    PAGES_FETCH = "pages-fetch"
    PAGES_OUT = "pages-out"


PEER_OPERATIONS = frozenset({Operation.RECEIVE, Operation.IMAGE_RECEIVE, Operation.PAGES_OUT})


def allowed(user: str, operation: Operation) -> bool:
    if user == PEER_USER:
        return operation in PEER_OPERATIONS
    return user == OPERATOR_USER and operation not in PEER_OPERATIONS


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Peer(Model):
    """Where and how to reach another node's helper (host key pinned)."""

    node: str
    address: str
    port: int
    host_key: str


class FetchLogsRequest(Model):
    """The kept logs of a resource's failed steps, compressed to fit ``budget_bytes``."""

    uid: str = Field(pattern=UID_PATTERN)
    budget_bytes: int = Field(default=900 * 1024, ge=1024, le=8 * 1024 * 1024)


#: The container runtimes a helper can drive; every request about a container names one.
Runtime = Literal["podman", "docker"]


class InspectRequest(Model):
    container: str
    #: None: look in every runtime of the node (the answer says which had it).
    runtime: Runtime | None = None
    #: Also say how much memory a running container uses (``memoryBytes``).
    memory: bool = False


class ImageRequest(Model):
    image_id: str
    image_name: str = ""
    runtime: Runtime = "podman"


class ImageReceiveRequest(Model):
    """The header of an image archive streamed in by a peer."""

    image_id: str = Field(pattern=r"^(sha256:)?[0-9a-f]{64}$")
    image_name: str = ""
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    runtime: Runtime = "podman"


class ImageSendRequest(Model):
    uid: str
    image_id: str
    image_name: str
    target: Peer
    #: The migration's private peer key (OpenSSH), granted on the target.
    credential: str = Field(repr=False)
    runtime: Runtime = "podman"


class PageServerLink(Model):
    """Where a dump sends its memory: the target's page server, and its certificate (TLS)."""

    address: str
    port: int = Field(gt=0, lt=65536)
    #: The page server's certificate (PEM), the only one the dump trusts; None: plain TCP.
    server_cert: str | None = None


class PagesIdentityRequest(Model):
    """The source's TLS certificate for migration ``uid``'s page-server link (made once)."""

    uid: str = Field(pattern=UID_PATTERN)


class PagesOpenRequest(Model):
    """Start a page server for migration ``uid``, filling container ``container_id``'s images."""

    uid: str = Field(pattern=UID_PATTERN)
    container_id: str = Field(pattern=CONTAINER_ID_PATTERN)
    #: The source's certificate (PEM), the only client let in; None: plain TCP.
    client_cert: str | None = None
    #: The page server is stopped after this long if no dump came.
    ttl_seconds: int = Field(default=900, ge=10, le=7200)


class PagesFetchRequest(Model):
    """Bring migration ``uid``'s memory pages back from ``target`` for the source's rollback.

    Without ``target`` and ``credential`` it only answers whether they are needed.
    """

    uid: str = Field(pattern=UID_PATTERN)
    target: Peer | None = None
    #: A peer key granted on ``target`` for ``uid`` (OpenSSH).
    credential: str | None = Field(default=None, repr=False)


class PagesOutRequest(Model):
    uid: str = Field(pattern=UID_PATTERN)


class CheckpointRequest(Model):
    uid: str
    container: str
    leave_running: bool = False
    tcp_established: bool = False
    file_locks: bool = False
    compression: Literal["zstd", "gzip", "none"] = "zstd"
    #: Push the checkpoint as this image instead of writing an archive (store-checkpoint).
    image_reference: str | None = None
    #: Send the memory to this page server instead of into the archive (podman only).
    page_server: PageServerLink | None = None
    runtime: Runtime = "podman"


class SendRequest(Model):
    uid: str
    target: Peer
    #: The migration's private peer key (OpenSSH), granted on the target.
    credential: str = Field(repr=False)


class AuthorizePeerRequest(Model):
    """Let the holder of ``public_key`` stream into migration ``uid`` here, for a while."""

    uid: str
    public_key: str
    ttl_seconds: int = Field(default=900, ge=10, le=7200)


class RestoreStoredRequest(Model):
    """Restore, as restore ``uid``, the checkpoint stored here under ``checkpoint_uid``."""

    uid: str
    checkpoint_uid: str
    name: str
    tcp_established: bool = False
    file_locks: bool = False
    runtime: Runtime = "podman"


class RestoreImageRequest(Model):
    """Restore, as restore ``uid``, from the checkpoint image ``reference`` (pulled first)."""

    uid: str
    reference: str
    name: str
    tcp_established: bool = False
    file_locks: bool = False
    #: Checkpoint images are podman's.
    runtime: Literal["podman"] = "podman"


class SendStoredRequest(Model):
    """Stream the checkpoint stored here under ``checkpoint_uid`` into ``uid`` on ``target``."""

    uid: str
    checkpoint_uid: str
    target: Peer
    credential: str = Field(repr=False)


class DeleteStoredRequest(Model):
    """Delete a stored checkpoint: its archive here, or its image from the registry.

    With ``image_reference`` and ``digest`` any helper can delete the image,
    not only the one that pushed it.
    """

    uid: str
    image_reference: str | None = None
    digest: str | None = None


class ReceiveRequest(Model):
    uid: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RestoreRequest(Model):
    uid: str
    name: str
    tcp_established: bool = False
    file_locks: bool = False
    runtime: Runtime = "podman"
    #: The archive holds no memory: restore it onto the pages this node's page server received.
    onto_pages: bool = False


class RollbackRequest(Model):
    uid: str
    container: str
    file_locks: bool = False
    runtime: Runtime = "podman"


class FinishSourceRequest(Model):
    uid: str
    container: str
    remove_container: bool
    keep_checkpoint: bool
    runtime: Runtime = "podman"


class CleanupRequest(Model):
    """Undo a migration's traces on a node: the archive, and the container this
    migration restored there (never any other container, whatever its name)."""

    uid: str
    remove_restored: bool = False
    keep_checkpoint: bool = False
    runtime: Runtime = "podman"


class Event(Model):
    type: Literal["progress", "result", "error"]
    data: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""
    message: str = ""


def encode(event: Event) -> str:
    return json.dumps(event.model_dump(mode="json"), separators=(",", ":")) + "\n"


def decode(line: str) -> Event:
    return Event.model_validate_json(line)


class RemoteError(Exception):
    """An operation ended with an ``error`` event: ``reason`` is one CamelCase word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
