"""memoryTransfer: PageServer: the memory sent by CRIU straight to the target during the dump.

Target: ``pages-open`` starts CRIU's page server for the migration before the
freeze. Source: ``pages-identity`` makes its TLS certificate for the link, the
checkpoint dumps to the page server, and ``pages-fetch`` takes the pages back
for a rollback through the target's ``pages-out`` stream (a peer operation).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ferry_wire.base import CONTAINER_ID_PATTERN, SHA256_PATTERN, UID_PATTERN, Peer, Reply, Request
from ferry_wire.migration import PageServerLink
from ferry_wire.operations import Operation


class Identity(Reply):
    #: The source's certificate (PEM) for this migration's link.
    cert: str


class PagesIdentityRequest(Request[Identity]):
    """The source's TLS certificate for migration ``uid``'s page-server link (made once)."""

    operation: ClassVar[Operation] = Operation.PAGES_IDENTITY
    reply: ClassVar[type[Reply]] = Identity

    uid: str = Field(pattern=UID_PATTERN)


class PagesOpenRequest(Request[PageServerLink]):
    """Start a page server for migration ``uid``, filling container ``container_id``'s images."""

    operation: ClassVar[Operation] = Operation.PAGES_OPEN
    reply: ClassVar[type[Reply]] = PageServerLink

    uid: str = Field(pattern=UID_PATTERN)
    container_id: str = Field(pattern=CONTAINER_ID_PATTERN)
    #: The source's certificate (PEM), the only client let in; None: plain TCP.
    client_cert: str | None = None
    #: The page server is stopped after this long if no dump came.
    ttl_seconds: int = Field(default=900, ge=10, le=7200)


class PagesFetched(Reply):
    #: Whether the rollback needs the pages back (they went to a page server, and the
    #: source is not running).
    needed: bool
    files: int = Field(default=0, ge=0)
    bytes: int = Field(default=0, ge=0)


class PagesFetchRequest(Request[PagesFetched]):
    """Bring migration ``uid``'s memory pages back from ``target`` for the source's rollback.

    Without ``target`` and ``credential`` it only answers whether they are needed.
    """

    operation: ClassVar[Operation] = Operation.PAGES_FETCH
    reply: ClassVar[type[Reply]] = PagesFetched

    uid: str = Field(pattern=UID_PATTERN)
    target: Peer | None = None
    #: A peer key granted on ``target`` for ``uid`` (OpenSSH).
    credential: str | None = Field(default=None, repr=False)


class PageFile(Reply):
    name: str
    size: int = Field(ge=0)


class PageManifest(Reply):
    """The ``progress`` event that opens a ``pages-out`` stream: the files whose bytes follow."""

    files: tuple[PageFile, ...]


class PagesSent(Reply):
    sha256: str = Field(pattern=SHA256_PATTERN)
    bytes: int = Field(ge=0)
    files: int = Field(ge=0)


class PagesOutRequest(Request[PagesSent]):
    """Stream migration ``uid``'s page images back to the source (a peer operation)."""

    operation: ClassVar[Operation] = Operation.PAGES_OUT
    reply: ClassVar[type[Reply]] = PagesSent

    uid: str = Field(pattern=UID_PATTERN)
