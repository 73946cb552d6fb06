"""How a migration's memory reaches the target: shared by migrations and their policies."""

from __future__ import annotations

from enum import StrEnum


class MemoryTransfer(StrEnum):
    """How the container's memory reaches the target node."""

    #: PageServer for a podman container using at least AUTO_PAGE_SERVER_MIN_BYTES, else Archive.
    AUTO = "Auto"
    #: Inside the checkpoint archive, streamed over SSH after the dump.
    ARCHIVE = "Archive"
    #: During the dump, from CRIU on the source to CRIU's page server on the target.
    PAGE_SERVER = "PageServer"


#: The memory from which ``Auto`` sends it through the page server (see ``make bench``).
AUTO_PAGE_SERVER_MIN_BYTES = 64 << 20
