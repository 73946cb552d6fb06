"""Containers and their images on this node: found, and the image shipped before the freeze.

``inspect`` looks a container up in the runtime the request names, or in every
runtime the node has (in the order the helper started them: podman first);
the reply says which had it and which migration holds it frozen, if one does.
A migration ships the container's image to a target that lacks it before the
freeze (``image-has``, ``image-send`` here, ``image-receive`` there, a peer
operation), with its ID: a restore needs the very image it was checkpointed on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from ferry_wire import Reason, RemoteError
from ferry_wire.containers import (
    Container,
    ContainerList,
    ImageHasRequest,
    ImagePresence,
    ImageReceiveRequest,
    ImageSendRequest,
    ImageShipped,
    InspectRequest,
    ListContainersRequest,
)

from ..drivers.errors import RuntimeCommandError
from ..transfer import credential, failing_as, receive_file, stream_file
from .context import Channel, NodeContext

logger = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Containers:
    def __init__(self, context: NodeContext) -> None:
        self.context = context

    async def list_containers(self, request: ListContainersRequest, _: Channel) -> ContainerList:
        """The running containers carrying ``label``, in every runtime this node has."""
        found: list[Container] = []
        for runtime in self.context.drivers:
            try:
                names = await self.context.driver(runtime).running_labelled(request.label)
            except RuntimeCommandError as error:
                logger.warning("%s does not answer: %s", runtime, error)
                continue
            for name in names:
                try:
                    found.append(
                        await self.inspect(InspectRequest(container=name, runtime=runtime), _)
                    )
                except RemoteError:
                    continue  # gone in between
        return ContainerList(containers=tuple(found))

    async def inspect(self, request: InspectRequest, _: Channel) -> Container:
        runtimes = [request.runtime] if request.runtime else list(self.context.drivers)
        for runtime in runtimes:
            driver = self.context.driver(runtime)
            try:
                info = await driver.inspect(request.container)
            except RuntimeCommandError as error:
                if request.runtime:
                    raise RemoteError(Reason.RUNTIME_FAILED, str(error)) from None
                logger.warning("%s does not answer: %s", runtime, error)
                continue
            if info is None:
                continue
            memory = None
            if request.memory and info.running:
                memory = await driver.memory_bytes(info.id)
            return Container(
                id=info.id,
                name=info.name,
                image_id=info.image_id,
                image_name=info.image_name,
                state=info.state,
                running=info.running,
                labels=info.labels,
                runtime=runtime,
                migrating_by=self.context.staging.holder(info.id),
                memory_bytes=memory,
            )
        where = " or ".join(runtimes) or "any runtime (it has none)"
        raise RemoteError(
            Reason.CONTAINER_NOT_FOUND,
            f"no container {request.container!r} in {where} on node {self.context.node}",
        )

    async def image_has(self, request: ImageHasRequest, _: Channel) -> ImagePresence:
        driver = self.context.driver(request.runtime)
        return ImagePresence(present=await driver.image_exists(request.image_id))

    async def image_send(self, request: ImageSendRequest, channel: Channel) -> ImageShipped:
        driver = self.context.driver(request.runtime)
        archive = self.context.staging.image_archive(request.image_id.removeprefix("sha256:"))
        doing = f"sending image to {request.target.node}"
        try:
            with failing_as(Reason.IMAGE_TRANSFER_FAILED, doing):
                await driver.save_image(request.image_name or request.image_id, archive)
                started = time.monotonic()
                shipped = await stream_file(
                    peer=request.target,
                    client_key=credential(request.credential),
                    header=ImageReceiveRequest(
                        image_id=request.image_id,
                        image_name=request.image_name,
                        size_bytes=archive.stat().st_size,
                        sha256=_sha256(archive),
                        runtime=request.runtime,
                    ),
                    path=archive,
                    on_progress=channel.progress("image"),
                )
        except RuntimeCommandError as error:
            raise self.context.failed(
                Reason.IMAGE_SAVE_FAILED, request.uid, "image-save", error
            ) from None
        finally:
            archive.unlink(missing_ok=True)
        return ImageShipped(image_id=shipped.image_id, seconds=time.monotonic() - started)

    async def image_receive(self, request: ImageReceiveRequest, channel: Channel) -> ImageShipped:
        image_id = request.image_id.removeprefix("sha256:")
        driver = self.context.driver(request.runtime)
        archive = self.context.staging.image_archive(image_id)
        try:
            await receive_file(
                channel.reader("image-receive"),
                archive,
                size=request.size_bytes,
                sha256=request.sha256,
            )
            loaded = await driver.load_image(archive)
        except RuntimeCommandError as error:
            raise RemoteError(Reason.IMAGE_LOAD_FAILED, str(error)) from None
        finally:
            archive.unlink(missing_ok=True)
        if loaded.removeprefix("sha256:") != image_id:
            raise RemoteError(
                Reason.IMAGE_ID_MISMATCH, f"loaded image {loaded} is not the source's {image_id}"
            )
        return ImageShipped(image_id=loaded)
