"""A page-server dump under a bandwidth limit: CRIU's connection through the helper's relay.

The relay is checked over loopback sockets against a fake page server: the
bytes arrive intact both ways, the source-to-target direction at the rate,
the other unpaced; one connection only; both sides closed when either is, or
when the relay is torn down; a page server that cannot be reached resets the
dump's connection. Then the ``checkpoint`` operation with a fake podman that
plays CRIU: it is pointed at the relay, not at the page server, only when a
limit is set, and the reply says the rate measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ferry_api.runtime import Runtime
from ferry_helper import criu_tls
from ferry_helper.criu_stats import CriuStatistics
from ferry_helper.criu_tls import TlsFiles
from ferry_helper.drivers.errors import RuntimeCommandError
from ferry_helper.drivers.records import CheckpointOptions, CheckpointResult
from ferry_helper.operations import Channel
from ferry_helper.pacing import Pacer
from ferry_helper.pagerelay import PageRelay
from ferry_wire import Reason, RemoteError
from ferry_wire.migration import Checkpointed, CheckpointRequest, PageServerLink
from helper_fakes import PodmanLike, helper_operations

UID = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
MiB = 1 << 20
TOLERANCE = 0.15
GREETING = os.urandom(MiB)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class FakePageServer:
    """Listens on loopback like ``criu page-server``; what each connection does is
    ``behaviour``'s, and what it received is kept."""

    def __init__(self, behaviour: str = "echo-digest") -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.received: list[bytes] = []
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> FakePageServer:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.behaviour == "echo-digest":
                # A greeting first (the other way, unpaced), then the dump's pages, and the
                # status once all of them are in, as CRIU's page server answers a flush.
                writer.write(GREETING)
                (size,) = struct.unpack("!I", await reader.readexactly(4))
                data = await reader.readexactly(size)
                self.received.append(data)
                writer.write(hashlib.sha256(data).digest())
                await writer.drain()
            elif self.behaviour == "hold":
                self.received.append(await reader.read())  # until the other side goes
            # "close": goes at once.
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.closed.set()


async def dump_like_criu(address: str, port: int, pages: bytes) -> tuple[bytes, bytes]:
    """Connect as CRIU's dump would, send ``pages``, read the greeting and the status."""
    reader, writer = await asyncio.open_connection(address, port)
    try:
        greeting = asyncio.create_task(reader.readexactly(len(GREETING)))
        writer.write(struct.pack("!I", len(pages)) + pages)
        await writer.drain()
        got = await greeting
        status = await reader.read()  # the digest, then the page server's close
        return got, status
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def ended(reader: asyncio.StreamReader, within: float = 2.0) -> bool:
    """Whether the other side closed (an EOF or a reset) within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


@contextlib.asynccontextmanager
async def connected(port: int) -> AsyncIterator[Streams]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_port() -> int:
    """A loopback port nothing listens on (any more)."""
    async with FakePageServer() as gone:
        return gone.port


def within(measured: float | None, configured: float) -> bool:
    return measured is not None and abs(measured - configured) <= TOLERANCE * configured


# -- the relay


def test_the_relay_carries_both_ways_intact_and_paces_the_way_out() -> None:
    pages = os.urandom(3 * MiB)
    rate = 2 * MiB  # about 1.5 s

    async def scenario() -> tuple[bytes, bytes, float, PageRelay, FakePageServer]:
        async with FakePageServer() as target:
            async with PageRelay("127.0.0.1", target.port, Pacer(rate)) as relay:
                started = time.monotonic()
                greeting, status = await dump_like_criu(relay.address, relay.port, pages)
                elapsed = time.monotonic() - started
                await asyncio.wait_for(target.closed.wait(), 2)
            return greeting, status, elapsed, relay, target

    greeting, status, elapsed, relay, target = asyncio.run(scenario())
    assert greeting == GREETING, "target to source, intact"
    assert target.received == [pages], "source to target, intact"
    assert status == hashlib.sha256(pages).digest()
    expected = len(pages) / rate
    assert expected * (1 - TOLERANCE) <= elapsed <= expected * (1 + TOLERANCE), elapsed
    assert within(relay.pacer.measured(), rate), relay.pacer.measured()
    assert relay.ended
    assert relay.failure is None


def test_the_way_back_is_not_paced() -> None:
    async def scenario() -> float:
        async with (
            FakePageServer() as target,
            PageRelay("127.0.0.1", target.port, Pacer(64 * 1024)) as relay,
            connected(relay.port) as (reader, _),
        ):
            started = time.monotonic()
            await reader.readexactly(len(GREETING))  # 1 MiB, 16 s at the rate out
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0


def tls_context(
    directory: Path, side: ssl._SSLMethod, own: criu_tls.Identity, peer: criu_tls.Identity
) -> ssl.SSLContext:
    """One end as CRIU's TLS link has it: its own identity, the other's certificate pinned,
    names not checked (``tls-no-cn-verify``), the client's certificate required."""
    files = criu_tls.write_identity(directory, own)
    context = ssl.SSLContext(side)
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(cadata=peer.cert_pem.decode())
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_tls_goes_through_the_relay_untouched(tmp_path: Path) -> None:
    # The page server's certificate names the target's address, not the relay's loopback.
    target, source = criu_tls.make_identity("10.0.0.2"), criu_tls.make_identity("10.0.0.1")
    server_side = tls_context(tmp_path / "target", ssl.PROTOCOL_TLS_SERVER, target, source)
    client_side = tls_context(tmp_path / "source", ssl.PROTOCOL_TLS_CLIENT, source, target)
    pages = os.urandom(256 * 1024)
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(len(pages))
        got.append(data)
        writer.write(hashlib.sha256(data).digest())
        await writer.drain()
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()

    async def scenario() -> bytes:
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_side)
        port = server.sockets[0].getsockname()[1]
        async with PageRelay("127.0.0.1", port, Pacer(MiB)) as relay:
            reader, writer = await asyncio.open_connection(
                relay.address, relay.port, ssl=client_side
            )
            writer.write(pages)
            status = await reader.readexactly(32)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return status

    assert asyncio.run(scenario()) == hashlib.sha256(pages).digest()
    assert got == [pages]


def test_the_relay_takes_one_connection_only() -> None:
    async def scenario() -> tuple[bool, int, int]:
        async with (
            FakePageServer("hold") as target,
            PageRelay("127.0.0.1", target.port, Pacer(MiB)) as relay,
            connected(relay.port) as (_, first),
        ):
            first.write(b"pages")
            await first.drain()
            try:
                async with connected(relay.port) as (second, _):
                    refused = await ended(second)
            except ConnectionRefusedError:
                refused = True
            await asyncio.sleep(0.1)
            return refused, target.connections, relay.refused

    refused, connections, _ = asyncio.run(scenario())
    assert refused, "a second connection is closed at once"
    assert connections == 1, "the page server sees one connection"


def test_the_relay_is_torn_down_with_its_block_whatever_runs() -> None:
    async def scenario() -> tuple[bool, bytes, bool]:
        async with FakePageServer("hold") as target:
            relay = PageRelay("127.0.0.1", target.port, Pacer(MiB))
            await relay.start()
            async with connected(relay.port) as (reader, writer):
                writer.write(b"half a dump")
                await writer.drain()
                await asyncio.sleep(0.1)
                await relay.close()
                source_closed = await ended(reader)
                await asyncio.wait_for(target.closed.wait(), 2)
            try:
                async with connected(relay.port):
                    listening = True
            except ConnectionRefusedError:
                listening = False
            return source_closed, target.received[0], listening

    source_closed, received, listening = asyncio.run(scenario())
    assert source_closed, "the dump's side is closed"
    assert received == b"half a dump", "the page server's side got what came, then its end"
    assert not listening


def test_when_the_page_server_closes_the_dump_is_told() -> None:
    async def scenario() -> tuple[bool, bool]:
        async with (
            FakePageServer("close") as target,
            PageRelay("127.0.0.1", target.port, Pacer(MiB), linger=0.2) as relay,
            connected(relay.port) as (reader, _),
        ):
            told = await ended(reader)
            await asyncio.sleep(0.4)  # the dump's side never closes: the linger ends it
            return told, relay.ended

    told, relay_ended = asyncio.run(scenario())
    assert told
    assert relay_ended


def test_when_the_dump_closes_the_page_server_is_told() -> None:
    async def scenario() -> bytes:
        async with (
            FakePageServer("hold") as target,
            PageRelay("127.0.0.1", target.port, Pacer(MiB)) as relay,
        ):
            async with connected(relay.port) as (_, writer):
                writer.write(b"last pages")
                await writer.drain()
            await asyncio.wait_for(target.closed.wait(), 2)
            return target.received[0]

    assert asyncio.run(scenario()) == b"last pages"


def test_a_page_server_that_cannot_be_reached_resets_the_dump() -> None:
    async def scenario() -> tuple[bool, str | None, int]:
        port = await closed_port()
        async with (
            PageRelay("127.0.0.1", port, Pacer(MiB)) as relay,
            connected(relay.port) as (reader, _),
        ):
            return await ended(reader), relay.failure, port

    reset, failure, port = asyncio.run(scenario())
    assert reset
    assert failure is not None
    assert failure.startswith(f"the page server at 127.0.0.1:{port} could not be reached: ")


# -- the checkpoint operation


class CriuLike(PodmanLike):
    """A page-server dump as CRIU makes it: connects where it is told, sends the pages."""

    def __init__(self, root: Path, pages: bytes) -> None:
        super().__init__(root)
        self.pages = pages
        self.told: list[tuple[str, int]] = []

    async def running_labelled(self, label: str) -> list[str]:
        return []

    async def checkpoint_to_page_server(
        self,
        container: str,
        archive: Path,
        options: CheckpointOptions,
        *,
        address: str,
        port: int,
        tls: TlsFiles | None,
    ) -> CheckpointResult:
        self.told.append((address, port))
        started = time.monotonic()
        try:
            _, status = await dump_like_criu(address, port, self.pages)
        except (OSError, asyncio.IncompleteReadError) as error:
            raise RuntimeCommandError(
                command=["podman", "container", "checkpoint", container],
                exit_code=125,
                stderr="",
                decisive_line=f"page-xfer: Can't read from the page server: {error}",
            ) from None
        assert status == hashlib.sha256(self.pages).digest()
        await asyncio.to_thread(archive.write_bytes, b"small images")
        return CheckpointResult(
            archive=archive,
            size_bytes=12,
            sha256=hashlib.sha256(b"small images").hexdigest(),
            seconds=time.monotonic() - started,
            statistics=CriuStatistics(),
        )


def checkpoint(
    tmp_path: Path, *, bandwidth: int | None, reachable: bool = True
) -> tuple[Checkpointed | RemoteError, CriuLike, FakePageServer, float, bool]:
    driver = CriuLike(tmp_path / "containers", os.urandom(MiB))
    operations = helper_operations(tmp_path, {Runtime.PODMAN: driver})

    async def scenario() -> tuple[Any, FakePageServer, float, bool]:
        async with FakePageServer() as target:
            port = target.port if reachable else await closed_port()
            request = CheckpointRequest(
                uid=UID,
                container="web",
                page_server=PageServerLink(address="127.0.0.1", port=port),
                bandwidth_bytes_per_second=bandwidth,
            )
            started = time.monotonic()
            try:
                reply: Any = await operations.run(request, Channel())
            except RemoteError as error:
                reply = error
            elapsed = time.monotonic() - started
            relayed = [p for _, p in driver.told if p != port]
            still = False
            for relay_port in relayed:
                with contextlib.suppress(ConnectionRefusedError):
                    async with connected(relay_port):
                        still = True
            return reply, target, elapsed, still

    reply, target, elapsed, still = asyncio.run(scenario())
    return reply, driver, target, elapsed, still


def test_a_limited_page_server_dump_goes_through_the_relay_at_the_rate(tmp_path: Path) -> None:
    rate = MiB  # about 1 s
    reply, driver, target, elapsed, still = checkpoint(tmp_path, bandwidth=rate)
    assert isinstance(reply, Checkpointed), reply
    [(address, port)] = driver.told
    assert (address, port) != ("127.0.0.1", target.port), "CRIU is pointed at the relay"
    assert address == "127.0.0.1"
    assert target.received == [driver.pages], "the pages reached the page server intact"
    assert reply.page_server
    assert within(reply.bytes_per_second, rate), reply.bytes_per_second
    assert elapsed >= len(driver.pages) / rate * (1 - TOLERANCE), elapsed
    assert not still, "the relay is gone with the dump"


def test_an_unlimited_page_server_dump_goes_straight_to_the_page_server(
    tmp_path: Path,
) -> None:
    reply, driver, target, elapsed, _ = checkpoint(tmp_path, bandwidth=None)
    assert isinstance(reply, Checkpointed), reply
    assert driver.told == [("127.0.0.1", target.port)]
    assert reply.bytes_per_second is None, "no relay, nothing measured"
    assert elapsed < 0.5


def test_a_relay_that_cannot_reach_the_page_server_fails_the_dump(tmp_path: Path) -> None:
    reply, driver, _, _, still = checkpoint(tmp_path, bandwidth=MiB, reachable=False)
    assert isinstance(reply, RemoteError), reply
    assert reply.reason == Reason.CHECKPOINT_FAILED
    assert "the page server at 127.0.0.1:" in reply.message
    assert "could not be reached" in reply.message
    assert "Can't read from the page server" in reply.message, "CRIU's own line kept"
    assert len(driver.told) == 1
    assert not still


@pytest.mark.parametrize("bandwidth", [0, -5])
def test_a_limit_is_positive(bandwidth: int) -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        CheckpointRequest(uid=UID, container="web", bandwidth_bytes_per_second=bandwidth)
