"""A pod migration's steps on its two nodes: what differs from a container's.

A pod's containers are checkpointed by the source node's kubelet (its
checkpoint API, KEP-2008) into one archive per container; the source helper
freezes them first (``ctr tasks pause``, so nothing diverges after the dump)
and bundles the archives into the migration's staging archive, which the
ordinary ``send``/``receive`` stream to the target. There ``pod-images``
turns each container's archive into a *checkpoint image* in the node's CRI
containerd, from which a pod restores its container instead of starting it.
A rollback before the replacement runs is ``pod-thaw`` on the source (and
``cleanup`` with ``removeRestored`` on the target: the images go too).

Every step is keyed by the migration's UID and journaled, as a container's.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ferry_wire.base import CONTAINER_ID_PATTERN, UID_PATTERN, Reply, Request, WireModel
from ferry_wire.migration import Checkpointed
from ferry_wire.operations import Operation

#: A Kubernetes object name (DNS-1123 subdomain) or a container name (DNS-1123 label).
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class PodContainer(WireModel):
    """One container of the pod: its name in the pod spec and its ID in the CRI runtime."""

    name: str = Field(min_length=1, max_length=63, pattern=K8S_NAME_PATTERN)
    #: The CRI container ID (``status.containerStatuses[].containerID`` without the
    #: ``containerd://`` prefix).
    container_id: str = Field(pattern=CONTAINER_ID_PATTERN)


class PodCheckpointRequest(Request[Checkpointed]):
    """Freeze the pod's containers, have the kubelet checkpoint each, bundle the archives.

    The reply is a migration's ``Checkpointed`` (the bundle's size and sha256,
    CRIU's statistics summed over the containers), so ``send`` streams it as
    it streams a container's archive. The containers stay frozen: only
    ``pod-thaw`` (a rollback) resumes them, and the source pod's deletion ends
    them. On failure the helper resumes what it froze before answering.
    """

    operation: ClassVar[Operation] = Operation.POD_CHECKPOINT
    reply: ClassVar[type[Reply]] = Checkpointed

    uid: str = Field(pattern=UID_PATTERN)
    namespace: str = Field(min_length=1, max_length=63, pattern=K8S_NAME_PATTERN)
    pod: str = Field(min_length=1, max_length=253, pattern=K8S_NAME_PATTERN)
    containers: tuple[PodContainer, ...] = Field(min_length=1)
    #: The kubelet's own limit for each container's checkpoint.
    timeout_seconds: int = Field(default=60, ge=1, le=3600)


class PodImages(Reply):
    """The checkpoint images made for the pod's containers, in the node's CRI containerd."""

    #: Container name -> image reference a pod spec names to restore that container.
    images: dict[str, str]
    seconds: float = Field(ge=0)


class PodImagesRequest(Request[PodImages]):
    """Make a checkpoint image of each container's archive in the received bundle and
    import it into the node's CRI containerd (unpacked, so no registry is needed)."""

    operation: ClassVar[Operation] = Operation.POD_IMAGES
    reply: ClassVar[type[Reply]] = PodImages

    uid: str = Field(pattern=UID_PATTERN)
    namespace: str = Field(min_length=1, max_length=63, pattern=K8S_NAME_PATTERN)
    pod: str = Field(min_length=1, max_length=253, pattern=K8S_NAME_PATTERN)
    containers: tuple[str, ...] = Field(min_length=1)


class PodThawed(Reply):
    #: Names of the containers this migration had frozen and resumed now.
    resumed: tuple[str, ...] = ()


class PodThawRequest(Request[PodThawed]):
    """End the freeze on the source: resume the containers this migration froze (a
    rollback), or with ``kill`` end them (the replacement runs), and drop the archives.

    Closes the migration on this node first, so a ``pod-checkpoint`` still on
    its way cannot freeze the pod again afterwards.
    """

    operation: ClassVar[Operation] = Operation.POD_THAW
    reply: ClassVar[type[Reply]] = PodThawed

    uid: str = Field(pattern=UID_PATTERN)
    containers: tuple[PodContainer, ...] = Field(min_length=1)
    #: SIGKILL the frozen processes, then thaw them so they die without running another
    #: instruction (a thawed process would first run the SIGTERM the kubelet sent when
    #: the source pod was deleted). Asked once the source pod is being deleted, so the
    #: kubelet does not start its containers again.
    kill: bool = False
