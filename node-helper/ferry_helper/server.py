"""The helper's SSH server: pinned host key, two kinds of client key, typed requests in.

asyncssh serves the SSH protocol in-process, so a node needs no OpenSSH. Only
public-key authentication exists; a client authenticates as ``operator`` with
a key from the operator's Secret, or as ``peer`` with a key granted for one
migration (:mod:`.grants`), and may then run only the operations
:func:`ferry_wire.allowed` grants that user; a peer only into the migration
its key was granted for (:mod:`.operations.dispatcher`).

One exec request is one operation (:mod:`ferry_wire.framing`): the command
names it, the first line of standard input is its request, parsed into the
operation's model (``ferry_wire.contract.REQUESTS``); a request that does not
fit is a ``BadRequest`` naming each wrong field, never echoing what was sent
(a request may carry a private key). The answer is ``progress`` events, then
one ``result`` (the handler's typed reply) or ``error`` (a reason and a
message), and the exit status 0 or 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncssh
from ferry_wire import (
    OPERATOR_USER,
    PEER_USER,
    Operation,
    Reason,
    RemoteError,
    Reply,
    WireModel,
    allowed,
    framing,
)
from ferry_wire.contract import REQUESTS
from ferry_wire.ssh import keepalive_options, stream_options

from .grants import PeerGrants
from .operations import Channel, Operations

log = logging.getLogger(__name__)


class _Server(asyncssh.SSHServer):
    """One per connection: remembers which migration a peer's key was granted for."""

    def __init__(self, operator_keys: set[str], grants: PeerGrants) -> None:
        self._operator_keys = operator_keys
        self._grants = grants
        self.granted_uid: str | None = None

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if username == OPERATOR_USER:
            return key.get_fingerprint() in self._operator_keys
        if username == PEER_USER:
            self.granted_uid = self._grants.uid_for(key)
            return self.granted_uid is not None
        return False


def _fingerprints(keys: list[asyncssh.SSHKey]) -> set[str]:
    return {key.get_fingerprint() for key in keys}


def _reply(process: asyncssh.SSHServerProcess[bytes], event: framing.Event, code: int) -> None:
    """Send the final event and exit status, unless the client has already gone."""
    try:
        process.stdout.write(framing.encode(event))
        process.exit(code)
    except (BrokenPipeError, ConnectionError, asyncssh.Error):
        log.info("the client left before the %s of %s", event.type, process.command)


class HelperServer:
    def __init__(
        self,
        *,
        operations: Operations,
        host_key: asyncssh.SSHKey,
        operator_keys: list[asyncssh.SSHKey],
    ) -> None:
        self.operations = operations
        self.host_key = host_key
        self.operator_keys = _fingerprints(operator_keys)
        self._running: set[asyncio.Future[Reply]] = set()

    async def drain(self, seconds: float) -> int:
        """Wait up to ``seconds`` for the operations in flight; how many still run.

        A helper asked to stop (a rolling update, a node drain) lets a dump or a
        restore end instead of killing podman halfway through it.
        """
        if not self._running:
            return 0
        log.info("waiting up to %.0fs for %d operation(s) in flight", seconds, len(self._running))
        _, pending = await asyncio.wait(set(self._running), timeout=seconds)
        return len(pending)

    async def start(self, host: str, port: int) -> asyncssh.SSHAcceptor:
        return await asyncssh.create_server(
            lambda: _Server(self.operator_keys, self.operations.grants),
            host,
            port,
            server_host_keys=[self.host_key],
            process_factory=self.handle,
            encoding=None,
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
            line_editor=False,
            # A client on a cut link is dropped, so a half-received archive is
            # removed instead of waiting for bytes that will never come.
            **keepalive_options(),
            **stream_options(),
        )

    async def handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = (process.command or "").strip()
        try:
            reply = await self._serve(process, command)
            _reply(process, framing.result(reply), 0)
        except RemoteError as error:
            log.warning("%s failed: %s: %s", command, error.reason.value, error.message)
            _reply(process, framing.error(error), 1)
        except (asyncio.CancelledError, asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
            process.exit(1)
            raise
        except Exception as error:
            log.exception("%s failed unexpectedly", command)
            failure = RemoteError(Reason.HELPER_ERROR, f"{type(error).__name__}: {error}")
            _reply(process, framing.error(failure), 1)

    async def _serve(self, process: asyncssh.SSHServerProcess[bytes], command: str) -> Reply:
        """The reply to the operation ``command``, or the RemoteError that refuses it."""
        user = str(process.get_extra_info("username"))
        try:
            operation = Operation(command)
        except ValueError:
            raise RemoteError(Reason.UNKNOWN_OPERATION, f"no operation {command!r}") from None
        if not allowed(user, operation):
            raise RemoteError(Reason.FORBIDDEN, f"user {user!r} may not run {command!r}")
        granted_uid = None
        if user == PEER_USER:
            owner = process.channel.get_connection().get_owner()
            granted_uid = owner.granted_uid if isinstance(owner, _Server) else None
        request = framing.parse_line(REQUESTS[operation], await process.stdin.readline())
        log.info("%s: %s by %s", operation.value, getattr(request, "uid", "-"), user)

        async def emit(data: WireModel) -> None:
            # A client that left does not stop the operation; it just hears nothing.
            with contextlib.suppress(BrokenPipeError, ConnectionError, asyncssh.Error):
                process.stdout.write(framing.encode(framing.progress(data)))
                await process.stdout.drain()

        channel = Channel(emit=emit, stdin=process.stdin, stdout=process.stdout)
        # Shielded: a client that goes away (an operator cancelling a migration)
        # must not kill podman halfway through a dump.
        running = asyncio.ensure_future(
            self.operations.run(request, channel, granted_uid=granted_uid)
        )
        self._running.add(running)
        running.add_done_callback(self._running.discard)
        return await asyncio.shield(running)
