"""Operations about the node itself: what it can do, its kept logs, stream grants."""

from __future__ import annotations

from typing import ClassVar

from ferry_api.nodehelper import NodeHelperStatus
from pydantic import Field

from ferry_wire.base import UID_PATTERN, Reply, Request
from ferry_wire.operations import Operation


class ProbeReply(Reply):
    """What the node can do: the NodeHelper status its helper would publish now."""

    status: NodeHelperStatus


class ProbeRequest(Request[ProbeReply]):
    operation: ClassVar[Operation] = Operation.PROBE
    reply: ClassVar[type[Reply]] = ProbeReply


class LogFile(Reply):
    """One kept log of a failed step, gzipped and base64-encoded."""

    name: str
    gzip_base64: str
    size_bytes: int = Field(ge=0)
    truncated: bool = False


class FetchLogsReply(Reply):
    node: str
    files: tuple[LogFile, ...] = ()


class FetchLogsRequest(Request[FetchLogsReply]):
    """The kept logs of a resource's failed steps, compressed to fit ``budget_bytes``."""

    operation: ClassVar[Operation] = Operation.FETCH_LOGS
    reply: ClassVar[type[Reply]] = FetchLogsReply

    uid: str = Field(pattern=UID_PATTERN)
    budget_bytes: int = Field(default=900 * 1024, ge=1024, le=8 * 1024 * 1024)


class AuthorizePeerReply(Reply):
    #: The fingerprint of the key granted.
    granted: str
    ttl_seconds: int


class AuthorizePeerRequest(Request[AuthorizePeerReply]):
    """Let the holder of ``public_key`` stream into migration ``uid`` here, for a while."""

    operation: ClassVar[Operation] = Operation.AUTHORIZE_PEER
    reply: ClassVar[type[Reply]] = AuthorizePeerReply

    uid: str = Field(pattern=UID_PATTERN)
    public_key: str
    ttl_seconds: int = Field(default=900, ge=10, le=7200)
