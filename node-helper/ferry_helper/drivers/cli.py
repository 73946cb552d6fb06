"""Running a runtime's command-line tool: an argv, never a shell, always a timeout.

The helper drives each container runtime (podman, docker) through its command
line, as ``asyncio`` subprocesses. :class:`CliDriver` runs one command of a
tool and turns a failure into a :class:`~.errors.RuntimeCommandError` carrying
its decisive line (CRIU's log read first when the tool names one); each
runtime's driver builds on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..failure_logs import read_tail
from .errors import RuntimeCommandError, build_error, criu_log_path, read_criu_errors

logger = logging.getLogger(__name__)

#: Seconds allowed to the quick commands (inspect, image exists, info, rm).
QUICK_TIMEOUT = 60.0


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

    async def running_labelled(self, label: str) -> list[str]:
        """Names of the running containers carrying ``label`` (podman's and docker's ``ps``
        take the same filter)."""
        output = await self._run(
            ["ps", "--filter", f"label={label}", "--format", "{{.Names}}"], limit=self._quick
        )
        if output.returncode != 0:
            raise await self._failure(output)
        return output.stdout.split()

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
