"""What every runtime driver shares: its records, and running its command-line tool.

The helper drives each container runtime (podman, docker) through its command
line: ``asyncio`` subprocesses, an argv and never a shell, each with a timeout.
:class:`CliDriver` runs one command of a tool and turns a failure into a
:class:`RuntimeCommandError` carrying its decisive line; the records below are
what the drivers return, the same for every runtime, so the node-helper's
operations do not care which one ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from .criu_stats import CriuStatistics
from .errors import RuntimeCommandError, build_error, criu_log_path, read_criu_errors
from .failure_logs import read_tail

logger = logging.getLogger(__name__)

Compression = Literal["zstd", "gzip", "none"]

#: Seconds allowed to the quick commands (inspect, image exists, info, rm).
QUICK_TIMEOUT = 60.0
#: Bytes read at a time when hashing an archive.
HASH_CHUNK = 1 << 20


class Record(BaseModel):
    """A frozen value a driver returns."""

    model_config = ConfigDict(frozen=True)


class ContainerInfo(Record):
    """A container as its runtime reports it; ``pid`` is 0 unless it runs."""

    id: str
    name: str
    image_id: str
    image_name: str
    state: str
    running: bool
    labels: dict[str, str]
    pid: int
    #: Stopped by a checkpoint (and not restored since): an in-place restore may work.
    checkpointed: bool = False
    #: podman's directory for the container (``userdata``, holding ``checkpoint/``).
    static_dir: str = ""
    #: When the container was created (seconds since the epoch; 0 if unknown).
    created: float = 0.0


class CheckpointOptions(Record):
    leave_running: bool = False
    tcp_established: bool = False
    file_locks: bool = False
    compression: Compression = "zstd"


class CheckpointResult(Record):
    """A checkpoint archive; ``seconds`` is the checkpoint command's wall time."""

    archive: Path
    size_bytes: int
    sha256: str
    seconds: float
    statistics: CriuStatistics


class RestoreResult(Record):
    """A restored container; ``seconds`` is the wall time of the restore (0 if none was needed)."""

    container_id: str
    name: str
    seconds: float
    statistics: CriuStatistics


_FRACTION = re.compile(r"(\.\d{6})\d+")


def epoch_seconds(text: str) -> float:
    """An RFC 3339 time as podman and docker print it (nanoseconds, ``Z`` or an offset)."""
    if not text:
        return 0.0
    try:
        moment = datetime.datetime.fromisoformat(_FRACTION.sub(r"\1", text).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return moment.timestamp()


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of ``path``, read in chunks (archives can be many gigabytes)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def partial_path(path: Path) -> Path:
    """Where ``path`` is written until it is complete."""
    return path.with_name(f".{path.name}.partial")


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """A path to write ``path``'s content to; it becomes ``path`` only if the block succeeds,
    so a file that exists is complete."""
    partial = partial_path(path)
    partial.unlink(missing_ok=True)
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class CommandOutput:
    """What a finished command printed, and its exit code."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str


class CliDriver:
    """Runs one command-line tool; ``timeout`` bounds the long commands, quick ones less."""

    def __init__(self, *, tool: str, timeout: float) -> None:
        self._tool = tool
        self._timeout = timeout
        self._quick = min(timeout, QUICK_TIMEOUT)

    async def _run(
        self, args: Sequence[str], *, limit: float, tool: str | None = None
    ) -> CommandOutput:
        """Run the tool (or ``tool``, a helper program of it) with ``args`` for at most
        ``limit`` seconds.

        Running too long or not starting raises; an exit code does not.
        """
        program = tool or self._tool
        command = [program, *args]
        logger.debug("running %s", command)
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise RuntimeCommandError(
                command=command,
                exit_code=None,
                stderr="",
                decisive_line=f"cannot run {program}: {error}",
            ) from error
        out, err = bytearray(), bytearray()
        if process.stdout is None or process.stderr is None:  # pragma: no cover - PIPE was asked
            raise RuntimeError(f"{program} started without pipes")
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    _drain(process.stdout, out), _drain(process.stderr, err), process.wait()
                ),
                limit,
            )
        except TimeoutError:
            stderr = err.decode(errors="replace")
            raise build_error(command, None, stderr, timeout=limit) from None
        finally:
            # NB: also on cancellation. Killing the tool does not stop a CRIU run it started.
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        returncode = process.returncode
        if returncode is None:  # pragma: no cover - waited for above
            raise RuntimeError(f"{program} has no exit code after it exited")
        return CommandOutput(
            command=command,
            returncode=returncode,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
        )

    async def _check(self, args: Sequence[str], *, limit: float) -> CommandOutput:
        output = await self._run(args, limit=limit)
        if output.returncode != 0:
            raise await self._failure(output)
        return output

    async def _failure(
        self, output: CommandOutput, *, criu_log: Path | None = None
    ) -> RuntimeCommandError:
        """The error for a failed command, with CRIU's log read (``criu_log``, else the one
        the tool names)."""
        log = criu_log or criu_log_path(output.stderr)
        criu_errors = await asyncio.to_thread(read_criu_errors, log) if log is not None else []
        tail = await asyncio.to_thread(read_tail, log) if log is not None else None
        error = build_error(
            output.command,
            output.returncode,
            output.stderr,
            criu_errors=criu_errors,
            criu_log_tail=tail,
            criu_log=log,
        )
        logger.info("%s", error)
        return error

    def _unexpected(self, output: CommandOutput, problem: Exception | str) -> RuntimeCommandError:
        return RuntimeCommandError(
            command=output.command,
            exit_code=output.returncode,
            stderr=output.stderr,
            decisive_line=f"unexpected output ({problem}): {output.stdout[:200]!r}",
        )


async def _drain(stream: asyncio.StreamReader, sink: bytearray) -> None:
    while chunk := await stream.read(65536):
        sink.extend(chunk)


class Versions(Protocol):
    """What a runtime says of itself (its driver's ``runtime_info``)."""

    @property
    def version(self) -> str: ...

    @property
    def oci_runtime(self) -> str: ...

    @property
    def oci_runtime_version(self) -> str: ...


class Driver(Protocol):
    """What the node-helper's operations ask of a runtime, whichever it is."""

    async def runtime_info(self) -> Versions: ...

    async def inspect(self, container: str) -> ContainerInfo | None: ...

    async def memory_bytes(self, container: str) -> int | None:
        """The memory ``container`` uses now; None where the runtime cannot say quickly."""
        ...

    async def image_exists(self, image_id: str) -> bool: ...

    async def save_image(self, image: str, out: Path) -> None: ...

    async def load_image(self, archive: Path) -> str: ...

    async def checkpoint(
        self, container: str, archive: Path, options: CheckpointOptions
    ) -> CheckpointResult: ...

    async def restore(
        self,
        archive: Path,
        *,
        name: str | None = None,
        tcp_established: bool = False,
        file_locks: bool = False,
    ) -> RestoreResult: ...

    async def rollback(
        self,
        container: str,
        archive: Path,
        *,
        tcp_established: bool | None = None,
        file_locks: bool = False,
    ) -> RestoreResult: ...

    async def remove(self, container: str) -> None: ...
