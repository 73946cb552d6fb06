"""Every operation's request model, by operation: what a helper parses a request line into."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ferry_wire.base import Request
from ferry_wire.containers import (
    ImageHasRequest,
    ImageReceiveRequest,
    ImageSendRequest,
    InspectRequest,
    ListContainersRequest,
)
from ferry_wire.migration import (
    CheckpointRequest,
    CleanupRequest,
    FinishSourceRequest,
    ReceiveRequest,
    RestoreRequest,
    RollbackRequest,
    SendRequest,
)
from ferry_wire.node import AuthorizePeerRequest, FetchLogsRequest, ProbeRequest
from ferry_wire.operations import Operation
from ferry_wire.pages import (
    PagesFetchRequest,
    PagesIdentityRequest,
    PagesOpenRequest,
    PagesOutRequest,
)
from ferry_wire.pods import PodCheckpointRequest, PodImagesRequest, PodThawRequest
from ferry_wire.stored import (
    DeleteStoredRequest,
    RestoreImageRequest,
    RestoreStoredRequest,
    SendStoredRequest,
    StoreCheckpointRequest,
)

_ALL: tuple[type[Request[Any]], ...] = (
    ProbeRequest,
    InspectRequest,
    ListContainersRequest,
    ImageHasRequest,
    ImageSendRequest,
    ImageReceiveRequest,
    CheckpointRequest,
    SendRequest,
    ReceiveRequest,
    RestoreRequest,
    RollbackRequest,
    FinishSourceRequest,
    CleanupRequest,
    AuthorizePeerRequest,
    StoreCheckpointRequest,
    RestoreStoredRequest,
    SendStoredRequest,
    DeleteStoredRequest,
    RestoreImageRequest,
    FetchLogsRequest,
    PagesIdentityRequest,
    PagesOpenRequest,
    PagesFetchRequest,
    PagesOutRequest,
    PodCheckpointRequest,
    PodImagesRequest,
    PodThawRequest,
)

REQUESTS: Mapping[Operation, type[Request[Any]]] = {model.operation: model for model in _ALL}
