"""A page-server migration's steps on a node, source and target side.

Target: ``pages-open`` starts ``criu page-server`` for the migration, writing
into the checkpoint directory the restored container will have (same ID),
before the source freezes; a watcher records how it ended; the restore waits
for that record; ``pages-out`` gives the pages back for a rollback; the
migration's cleanup stops the server and removes the pages.

Source: ``pages-identity`` makes the source's certificate for the link, the
checkpoint dumps with the page server configured (alone among this helper's
CRIU runs; under a bandwidth limit through a local relay that paces it, see
:mod:`ferry_helper.pagerelay`), and ``pages-fetch`` takes the pages back into
the source container's checkpoint directory when a rollback needs them.

Every step is keyed by the migration's UID and journaled in its staging
directory, like the rest of the protocol. Only a driver with the page-server
capability (:class:`~ferry_helper.drivers.capabilities.PageServerCapable`)
takes part; the steps refuse with ``PageServerNeedsPodman`` on a node or for a
runtime without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from ferry_api.runtime import Runtime
from ferry_wire import Reason, RemoteError
from ferry_wire.migration import PageServerLink
from ferry_wire.pages import (
    Identity,
    PagesFetched,
    PagesFetchRequest,
    PagesIdentityRequest,
    PagesOpenRequest,
    PagesOutRequest,
    PagesSent,
)

from .. import criu_tls, pagefiles, pagerelay, pagestream
from ..drivers.capabilities import PageServerCapable
from ..drivers.errors import RuntimeCommandError
from ..drivers.records import CheckpointOptions, CheckpointResult
from ..pacing import Pacer
from ..staging import JournalEntry
from ..transfer import credential
from .context import Channel, NodeContext

logger = logging.getLogger(__name__)

#: How long a restore waits for the page server to end once the source's dump has.
RECEIVE_WAIT_SECONDS = 60.0
#: Tries at starting a page server: the free port picked may be taken before CRIU binds it.
START_ATTEMPTS = 3


class CheckpointStarted(JournalEntry):
    """Noted before a page-server dump: whatever happens to it, a rollback must know the
    memory may be gone from the source."""

    container_id: str
    page_server: bool = False
    #: Noted since the runtime is checked by capability; earlier helpers dumped with podman.
    runtime: Runtime = Runtime.PODMAN


class PagesOpened(JournalEntry):
    """A page server opened for a migration on the target."""

    address: str
    port: int
    cert: str | None = None
    container_id: str
    directory: str
    runtime: Runtime = Runtime.PODMAN

    def link(self) -> PageServerLink:
        """What the operator passes on to the source: where to send, and whom to trust."""
        return PageServerLink(address=self.address, port=self.port, cert=self.cert)


class PagesReceived(JournalEntry):
    """How a page server ended: its exit code, the bytes it wrote, its log if it failed."""

    exit_code: int
    bytes: int = 0
    expired: bool = False
    log: str = ""


class PageSteps:
    def __init__(self, context: NodeContext) -> None:
        self.context = context
        self.node = context.node
        self.staging = context.staging
        self._servers: dict[str, pagestream.PageServer] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}

    def _tls_dir(self, uid: str) -> Path:
        return self.staging.directory(uid) / "tls"

    @staticmethod
    def _certificate(pem: str, whose: str) -> bytes:
        try:
            return criu_tls.check_certificate(pem)
        except ValueError:
            raise RemoteError(Reason.BAD_REQUEST, f"{whose} is not a PEM certificate") from None

    def _target_driver(self) -> tuple[Runtime, PageServerCapable]:
        """The driver that fills page targets here: the first with the capability."""
        for runtime, driver in self.context.drivers.items():
            if isinstance(driver, PageServerCapable):
                return runtime, driver
        has = ", ".join(sorted(self.context.drivers)) or "no container runtime"
        raise RemoteError(
            Reason.PAGE_SERVER_NEEDS_PODMAN,
            f"node {self.node} has no runtime that restores onto a page server's memory (it "
            f"has {has}; podman does): use memoryTransfer: Archive, or a target with podman",
        )

    # -- source ---------------------------------------------------------------

    async def identity(self, request: PagesIdentityRequest, _: Channel) -> Identity:
        """The source's certificate for this migration's link (the same when asked again)."""
        files = await asyncio.to_thread(
            criu_tls.read_or_make_identity, self._tls_dir(request.uid), self.context.address
        )
        return Identity(cert=files.cert.read_text())

    async def dump(
        self,
        *,
        uid: str,
        container: str,
        runtime: Runtime,
        link: PageServerLink,
        container_id: str,
        archive: Path,
        options: CheckpointOptions,
        pacer: Pacer | None = None,
    ) -> CheckpointResult:
        """Checkpoint with the memory sent to the page server at ``link``; the small archive.

        With a ``pacer`` that has a rate, CRIU sends to a relay on the node's loopback
        that holds the memory to it (and the pacer measures it); it ends with the dump.
        """
        driver = self.context.page_server(runtime)
        tls = None
        if link.cert is not None:
            tls = criu_tls.tls_files(self._tls_dir(uid))
            if not tls.key.exists():
                raise RemoteError(
                    Reason.BAD_REQUEST,
                    f"node {self.node} has no TLS identity for migration {uid}: "
                    "pages-identity comes first",
                )
            criu_tls.trust_peer(tls, self._certificate(link.cert, "pageServer.cert"))
        # Before the dump: whatever happens to it, a rollback must know the memory may be gone.
        self.staging.record_model(
            uid,
            "checkpoint-started",
            CheckpointStarted(container_id=container_id, page_server=True, runtime=runtime),
        )
        async with self.context.criu_runs.exclusive():
            if pacer is None or not pacer.limited:
                return await driver.checkpoint_to_page_server(
                    container, archive, options, address=link.address, port=link.port, tls=tls
                )
            async with pagerelay.PageRelay(link.address, link.port, pacer) as relay:
                try:
                    return await driver.checkpoint_to_page_server(
                        container, archive, options, address=relay.address, port=relay.port, tls=tls
                    )
                except RuntimeCommandError as error:
                    if relay.failure is None:
                        raise
                    raise _unreachable(error, relay.failure) from None

    def dumped_to_page_server(self, uid: str) -> CheckpointStarted | None:
        """What migration ``uid`` dumped to a page server here, if it did."""
        started = self.staging.recorded_model(uid, "checkpoint-started", CheckpointStarted)
        return started if started is not None and started.page_server else None

    async def fetch(self, request: PagesFetchRequest, _: Channel) -> PagesFetched:
        """Bring the pages back for the rollback, if it needs them; ``needed`` says whether."""
        key = credential(request.credential) if request.credential else None
        done = self.staging.recorded_model(request.uid, "pages-fetched", PagesFetched)
        if done is not None:
            return done
        dumped = self.dumped_to_page_server(request.uid)
        if dumped is None:
            return PagesFetched(needed=False)
        driver = self.context.page_server(dumped.runtime)
        info = await driver.inspect(dumped.container_id)
        if info is not None and info.running:
            # The dump left it running, or it failed and CRIU resumed it.
            return PagesFetched(needed=False)
        if request.target is None or key is None:
            return PagesFetched(needed=True)
        into = await driver.checkpoint_dir(dumped.container_id)
        files, size = await pagefiles.fetch(
            peer=request.target, client_key=key, uid=request.uid, into=into
        )
        fetched = PagesFetched(needed=True, files=files, bytes=size)
        self.staging.record_model(request.uid, "pages-fetched", fetched)
        return fetched

    # -- target ---------------------------------------------------------------

    async def open(self, request: PagesOpenRequest, _: Channel) -> PageServerLink:
        """A page server listening for this migration's dump: its address, port, certificate."""
        opened = self.staging.recorded_model(request.uid, "pages-open", PagesOpened)
        if opened is not None and self._usable(request.uid):
            return opened.link()
        runtime, driver = self._target_driver()
        await self._stop(request.uid)
        try:
            directory = await driver.page_target(request.container_id)
        except RuntimeCommandError as error:
            raise RemoteError(Reason.TARGET_ID_TAKEN, error.decisive_line) from None
        tls, cert = None, None
        if request.client_cert is not None:
            client_cert = self._certificate(request.client_cert, "clientCert")
            tls = await asyncio.to_thread(
                criu_tls.read_or_make_identity, self._tls_dir(request.uid), self.context.address
            )
            criu_tls.trust_peer(tls, client_cert)
            cert = tls.cert.read_text()
        server = await self._start(request.uid, directory, tls)
        opened = PagesOpened(
            address=self.context.address,
            port=server.port,
            cert=cert,
            container_id=request.container_id,
            directory=str(directory),
            runtime=runtime,
        )
        self.staging.forget(request.uid, "pages-received")
        self.staging.record_model(request.uid, "pages-open", opened)
        self._servers[request.uid] = server
        self._watchers[request.uid] = asyncio.create_task(
            self._watch(request.uid, server, request.ttl_seconds),
            name=f"page server {request.uid}",
        )
        return opened.link()

    def _usable(self, uid: str) -> bool:
        """Whether the page server opened for ``uid`` still waits for its dump or got it whole."""
        server = self._servers.get(uid)
        if server is not None and server.returncode is None:
            return True
        received = self.staging.recorded_model(uid, "pages-received", PagesReceived)
        return received is not None and received.exit_code == 0

    async def _start(
        self, uid: str, directory: Path, tls: criu_tls.TlsFiles | None
    ) -> pagestream.PageServer:
        problem = ""
        for _ in range(START_ATTEMPTS):
            server = pagestream.PageServer(
                directory,
                work_dir=self.staging.directory(uid),
                address=self.context.address,
                port=pagestream.free_port(self.context.address),
                tls=tls,
            )
            try:
                # Its start reads default.conf too: not while a page-server dump has it written.
                async with self.context.criu_runs.shared():
                    await server.start()
            except pagestream.PageStreamError as error:
                problem = str(error)
                continue
            return server
        raise RemoteError(Reason.PAGE_SERVER_FAILED, f"on {self.node}: {problem}")

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
        received = PagesReceived(
            exit_code=code, bytes=pages, expired=expired, log=server.log_tail() if code else ""
        )
        self.staging.record_model(uid, "pages-received", received)
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
                    Reason.PAGES_INCOMPLETE,
                    f"the page server on {self.node} was still receiving "
                    f"{RECEIVE_WAIT_SECONDS:.0f}s after the source's dump ended",
                ) from None
        ended = self.staging.recorded_model(uid, "pages-received", PagesReceived)
        if ended is None:
            raise RemoteError(
                Reason.PAGES_INCOMPLETE,
                f"no page server of migration {uid} ran to its end on {self.node} (its helper "
                "restarted?): the memory is not all here",
            )
        if ended.exit_code != 0:
            why = " when its time was up" if ended.expired else ""
            raise RemoteError(
                Reason.PAGES_INCOMPLETE,
                f"the page server on {self.node} ended with exit code {ended.exit_code}"
                f"{why}: {ended.log or 'no log'}",
            )
        return ended.bytes

    async def out(self, request: PagesOutRequest, channel: Channel) -> PagesSent:
        """Send the pages of ``uid`` back (see :mod:`ferry_helper.pagefiles`)."""
        writer = channel.writer("pages-out")
        opened = self.staging.recorded_model(request.uid, "pages-open", PagesOpened)
        if opened is None:
            raise RemoteError(
                Reason.NO_PAGES, f"no page server of migration {request.uid} ran on {self.node}"
            )
        await self._stop(request.uid)  # nothing may write the files while they are read
        files = await asyncio.to_thread(pagestream.page_files, Path(opened.directory))
        if not files:
            raise RemoteError(
                Reason.NO_PAGES, f"node {self.node} has no memory pages of migration {request.uid}"
            )
        return await pagefiles.send(writer, files)

    async def close(self, uid: str, restored_id: str | None) -> None:
        """Stop the page server of ``uid`` and remove the pages; the restored copy keeps running."""
        await self._stop(uid)
        opened = self.staging.recorded_model(uid, "pages-open", PagesOpened)
        if opened is None:
            return
        driver = self.context.drivers.get(opened.runtime)
        if not isinstance(driver, PageServerCapable):
            logger.warning(
                "pages of %s left in place: node %s has no %s", uid, self.node, opened.runtime
            )
            return
        container_id = opened.container_id
        try:
            if restored_id == container_id and await driver.inspect(container_id):
                await driver.drop_kept_images(container_id)
            else:
                await driver.discard_page_target(container_id)
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


def _unreachable(error: RuntimeCommandError, failure: str) -> RuntimeCommandError:
    """``error`` of a dump through a relay that could not reach the page server: what
    CRIU saw is the relay's reset, what broke is the link to the page server."""
    return type(error)(
        command=error.command,
        exit_code=error.exit_code,
        stderr=error.stderr,
        decisive_line=f"{failure} (CRIU: {error.decisive_line})",
        criu_log=error.criu_log,
        criu_errors=error.criu_errors,
        criu_log_tail=error.criu_log_tail,
    )
