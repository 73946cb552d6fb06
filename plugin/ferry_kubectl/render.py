"""Pure functions from parsed resources to what the plugin shows: lines, rows, JSON.

Nothing here reads a clock, a terminal or the network: ``now`` is passed in,
and the caller decides how rows become a table (see ``output``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from ferry_api import constants
from ferry_api.checkpoint import ContainerCheckpoint, StorageType
from ferry_api.conditions import find_condition
from ferry_api.diagnostics import CheckpointSummary, SocketCounts
from ferry_api.migration import ContainerMigration, ContainerMigrationStatus, Phase
from ferry_api.nodehelper import NodeHelper, RuntimeInfo
from ferry_api.podmigration import PodMigration, PodMigrationStatus
from rich.filesize import decimal

#: The condition the operator sets when a migration (or restore) ends; a
#: checkpoint's is Ready. Its reason and message say why it failed.
OUTCOME_CONDITION = "Succeeded"
NONE = "-"
MICROSECONDS = 1_000_000

Pairs = list[tuple[str, str]]
#: What ``watch`` follows: a container's migration or a pod's; their statuses share
#: phases, transitions, progress, timings and the outcome condition.
Moving = ContainerMigration | PodMigration
MovingStatus = ContainerMigrationStatus | PodMigrationStatus


def human_duration(seconds: float) -> str:
    """An age as ``kubectl get`` prints it (its HumanDuration): 45s, 5m30s, 3h, 12d."""
    if seconds < 0:
        return "0s"
    total = int(seconds)
    minutes, hours, days = total // 60, total // 3600, total // 86400
    if total < 120:
        return f"{total}s"
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 730:
        return f"{days}d"
    years, rest = divmod(days, 365)
    return f"{years}y{rest}d" if years < 8 and rest else f"{years}y"


def age(created: datetime | None, now: datetime) -> str:
    return human_duration((now - created).total_seconds()) if created else NONE


def elapsed(seconds: float) -> str:
    """A short running time: 0.4s, 12.3s, 2m05s, 1h02m."""
    if seconds < 60:
        return f"{max(seconds, 0):.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def timestamp(moment: datetime) -> str:
    """A time as Kubernetes writes it: UTC, to the second, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds(value: float | None) -> str:
    return NONE if value is None else f"{value:.3f} s"


def size(value: int | None) -> str:
    return NONE if value is None else decimal(value)


def runtime(info: RuntimeInfo | None) -> str:
    """``podman 5.4.2 (crun 1.21)``."""
    if info is None:
        return NONE
    text = f"{info.name.value} {info.version or '?'}"
    if info.oci_runtime:
        text += f" ({info.oci_runtime} {info.oci_runtime_version or '?'})"
    return text


# ContainerMigration


def phase_lines(status: MovingStatus) -> list[str]:
    """One line per phase entered, with its time since the first: ``  0.4s  Checkpointing``.

    A viewer prints the lines it has not printed yet, so a phase passed between
    two watch events is still shown. Without recorded transitions, the phase alone.
    """
    transitions = status.phase_transitions
    if not transitions:
        return [f"{'':>7}  {status.phase.value}"] if status.phase else []
    start = transitions[0].time
    return [f"{elapsed((t.time - start).total_seconds()):>7}  {t.phase.value}" for t in transitions]


def started(migration: Moving) -> datetime | None:
    """When the migration started: its first phase, to the microsecond."""
    status = migration.status
    if status.phase_transitions:
        return status.phase_transitions[0].time
    return status.start_time or migration.metadata.creation_timestamp


def finished(migration: Moving) -> datetime | None:
    """When it reached its final phase; None while it runs.

    The final transition, not completionTime, which is kept to the second only.
    """
    status = migration.status
    if status.phase is None or not status.phase.is_final:
        return None
    if status.phase_transitions:
        return status.phase_transitions[-1].time
    return status.completion_time


def timing_rows(status: MovingStatus) -> Pairs:
    """The measured steps, the archive sent and how long CRIU kept the processes frozen.

    Only what was measured: a migration refused at validation has no rows.
    """
    timings = status.timings
    archive = status.archive
    stats = status.criu_statistics
    frozen = stats.frozen_time if stats else None
    archive_text = NONE
    if archive and archive.bytes is not None:
        compression = f" ({archive.compression.value})" if archive.compression else ""
        archive_text = size(archive.bytes) + compression
    rows = [
        ("checkpoint", seconds(timings.checkpoint_seconds if timings else None)),
        ("transfer", seconds(timings.transfer_seconds if timings else None)),
        ("restore", seconds(timings.restore_seconds if timings else None)),
        ("downtime", seconds(timings.downtime_seconds if timings else None)),
        ("total", seconds(timings.total_seconds if timings else None)),
        ("archive", archive_text),
        ("CRIU frozen", seconds(None if frozen is None else frozen / MICROSECONDS)),
    ]
    if isinstance(status, ContainerMigrationStatus):
        rows[-1:-1] = [
            ("memory by", status.memory_transfer.value if status.memory_transfer else NONE),
            ("memory pages", NONE if status.pages_bytes is None else size(status.pages_bytes)),
        ]
    return [(name, value) for name, value in rows if value != NONE]


def target_node(migration: ContainerMigration) -> str | None:
    spec_target = migration.spec.target.node if migration.spec.target else None
    return migration.status.target_node or spec_target


def route(migration: ContainerMigration) -> str:
    return f"{migration.spec.source.node} -> {target_node(migration) or '?'}"


def namespaced_flag(namespace: str | None) -> str:
    return f" -n {namespace}" if namespace else ""


def outcome_lines(migration: Moving) -> list[str]:
    """What a finished migration came to; for a failure, why, and where its logs are."""
    status = migration.status
    name = migration.metadata.name
    if status.phase == Phase.SUCCEEDED and isinstance(migration, PodMigration):
        pod = migration.status
        return [
            f"Succeeded: pod {migration.spec.pod_name} moved {pod.source_node} -> "
            f"{pod.target_node}; it runs on as pod {pod.target_pod}"
        ]
    if status.phase == Phase.SUCCEEDED and isinstance(migration, ContainerMigration):
        verb = "copied" if migration.spec.leave_running else "moved"
        return [f"Succeeded: {migration.spec.source.container} {verb} {route(migration)}"]
    outcome = find_condition(status.conditions, OUTCOME_CONDITION)
    phase = status.phase.value if status.phase else "Unknown"
    if outcome is not None and outcome.message:
        lines = [f"{phase} ({outcome.reason}): {outcome.message}"]
    else:
        lines = [f"{phase}: {status.message or 'no reason recorded'}"]
    if status.failure_logs is not None:
        lines.append(
            f"Full logs: kubectl ferry logs {name}{namespaced_flag(migration.metadata.namespace)}"
        )
    return lines


def phase_shown(migration: ContainerMigration) -> str:
    """The phase, and for a migration queued for a slot, that it waits and for what."""
    status = migration.status
    if status.phase is None:
        return NONE
    message = status.message or ""
    if message.startswith(WAITING_PREFIX):
        why = message.removeprefix(WAITING_PREFIX).lstrip(": ").split("; nothing is frozen")[0]
        return f"{status.phase.value} (queued: {why})"
    return status.phase.value


#: How the operator's message for a migration waiting for a node's slot begins.
WAITING_PREFIX = "waiting for a free slot"


def migration_headers(all_namespaces: bool, *, wide: bool = False) -> list[str]:
    headers = ["NAME", "PHASE", "CONTAINER", "SOURCE -> TARGET", "DOWNTIME", "AGE"]
    if wide:
        headers += ["TOTAL", "ARCHIVE", "MEMORY BY", "REASON"]
    return ["NAMESPACE", *headers] if all_namespaces else headers


def reason(migration: ContainerMigration) -> str:
    """Why a migration did not succeed (its outcome condition's reason), for ``-o wide``."""
    outcome = find_condition(migration.status.conditions, OUTCOME_CONDITION)
    if migration.status.phase == Phase.SUCCEEDED or outcome is None:
        return NONE
    return outcome.reason or NONE


def migration_cells(
    migration: ContainerMigration, now: datetime, all_namespaces: bool, *, wide: bool = False
) -> list[str]:
    status = migration.status
    timings = status.timings
    downtime = timings.downtime_seconds if timings else None
    cells = [
        migration.metadata.name,
        phase_shown(migration),
        migration.spec.source.container,
        route(migration),
        NONE if downtime is None else f"{downtime:.3f}s",
        age(migration.metadata.creation_timestamp, now),
    ]
    if wide:
        total = timings.total_seconds if timings else None
        cells += [
            NONE if total is None else f"{total:.3f}s",
            size(status.archive.bytes if status.archive else None),
            status.memory_transfer.value if status.memory_transfer else NONE,
            reason(migration),
        ]
    return [migration.metadata.namespace or NONE, *cells] if all_namespaces else cells


# NodeHelper

NODE_HEADERS = ["NODE", "READY", "ADDRESS", "RUNTIMES", "CRIU", "CRIU FEATURES", "KERNEL", "CGROUP"]
NODE_WIDE_HEADERS = ["CRI", "PROTOCOL", "HEARTBEAT"]


def node_headers(wide: bool = False) -> list[str]:
    return NODE_HEADERS + NODE_WIDE_HEADERS if wide else list(NODE_HEADERS)


def criu_features(helper: NodeHelper) -> list[str]:
    """The CRIU features the node has, by their API names (lazyPages, dirtyPageTracking...)."""
    criu = helper.status.criu
    if criu is None:
        return []
    wire = criu.features.model_dump(by_alias=True)
    return [name for name, present in wire.items() if present]


def ready(helper: NodeHelper) -> str:
    condition = find_condition(helper.status.conditions, constants.CONDITION_READY)
    return condition.status.value if condition else "Unknown"


def node_name(helper: NodeHelper) -> str:
    return helper.status.node_name or helper.metadata.name


def node_cells(helper: NodeHelper, now: datetime | None = None, *, wide: bool = False) -> list[str]:
    status = helper.status
    cells = [
        node_name(helper),
        ready(helper),
        status.address or NONE,
        ", ".join(runtime(r) for r in status.runtimes) or NONE,
        (status.criu.version if status.criu else None) or NONE,
        ", ".join(criu_features(helper)) or NONE,
        status.kernel or NONE,
        status.cgroup_version.value if status.cgroup_version else NONE,
    ]
    if wide:
        cri = status.cri
        cells += [
            " ".join(str(v) for v in (cri.runtime, cri.version) if v) if cri else NONE,
            NONE if status.protocol_version is None else str(status.protocol_version),
            f"{age(status.heartbeat_time, now or datetime.now(UTC))} ago"
            if status.heartbeat_time
            else NONE,
        ]
    return cells


# ContainerCheckpoint


def sockets(counts: SocketCounts) -> str:
    kinds = [
        (counts.tcp_listening, "TCP listening"),
        (counts.tcp_established, "TCP established"),
        (counts.udp, "UDP"),
        (counts.unix, "unix"),
        (counts.other, "other"),
    ]
    return ", ".join(f"{n} {kind}" for n, kind in kinds if n) or "none"


def summary_rows(summary: CheckpointSummary | None) -> Pairs:
    if summary is None:
        return [("Summary", "no summary recorded")]
    return [
        ("Processes", str(summary.processes)),
        ("Threads", str(summary.threads)),
        ("Memory", size(summary.memory_bytes)),
        ("Open files", str(summary.open_files)),
        ("Sockets", sockets(summary.sockets)),
        ("Runtime", runtime(summary.runtime)),
        ("CRIU", summary.criu_version or NONE),
        ("Kernel", summary.kernel or NONE),
    ]


def storage(checkpoint: ContainerCheckpoint) -> str:
    status = checkpoint.status
    if checkpoint.spec.storage.type == StorageType.REGISTRY:
        image = status.checkpoint_image
        if image is None or not image.reference:
            return f"registry {checkpoint.spec.storage.repository} (nothing pushed yet)"
        return f"image {image.reference}" + (f"@{image.digest}" if image.digest else "")
    archive = status.archive
    if archive is None or archive.bytes is None:
        return "node (nothing stored yet)"
    compression = f", {archive.compression.value}" if archive.compression else ""
    digest = f", sha256 {archive.sha256}" if archive.sha256 else ""
    return f"archive {size(archive.bytes)}{compression}{digest}"


def checkpoint_rows(checkpoint: ContainerCheckpoint) -> Pairs:
    """``inspect``: where the checkpoint is, what it holds and what made it."""
    status = checkpoint.status
    image = status.image
    image_text = NONE
    if image is not None and (image.name or image.id):
        image_text = image.name or "(no name)"
        if image.id:
            image_text += f" ({image.id[:12]})"
    taken = NONE
    if status.checkpoint_time:
        taken = timestamp(status.checkpoint_time)
        if status.checkpoint_seconds is not None:
            taken += f" (took {seconds(status.checkpoint_seconds)})"
    rows: Pairs = [
        ("Name", checkpoint.metadata.name),
        ("Namespace", checkpoint.metadata.namespace or NONE),
        ("Phase", status.phase.value if status.phase else NONE),
        ("Node", status.node or checkpoint.spec.source.node),
        ("Container", status.container_name or checkpoint.spec.source.container),
        ("Image", image_text),
        ("Storage", storage(checkpoint)),
        ("Checkpointed", taken),
    ]
    if checkpoint.spec.schedule:
        rows += [
            ("Schedule", f"{checkpoint.spec.schedule} (keeps {checkpoint.spec.keep})"),
            ("Checkpoints", ", ".join(status.checkpoints) or NONE),
        ]
    if status.message:
        rows.append(("Message", status.message))
    if status.failure_logs is not None:
        rows.append(
            (
                "Logs",
                f"kubectl ferry logs {checkpoint.metadata.name} --kind checkpoint"
                f"{namespaced_flag(checkpoint.metadata.namespace)}",
            )
        )
    return rows + summary_rows(status.summary)
