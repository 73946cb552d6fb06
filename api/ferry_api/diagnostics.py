"""What a user reads when something went wrong, or before restoring: logs and summaries.

Failure logs. When CRIU, podman or docker fails, the condition message carries
the decisive line; the whole logs (CRIU's ``dump.log``/``restore.log`` and the
tool's own output) are kept on the node by its helper for a while
(``nodeHelper.logRetentionHours``) and the operator copies them into a
ConfigMap next to the failed resource, owned by it, so ``kubectl ferry logs``
(or ``kubectl get configmap``) fetches them without logging in to the node. The
files are gzip-compressed in ``binaryData`` (CRIU's debug logs compress about
ten to one); a log larger than :data:`MAX_LOG_BYTES` keeps its tail, where
CRIU says why it stopped.

Checkpoint summary. A stored checkpoint says what it holds (processes, memory,
sockets) and what made it (runtime and CRIU versions), read from CRIU's images
by the helper that stored it, so a user can judge it before restoring it.
"""

from __future__ import annotations

from pydantic import Field

from ferry_api.base import StatusModel
from ferry_api.nodehelper import RuntimeInfo

#: The ConfigMap holding a failed resource's logs is ``<name>-<kind word>`` plus this.
LOGS_CONFIGMAP_SUFFIX = "-logs"
#: Its ``binaryData`` keys are the log file names plus this (gzip-compressed content).
LOG_KEY_SUFFIX = ".gz"
#: A ConfigMap holds at most 1 MiB; each log keeps at most this much of its tail
#: (before compression), and the whole ConfigMap at most :data:`MAX_CONFIGMAP_BYTES`.
MAX_LOG_BYTES = 8 * 1024 * 1024
MAX_CONFIGMAP_BYTES = 900 * 1024
#: Label on those ConfigMaps, with the kind of the failed resource as value.
LOGS_LABEL = "ferry.dev/logs-of"


def logs_config_map_name(kind: str, resource_name: str) -> str:
    """The ConfigMap holding the logs of a failed resource: ``web-move-migration-logs``.

    The kind is in the name because a migration and a checkpoint may share one.
    """
    suffix = f"-{kind.lower()}{LOGS_CONFIGMAP_SUFFIX}"
    return f"{resource_name[: 253 - len(suffix)]}{suffix}"


class FailureLogs(StatusModel):
    """Where the full logs of the failed step are."""

    config_map: str = Field(
        description="ConfigMap in this namespace holding the logs, gzip-compressed in "
        "binaryData (`kubectl ferry logs` prints them)."
    )
    nodes: tuple[str, ...] = Field(
        default=(), description="Nodes whose helpers kept them (under their stateDir/logs)."
    )
    files: tuple[str, ...] = Field(
        default=(), description="Names of the log files: `<node>.<step>.<tool>.<ext>`."
    )
    truncated: bool = Field(
        default=False, description="True when a log was cut to its tail to fit the ConfigMap."
    )


class SocketCounts(StatusModel):
    """Sockets the checkpointed processes held, by kind."""

    tcp_listening: int = Field(default=0, ge=0, description="TCP sockets listening.")
    tcp_established: int = Field(default=0, ge=0, description="TCP connections (any other state).")
    udp: int = Field(default=0, ge=0, description="UDP sockets.")
    unix: int = Field(default=0, ge=0, description="Unix domain sockets.")
    other: int = Field(default=0, ge=0, description="Other sockets (netlink, packet, raw).")


class CheckpointSummary(StatusModel):
    """What a checkpoint holds and what made it."""

    processes: int = Field(ge=0, description="Processes in the checkpointed tree.")
    threads: int = Field(ge=0, description="Threads across those processes.")
    memory_bytes: int = Field(ge=0, description="Bytes of memory pages CRIU dumped.")
    open_files: int = Field(default=0, ge=0, description="Open files of every kind, sockets too.")
    sockets: SocketCounts = Field(default=SocketCounts(), description="Sockets, by kind.")
    runtime: RuntimeInfo | None = Field(default=None, description="The runtime that checkpointed.")
    criu_version: str | None = Field(default=None, description="CRIU's version on that node.")
    kernel: str | None = Field(default=None, description="That node's kernel release.")
