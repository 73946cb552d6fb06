"""What each protocol operation does on the node.

Each handler takes the parsed request and an ``emit`` for progress events and
returns the result's data, or raises :class:`RemoteError` with a CamelCase
reason. Steps that change the node consult the staging journal first, so a
repeated request (an operator restarted mid-migration) returns what the first
one did instead of acting twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import logging
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh
from pydantic import BaseModel, ValidationError

from . import criu_images, registry, transfer
from . import probe as node_probe
from .archive_check import StreamingCheck
from .criu_runs import CriuRuns
from .drivers.capabilities import Driver
from .drivers.errors import RuntimeCommandError
from .drivers.podman import PodmanDriver
from .drivers.records import CheckpointOptions, CheckpointResult, Compression, RestoreResult
from .failure_logs import FailureLogs
from .grants import PeerGrants
from .pagesteps import PageSteps
from .protocol import (
    AuthorizePeerRequest,
    CheckpointRequest,
    CleanupRequest,
    DeleteStoredRequest,
    FetchLogsRequest,
    FinishSourceRequest,
    ImageReceiveRequest,
    ImageRequest,
    ImageSendRequest,
    InspectRequest,
    Operation,
    PagesFetchRequest,
    PagesIdentityRequest,
    PagesOpenRequest,
    PagesOutRequest,
    Peer,
    ReceiveRequest,
    RemoteError,
    RestoreImageRequest,
    RestoreRequest,
    RestoreStoredRequest,
    RollbackRequest,
    SendRequest,
    SendStoredRequest,
)
from .staging import Staging

logger = logging.getLogger(__name__)
Emit = Callable[[dict[str, Any]], Awaitable[None]]
PROGRESS_INTERVAL = 0.5
#: Steps that only make sense while a migration is under way on this node.
STEPS_OF_AN_OPEN_MIGRATION = frozenset(
    {
        Operation.CHECKPOINT,
        Operation.SEND,
        Operation.RECEIVE,
        Operation.RESTORE,
        Operation.AUTHORIZE_PEER,
        Operation.PAGES_IDENTITY,
        Operation.PAGES_OPEN,
        Operation.PAGES_OUT,
    }
)


class KeyedLocks:
    """One lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _credential(text: str) -> asyncssh.SSHKey:
    try:
        return asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError):
        raise RemoteError("BadRequest", "credential is no OpenSSH private key") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Operations:
    def __init__(
        self,
        *,
        node: str,
        address: str = "127.0.0.1",
        podman: PodmanDriver,
        docker: Driver | None = None,
        staging: Staging,
        store: Staging,
        logs: FailureLogs,
        registry_authfile: Path | None = None,
    ) -> None:
        self.node = node
        #: podman, always (it also makes and restores checkpoint images), and docker
        #: where the node runs it: each container is driven by the runtime it is in.
        self.podman = podman
        self.drivers: dict[str, Driver] = {"podman": podman}
        if docker is not None:
            self.drivers["docker"] = docker
        #: Migrations' transient archives and journals, and the claims on containers.
        self.staging = staging
        #: ContainerCheckpoints' archives, kept until their resource is deleted.
        self.store = store
        #: The full logs of failed steps, kept for the operator to fetch.
        self.logs = logs
        #: podman's --authfile for registries (a Secret the chart mounts), if there is one.
        self.registry_authfile = registry_authfile
        #: Which migration each peer key may stream into (see :mod:`.grants`).
        self.grants = PeerGrants()
        #: Every CRIU run of this helper goes through it (see :mod:`.criu_runs`).
        self.criu_runs = CriuRuns()
        #: The page-server path's steps (see :mod:`.pagesteps`).
        self.pages = PageSteps(
            node=node, address=address, podman=podman, staging=staging, criu_runs=self.criu_runs
        )
        # One step at a time per migration: a rollback must wait for a checkpoint
        # still in flight (its client may have gone), or it would see the source
        # running, do nothing, and then watch the checkpoint stop it.
        self._locks = KeyedLocks()

    async def run(
        self,
        operation: Operation,
        request: dict[str, Any],
        emit: Emit,
        stdin: asyncssh.SSHReader[bytes],
        *,
        granted_uid: str | None = None,
        stdout: asyncssh.SSHWriter[bytes] | None = None,
    ) -> dict[str, Any]:
        """Run ``operation``; ``granted_uid``: the migration a peer's key was granted for;
        ``stdout``: where ``pages-out`` writes the pages."""
        handlers: dict[Operation, tuple[type[BaseModel] | None, Any]] = {
            Operation.PROBE: (None, self.probe),
            Operation.INSPECT: (InspectRequest, self.inspect),
            Operation.IMAGE_HAS: (ImageRequest, self.image_has),
            Operation.IMAGE_SEND: (ImageSendRequest, self.image_send),
            Operation.CHECKPOINT: (CheckpointRequest, self.checkpoint),
            Operation.SEND: (SendRequest, self.send),
            Operation.RESTORE: (RestoreRequest, self.restore),
            Operation.ROLLBACK: (RollbackRequest, self.rollback),
            Operation.FINISH_SOURCE: (FinishSourceRequest, self.finish_source),
            Operation.CLEANUP: (CleanupRequest, self.cleanup),
            Operation.AUTHORIZE_PEER: (AuthorizePeerRequest, self.authorize_peer),
            Operation.STORE_CHECKPOINT: (CheckpointRequest, self.store_checkpoint),
            Operation.RESTORE_STORED: (RestoreStoredRequest, self.restore_stored),
            Operation.SEND_STORED: (SendStoredRequest, self.send_stored),
            Operation.DELETE_STORED: (DeleteStoredRequest, self.delete_stored),
            Operation.RESTORE_IMAGE: (RestoreImageRequest, self.restore_image),
            Operation.FETCH_LOGS: (FetchLogsRequest, self.fetch_logs),
            Operation.PAGES_IDENTITY: (PagesIdentityRequest, self.pages_identity),
            Operation.PAGES_OPEN: (PagesOpenRequest, self.pages_open),
            Operation.PAGES_FETCH: (PagesFetchRequest, self.pages_fetch),
        }
        if operation == Operation.IMAGE_RECEIVE:
            return await self.image_receive(self._parse(ImageReceiveRequest, request), stdin)
        uid = request.get("uid")
        async with self._locks.hold(uid) if isinstance(uid, str) else contextlib.nullcontext():
            if (
                isinstance(uid, str)
                and operation in STEPS_OF_AN_OPEN_MIGRATION
                and self.staging.is_closed(uid)
            ):
                raise RemoteError("MigrationClosed", f"migration {uid} has ended on {self.node}")
            if operation in (Operation.RECEIVE, Operation.PAGES_OUT) and uid != granted_uid:
                raise RemoteError("Forbidden", f"this peer key was not granted for migration {uid}")
            if operation == Operation.RECEIVE:
                return await self.receive(self._parse(ReceiveRequest, request), stdin)
            if operation == Operation.PAGES_OUT:
                if stdout is None:
                    raise RemoteError("BadRequest", "pages-out needs a stream to write to")
                return await self.pages.out(self._parse(PagesOutRequest, request), stdout)
            model, handler = handlers[operation]
            if model is None:
                result: dict[str, Any] = await handler()
                return result
            handled: dict[str, Any] = await handler(self._parse(model, request), emit)
            return handled

    def _driver(self, runtime: str) -> Driver:
        driver = self.drivers.get(runtime)
        if driver is None:
            raise RemoteError(
                "RuntimeUnavailable",
                f"node {self.node} has no {runtime} (it has {', '.join(sorted(self.drivers))})",
            )
        return driver

    def _failed(self, reason: str, uid: str, step: str, error: RuntimeCommandError) -> RemoteError:
        """The error for a failed podman step, its full logs kept for ``fetch-logs``."""
        self.logs.keep(uid, step, error)
        return RemoteError(reason, str(error))

    @staticmethod
    def _parse(model: type[Any], request: dict[str, Any]) -> Any:
        try:
            return model.model_validate(request)
        except ValidationError as error:
            # Without the input: a request may carry a credential.
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in error.errors(include_input=False, include_url=False)
            )
            raise RemoteError("BadRequest", problems) from None

    async def probe(self) -> dict[str, Any]:
        return (await node_probe.probe(self.podman, self.drivers.get("docker"))).model_dump(
            mode="json"
        )

    async def inspect(self, request: InspectRequest, _: Emit) -> dict[str, Any]:
        runtimes = [request.runtime] if request.runtime else list(self.drivers)
        for runtime in runtimes:
            try:
                info = await self._driver(runtime).inspect(request.container)
            except RuntimeCommandError as error:
                if request.runtime:
                    raise RemoteError("RuntimeFailed", str(error)) from None
                logger.warning("%s does not answer: %s", runtime, error)
                continue
            if info is not None:
                memory = None
                if request.memory and info.running:
                    memory = await self._driver(runtime).memory_bytes(info.id)
                return {
                    **info.model_dump(mode="json"),
                    "runtime": runtime,
                    "migratingBy": self.staging.holder(info.id),
                    "memoryBytes": memory,
                }
        raise RemoteError(
            "ContainerNotFound",
            f"no container {request.container!r} in {' or '.join(runtimes)} on node {self.node}",
        )

    async def image_has(self, request: ImageRequest, _: Emit) -> dict[str, Any]:
        return {"present": await self._driver(request.runtime).image_exists(request.image_id)}

    async def image_send(self, request: ImageSendRequest, emit: Emit) -> dict[str, Any]:
        archive = self.staging.image_archive(request.image_id.removeprefix("sha256:"))
        try:
            await self._driver(request.runtime).save_image(
                request.image_name or request.image_id, archive
            )
            started = time.monotonic()
            result = await transfer.stream_file(
                peer=request.target,
                client_key=_credential(request.credential),
                operation=Operation.IMAGE_RECEIVE.value,
                header={
                    "image_id": request.image_id,
                    "image_name": request.image_name,
                    "size_bytes": archive.stat().st_size,
                    "sha256": _sha256(archive),
                    "runtime": request.runtime,
                },
                path=archive,
                on_progress=self._progress(emit, "image"),
            )
        except RuntimeCommandError as error:
            raise self._failed("ImageSaveFailed", request.uid, "image-save", error) from None
        except (OSError, asyncssh.Error) as error:
            raise RemoteError(
                "ImageTransferFailed", f"sending image to {request.target.node}: {error}"
            ) from None
        finally:
            archive.unlink(missing_ok=True)
        return {**result, "seconds": time.monotonic() - started}

    async def image_receive(
        self, request: ImageReceiveRequest, stdin: asyncssh.SSHReader[bytes]
    ) -> dict[str, Any]:
        image_id = request.image_id.removeprefix("sha256:")
        archive = self.staging.image_archive(image_id)
        try:
            await transfer.receive_file(
                stdin, archive, size=request.size_bytes, sha256=request.sha256
            )
            loaded = await self._driver(request.runtime).load_image(archive)
        except RuntimeCommandError as error:
            raise RemoteError("ImageLoadFailed", str(error)) from None
        finally:
            archive.unlink(missing_ok=True)
        if loaded.removeprefix("sha256:") != image_id:
            raise RemoteError(
                "ImageIdMismatch", f"loaded image {loaded} is not the source's {image_id}"
            )
        return {"imageId": loaded}

    async def checkpoint(self, request: CheckpointRequest, _: Emit) -> dict[str, Any]:
        if (done := self.staging.recorded(request.uid, "checkpoint")) is not None:
            return done
        info = await self._driver(request.runtime).inspect(request.container)
        if info is None:
            raise RemoteError(
                "ContainerNotFound", f"no container {request.container!r} on node {self.node}"
            )
        data = await self._dump(request, info.id, self.staging)
        self.staging.record(request.uid, "checkpoint", data)
        return data

    def _claim(self, request: CheckpointRequest, container_id: str) -> CheckpointOptions:
        """Claim the container for the request's UID; the options of its dump.

        Claims live in the migrations' staging area, whoever dumps: one dump at
        a time per container, by a migration or a ContainerCheckpoint.
        """
        if (holder := self.staging.claim(container_id, request.uid)) is not None:
            raise RemoteError(
                "ContainerBusy",
                f"container {request.container!r} is being migrated by migration {holder}; "
                "wait for it to finish",
            )
        return CheckpointOptions(
            leave_running=request.leave_running,
            tcp_established=request.tcp_established,
            file_locks=request.file_locks,
            compression=Compression(request.compression),
        )

    async def _dump(
        self, request: CheckpointRequest, container_id: str, into: Staging
    ) -> dict[str, Any]:
        """Checkpoint the container into ``into``'s archive of the request's UID (claimed)."""
        options = self._claim(request, container_id)
        archive = into.archive(request.uid)
        try:
            result: CheckpointResult
            if request.page_server is not None:
                result = await self.pages.dump(request, container_id, archive, options)
            else:
                async with self.criu_runs.shared():
                    result = await self._driver(request.runtime).checkpoint(
                        request.container, archive, options
                    )
        except RuntimeCommandError as error:
            raise self._failed("CheckpointFailed", request.uid, "checkpoint", error) from None
        return {
            "sizeBytes": result.size_bytes,
            "sha256": result.sha256,
            "seconds": result.seconds,
            "statistics": result.statistics.as_dict(),
            "containerId": container_id,
            "pageServer": request.page_server is not None,
        }

    async def send(self, request: SendRequest, emit: Emit) -> dict[str, Any]:
        if (done := self.staging.recorded(request.uid, "send")) is not None:
            return done
        data = await self._send_archive(
            self.staging,
            request.uid,
            into=request.uid,
            target=request.target,
            credential=request.credential,
            emit=emit,
        )
        self.staging.record(request.uid, "send", data)
        return data

    async def _send_archive(
        self, source: Staging, uid: str, *, into: str, target: Peer, credential: str, emit: Emit
    ) -> dict[str, Any]:
        """Stream the checkpoint of ``uid`` in ``source`` into ``into`` on ``target``."""
        checkpoint = source.recorded(uid, "checkpoint")
        archive = source.archive(uid)
        if checkpoint is None or not archive.exists():
            raise RemoteError("NoCheckpoint", f"no checkpoint {uid} here")
        started = time.monotonic()
        try:
            await transfer.stream_file(
                peer=target,
                client_key=_credential(credential),
                operation=Operation.RECEIVE.value,
                header={
                    "uid": into,
                    "size_bytes": checkpoint["sizeBytes"],
                    "sha256": checkpoint["sha256"],
                },
                path=archive,
                on_progress=self._progress(emit, "archive"),
            )
        except (OSError, asyncssh.Error) as error:
            raise RemoteError("TransferFailed", f"streaming to {target.node}: {error}") from None
        return {"seconds": time.monotonic() - started, "bytes": checkpoint["sizeBytes"]}

    async def receive(
        self, request: ReceiveRequest, stdin: asyncssh.SSHReader[bytes]
    ) -> dict[str, Any]:
        archive = self.staging.archive(request.uid)
        await transfer.receive_file(
            stdin,
            archive,
            size=request.size_bytes,
            sha256=request.sha256,
            check=StreamingCheck(),
        )
        data = {"sizeBytes": request.size_bytes, "sha256": request.sha256}
        self.staging.record(request.uid, "receive", data)
        return data

    async def restore(self, request: RestoreRequest, _: Emit) -> dict[str, Any]:
        if (done := self.staging.recorded(request.uid, "restore")) is not None:
            return done
        received = self.staging.recorded(request.uid, "receive")
        archive = self.staging.archive(request.uid)
        if received is None or not archive.exists():
            raise RemoteError("NoArchive", f"no verified archive of migration {request.uid} here")
        if request.onto_pages:
            return await self._restore_onto_pages(request, archive)
        return await self._restore_archive(request, archive)

    async def _restore_onto_pages(self, request: RestoreRequest, archive: Path) -> dict[str, Any]:
        if request.runtime != "podman":
            raise RemoteError("PageServerNeedsPodman", "only podman restores onto received pages")
        pages = await self.pages.received(request.uid)
        return await self._restore_with(
            request,
            lambda: self.podman.restore_onto_pages(
                archive, tcp_established=request.tcp_established, file_locks=request.file_locks
            ),
            extra={"pagesBytes": pages},
        )

    async def _restore_archive(self, request: RestoreRequest, archive: Path) -> dict[str, Any]:
        return await self._restore_with(
            request,
            lambda: self._driver(request.runtime).restore(
                archive,
                name=request.name,
                tcp_established=request.tcp_established,
                file_locks=request.file_locks,
            ),
        )

    async def _restore_with(
        self,
        request: RestoreRequest,
        start: Callable[[], Awaitable[RestoreResult]],
        *,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        # Written before podman starts: if this helper dies mid-restore, podman
        # may still finish, and a later cleanup must know which container is ours:
        # one of that name created since. (No inspect here: it would cost the
        # frozen container about 0.1 s.)
        if self.staging.recorded(request.uid, "restore-started") is None:
            self.staging.record(
                request.uid,
                "restore-started",
                {"name": request.name, "since": time.time(), "runtime": request.runtime},
            )
        elif (ours := await self._restored_copy(request.uid)) is not None:
            return await self._adopt_restored(request, ours)
        try:
            async with self.criu_runs.shared():
                result = await start()
        except RuntimeCommandError as error:
            raise self._failed("RestoreFailed", request.uid, "restore", error) from None
        info = await self._driver(request.runtime).inspect(result.container_id)
        if info is None or not info.running:
            raise RemoteError(
                "RestoredContainerNotRunning",
                f"container {request.name} was restored but is not running",
            )
        data = {
            "containerId": result.container_id,
            "name": result.name,
            "seconds": result.seconds,
            "statistics": result.statistics.as_dict(),
            **(extra or {}),
        }
        self.staging.record(request.uid, "restore", data)
        return data

    async def store_checkpoint(self, request: CheckpointRequest, emit: Emit) -> dict[str, Any]:
        """A checkpoint kept here (a ContainerCheckpoint), with what a restore elsewhere needs."""
        if (done := self.store.recorded(request.uid, "stored")) is not None:
            return done
        if request.page_server is not None:
            raise RemoteError("BadRequest", "a stored checkpoint keeps its memory in its archive")
        if request.image_reference and request.runtime != "podman":
            raise RemoteError(
                "RegistryNeedsPodman",
                "checkpoint images are podman's: a docker container can be stored on its node only",
            )
        info = await self._driver(request.runtime).inspect(request.container)
        if info is None:
            raise RemoteError(
                "ContainerNotFound", f"no container {request.container!r} on node {self.node}"
            )
        try:
            if request.image_reference:
                dumped = await self._dump_image(request, info.id)
            else:
                dumped = await self._dump(request, info.id, self.store)
                dumped["contents"] = await self._contents(self.store.archive(request.uid))
        finally:
            self.staging.release(request.uid)  # kept, but no longer holding the container
        data = {
            **dumped,
            "containerName": info.name,
            "imageId": info.image_id,
            "imageName": info.image_name,
        }
        # Under both names: "checkpoint" is what sending reads.
        self.store.record(request.uid, "checkpoint", dumped)
        self.store.record(request.uid, "stored", data)
        return data

    @staticmethod
    async def _contents(archive: Path) -> dict[str, Any] | None:
        """What the archive holds (processes, memory, sockets), or None if it cannot be read."""
        try:
            contents = await asyncio.to_thread(criu_images.summarize_archive, archive)
        except (OSError, tarfile.TarError, ValueError) as error:
            logger.warning("cannot summarize %s: %s", archive, error)
            return None
        return dataclasses.asdict(contents)

    async def _dump_image(self, request: CheckpointRequest, container_id: str) -> dict[str, Any]:
        """Checkpoint into an image pushed to ``request.image_reference`` (claimed as _dump is)."""
        options = self._claim(request, container_id)
        try:
            async with self.criu_runs.shared():
                pushed = await self.podman.checkpoint_image(
                    request.container,
                    str(request.image_reference),
                    options,
                    authfile=self.registry_authfile,
                )
        except RuntimeCommandError as error:
            raise self._failed("CheckpointFailed", request.uid, "checkpoint", error) from None
        return {
            "checkpointImage": pushed.reference,
            "digest": pushed.digest,
            "sizeBytes": pushed.size_bytes,
            "contents": dataclasses.asdict(pushed.contents) if pushed.contents else None,
            "seconds": pushed.seconds,
            "statistics": pushed.statistics.as_dict(),
        }

    async def restore_image(self, request: RestoreImageRequest, _: Emit) -> dict[str, Any]:
        """Restore, as restore ``uid``, from a checkpoint image in a registry."""
        if (done := self.staging.recorded(request.uid, "restore")) is not None:
            return done
        as_restore = RestoreRequest(
            uid=request.uid,
            name=request.name,
            tcp_established=request.tcp_established,
            file_locks=request.file_locks,
        )
        return await self._restore_with(
            as_restore,
            lambda: self.podman.restore_image(
                request.reference,
                name=request.name,
                tcp_established=request.tcp_established,
                file_locks=request.file_locks,
                authfile=self.registry_authfile,
            ),
        )

    async def restore_stored(self, request: RestoreStoredRequest, _: Emit) -> dict[str, Any]:
        if (done := self.staging.recorded(request.uid, "restore")) is not None:
            return done
        archive = self.store.archive(request.checkpoint_uid)
        if self.store.recorded(request.checkpoint_uid, "stored") is None or not archive.exists():
            raise RemoteError(
                "CheckpointNotStored",
                f"no stored checkpoint {request.checkpoint_uid} on {self.node}",
            )
        as_restore = RestoreRequest(
            uid=request.uid,
            name=request.name,
            tcp_established=request.tcp_established,
            file_locks=request.file_locks,
            runtime=request.runtime,
        )
        return await self._restore_archive(as_restore, archive)

    async def send_stored(self, request: SendStoredRequest, emit: Emit) -> dict[str, Any]:
        if self.store.recorded(request.checkpoint_uid, "stored") is None:
            raise RemoteError(
                "CheckpointNotStored",
                f"no stored checkpoint {request.checkpoint_uid} on {self.node}",
            )
        return await self._send_archive(
            self.store,
            request.checkpoint_uid,
            into=request.uid,
            target=request.target,
            credential=request.credential,
            emit=emit,
        )

    async def delete_stored(self, request: DeleteStoredRequest, _: Emit) -> dict[str, Any]:
        stored = self.store.recorded(request.uid, "stored")
        reference = request.image_reference or (stored or {}).get("checkpointImage")
        digest = request.digest or (stored or {}).get("digest")
        if reference and digest:
            try:
                await asyncio.to_thread(
                    registry.delete_manifest,
                    str(reference),
                    str(digest),
                    authfile=self.registry_authfile,
                )
            except registry.RegistryError as error:
                raise RemoteError("RegistryDeleteFailed", str(error)) from None
        existed = stored is not None
        self.staging.release(request.uid)
        self.store.remove(request.uid)
        return {"deleted": existed}

    async def pages_identity(self, request: PagesIdentityRequest, _: Emit) -> dict[str, Any]:
        return await self.pages.identity(request)

    async def pages_open(self, request: PagesOpenRequest, _: Emit) -> dict[str, Any]:
        return await self.pages.open(request)

    async def pages_fetch(self, request: PagesFetchRequest, _: Emit) -> dict[str, Any]:
        credential = _credential(request.credential) if request.credential else None
        return await self.pages.fetch(request, credential)

    async def fetch_logs(self, request: FetchLogsRequest, _: Emit) -> dict[str, Any]:
        """The kept logs of ``uid``'s failed steps, gzipped, within the request's budget."""
        files = await asyncio.to_thread(
            self.logs.read, request.uid, budget_bytes=request.budget_bytes
        )
        return {
            "node": self.node,
            "files": [
                {
                    "name": f.name,
                    "gzipBase64": base64.b64encode(f.gzipped).decode(),
                    "sizeBytes": f.size_bytes,
                    "truncated": f.truncated,
                }
                for f in files
            ],
        }

    async def authorize_peer(self, request: AuthorizePeerRequest, _: Emit) -> dict[str, Any]:
        try:
            key = asyncssh.import_public_key(request.public_key)
        except (asyncssh.KeyImportError, ValueError):
            raise RemoteError("BadRequest", "public_key is no OpenSSH public key") from None
        self.grants.authorize(request.uid, key, request.ttl_seconds)
        return {"granted": key.get_fingerprint(), "ttlSeconds": request.ttl_seconds}

    async def rollback(self, request: RollbackRequest, _: Emit) -> dict[str, Any]:
        # Closed first: a checkpoint request still on its way must not freeze
        # the source again after it is back.
        self.staging.close(request.uid)
        self.grants.revoke(request.uid)
        driver = self._driver(request.runtime)
        info = await driver.inspect(request.container)
        if info is not None and info.running:
            return {"containerId": info.id, "alreadyRunning": True}
        if info is not None and self.staging.holder(info.id) != request.uid:
            # Not frozen by this migration (another one holds it, or nobody
            # does): bringing it back is not this rollback's to do.
            return {"containerId": info.id, "notFrozenByThisMigration": True}
        # In place first (the container keeps its own checkpoint images); the
        # archive, when there is one, is the driver's fallback.
        archive = self.staging.archive(request.uid)
        try:
            async with self.criu_runs.shared():
                if self.pages.dumped_to_page_server(request.uid) is not None:
                    result = await self.podman.rollback_from_pages(
                        request.container, archive, file_locks=request.file_locks
                    )
                else:
                    result = await driver.rollback(
                        request.container, archive, file_locks=request.file_locks
                    )
        except RuntimeCommandError as error:
            raise self._failed("RollbackFailed", request.uid, "rollback", error) from None
        return {"containerId": result.container_id, "seconds": result.seconds}

    async def finish_source(self, request: FinishSourceRequest, _: Emit) -> dict[str, Any]:
        if request.remove_container:
            await self._driver(request.runtime).remove(request.container)
        self.staging.close(request.uid)
        self.grants.revoke(request.uid)
        self.staging.release(request.uid)
        self.staging.remove(request.uid, keep_archive=request.keep_checkpoint)
        return {"removedContainer": request.remove_container}

    async def cleanup(self, request: CleanupRequest, _: Emit) -> dict[str, Any]:
        removed = ""
        if request.remove_restored:
            removed = await self._restored_copy(request.uid) or ""
            if removed:
                await self._driver(request.runtime).remove(removed)
        restored = self.staging.recorded(request.uid, "restore")
        await self.pages.close(request.uid, str(restored["containerId"]) if restored else None)
        self.staging.close(request.uid)
        self.grants.revoke(request.uid)
        self.staging.release(request.uid)
        self.staging.remove(request.uid, keep_archive=request.keep_checkpoint)
        return {"removedContainer": removed}

    async def _adopt_restored(self, request: RestoreRequest, container_id: str) -> dict[str, Any]:
        """A restore repeated after this helper died mid-way: podman had finished it."""
        info = await self._driver(request.runtime).inspect(container_id)
        if info is None or not info.running:
            raise RemoteError(
                "RestoredContainerNotRunning",
                f"container {request.name} was restored but is not running",
            )
        data = {"containerId": info.id, "name": info.name, "seconds": 0.0, "statistics": {}}
        self.staging.record(request.uid, "restore", data)
        return data

    async def _restored_copy(self, uid: str) -> str | None:
        """The ID of the container migration ``uid`` restored here, if there is one.

        The journal's ``restore`` result names it; without one (the helper died
        while podman restored), a container with the intended name created since
        the restore began is the migration's (this node's own clock on both sides).
        """
        if (restored := self.staging.recorded(uid, "restore")) is not None:
            return str(restored["containerId"])
        intent = self.staging.recorded(uid, "restore-started")
        if intent is None:
            return None
        driver = self._driver(str(intent.get("runtime", "podman")))
        info = await driver.inspect(str(intent["name"]))
        if info is None:
            return None
        if "since" in intent:
            return info.id if info.created >= float(intent["since"]) else None
        # Journaled by an earlier helper: it noted the container that was there.
        return None if info.id == intent.get("preexisting") else info.id

    @staticmethod
    def _progress(emit: Emit, what: str) -> transfer.ProgressCallback:
        last = 0.0

        async def report(sent: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL or sent == total:
                last = now
                await emit({"what": what, "bytesSent": sent, "bytesTotal": total})

        return report
