"""The operations a helper serves, and which SSH user may run which.

Two users exist, and the key decides which one a client may be: ``operator``
(the operator's key) may run every operation but the streaming ones; ``peer``
may only send an archive or an image into a node, or take back the memory
pages of its own migration (``pages-out``). No peer key stands: for each
migration the operator makes a key pair, grants its public half on the target
(``authorize-peer``, for that migration's UID and a limited time) and hands the
private half to the source with the step that streams. A peer can never
checkpoint, restore or remove anything.
"""

from __future__ import annotations

from enum import StrEnum

OPERATOR_USER = "operator"
PEER_USER = "peer"


class Operation(StrEnum):
    """One SSH exec command a helper serves."""

    PROBE = "probe"
    INSPECT = "inspect"
    LIST_CONTAINERS = "list-containers"
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
    POD_CHECKPOINT = "pod-checkpoint"
    POD_IMAGES = "pod-images"
    POD_THAW = "pod-thaw"


#: What a peer (another node's helper, with a key granted for one migration) may run.
PEER_OPERATIONS = frozenset({Operation.RECEIVE, Operation.IMAGE_RECEIVE, Operation.PAGES_OUT})


def allowed(user: str, operation: Operation) -> bool:
    """Whether the SSH ``user`` may run ``operation`` at all."""
    if user == PEER_USER:
        return operation in PEER_OPERATIONS
    return user == OPERATOR_USER and operation not in PEER_OPERATIONS
