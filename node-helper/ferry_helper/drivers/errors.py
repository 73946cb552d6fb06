"""What a runtime driver raises when its tool fails, and how one line is found to say why.

A podman failure prints a lot and says little: a failed checkpoint ends with
``Error: `/usr/bin/crun checkpoint --image-path ...` failed: exit status 1``,
while what broke is in CRIU's log, whose path podman prints one line earlier
(``Please check CRIU logfile /var/lib/containers/.../dump.log``). So a
:class:`RuntimeCommandError` carries a *decisive line*: the line a user reads to know
what to change, taken from CRIU's log when podman names one, else from podman's
own ``Error:`` line.

CRIU's logs are noisy: on the simulated nodes every dump and restore, also the
successful ones, logs ``Error (criu/util.c:1534): rlimit: Can't setup
RLIMIT_NOFILE for self``, and every restore logs ``exited, status=1`` twice
for the iptables-restore of its network-unlock scripts. The first ``Error (``
line is therefore often not the one that broke the run; the extraction skips
the lines known to appear in successful runs and the summary lines
(``Dumping FAILED.``) that only repeat that something failed.

Everything here is pure text handling except :func:`read_criu_errors`, which
reads the log file; the driver calls it before it removes anything that could
hold the log, and the error keeps the lines, so they outlive the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

#: How many of CRIU's error lines an error keeps (a failing restore logs a handful).
MAX_CRIU_LINES = 20

# `Please check CRIU logfile /path/dump.log: Invalid exchange` (checkpoint) and
# ``Please check CRIU logfile `/path/restore.log` `` (restore): the path, unquoted.
_CRIU_LOG_PATH = re.compile(r"CRIU logfile\s+[`'\"]?(?P<path>/[^\s`'\"]+?\.log)")

# `(00.120554) Error (criu/sk-inet.c:200): inet: Connected TCP socket, ...` and,
# from restored tasks, `(00.066767)      1: Error (criu/files-reg.c:2353): ...`.
_CRIU_ERROR = re.compile(r"^\(\s*[\d.]+\)\s+(?:\d+:\s+)?Error \((?P<where>[^)]*)\):\s*(?P<msg>.*)$")

# Logged by runs that succeed: never what broke a run.
_CRIU_NOISE = (
    re.compile(r"^rlimit: Can't setup RLIMIT_NOFILE"),
    # cr_system() reporting a helper's exit, e.g. iptables-restore in network-unlock.
    re.compile(r"^exited, status=\d+$"),
)
# Summaries that only repeat that the run failed, after the line that says why.
_CRIU_SUMMARY = (
    re.compile(r"^(Dumping|Restoring|Pre-dumping) FAILED\.?$"),
    re.compile(r"^Dump files \(pid: \d+\) failed with -?\d+$"),
)

# Podman's log lines (cgroup v1 deprecation and others): not the failure.
_PODMAN_LOG_LINE = re.compile(r"^(WARN|INFO|DEBU)\[\d+\]|^time=\S+ level=(warning|info|debug)")


#: Failures whose cause is known, and what the user can do about each: the
#: first pattern that matches the decisive line (or a CRIU error) gives advice.
_ADVICE: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"Can't bind inet socket back|Cannot assign requested address"),
        "the restored TCP connections need the container's old address, which this node "
        "cannot hold (an address does not move between nodes): restore on the node it was "
        "checkpointed on, or checkpoint without tcpEstablished",
    ),
    (
        re.compile(r"Connected TCP socket|--tcp-established", re.IGNORECASE),
        "the container holds established TCP connections: close them before a migration "
        "(on another node it gets another address, so they cannot follow), or, for a "
        "checkpoint restored on this same node, set spec.tcpEstablished: true (its peers "
        "then see a pause, not a reset)",
    ),
    (
        re.compile(r"file locks|--file-locks", re.IGNORECASE),
        "the container holds file locks: set spec.fileLocks: true",
    ),
    (
        re.compile(r"Can't get \d+:\d+ opt: Operation not supported"),
        "this node's CRIU is too old for its kernel: install CRIU 4.2 or newer there "
        "(see the NodeHelper's status.criu.version)",
    ),
    (
        re.compile(r"image not known|no such image|image .* not found", re.IGNORECASE),
        "the container's image is missing on this node: load it there (podman load), "
        "or push it to a registry the node can pull from",
    ),
    (
        re.compile(r"already in use", re.IGNORECASE),
        "a container of that name exists on this node: remove it or choose another name",
    ),
    (
        re.compile(
            r"(mount|bind).*(No such file or directory)|(No such file or directory).*mount",
            re.IGNORECASE,
        ),
        "a path the container mounts is missing on this node: create it there "
        "(bind-mounted files are not moved with the container)",
    ),
    (
        re.compile(r"External socket|external unix", re.IGNORECASE),
        "a unix socket joins the container to something outside it, which CRIU cannot "
        "move: close it, or keep both ends inside the container",
    ),
)


def advice(lines: Iterable[str]) -> str | None:
    """What to do about a failure whose ``lines`` (decisive line first) show a known cause."""
    text = list(lines)
    for pattern, what_to_do in _ADVICE:
        if any(pattern.search(line) for line in text):
            return what_to_do
    return None


class RuntimeCommandError(Exception):
    """A podman command failed (or timed out).

    ``decisive_line`` is the one line that says what broke; ``criu_errors`` are
    the error lines of CRIU's log when the failure was CRIU's, and
    ``criu_log_tail`` the end of that log (both kept here because a failed
    restore's log is removed with the container it belonged to).
    """

    def __init__(
        self,
        *,
        command: Sequence[str],
        exit_code: int | None,
        stderr: str,
        decisive_line: str,
        criu_log: Path | None = None,
        criu_errors: Sequence[str] = (),
        criu_log_tail: bytes | None = None,
    ) -> None:
        self.command = list(command)
        self.exit_code = exit_code
        self.stderr = stderr
        self.decisive_line = decisive_line
        self.criu_log = criu_log
        self.criu_errors = tuple(criu_errors)
        #: The end of CRIU's whole log, read before anything could remove it.
        self.criu_log_tail = criu_log_tail
        super().__init__(self.message())

    def action(self) -> str:
        """What was attempted, e.g. ``podman container checkpoint``: the subcommand words."""
        words = [self.command[0].rsplit("/", 1)[-1]] if self.command else ["podman"]
        for arg in self.command[1:3]:
            if arg.startswith("-"):
                break
            words.append(arg)
        return " ".join(words)

    def advice(self) -> str | None:
        """What the user can do, when the cause is a known one."""
        return advice([self.decisive_line, *self.criu_errors, self.stderr])

    def message(self) -> str:
        where = f" (CRIU log: {self.criu_log})" if self.criu_log is not None else ""
        hint = self.advice()
        fix = f"; to fix: {hint}" if hint else ""
        return f"{self.action()} failed: {self.decisive_line}{where}{fix}"

    def __str__(self) -> str:
        return self.message()


class RuntimeCommandTimeoutError(RuntimeCommandError):
    """A podman command ran longer than its timeout and was killed."""


def criu_log_path(stderr: str) -> Path | None:
    """The CRIU log file podman names in its error output, if it names one."""
    match = _CRIU_LOG_PATH.search(stderr)
    return Path(match.group("path")) if match else None


def criu_error_lines(lines: Iterable[str]) -> list[str]:
    """The messages of CRIU's ``Error (file:line):`` log lines, without their prefixes."""
    found = []
    for line in lines:
        match = _CRIU_ERROR.match(line.rstrip("\n"))
        if match:
            found.append(match.group("msg").strip())
    return found


def _is_noise(message: str) -> bool:
    return any(p.search(message) for p in _CRIU_NOISE)


def _is_summary(message: str) -> bool:
    return any(p.search(message) for p in _CRIU_SUMMARY)


def relevant_criu_errors(messages: Sequence[str]) -> list[str]:
    """CRIU's error messages without those that also appear in successful runs."""
    return [m for m in messages if not _is_noise(m)]


def decisive_criu_error(messages: Sequence[str]) -> str | None:
    """The message that says what broke: the first that is neither noise nor a summary."""
    relevant = relevant_criu_errors(messages)
    for message in relevant:
        if not _is_summary(message):
            return message
    if relevant:
        return relevant[0]
    return messages[0] if messages else None


def read_criu_errors(log: Path, *, limit: int = MAX_CRIU_LINES) -> list[str]:
    """CRIU's error messages from ``log`` (read line by line), noise left out; [] if unreadable."""
    try:
        with log.open(encoding="utf-8", errors="replace") as lines:
            messages = criu_error_lines(lines)
    except OSError:
        return []
    decisive = decisive_criu_error(messages)
    relevant = relevant_criu_errors(messages)
    if decisive is not None and decisive not in relevant:
        relevant.insert(0, decisive)
    return relevant[:limit]


def decisive_stderr_line(stderr: str) -> str | None:
    """The most useful line of podman's own error output.

    A line about CRIU first (podman's ``Error:`` line then only names the OCI
    runtime's command line), else the first ``Error:`` line, else the last line
    that is not one of podman's log lines.
    """
    lines = [line.strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not _PODMAN_LOG_LINE.search(line)]
    for line in lines:
        if "CRIU" in line:
            return _without_error_prefix(line)
    for line in lines:
        if line.startswith("Error:"):
            return _without_error_prefix(line)
    return lines[-1] if lines else None


def _without_error_prefix(line: str) -> str:
    return line.removeprefix("Error:").strip()


def build_error(
    command: Sequence[str],
    exit_code: int | None,
    stderr: str,
    *,
    criu_errors: Sequence[str] = (),
    criu_log_tail: bytes | None = None,
    timeout: float | None = None,
    criu_log: Path | None = None,
) -> RuntimeCommandError:
    """A :class:`RuntimeCommandError` for a finished command.

    ``criu_errors`` are as :func:`read_criu_errors` gives them, from ``criu_log``
    (default: the log ``stderr`` names).

    With ``timeout`` set the command did not finish: it was killed after that many seconds.
    """
    log = criu_log or criu_log_path(stderr)
    decisive = decisive_criu_error(criu_errors) if criu_errors else None
    if decisive is None:
        decisive = decisive_stderr_line(stderr)
    if timeout is not None:
        ran = f"no answer in {timeout:g}s, killed"
        decisive = f"{ran}; last output: {decisive}" if decisive else ran
        return RuntimeCommandTimeoutError(
            command=command,
            exit_code=exit_code,
            stderr=stderr,
            decisive_line=decisive,
            criu_log=log,
            criu_errors=criu_errors,
            criu_log_tail=criu_log_tail,
        )
    if decisive is None:
        decisive = f"exit code {exit_code} and no error output"
    return RuntimeCommandError(
        command=command,
        exit_code=exit_code,
        stderr=stderr,
        decisive_line=decisive,
        criu_log=log,
        criu_errors=criu_errors,
        criu_log_tail=criu_log_tail,
    )
