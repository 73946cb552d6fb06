"""Memory moved once: CRIU's page server on the target, fed by the dump on the source.

What was found on the nodes (podman 5.4.2, crun 1.21, CRIU 4.2.1):

* crun 1.21 passes CRIU no configuration file of its own (no
  ``org.criu.config`` annotation, no ``/etc/criu/crun.conf``; that came in a
  later crun), and podman's environment does not reach CRIU
  (``CRIU_CONFIG_FILE`` is ignored). CRIU in RPC mode does read
  ``/etc/criu/default.conf``, and ``page-server``/``address``/``port`` there
  make ``podman container checkpoint --export`` send every page to a page
  server and leave only the small images in the archive.
* That file is node-wide: every CRIU run on the node reads it while it is
  there. So it is written just before one dump and removed right after
  (:class:`DumpConfig`), while no other CRIU run of this helper may start
  (:class:`~.criu_runs.CriuRuns`), and a file the helper did not write is
  never touched.
* The page server writes ``pagemap-*.img`` and ``pages-*.img`` into the
  directory it is given. When that is the target container's own
  ``userdata/checkpoint`` (same container ID: ``restore --import`` without
  ``--name`` keeps it), ``podman container restore --import`` of the small
  archive adds the other images next to the pages and restores: the memory
  is written once on the target and never extracted from an archive.
* ``criu page-server`` accepts exactly one connection and closes its listening
  socket (``run_tcp_server`` in CRIU's ``util.c``), serves that one dump and
  exits 0 after it (``Session over``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket
from pathlib import Path
from types import TracebackType

from .criu_tls import TlsFiles, tls_options

#: The CRIU configuration every CRIU run on the node reads (RPC mode included).
DEFAULT_CONFIG = Path("/etc/criu/default.conf")
#: First line of a config this module wrote: only such a file is ever removed.
CONFIG_MARK = "# written by ferry-helper for one dump; removed when it ends"
#: Seconds a page server may take to listen before it counts as failed.
READY_TIMEOUT = 10.0
#: The page server's log, in its work directory.
PAGE_SERVER_LOG = "page-server.log"
#: The files a page server writes: what the restore reads from it, and all a rollback needs back.
PAGE_FILE = re.compile(r"^(pagemap|pages)-[A-Za-z0-9_-]+\.img$")

_FULL_ID = re.compile(r"^[0-9a-f]{64}$")


class PageStreamError(RuntimeError):
    """The page server or the dump configuration could not be set up."""


def dump_config(address: str, port: int, tls: TlsFiles | None) -> str:
    """The ``default.conf`` that sends one dump's pages to the page server at address:port."""
    ipaddress.ip_address(address)  # a name here would be looked up by CRIU, mid-freeze
    if not 0 < port < 65536:
        raise ValueError(f"not a TCP port: {port}")
    lines = [CONFIG_MARK, "page-server", f"address {address}", f"port {port}"]
    if tls is not None:
        lines += tls_options(tls)
    return "\n".join(lines) + "\n"


def page_server_args(
    images_dir: Path,
    *,
    work_dir: Path,
    address: str,
    port: int,
    tls: TlsFiles | None,
    status_fd: int,
) -> list[str]:
    """``criu page-server`` in the foreground, writing pages to ``images_dir``.

    ``--status-fd``: CRIU writes a byte there once it listens, so the source
    is told to dump only then. Without ``-d`` the helper owns the process and
    learns how it ended. The log goes to ``work_dir``, which outlives the
    images directory (a failed restore's container takes that with it).
    """
    ipaddress.ip_address(address)
    args = [
        "criu",
        "page-server",
        "--images-dir",
        str(images_dir),
        "--work-dir",
        str(work_dir),
        "--address",
        address,
        "--port",
        str(port),
        "--status-fd",
        str(status_fd),
        "--log-file",
        PAGE_SERVER_LOG,
        "-v4",
    ]
    if tls is not None:
        args += [f"--{option.replace(' ', '=', 1)}" for option in tls_options(tls)]
    return args


def container_checkpoint_dir(graph_root: Path, graph_driver: str, container_id: str) -> Path:
    """Where podman keeps ``container_id``'s CRIU images (``<id>/userdata/checkpoint``)."""
    if not _FULL_ID.match(container_id):
        raise ValueError(f"not a full container ID: {container_id!r}")
    if not re.fullmatch(r"[a-z0-9]+", graph_driver):
        raise ValueError(f"not a graph driver name: {graph_driver!r}")
    return graph_root / f"{graph_driver}-containers" / container_id / "userdata" / "checkpoint"


def page_files(images_dir: Path) -> list[Path]:
    """The page images in ``images_dir`` (pagemaps and pages), by name."""
    try:
        return sorted(p for p in images_dir.iterdir() if PAGE_FILE.match(p.name) and p.is_file())
    except FileNotFoundError:
        return []


def received_pages(images_dir: Path) -> int:
    """Bytes of memory pages the page server wrote into ``images_dir``."""
    return sum(p.stat().st_size for p in page_files(images_dir) if p.name.startswith("pages-"))


def free_port(address: str) -> int:
    """A TCP port free on ``address`` now (the kernel's pick; taken again by CRIU)."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


class DumpConfig:
    """``default.conf`` sending the dumps made inside the ``async with`` to a page server.

    The file is node-wide: hold :meth:`CriuRuns.exclusive` around this block.
    A file that exists and was not written by this module is the node's own
    configuration: it is left alone and the dump refused, rather than
    changing what every CRIU run on the node does.
    """

    def __init__(self, text: str, *, path: Path = DEFAULT_CONFIG) -> None:
        self._text = text
        self._path = path

    async def __aenter__(self) -> DumpConfig:
        await asyncio.to_thread(self._write)
        return self

    def _write(self) -> None:
        if self._path.exists() and not _ours(self._path):
            raise PageStreamError(
                f"{self._path} exists on this node and was not written by ferry-helper: CRIU "
                "reads it for every dump, so memory cannot go to a page server while it is "
                "there; move its options elsewhere or use spec.memoryTransfer: Archive"
            )
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(f".{self._path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self._text)
        tmp.replace(self._path)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if _ours(self._path):
            self._path.unlink(missing_ok=True)


def _ours(path: Path) -> bool:
    try:
        with path.open() as handle:
            return handle.readline().rstrip("\n") == CONFIG_MARK
    except OSError:
        return False


class PageServer:
    """``criu page-server`` writing into ``images_dir``, listening once :meth:`start` returns.

    It serves one dump and exits by itself at the end of it (``Session
    over``); :meth:`finished` waits for that. :meth:`stop` kills it if it
    is still running (a dump that never came).
    """

    def __init__(
        self,
        images_dir: Path,
        *,
        work_dir: Path,
        address: str,
        port: int,
        tls: TlsFiles | None,
        criu: str = "criu",
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.images_dir = images_dir
        self.work_dir = work_dir
        self.address = address
        self.port = port
        self._tls = tls
        self._criu = criu
        self._ready_timeout = ready_timeout
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        read_fd, write_fd = os.pipe()
        try:
            args = page_server_args(
                self.images_dir,
                work_dir=self.work_dir,
                address=self.address,
                port=self.port,
                tls=self._tls,
                status_fd=write_fd,
            )
            self._process = await asyncio.create_subprocess_exec(
                self._criu,
                *args[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                # Its log file has what it says; an undrained pipe could block it.
                stderr=asyncio.subprocess.DEVNULL,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            # CRIU writes one byte once it listens; EOF means it died first.
            ready = await asyncio.wait_for(
                asyncio.to_thread(os.read, read_fd, 1), self._ready_timeout
            )
        except TimeoutError:
            ready = b""
        finally:
            os.close(read_fd)
        if not ready:
            await self.stop()
            raise PageStreamError(f"criu page-server did not start: {self.log_tail()}")

    @property
    def returncode(self) -> int | None:
        """How it ended; None while it runs (or before it started)."""
        return None if self._process is None else self._process.returncode

    async def finished(self) -> int:
        """Wait until the page server exits (its dump is over); its exit code."""
        if self._process is None:
            raise PageStreamError("page server not started")
        return await self._process.wait()

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.work_dir / PAGE_SERVER_LOG).read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error.strerror})"
        return " | ".join(text.strip().splitlines()[-lines:])

    async def stop(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def __aenter__(self) -> PageServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
