"""The counter: the workload the demo, the benchmark and the tests move between nodes.

A busybox shell counts, writes the count to ``/tmp/count`` and logs it. Its
state lives only in the process, so "it counts on from where it was" proves
that memory moved; and its log, exported with the checkpoint, reads 1, 2, ...
without a second 1 exactly when the same process ran throughout. The count is
written to a new file and renamed: a reader never sees it empty. Optionally it
first fills a tmpfs with random bytes, which the checkpoint must carry and no
compression can shrink.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping

from . import images, nodes
from .config import NodeSpec


def counter_script(*, interval: float = 0.1, log: bool = True) -> str:
    """The counter's shell loop; ``log``: also print each value (the container's log)."""
    echo = "echo $i; " if log else ""
    return (
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; "
        f"{echo}sleep {interval}; done"
    )


def sh(node: NodeSpec, script: str, *, timeout: float = 120) -> str:
    """Run a shell script in ``node``; its output, or CommandError with its stderr."""
    return nodes.run_in(node, ["sh", "-c", script], timeout=timeout).stdout.strip()


def run_counter(
    node: NodeSpec,
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    blob_bytes: int = 0,
    interval: float = 0.1,
    image: str = images.BUSYBOX_IMAGE,
) -> None:
    """(Re)start a counter named ``name``; with ``blob_bytes`` of random data held first."""
    flags = " ".join(f"--label {shlex.quote(f'{k}={v}')}" for k, v in (labels or {}).items())
    fill = ""
    if blob_bytes:
        flags += f" --tmpfs /data:size={blob_bytes + 2**26}"
        fill = f"head -c {blob_bytes} /dev/urandom > /data/blob; "
    script = shlex.quote(fill + counter_script(interval=interval))
    sh(
        node,
        f"podman rm -f -t 0 -i {name}; podman run -d --name {name} {flags} {image} sh -c {script}",
    )


def run_tcp_talker(node: NodeSpec, name: str, *, labels: Mapping[str, str] | None = None) -> None:
    """(Re)start a container holding an established TCP connection between two of its processes.

    What CRIU refuses to checkpoint without ``--tcp-established``.
    """
    flags = " ".join(f"--label {shlex.quote(f'{k}={v}')}" for k, v in (labels or {}).items())
    talk = "sleep 600 | nc -l -p 9000 >/dev/null & sleep 0.3; sleep 600 | nc 127.0.0.1 9000"
    sh(
        node,
        f"podman rm -f -t 0 -i {name}; podman run -d --name {name} {flags} "
        f"{images.BUSYBOX_IMAGE} sh -c {shlex.quote(talk)}",
    )
    time.sleep(0.5)  # until the connection is made


# The helpers below take the container's runtime: podman's and docker's CLIs agree on
# every command they use (inspect --format, exec, logs).


def container_state(node: NodeSpec, name: str, *, runtime: str = "podman") -> str:
    """The state of container ``name`` on ``node`` (``running``, ``exited``...); "" if none."""
    state = f"{runtime} inspect --format '{{{{.State.Status}}}}' {name} 2>/dev/null || true"
    return sh(node, state)


def read_count(node: NodeSpec, name: str, *, runtime: str = "podman") -> int:
    """The counter's value; 0 until it has written its first one."""
    return int(sh(node, f"{runtime} exec {name} sh -c 'cat /tmp/count 2>/dev/null || echo 0'"))


def wait_counting(
    node: NodeSpec, name: str, *, above: int, timeout: float = 20, runtime: str = "podman"
) -> int:
    """Until the counter on ``node`` passes ``above``; its value then."""
    deadline = time.monotonic() + timeout
    while (value := read_count(node, name, runtime=runtime)) <= above:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} on {node.name} is stuck at {value}")
        time.sleep(0.1)
    return value


def logged_counts(node: NodeSpec, name: str, *, runtime: str = "podman") -> list[int]:
    """Every value the counter logged, across checkpoints (the log moves with it)."""
    return [int(v) for v in sh(node, f"{runtime} logs {name}").split()]


def counted_without_restart(logged: list[int]) -> bool:
    return logged == list(range(1, len(logged) + 1))
