"""Operations about containers and their images: inspect, ship an image."""

from __future__ import annotations

from typing import ClassVar

from ferry_api.runtime import Runtime
from pydantic import Field

from ferry_wire.base import SHA256_PATTERN, UID_PATTERN, Peer, Reply, Request
from ferry_wire.operations import Operation

IMAGE_ID_PATTERN = r"^(sha256:)?[0-9a-f]{64}$"


class Container(Reply):
    """A container as its runtime reports it, and what the helper knows of it."""

    id: str
    name: str
    image_id: str
    image_name: str
    state: str
    running: bool
    labels: dict[str, str] = Field(default_factory=dict)
    #: The runtime it was found in.
    runtime: Runtime
    #: The UID of the migration or checkpoint that holds it frozen, if one does.
    migrating_by: str | None = None
    #: The memory it uses now, when asked and the runtime says.
    memory_bytes: int | None = None


class InspectRequest(Request[Container]):
    """A container by name or ID; ``ContainerNotFound`` when there is none."""

    operation: ClassVar[Operation] = Operation.INSPECT
    reply: ClassVar[type[Reply]] = Container

    container: str
    #: None: look in every runtime of the node (podman first); the answer says which had it.
    runtime: Runtime | None = None
    #: Also say how much memory a running container uses (``memory_bytes``).
    memory: bool = False


class ContainerList(Reply):
    """The running containers a label selects, in every runtime the helper drives."""

    containers: tuple[Container, ...] = ()


class ListContainersRequest(Request[ContainerList]):
    """Every running container carrying ``label`` (any value): what a NodeEvacuation moves."""

    operation: ClassVar[Operation] = Operation.LIST_CONTAINERS
    reply: ClassVar[type[Reply]] = ContainerList

    label: str = Field(min_length=1, max_length=317)


class ImagePresence(Reply):
    present: bool


class ImageHasRequest(Request[ImagePresence]):
    operation: ClassVar[Operation] = Operation.IMAGE_HAS
    reply: ClassVar[type[Reply]] = ImagePresence

    image_id: str
    runtime: Runtime = Runtime.PODMAN


class ImageShipped(Reply):
    """The image as the target loaded it (the same ID as the source's)."""

    image_id: str
    seconds: float = 0.0


class ImageSendRequest(Request[ImageShipped]):
    """Ship an image to ``target`` under the migration's grant, before the freeze."""

    operation: ClassVar[Operation] = Operation.IMAGE_SEND
    reply: ClassVar[type[Reply]] = ImageShipped

    uid: str = Field(pattern=UID_PATTERN)
    image_id: str
    image_name: str = ""
    target: Peer
    #: The migration's private peer key (OpenSSH), granted on the target.
    credential: str = Field(repr=False)
    runtime: Runtime = Runtime.PODMAN


class ImageReceiveRequest(Request[ImageShipped]):
    """The header of an image archive a peer streams in (its bytes follow)."""

    operation: ClassVar[Operation] = Operation.IMAGE_RECEIVE
    reply: ClassVar[type[Reply]] = ImageShipped

    image_id: str = Field(pattern=IMAGE_ID_PATTERN)
    image_name: str = ""
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)
    runtime: Runtime = Runtime.PODMAN
