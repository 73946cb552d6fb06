"""podman's images: the container's image shipped to the target, and checkpoints as images.

Before the freeze a migration ships the container's image to a target that
lacks it (``save_image`` on the source, ``load_image`` on the target): a
restore needs the very image the checkpoint was made on. Found on podman 5.4.2:

* ``restore --import`` of an archive whose image is missing tries to *pull*
  the image by name (three retries, about 3 s, then a registry error): ship the
  image first (:meth:`.PodmanCore.image_exists`, ``save_image``, ``load_image``).
* ``podman save --format docker-archive`` keeps the image ID (the config blob is
  stored as is) for docker and OCI images alike, and ``podman load`` gives the
  image its name back; ``oci-archive`` changed the ID of a docker-format image
  (its config is converted), so it is not used.
* Importing one image tarball on two nodes gives two image IDs, and the
  restore then fails with ``image not known``: images move with their IDs.

A ContainerCheckpoint can also be kept as a *checkpoint image* in a registry
(the checkpoint-image capability, :class:`~.capabilities.CheckpointImageCapable`):
``podman container checkpoint --create-image`` makes an image carrying
podman's checkpoint annotations (runtime, CRIU, kernel, rootfs image), so any
podman can restore it. Docker has no such thing. A restore given the digest
the image was pushed with pulls ``repository@digest`` (containers/image checks
the manifest it gets against that digest, and each layer against the
manifest's) and restores the image of that ID, the one the pull verified:
``podman container restore`` finds images by name, ID or digest alike
(libimage's ``LookupImage``), but an ID leaves no name to resolve in between.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path

from .. import node_tools
from ..criu_images import Contents, summarize_tree
from ..criu_stats import parse_print_stats
from .archives import written_whole
from .podman_core import PodmanCore
from .podman_parsing import (
    FULL_ID,
    checkpoint_flags,
    is_image_id,
    parse_image_inspect,
    parse_loaded_images,
    restore_flags,
)
from .records import CheckpointOptions, ImageCheckpoint, RestoreResult

logger = logging.getLogger(__name__)


class PodmanImages(PodmanCore):
    """:class:`PodmanCore` with images: shipped by archive, and checkpoint images in a registry."""

    # -- the container's image, shipped to the target

    async def save_image(self, image: str, out: Path) -> None:
        """Write ``image`` (a name or an ID) to ``out`` as a docker-archive, for ``load_image``.

        The archive keeps the image ID (the target must have the very image the
        checkpoint was made on) and its name; an image given by ID is saved under
        its first name, since an archive saved by ID carries none.
        """
        output = await self._check(["image", "inspect", image], limit=self._quick)
        try:
            image_id, names = parse_image_inspect(output.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._unexpected(output, error) from error
        reference = names[0] if names and is_image_id(image, image_id) else image
        with written_whole(out) as partial:
            await self._check(
                [
                    "save",
                    "--quiet",
                    "--format",
                    "docker-archive",
                    "--output",
                    str(partial),
                    reference,
                ],
                limit=self._timeout,
            )

    async def load_image(self, archive: Path) -> str:
        """Load an image archive; returns the ID of the (first) image loaded."""
        output = await self._check(
            ["load", "--quiet", "--input", str(archive)], limit=self._timeout
        )
        refs = parse_loaded_images(output.stdout)
        if not refs:
            raise self._unexpected(output, "no `Loaded image` line")
        first = refs[0]
        if first.startswith("sha256:") and FULL_ID.match(first.removeprefix("sha256:")):
            return first.removeprefix("sha256:")
        inspected = await self._check(["image", "inspect", first], limit=self._quick)
        try:
            image_id, _ = parse_image_inspect(inspected.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._unexpected(inspected, error) from error
        return image_id

    # -- checkpoint images (the registry)

    async def checkpoint_image(
        self, container: str, reference: str, options: CheckpointOptions, *, authfile: Path | None
    ) -> ImageCheckpoint:
        """Checkpoint ``container`` as a checkpoint image and push it to its registry.

        The image carries podman's checkpoint annotations (runtime, CRIU,
        kernel, rootfs image), so any podman can restore it; the local copy is
        removed once pushed.
        """
        args = ["container", "checkpoint", "--create-image", reference, "--print-stats"]
        args += [*checkpoint_flags(options), container]
        started = time.monotonic()
        output = await self._run(args, limit=self._timeout)
        seconds = time.monotonic() - started
        if output.returncode != 0:
            raise await self._failure(output)
        _, statistics = parse_print_stats(output.stdout)
        digest_file = Path(tempfile.mkdtemp(prefix="ferry-push-")) / "digest"
        try:
            push = ["push", "--digestfile", str(digest_file)]
            if authfile is not None:
                push += ["--authfile", str(authfile)]
            pushed = await self._run([*push, reference], limit=self._timeout)
            if pushed.returncode != 0:
                raise await self._failure(pushed)
            digest = digest_file.read_text().strip()
            size, contents = await self._image_contents(reference)
        finally:
            shutil.rmtree(digest_file.parent, ignore_errors=True)
            await self._run(["image", "rm", "--ignore", reference], limit=self._timeout)
        return ImageCheckpoint(
            reference=reference,
            digest=digest,
            seconds=seconds,
            statistics=statistics,
            size_bytes=size,
            contents=contents,
        )

    async def _image_contents(self, reference: str) -> tuple[int | None, Contents | None]:
        """The size of a local checkpoint image and what its CRIU images hold; None if unknown."""
        size: int | None = None
        inspected = await self._run(
            ["image", "inspect", "--format", "{{.Size}}", reference], limit=self._quick
        )
        if inspected.returncode == 0 and inspected.stdout.strip().isdigit():
            size = int(inspected.stdout.strip())
        mounted = await self._run(["image", "mount", reference], limit=self._quick)
        if mounted.returncode != 0:
            logger.warning("cannot mount %s: %s", reference, mounted.stderr.strip())
            return size, None
        try:
            root = node_tools.node_path(Path(mounted.stdout.strip()))
            return size, await asyncio.to_thread(summarize_tree, root)
        except (OSError, ValueError) as error:
            logger.warning("cannot read %s: %s", reference, error)
            return size, None
        finally:
            await self._run(["image", "unmount", reference], limit=self._quick)

    async def restore_image(
        self,
        reference: str,
        *,
        name: str,
        tcp_established: bool = False,
        file_locks: bool = False,
        authfile: Path | None,
    ) -> RestoreResult:
        """Pull a checkpoint image and start a container named ``name`` from it.

        A ``reference`` pinned by digest (``repository@sha256:...``) is restored
        by the ID of the image that pull verified.
        """
        pull = ["pull", "--quiet"]
        if authfile is not None:
            pull += ["--authfile", str(authfile)]
        pulled = await self._run([*pull, reference], limit=self._timeout)
        if pulled.returncode != 0:
            raise await self._failure(pulled)
        image = reference
        if "@" in reference:
            # `pull --quiet` prints the ID of the image it pulled.
            printed = pulled.stdout.split()
            if not printed or not FULL_ID.match(printed[-1]):
                raise self._unexpected(pulled, "no image ID after a pull by digest")
            image = printed[-1]
        started = time.monotonic()
        flags = restore_flags(tcp_established=tcp_established, file_locks=file_locks)
        output = await self._run(
            ["container", "restore", *flags, "--name", name, image], limit=self._timeout
        )
        seconds = time.monotonic() - started
        await self._run(["image", "rm", "--ignore", reference], limit=self._timeout)
        if output.returncode != 0:
            failure = await self._failure(output)
            await self._clean_failed_restore(failure)
            raise failure
        return await self._restored(output, name, seconds)
