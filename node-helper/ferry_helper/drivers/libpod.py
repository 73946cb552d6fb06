"""podman's REST API (libpod), served by a ``podman system service`` of the helper's own.

Every podman command pays podman's start-up before it does anything. Measured
on the simulated nodes (podman 5.4.2): ``podman container inspect`` takes
30-46 ms from the CLI and 1.4-3 ms through the service; a small container's
``checkpoint --export`` 0.27 s against 0.23 s, its ``restore --import`` 0.20 s
against 0.16 s. A migration asks podman a dozen times, and its checkpoint and
restore are paid while the container is frozen. So the helper starts the
service on a socket under its state directory, and the podman driver sends
the quick calls, and the checkpoint and restore of small containers, through
it. Where the service cannot be reached the driver uses the CLI, as before.

What the service does differently from the CLI (podman 5.4.2):

* ``checkpoint?export=true`` writes the archive to a temporary file and then
  sends it as the response: uncompressed (the API has no compression option)
  and without ``--print-stats``' document (CRIU's ``stats-dump`` is in the
  archive). For a big container that is a second copy of its memory, which is
  why only small containers are checkpointed this way.
* ``restore?import=true`` saves the request body to a temporary file before
  importing it; big archives are restored by the CLI, which reads them in place.
* Errors are JSON, ``{"cause", "message", "response"}``; ``message`` is the
  text the CLI prints after ``Error:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

logger = logging.getLogger(__name__)

#: The libpod API version in the paths: podman 4 and 5 both serve it.
API_PREFIX = "/v4.0.0/libpod"
#: How long the service may take to answer its first ping.
START_TIMEOUT = 15.0
#: After the service was found unreachable, how long to use the CLI before trying again.
RETRY_AFTER = 10.0

_PR_SET_PDEATHSIG = 1


class LibpodError(Exception):
    """The service answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServiceUnavailable(Exception):
    """The service could not be reached: use the CLI."""


def error_message(status: int, body: bytes) -> str:
    """The ``message`` of a libpod error response, or the body as text."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return str(document["message"])
    text = body.decode(errors="replace").strip()
    return text or f"HTTP {status}"


def _params(values: Mapping[str, bool | str]) -> dict[str, str]:
    return {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in values.items()}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The service ends with the helper, even one that was killed (no orphan holds the socket)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Libpod:
    """A client of the service on ``socket``; ``start`` runs the service itself."""

    def __init__(self, socket: Path, *, podman: str = "podman", tmpdir: Path | None = None) -> None:
        self.socket = socket
        self._podman = podman
        self._tmpdir = tmpdir
        self._process: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None
        self._unreachable_since: float | None = None
        self._reviving: asyncio.Task[bool] | None = None
        #: Requests the service answered (errors included): what the CLI was spared.
        self.answered = 0

    # -- the service

    async def start(self) -> bool:
        """Start the service and wait for it to answer; False (and logged) if it does not."""
        self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.socket.unlink(missing_ok=True)
        env = dict(os.environ)
        if self._tmpdir is not None:
            # Its temporary archives go to the helper's disk, not to a tmpfs /tmp.
            self._tmpdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            env["TMPDIR"] = str(self._tmpdir)
        try:
            self._process = await asyncio.create_subprocess_exec(
                self._podman,
                "system",
                "service",
                "--time=0",
                f"unix://{self.socket}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,  # prctl only: safe between fork and exec
            )
        except OSError as error:
            logger.warning("podman's API service did not start (%s); using the CLI", error)
            return False
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                break
            with contextlib.suppress(ServiceUnavailable, LibpodError):
                await self._call("GET", "/_ping", limit=2)
                logger.info("podman's API service answers on %s", self.socket)
                self._unreachable_since = None
                return True
            await asyncio.sleep(0.05)
        logger.warning(
            "podman's API service on %s does not answer (exit code %s); using the CLI",
            self.socket,
            self._process.returncode,
        )
        await self.stop()
        self._unreachable_since = time.monotonic()
        return False

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()

    def _revive(self) -> None:
        """Start the service again if it ended (the CLI serves meanwhile)."""
        ended = self._process is not None and self._process.returncode is not None
        if ended and (self._reviving is None or self._reviving.done()):
            logger.warning("podman's API service ended; starting it again")
            self._reviving = asyncio.create_task(self.start(), name="podman service")

    @property
    def usable(self) -> bool:
        """Whether to try the service (it answered, or it failed long enough ago)."""
        if self._unreachable_since is None:
            return True
        return time.monotonic() - self._unreachable_since >= RETRY_AFTER

    # -- requests

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket)),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    @contextlib.asynccontextmanager
    async def _open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, bool | str] | None = None,
        data: Any = None,
        limit: float,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request, its status checked; ``limit`` bounds the whole call.

        Only a connection that could not be made raises :class:`ServiceUnavailable`
        (nothing was asked: the CLI may do it instead); any later failure is a
        :class:`LibpodError`, as podman may have acted on the request.
        """
        try:
            async with asyncio.timeout(limit):
                async with self._client().request(
                    method,
                    f"http://podman{API_PREFIX}{path}",
                    params=_params(params or {}),
                    data=data,
                ) as response:
                    self.answered += 1
                    if response.status >= 400:
                        body = await response.read()
                        raise LibpodError(response.status, error_message(response.status, body))
                    self._unreachable_since = None
                    yield response
        except aiohttp.ClientConnectorError as error:
            self._unreachable_since = time.monotonic()
            self._revive()
            raise ServiceUnavailable(str(error)) from error
        except aiohttp.ClientError as error:
            raise LibpodError(0, f"podman's API service failed mid-request: {error}") from error
        except TimeoutError:
            raise LibpodError(0, f"podman's API service did not answer within {limit:g}s") from None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, bool | str] | None = None,
        data: Any = None,
        limit: float,
    ) -> bytes:
        async with self._open(method, path, params=params, data=data, limit=limit) as response:
            return await response.read()

    async def _json(self, method: str, path: str, *, limit: float, **kwargs: Any) -> Any:
        return json.loads(await self._call(method, path, limit=limit, **kwargs))

    # -- what the driver asks

    async def inspect(self, container: str, *, limit: float) -> dict[str, Any] | None:
        """``podman container inspect``'s object for ``container``; None if there is none."""
        try:
            found = await self._json(
                "GET", f"/containers/{quote(container, safe='')}/json", limit=limit
            )
        except LibpodError as error:
            if error.status == 404:
                return None
            raise
        return found if isinstance(found, dict) else None

    async def image_exists(self, image: str, *, limit: float) -> bool:
        try:
            await self._call("GET", f"/images/{quote(image, safe='')}/exists", limit=limit)
        except LibpodError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def memory_bytes(self, container: str, *, limit: float) -> int | None:
        """The memory the container's cgroup uses now; None if podman does not say."""
        found = await self._json(
            "GET",
            "/containers/stats",
            params={"containers": container, "stream": False},
            limit=limit,
        )
        stats = found.get("Stats") if isinstance(found, dict) else None
        if not stats or not isinstance(stats[0], dict):
            return None
        usage = stats[0].get("MemUsage")
        return int(usage) if isinstance(usage, int) else None

    async def remove(self, container: str, *, limit: float) -> None:
        """``podman rm --force --time 0``; no error if there is no such container."""
        try:
            await self._call(
                "DELETE",
                f"/containers/{quote(container, safe='')}",
                params={"force": True, "timeout": "0"},
                limit=limit,
            )
        except LibpodError as error:
            if error.status != 404:
                raise

    async def checkpoint_export(
        self, container: str, out: Path, *, params: Mapping[str, bool | str], limit: float
    ) -> None:
        """Checkpoint ``container`` with export into ``out`` (an uncompressed archive)."""
        async with self._open(
            "POST",
            f"/containers/{quote(container, safe='')}/checkpoint",
            params={**params, "export": True},
            limit=limit,
        ) as response:
            with out.open("wb") as sink:
                async for chunk in response.content.iter_chunked(1 << 20):
                    sink.write(chunk)

    async def restore_import(
        self, archive: Path, *, params: Mapping[str, bool | str], limit: float
    ) -> dict[str, Any]:
        """Restore a container from ``archive`` (sent as the body); podman's restore report."""
        with archive.open("rb") as body:
            report = await self._json(
                "POST",
                "/containers/import/restore",
                params={**params, "import": True},
                data=body,
                limit=limit,
            )
        if not isinstance(report, dict):
            raise LibpodError(200, f"unexpected restore report: {report!r:.200}")
        return report
