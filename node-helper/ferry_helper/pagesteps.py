"""A page-server migration's steps on a node, source and target side.

Target: ``pages-open`` starts ``criu page-server`` for the migration, writing
into the checkpoint directory the restored container will have (same ID),
before the source freezes; a watcher records how it ended; the restore waits
for that record; ``pages-out`` gives the pages back for a rollback; the
migration's cleanup stops the server and removes the pages.

Source: ``pages-identity`` makes the source's certificate for the link, the
checkpoint dumps with the page server configured (alone among this helper's
CRIU runs), and ``pages-fetch`` takes the pages back into the source
container's checkpoint directory when a rollback needs them.

Every step is keyed by the migration's UID and journaled in its staging
directory, like the rest of the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import asyncssh

from . import criu_tls, pagefiles, pagestream
from .criu_runs import CriuRuns
from .drivers.errors import RuntimeCommandError
from .drivers.podman import PodmanDriver
from .drivers.records import CheckpointOptions, CheckpointResult
from .protocol import (
    CheckpointRequest,
    PagesFetchRequest,
    PagesIdentityRequest,
    PagesOpenRequest,
    PagesOutRequest,
    RemoteError,
)
from .staging import Staging

logger = logging.getLogger(__name__)

#: How long a restore waits for the page server to end once the source's dump has.
RECEIVE_WAIT_SECONDS = 60.0
#: Tries at starting a page server: the free port picked may be taken before CRIU binds it.
START_ATTEMPTS = 3


class PageSteps:
    def __init__(
        self,
        *,
        node: str,
        address: str,
        podman: PodmanDriver,
        staging: Staging,
        criu_runs: CriuRuns,
    ) -> None:
        self.node = node
        #: Where this node's page servers listen: the address its helper serves SSH on.
        self.address = address
        self.podman = podman
        self.staging = staging
        self.criu_runs = criu_runs
        self._servers: dict[str, pagestream.PageServer] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}

    def _tls_dir(self, uid: str) -> Path:
        return self.staging.directory(uid) / "tls"

    @staticmethod
    def _certificate(pem: str, whose: str) -> bytes:
        try:
            return criu_tls.check_certificate(pem)
        except ValueError:
            raise RemoteError("BadRequest", f"{whose} is not a PEM certificate") from None

    # -- source ---------------------------------------------------------------

    async def identity(self, request: PagesIdentityRequest) -> dict[str, Any]:
        """The source's certificate for this migration's link (the same when asked again)."""
        files = await asyncio.to_thread(
            criu_tls.read_or_make_identity, self._tls_dir(request.uid), self.address
        )
        return {"cert": files.cert.read_text()}

    async def dump(
        self,
        request: CheckpointRequest,
        container_id: str,
        archive: Path,
        options: CheckpointOptions,
    ) -> CheckpointResult:
        """Checkpoint with the memory sent to ``request.page_server``; the small archive."""
        link = request.page_server
        if link is None:
            raise RemoteError("BadRequest", "no page server to dump to")
        if request.runtime != "podman":
            raise RemoteError(
                "PageServerNeedsPodman", "memory goes to a page server for podman containers only"
            )
        tls = None
        if link.server_cert is not None:
            tls = criu_tls.tls_files(self._tls_dir(request.uid))
            if not tls.key.exists():
                raise RemoteError(
                    "BadRequest",
                    f"node {self.node} has no TLS identity for migration {request.uid}: "
                    "pages-identity comes first",
                )
            criu_tls.trust_peer(tls, self._certificate(link.server_cert, "server_cert"))
        # Before the dump: whatever happens to it, a rollback must know the memory may be gone.
        self.staging.record(
            request.uid, "checkpoint-started", {"containerId": container_id, "pageServer": True}
        )
        async with self.criu_runs.exclusive():
            return await self.podman.checkpoint_to_page_server(
                request.container, archive, options, address=link.address, port=link.port, tls=tls
            )

    def dumped_to_page_server(self, uid: str) -> str | None:
        """The container ID migration ``uid`` dumped to a page server here, if it did."""
        started = self.staging.recorded(uid, "checkpoint-started")
        if started is None or not started.get("pageServer"):
            return None
        return str(started["containerId"])

    async def fetch(
        self, request: PagesFetchRequest, credential: asyncssh.SSHKey | None
    ) -> dict[str, Any]:
        """Bring the pages back for the rollback, if it needs them; ``needed`` says whether."""
        if (done := self.staging.recorded(request.uid, "pages-fetched")) is not None:
            return done
        container_id = self.dumped_to_page_server(request.uid)
        if container_id is None:
            return {"needed": False}
        info = await self.podman.inspect(container_id)
        if info is not None and info.running:
            return {"needed": False}  # the dump left it running, or it failed and CRIU resumed it
        if request.target is None or credential is None:
            return {"needed": True}
        into = await self.podman.checkpoint_dir(container_id)
        fetched = await pagefiles.fetch(
            peer=request.target, client_key=credential, uid=request.uid, into=into
        )
        data = {"needed": True, **fetched}
        self.staging.record(request.uid, "pages-fetched", data)
        return data

    # -- target ---------------------------------------------------------------

    async def open(self, request: PagesOpenRequest) -> dict[str, Any]:
        """A page server listening for this migration's dump: its address, port, certificate."""
        opened = self.staging.recorded(request.uid, "pages-open")
        if opened is not None and self._usable(request.uid):
            return _public(opened)
        await self._stop(request.uid)
        try:
            directory = await self.podman.page_target(request.container_id)
        except RuntimeCommandError as error:
            raise RemoteError("TargetIdTaken", error.decisive_line) from None
        tls, cert = None, None
        if request.client_cert is not None:
            client_cert = self._certificate(request.client_cert, "client_cert")
            tls = await asyncio.to_thread(
                criu_tls.read_or_make_identity, self._tls_dir(request.uid), self.address
            )
            criu_tls.trust_peer(tls, client_cert)
            cert = tls.cert.read_text()
        server = await self._start(request.uid, directory, tls)
        data = {
            "address": self.address,
            "port": server.port,
            "cert": cert,
            "containerId": request.container_id,
            "directory": str(directory),
        }
        self.staging.forget(request.uid, "pages-received")
        self.staging.record(request.uid, "pages-open", data)
        self._servers[request.uid] = server
        self._watchers[request.uid] = asyncio.create_task(
            self._watch(request.uid, server, request.ttl_seconds),
            name=f"page server {request.uid}",
        )
        return _public(data)

    def _usable(self, uid: str) -> bool:
        """Whether the page server opened for ``uid`` still waits for its dump or got it whole."""
        server = self._servers.get(uid)
        if server is not None and server.returncode is None:
            return True
        received = self.staging.recorded(uid, "pages-received")
        return received is not None and received.get("exitCode") == 0

    async def _start(
        self, uid: str, directory: Path, tls: criu_tls.TlsFiles | None
    ) -> pagestream.PageServer:
        problem = ""
        for _ in range(START_ATTEMPTS):
            server = pagestream.PageServer(
                directory,
                work_dir=self.staging.directory(uid),
                address=self.address,
                port=pagestream.free_port(self.address),
                tls=tls,
            )
            try:
                # Its start reads default.conf too: not while a page-server dump has it written.
                async with self.criu_runs.shared():
                    await server.start()
            except pagestream.PageStreamError as error:
                problem = str(error)
                continue
            return server
        raise RemoteError("PageServerFailed", f"on {self.node}: {problem}")

    async def _watch(self, uid: str, server: pagestream.PageServer, ttl_seconds: float) -> None:
        """Record how the page server ended; stop it when no dump came in time."""
        expired = False
        try:
            async with asyncio.timeout(ttl_seconds):
                code = await server.finished()
        except TimeoutError:
            expired = True
            await server.stop()
            code = server.returncode if server.returncode is not None else -1
        if self.staging.is_closed(uid):
            return
        pages = await asyncio.to_thread(pagestream.received_pages, server.images_dir)
        self.staging.record(
            uid,
            "pages-received",
            {
                "exitCode": code,
                "bytes": pages,
                "expired": expired,
                "log": server.log_tail() if code else "",
            },
        )
        logger.info("page server of %s ended (%s), %d bytes of pages", uid, code, pages)
        if self._servers.get(uid) is server:
            # What is left to know is in the journal now (see received and _usable).
            del self._servers[uid]
            self._watchers.pop(uid, None)

    async def received(self, uid: str) -> int:
        """Bytes of memory the page server of ``uid`` received, once it ended well."""
        watcher = self._watchers.get(uid)
        if watcher is not None:
            try:
                await asyncio.wait_for(asyncio.shield(watcher), RECEIVE_WAIT_SECONDS)
            except TimeoutError:
                raise RemoteError(
                    "PagesIncomplete",
                    f"the page server on {self.node} was still receiving "
                    f"{RECEIVE_WAIT_SECONDS:.0f}s after the source's dump ended",
                ) from None
        ended = self.staging.recorded(uid, "pages-received")
        if ended is None:
            raise RemoteError(
                "PagesIncomplete",
                f"no page server of migration {uid} ran to its end on {self.node} (its helper "
                "restarted?): the memory is not all here",
            )
        if ended.get("exitCode") != 0:
            why = " when its time was up" if ended.get("expired") else ""
            raise RemoteError(
                "PagesIncomplete",
                f"the page server on {self.node} ended with exit code {ended.get('exitCode')}"
                f"{why}: {ended.get('log') or 'no log'}",
            )
        return int(ended.get("bytes", 0))

    async def out(
        self, request: PagesOutRequest, writer: asyncssh.SSHWriter[bytes]
    ) -> dict[str, Any]:
        """Send the pages of ``uid`` back (see :mod:`.pagefiles`)."""
        opened = self.staging.recorded(request.uid, "pages-open")
        if opened is None:
            raise RemoteError(
                "NoPages", f"no page server of migration {request.uid} ran on {self.node}"
            )
        await self._stop(request.uid)  # nothing may write the files while they are read
        files = await asyncio.to_thread(pagestream.page_files, Path(str(opened["directory"])))
        if not files:
            raise RemoteError(
                "NoPages", f"node {self.node} has no memory pages of migration {request.uid}"
            )
        return await pagefiles.send(writer, files)

    async def close(self, uid: str, restored_id: str | None) -> None:
        """Stop the page server of ``uid`` and remove the pages; the restored copy keeps running."""
        await self._stop(uid)
        opened = self.staging.recorded(uid, "pages-open")
        if opened is None:
            return
        container_id = str(opened["containerId"])
        try:
            if restored_id == container_id and await self.podman.inspect(container_id):
                await self.podman.drop_kept_images(container_id)
            else:
                await self.podman.discard_page_target(container_id)
        except RuntimeCommandError as error:
            logger.warning("pages of %s left in place: %s", uid, error)

    async def _stop(self, uid: str) -> None:
        watcher = self._watchers.pop(uid, None)
        server = self._servers.pop(uid, None)
        if watcher is not None and not watcher.done():
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if server is not None:
            await server.stop()


def _public(opened: dict[str, Any]) -> dict[str, Any]:
    """What the operator passes on to the source: where to send, and whom to trust."""
    return {"address": opened["address"], "port": opened["port"], "cert": opened.get("cert")}
