"""A page-server dump under a bandwidth limit: CRIU's connection through a local relay.

CRIU's dump sends the memory straight to the target's ``criu page-server``
(see :mod:`.pagestream`) as fast as the link goes; CRIU has no rate option.
With a migration's bandwidth limit the source helper therefore listens on the
node's loopback (:class:`PageRelay`), points the dump's ``address``/``port``
at itself, and forwards what CRIU sends to the real page server, paced by a
:class:`~.pacing.Pacer`, and what the page server answers back, unpaced.
The helper runs in the node's network namespace (``hostNetwork``), as CRIU
does (the runtime's tools enter the node's mount and cgroup namespaces only,
see :mod:`.node_tools`), so both see the same loopback.

The relay only moves bytes: with TLS the handshake is CRIU's and the page
server's, end to end, and the certificates are pinned, not names checked
(``tls-no-cn-verify``), so the loopback address changes nothing for them.

As the page server, the relay takes exactly one connection and stops
listening then; it connects to the page server only when CRIU connects, so
the page server sees its one connection when it would have without the relay.
When that connection fails the relay resets CRIU's, and the dump fails as it
does when the page server cannot be reached; :attr:`PageRelay.failure` says
why. When either side closes, the other is told (its write side shut once
what came before is delivered), and the pair is closed once both are done
or :data:`LINGER_SECONDS` later. Whatever happens, leaving the ``async with``
tears it all down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from types import TracebackType

from .pacing import Pacer

logger = logging.getLogger(__name__)

#: The node's loopback, where CRIU finds the relay.
LOOPBACK = "127.0.0.1"
#: How long the relay tries to reach the page server (CRIU waits, the container frozen).
CONNECT_TIMEOUT = 15.0
#: How long the other direction may go on once one side closed.
LINGER_SECONDS = 5.0
#: The most the relay reads at once from the page server (the other way: the pacer's piece).
READ_BYTES = 64 * 1024


class PageRelay:
    """Relays one connection from ``listen`` to the page server at address:port, the
    source-to-target direction paced by ``pacer``."""

    def __init__(
        self,
        address: str,
        port: int,
        pacer: Pacer,
        *,
        listen: str = LOOPBACK,
        connect_timeout: float = CONNECT_TIMEOUT,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self.target = (address, port)
        self.pacer = pacer
        self.listen = listen
        self.connect_timeout = connect_timeout
        self.linger = linger
        #: Why the page server could not be reached, if it could not.
        self.failure: str | None = None
        #: Connections refused after the first.
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._session: asyncio.Task[None] | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._port = 0

    @property
    def address(self) -> str:
        """Where CRIU connects: the relay's listening address."""
        return self.listen

    @property
    def port(self) -> int:
        return self._port

    @property
    def connected(self) -> bool:
        """Whether a connection came (and may still run)."""
        return self._session is not None

    @property
    def ended(self) -> bool:
        """Whether the connection came and is over (both sides closed)."""
        return self._session is not None and self._session.done()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accepted, self.listen, 0)
        self._port = self._server.sockets[0].getsockname()[1]

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._session is not None:
            # The page server takes one dump; a second connection is no dump of this one.
            self.refused += 1
            writer.transport.abort()
            return
        if self._server is not None:
            self._server.close()  # listen no more; the accepted connection stays
        self._writers.append(writer)
        self._session = asyncio.create_task(
            self._serve(reader, writer), name=f"page relay :{self._port}"
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address, port = self.target
        try:
            async with asyncio.timeout(self.connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(address, port)
        except (OSError, TimeoutError) as error:
            why = str(error) or type(error).__name__
            self.failure = f"the page server at {address}:{port} could not be reached: {why}"
            logger.warning("page relay: %s", self.failure)
            _reset(writer)
            return
        self._writers.append(up_writer)
        ahead = asyncio.create_task(self._pump(reader, up_writer, paced=True), name="relay out")
        back = asyncio.create_task(self._pump(up_reader, writer, paced=False), name="relay in")
        pumps = {ahead, back}
        try:
            done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if pending and not any(task.cancelled() or task.exception() for task in done):
                await asyncio.wait(pending, timeout=self.linger)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self.pacer.finish()
            await self._close_all()

    async def _pump(
        self, source: asyncio.StreamReader, into: asyncio.StreamWriter, *, paced: bool
    ) -> None:
        """Copy ``source`` into ``into`` until its end, then shut ``into``'s write side."""
        size = self.pacer.piece if paced else READ_BYTES
        while data := await source.read(size):
            if paced:
                await self.pacer.spend(len(data))
            into.write(data)
            await into.drain()
        if paced:
            self.pacer.finish()  # the dump's last byte is out: what is measured ends here
        if into.can_write_eof():
            with contextlib.suppress(OSError):
                into.write_eof()

    async def _close_all(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        """Stop listening, end the connection if one runs; idempotent."""
        if self._server is not None:
            self._server.close()
        session = self._session
        if session is not None and not session.done():
            session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session
        await self._close_all()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self.pacer.finish()

    async def __aenter__(self) -> PageRelay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset: CRIU learns at once that there is no page server behind."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
