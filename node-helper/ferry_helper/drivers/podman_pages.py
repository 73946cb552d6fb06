"""podman's page-server capability: memory sent to the target while the source dumps.

A page-server migration moves the memory once: CRIU's dump on the source sends
the pages straight to ``criu page-server`` on the target, which writes them
into the checkpoint directory the restored container will have (the same
container ID), and the small archive of everything else is restored onto
them. How CRIU is steered and why it works with podman is in
:mod:`ferry_helper.pagestream`; this module is the driver's part: the dump, the
target directory, the restore onto it, and the rollback from pages taken back.
Docker has none of it (see :mod:`.capabilities`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path

from .. import pagestream
from ..criu_tls import TlsFiles
from .errors import RuntimeCommandError
from .podman_core import PodmanCore
from .podman_parsing import import_args, parse_store_info
from .records import CheckpointOptions, CheckpointResult, RestoreResult


class PodmanPageServer(PodmanCore):
    """:class:`PodmanCore` with the page-server capability
    (:class:`~.capabilities.PageServerCapable`)."""

    #: podman's graph root and driver, once asked (see :meth:`store_info`).
    _store: tuple[Path, str] | None = None

    # -- where CRIU's images of a container are

    async def store_info(self) -> tuple[Path, str]:
        """podman's graph root and driver (the parents of every container's userdata).

        Asked once: ``podman info`` takes 0.3-0.4 s, and a page-server migration
        needs the answer three times; the storage does not move under a running
        podman.
        """
        if self._store is not None:
            return self._store
        output = await self._check(["info", "--format", "json"], limit=self._quick)
        try:
            self._store = parse_store_info(output.stdout)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._unexpected(output, error) from error
        return self._store

    async def checkpoint_dir(self, container_id: str) -> Path:
        """Where CRIU's images of the container with ID ``container_id`` are (or would be)."""
        graph_root, driver = await self.store_info()
        return pagestream.container_checkpoint_dir(graph_root, driver, container_id)

    # -- source: the dump

    async def checkpoint_to_page_server(
        self,
        container: str,
        archive: Path,
        options: CheckpointOptions,
        *,
        address: str,
        port: int,
        tls: TlsFiles | None,
        config: Path = pagestream.DEFAULT_CONFIG,
    ) -> CheckpointResult:
        """Checkpoint ``container``, its memory to the page server at address:port.

        The archive holds everything but the pages (about 100 KB whatever the
        memory); the pages are on the target once this returns. CRIU is
        configured through the node-wide ``config`` (see :mod:`.pagestream`):
        the caller must let no other CRIU run start meanwhile.
        """
        text = pagestream.dump_config(address, port, tls)
        try:
            async with pagestream.DumpConfig(text, path=config):
                return await self.checkpoint(container, archive, options)
        except pagestream.PageStreamError as error:
            raise RuntimeCommandError(
                command=[self._tool, "container", "checkpoint", container],
                exit_code=None,
                stderr="",
                decisive_line=str(error),
            ) from None

    # -- target: the pages, and the restore onto them

    async def page_target(self, container_id: str) -> Path:
        """The directory a page server fills for ``container_id``, made empty here.

        It is the checkpoint directory of the container that ``restore
        --import`` without ``--name`` creates with the same ID, so the restore
        finds the pages where CRIU reads its images. Refused when a container
        of that ID exists here.
        """
        if (existing := await self.inspect(container_id)) is not None:
            raise RuntimeCommandError(
                command=[self._tool, "container", "inspect", container_id],
                exit_code=None,
                stderr="",
                decisive_line=f"a container with ID {container_id} exists on this node "
                f"already ({existing.name}, {existing.state}): the restored copy keeps the "
                "source's ID; remove it there or pick another target",
            )
        directory = await self.checkpoint_dir(container_id)

        def make() -> None:
            shutil.rmtree(directory, ignore_errors=True)  # pages of an earlier attempt
            directory.mkdir(mode=0o700, parents=True)

        await asyncio.to_thread(make)
        return directory

    async def discard_page_target(self, container_id: str) -> None:
        """Remove the pages received for ``container_id`` unless a container of that ID exists.

        What goes: the directory :meth:`page_target` made, its parents if they
        are empty, and the cgroups of a restore that failed (they would break
        the next restore of this ID here: ``devices.deny: Invalid argument``).
        """
        if await self.inspect(container_id) is not None:
            return
        directory = await self.checkpoint_dir(container_id)

        def discard() -> None:
            shutil.rmtree(directory, ignore_errors=True)
            # Only what page_target made: anything else there is podman's.
            for parent in (directory.parent, directory.parent.parent):
                with contextlib.suppress(OSError):
                    parent.rmdir()

        await asyncio.to_thread(discard)
        await self._remove_stale_cgroups(container_id)

    async def drop_kept_images(self, container_id: str) -> None:
        """Remove the CRIU images a restore with ``--keep`` left in a container's userdata.

        The container runs without them; a later checkpoint makes the
        directory again.
        """
        directory = await self.checkpoint_dir(container_id)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def restore_onto_pages(
        self, archive: Path, *, tcp_established: bool = False, file_locks: bool = False
    ) -> RestoreResult:
        """Restore the small archive of a page-server dump onto the pages already in place.

        Without ``--name`` (the container keeps the source's ID, whose
        checkpoint directory holds the pages) and with ``--keep``: the pages
        stay until the migration ends, since a rollback needs them back. A
        failed restore's ``created`` container is left too, for the same
        reason; :meth:`discard_page_target` removes what remains.
        """
        started = time.monotonic()
        output = await self._run(
            import_args(
                archive,
                name=None,
                tcp_established=tcp_established,
                file_locks=file_locks,
                keep=True,
            ),
            limit=self._timeout,
        )
        seconds = time.monotonic() - started
        if output.returncode != 0:
            raise await self._failure(output)
        return await self._restored(output, None, seconds)

    # -- source: the rollback

    async def rollback_from_pages(
        self, container: str, archive: Path, *, file_locks: bool = False
    ) -> RestoreResult:
        """The source back after a page-server dump, in place, from the pages taken back into
        its checkpoint directory; ``archive`` holds no memory, so a failed in-place restore
        is the error (see :meth:`.PodmanCore._rollback`)."""
        return await self._rollback(
            container, archive, file_locks=file_locks, archive_holds_memory=False
        )
