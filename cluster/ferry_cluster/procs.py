"""Background processes recorded in pid files, safe against pid reuse.

A pid file alone cannot tell our etcd from an unrelated process that got the
same pid after a crash, so a recorded process counts as ours only while its
command line still contains the marker it was started with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

START_TIMEOUT = 10.0


class CommandError(RuntimeError):
    """A command failed; the message holds the command and what it printed."""


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input_text: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [os.fspath(a) for a in args],
        capture_output=True,
        text=True,
        input=input_text,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        shown = " ".join(os.fspath(a) for a in args)
        output = (result.stderr or result.stdout).strip()
        raise CommandError(f"`{shown}` exited {result.returncode}: {output}")
    return result


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The live pid recorded in ``pid_file`` whose command line holds ``marker``."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    for _ in range(200):
        line = cmdline(pid)
        if line:
            return pid if marker in line else None
        if not alive(pid):
            return None
        # A live process whose cmdline reads empty is between exec's steps
        # (or busy mapping memory: seen with kube-apiserver starting on a loaded host).
        time.sleep(0.01)
    # Still alive and still unreadable: the process we started (a reused pid
    # would have a command line by now).
    return pid if alive(pid) else None


def start(args: Sequence[str | os.PathLike[str]], *, pid_file: Path, log_file: Path) -> int:
    """Start a daemon (its own session, not our child), log to a file, record its pid.

    ``setsid --fork`` detaches it, so it outlives this process and is reaped by
    init, not by us; the daemon writes its own pid file before it execs.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.unlink(missing_ok=True)
    with log_file.open("ab") as log:
        subprocess.run(
            [
                "setsid",
                "--fork",
                "sh",
                "-c",
                'echo $$ > "$0"; exec "$@"',
                os.fspath(pid_file),
                *(os.fspath(a) for a in args),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{os.fspath(args[0])} did not start; see {log_file}") from None
            time.sleep(0.01)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state letter tells.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return False


def stop(pid: int, *, grace: float = 10.0, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once it is gone.

    ``group``: signal the whole process group ``pid`` leads (a daemon from
    :func:`start` leads its own), for wrappers such as ``nsenter`` that fork
    the real process and do not pass signals on.
    """
    send = os.killpg if group else os.kill
    running = _group_alive if group else alive
    with contextlib.suppress(ProcessLookupError):
        send(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if running(pid):
        with contextlib.suppress(ProcessLookupError):
            send(pid, signal.SIGKILL)
        while running(pid):
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """True while a process (not a zombie) of group ``pgid`` remains."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def processes_with(marker: str) -> list[int]:
    """Pids (other than ours) whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and int(entry.name) != os.getpid()
            and marker in cmdline(int(entry.name))
        ):
            found.append(int(entry.name))
    return found
