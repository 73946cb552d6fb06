"""NodeHelper: what one node can do, published by the helper running on it.

The resource is cluster-scoped and named after its node. It has no spec: nobody
asks a helper for anything through it; the helper reports (runtimes, CRIU
version and features, kernel, CPU, address and SSH host key) and the operator
reads, so it can refuse an impossible migration before freezing anything and
can pin the host key of the helper it connects to. ``kubectl get nodehelpers``
answers "where can I migrate to?".
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, StringConstraints

from ferry_api import constants
from ferry_api.base import StatusModel, parse_body
from ferry_api.conditions import Conditions
from ferry_api.definition import PrinterColumn, ResourceDefinition
from ferry_api.meta import ObjectMeta
from ferry_api.runtime import Runtime

#: One line of an OpenSSH ``.pub`` file: key type, base64 key blob, optional comment.
#: A blob opens with the 32-bit length of a short type name, so its base64 opens "AAAA".
SSH_PUBLIC_KEY_PATTERN = r"^[a-z0-9][-a-z0-9@.]* AAAA[A-Za-z0-9+/]+={0,3}( .*)?$"


#: Key files and exporters end the line with a newline: it is stripped before the
#: pattern (which allows none) is checked.
SshPublicKey = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=16384, pattern=SSH_PUBLIC_KEY_PATTERN),
]


class CgroupVersion(StrEnum):
    """The node's cgroup layout."""

    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"


class RuntimeInfo(StatusModel):
    """A container runtime found on the node."""

    name: Runtime = Field(description="Which runtime.")
    version: str | None = Field(default=None, description="Its version, e.g. 5.4.2.")
    oci_runtime: str | None = Field(
        default=None, description="The OCI runtime it uses, e.g. crun or runc."
    )
    oci_runtime_version: str | None = Field(default=None, description="The OCI runtime's version.")


class CriuFeatures(StatusModel):
    """CRIU features the node supports (criu check --feature); false when not probed."""

    lazy_pages: bool = Field(
        default=False, description="Lazy pages (post-copy restore, pages pulled on demand)."
    )
    uffd: bool = Field(default=False, description="userfaultfd is available.")
    uffd_noncoop: bool = Field(
        default=False, description="Non-cooperative userfaultfd (needed for lazy pages)."
    )
    dirty_page_tracking: bool = Field(
        default=False,
        description="Soft-dirty page tracking (iterative pre-dump, pre-copy migration).",
    )
    pidfd_store: bool = Field(
        default=False, description="pidfd store (safe PID reuse detection across pre-dumps)."
    )
    time_namespace: bool = Field(
        default=False, description="Time namespaces (monotonic clocks survive the move)."
    )


class CriuInfo(StatusModel):
    """The CRIU installed on the node."""

    version: str | None = Field(default=None, description="CRIU's version, e.g. 4.2.1.")
    features: CriuFeatures = Field(
        default=CriuFeatures(), description="Features CRIU reports as supported."
    )


class CriInfo(StatusModel):
    """The node's CRI runtime (the kubelet's), as far as moving pods needs it."""

    runtime: str = Field(description="Which CRI runtime, e.g. containerd.")
    version: str | None = Field(default=None, description="Its version, e.g. 2.1.9.")
    checkpoint_images: bool = Field(
        default=False,
        description="Whether it restores a container from a checkpoint image "
        "(containerd 2.1 or newer): what a PodMigration needs on its target.",
    )


class CpuInfo(StatusModel):
    """The node's CPU; a restore needs the CPU features the process used."""

    model: str | None = Field(default=None, description="CPU model name.")
    flags: tuple[str, ...] = Field(default=(), description="CPU feature flags (/proc/cpuinfo).")


class NodeHelperStatus(StatusModel):
    """What the helper found on its node, refreshed at every heartbeat."""

    node_name: str | None = Field(default=None, description="The node this helper runs on.")
    address: str | None = Field(
        default=None,
        max_length=253,
        description="Address where other helpers and the operator reach this helper's SSH server.",
    )
    ssh_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the helper's SSH server."
    )
    ssh_host_key: SshPublicKey | None = Field(
        default=None,
        description="The SSH server's public host key (one OpenSSH line); clients pin it.",
    )
    heartbeat_time: AwareDatetime | None = Field(
        default=None, description="When the helper last refreshed this status."
    )
    protocol_version: int | None = Field(
        default=None,
        ge=1,
        description="Version of the wire protocol the helper speaks with the operator "
        "(ferry_wire.PROTOCOL_VERSION); an operator refuses helpers older than it needs. "
        "Absent: protocol 1, before versions were announced.",
    )
    runtimes: tuple[RuntimeInfo, ...] = Field(
        default=(),
        description="Container runtimes found on the node.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    criu: CriuInfo | None = Field(default=None, description="The CRIU on the node.")
    kernel: str | None = Field(default=None, description="Kernel release (uname -r).")
    cgroup_version: CgroupVersion | None = Field(
        default=None, description="The node's cgroup layout: v1, v2 or hybrid."
    )
    cpu: CpuInfo | None = Field(default=None, description="The node's CPU.")
    cri: CriInfo | None = Field(
        default=None,
        description="The kubelet's CRI runtime, when the helper can reach it; absent: "
        "pods cannot be migrated to or from this node.",
    )
    conditions: Conditions = ()


class NodeHelper(StatusModel):
    """A NodeHelper as the operator reads it: metadata and status."""

    api_version: str = constants.API_VERSION
    kind: str = constants.NODE_HELPER_KIND
    metadata: ObjectMeta
    status: NodeHelperStatus = NodeHelperStatus()


def parse_node_helper(body: Mapping[str, Any]) -> NodeHelper:
    """Parse a raw NodeHelper body into frozen models.

    Raises ``InvalidResourceError`` (a ``ValueError``) naming each wrong field.
    """
    return parse_body(NodeHelper, body, kind=constants.NODE_HELPER_KIND)


DEFINITION = ResourceDefinition(
    kind=constants.NODE_HELPER_KIND,
    list_kind=constants.NODE_HELPER_LIST_KIND,
    plural=constants.NODE_HELPER_PLURAL,
    singular=constants.NODE_HELPER_SINGULAR,
    short_names=constants.NODE_HELPER_SHORT_NAMES,
    categories=(constants.CATEGORY,),
    scope="Cluster",
    description="NodeHelper reports what one node can do for migrations: container "
    "runtimes, CRIU and its features, kernel, CPU, and how to reach the node's helper "
    "over SSH. Named after its node and written only by that node's helper.",
    spec=None,
    status=NodeHelperStatus,
    printer_columns=(
        PrinterColumn(
            name="Ready",
            json_path='.status.conditions[?(@.type=="Ready")].status',
            type="string",
            description="Whether the helper is ready to migrate containers.",
        ),
        PrinterColumn(
            name="Address",
            json_path=".status.address",
            type="string",
            description="Address of the helper's SSH server.",
        ),
        PrinterColumn(
            name="CRIU",
            json_path=".status.criu.version",
            type="string",
            description="CRIU version.",
        ),
        # One column per runtime: the API server prints only the first match of a
        # JSONPath, so ".status.runtimes[*].name" would hide every runtime but one.
        PrinterColumn(
            name="Podman",
            json_path='.status.runtimes[?(@.name=="podman")].version',
            type="string",
            description="Podman version, when podman is on the node.",
        ),
        PrinterColumn(
            name="Docker",
            json_path='.status.runtimes[?(@.name=="docker")].version',
            type="string",
            description="Docker version, when docker is on the node.",
            priority=1,
        ),
        PrinterColumn(
            name="Kernel",
            json_path=".status.kernel",
            type="string",
            description="Kernel release.",
            priority=1,
        ),
        PrinterColumn(
            name="Heartbeat",
            json_path=".status.heartbeatTime",
            type="date",
            description="Time since the helper last refreshed its status.",
        ),
        PrinterColumn(
            name="Age",
            json_path=".metadata.creationTimestamp",
            type="date",
            description="Time since creation.",
        ),
    ),
)
