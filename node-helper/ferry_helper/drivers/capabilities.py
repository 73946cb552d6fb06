"""What the helper may ask of a runtime driver: one protocol per capability, checked by type.

Every runtime checkpoints a container into an archive and restores one from
it (:class:`Driver`): that is what a migration with ``memoryTransfer:
Archive`` and a ContainerCheckpoint kept on its node need. Two more things
exist for some runtimes only:

* :class:`PageServerCapable`: dump the memory to CRIU's page server on the
  target instead of into the archive, restore onto the pages received, and
  bring a source back in place from pages taken back. podman (with crun) has
  it: its checkpoint directory is where CRIU reads and writes, and the
  node-wide ``/etc/criu/default.conf`` steers its dump. Docker does not: runc
  reads only its own ``runc.conf`` and docker restores from a checkpoint it
  uploads to containerd first.
* :class:`CheckpointImageCapable`: a checkpoint as an OCI image pushed to a
  registry, and a restore from one (``podman container checkpoint
  --create-image``). Docker has no such thing.

The helper's operations take the driver of the request's runtime and check
``isinstance(driver, PageServerCapable)``; they never compare runtime names.
The protocols are ``runtime_checkable``, so the check is on the methods a
driver has (the signatures are mypy's to check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from ..criu_tls import TlsFiles
from .records import (
    CheckpointOptions,
    CheckpointResult,
    ContainerInfo,
    ImageCheckpoint,
    RestoreResult,
)


class Versions(Protocol):
    """What a runtime says of itself (its driver's ``runtime_info``)."""

    @property
    def version(self) -> str: ...

    @property
    def oci_runtime(self) -> str: ...

    @property
    def oci_runtime_version(self) -> str: ...


@runtime_checkable
class Driver(Protocol):
    """The archive checkpointer every runtime driver is."""

    async def runtime_info(self) -> Versions: ...

    async def inspect(self, container: str) -> ContainerInfo | None:
        """The container named ``container`` (a name or an ID), None if there is none."""
        ...

    async def running_labelled(self, label: str) -> list[str]:
        """Names of the running containers carrying the label ``label`` (any value)."""
        ...

    async def memory_bytes(self, container: str) -> int | None:
        """The memory ``container`` uses now; None where the runtime cannot say quickly."""
        ...

    async def image_exists(self, image_id: str) -> bool: ...

    async def save_image(self, image: str, out: Path) -> None:
        """Write ``image`` to ``out`` as an archive ``load_image`` takes, keeping its ID."""
        ...

    async def load_image(self, archive: Path) -> str:
        """Load an image archive; the ID of the image loaded."""
        ...

    async def checkpoint(
        self, container: str, archive: Path, options: CheckpointOptions
    ) -> CheckpointResult:
        """Checkpoint ``container`` into ``archive``, which exists only once complete."""
        ...

    async def restore(
        self,
        archive: Path,
        *,
        name: str | None = None,
        tcp_established: bool = False,
        file_locks: bool = False,
    ) -> RestoreResult:
        """A running container from ``archive``; a failed restore leaves nothing behind."""
        ...

    async def rollback(
        self,
        container: str,
        archive: Path,
        *,
        tcp_established: bool | None = None,
        file_locks: bool = False,
    ) -> RestoreResult:
        """The source back from its checkpoint: in place if it can, else from ``archive``."""
        ...

    async def remove(self, container: str) -> None:
        """Remove the container, killing it if it runs; no error if there is none."""
        ...


@runtime_checkable
class PageServerCapable(Driver, Protocol):
    """A driver whose dump can send the memory to CRIU's page server on the target."""

    async def checkpoint_to_page_server(
        self,
        container: str,
        archive: Path,
        options: CheckpointOptions,
        *,
        address: str,
        port: int,
        tls: TlsFiles | None,
    ) -> CheckpointResult:
        """Checkpoint ``container``, its memory to the page server at ``address:port``.

        The archive holds everything but the pages. The caller lets no other
        CRIU run of this helper start meanwhile (see :mod:`ferry_helper.criu_runs`).
        """
        ...

    async def checkpoint_dir(self, container_id: str) -> Path:
        """Where CRIU's images of the container with ID ``container_id`` are (or would be)."""
        ...

    async def page_target(self, container_id: str) -> Path:
        """The directory a page server fills for ``container_id``, made empty here."""
        ...

    async def discard_page_target(self, container_id: str) -> None:
        """Remove the pages received for ``container_id`` unless a container of that ID exists."""
        ...

    async def drop_kept_images(self, container_id: str) -> None:
        """Remove the CRIU images a restore onto pages kept in the container's directory."""
        ...

    async def restore_onto_pages(
        self, archive: Path, *, tcp_established: bool = False, file_locks: bool = False
    ) -> RestoreResult:
        """Restore a page-server dump's small archive onto the pages already in place."""
        ...

    async def rollback_from_pages(
        self, container: str, archive: Path, *, file_locks: bool = False
    ) -> RestoreResult:
        """The source back after a page-server dump, in place, from the pages taken back into
        its checkpoint directory.

        ``archive`` holds no memory, so a failed in-place restore is the error:
        removing the container to restore the archive would lose the memory.
        """
        ...


@runtime_checkable
class CheckpointImageCapable(Driver, Protocol):
    """A driver that can make a checkpoint an image in a registry, and restore from one."""

    async def checkpoint_image(
        self, container: str, reference: str, options: CheckpointOptions, *, authfile: Path | None
    ) -> ImageCheckpoint:
        """Checkpoint ``container`` as the image ``reference`` and push it to its registry."""
        ...

    async def restore_image(
        self,
        reference: str,
        *,
        name: str,
        tcp_established: bool = False,
        file_locks: bool = False,
        authfile: Path | None,
    ) -> RestoreResult:
        """Pull a checkpoint image and start a container named ``name`` from it."""
        ...
