"""ContainerCheckpoints sealed at rest, and checked before anything restores or sends them.

A helper on a node with checkpoint keys seals what ``store-checkpoint``
dumped and records the sealed file's digest; ``restore-stored`` and
``send-stored`` hash the archive first, and a sealed one is opened into the
restore's staging area only for the restore. Whatever is refused is refused
before the driver is asked anything. The drivers are fakes (no root, no
podman): they dump a checkpoint-shaped tar and note what they restored from.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from archives import checkpoint_archive
from ferry_api.runtime import Runtime
from ferry_helper import registry
from ferry_helper.archive_check import UnlessSealed, UnsafeArchive
from ferry_helper.checkpoint_keys import KEY_BYTES, Key, KeyDirectory
from ferry_helper.criu_stats import CriuStatistics
from ferry_helper.drivers.capabilities import CheckpointImageCapable
from ferry_helper.drivers.cli import CommandOutput
from ferry_helper.drivers.errors import RuntimeCommandError
from ferry_helper.drivers.podman import PodmanDriver
from ferry_helper.drivers.records import (
    CheckpointOptions,
    CheckpointResult,
    ContainerInfo,
    ImageCheckpoint,
    RestoreResult,
)
from ferry_helper.failure_logs import FailureLogs
from ferry_helper.operations import Channel, Operations
from ferry_helper.sealing import MAGIC, file_sha256, is_sealed
from ferry_helper.staging import Staging
from ferry_wire import Reason, RemoteError
from ferry_wire.migration import Restored, RestoreRequest, Sent
from ferry_wire.stored import (
    RestoreImageRequest,
    RestoreStoredRequest,
    Sealing,
    SendStoredRequest,
    StoreCheckpointRequest,
    Stored,
)
from helper_fakes import DockerLike, serving

CHECKPOINT = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
RESTORE = "1b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
KEY = Key("key", bytes(range(KEY_BYTES)))
OTHER = Key("other", bytes(range(50, 50 + KEY_BYTES)))
COPY_ID = "d" * 64
PEER_KEY = asyncssh.generate_private_key("ssh-ed25519")
PLAIN = checkpoint_archive()


class Checkpointing(DockerLike):
    """Dumps a checkpoint-shaped tar; restores by noting the archive it was given."""

    def __init__(self, *, fail_restore: bool = False) -> None:
        super().__init__()
        self.restores: list[tuple[Path, bytes]] = []
        self.copy: ContainerInfo | None = None
        self.fail_restore = fail_restore

    async def inspect(self, container: str) -> ContainerInfo | None:
        if self.copy is not None and container in (self.copy.id, self.copy.name):
            return self.copy
        return await super().inspect(container)

    async def checkpoint(
        self, container: str, archive: Path, options: CheckpointOptions
    ) -> CheckpointResult:
        self.checkpoints.append(container)
        await asyncio.to_thread(archive.write_bytes, PLAIN)
        return CheckpointResult(
            archive=archive,
            size_bytes=len(PLAIN),
            sha256=hashlib.sha256(PLAIN).hexdigest(),
            seconds=0.1,
            statistics=CriuStatistics(),
        )

    async def restore(
        self,
        archive: Path,
        *,
        name: str | None = None,
        tcp_established: bool = False,
        file_locks: bool = False,
    ) -> RestoreResult:
        self.restores.append((archive, await asyncio.to_thread(archive.read_bytes)))
        if self.fail_restore:
            raise RuntimeCommandError(
                command=["docker", "start"], exit_code=1, stderr="", decisive_line="criu said no"
            )
        self.copy = self.web.model_copy(update={"id": COPY_ID, "name": name or "copy"})
        return RestoreResult(
            container_id=COPY_ID, name=self.copy.name, seconds=0.1, statistics=CriuStatistics()
        )


def keys_at(directory: Path, *keys: Key, active: str = "key") -> KeyDirectory:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    for key in keys:
        (directory / key.name).write_bytes(key.secret)
    return KeyDirectory(directory, active)


def node(
    tmp_path: Path, keys: KeyDirectory | None, driver: Any = None, *, name: str = "node-a"
) -> tuple[Operations, Any]:
    driver = driver or Checkpointing()
    operations = Operations(
        node=name,
        drivers={Runtime.DOCKER: driver},
        staging=Staging(tmp_path / "staging"),
        store=Staging(tmp_path / "checkpoints"),
        logs=FailureLogs(tmp_path / "logs", retention_seconds=3600),
        checkpoint_keys=keys,
    )
    return operations, driver


def run(operations: Operations, request: Any) -> Any:
    return asyncio.run(operations.run(request, Channel()))


def refusal(call: Awaitable[Any]) -> RemoteError:
    async def wait() -> RemoteError:
        with pytest.raises(RemoteError) as refused:
            await call
        return refused.value

    return asyncio.run(wait())


def store(operations: Operations) -> Stored:
    request = StoreCheckpointRequest(uid=CHECKPOINT, container="web", runtime=Runtime.DOCKER)
    stored = run(operations, request)
    assert isinstance(stored, Stored)
    return stored


def restore_stored(sha256: str | None = None) -> RestoreStoredRequest:
    return RestoreStoredRequest(
        uid=RESTORE,
        name="web-copy",
        runtime=Runtime.DOCKER,
        checkpoint_uid=CHECKPOINT,
        sha256=sha256,
    )


def flip_a_byte(path: Path, at: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


# -- storing


def test_a_stored_checkpoint_is_sealed_when_the_node_has_a_key(tmp_path: Path) -> None:
    operations, driver = node(tmp_path, keys_at(tmp_path / "keys", KEY, OTHER))
    stored = store(operations)
    archive = operations.context.store.archive(CHECKPOINT)
    assert driver.checkpoints == ["web"]
    assert is_sealed(archive)
    assert PLAIN[:512] not in archive.read_bytes()
    assert stored.sealing == Sealing(
        algorithm="AES-256-GCM-STREAM-1MiB", key_name="key", key_id=KEY.id
    )
    assert stored.seal_seconds is not None
    assert stored.sha256 == file_sha256(archive) != hashlib.sha256(PLAIN).hexdigest()
    assert stored.size_bytes == archive.stat().st_size
    assert stored.contents is not None, "summarized from the plaintext, before sealing"
    assert stored.to_json()["sealing"] == {
        "algorithm": "AES-256-GCM-STREAM-1MiB",
        "keyName": "key",
        "keyId": KEY.id,
    }
    journal = operations.context.store
    assert journal.recorded_model(CHECKPOINT, "stored", Stored) == stored
    checkpoint = journal.recorded(CHECKPOINT, "checkpoint")
    assert checkpoint is not None
    assert (checkpoint["sizeBytes"], checkpoint["sha256"]) == (stored.size_bytes, stored.sha256)
    assert sorted(p.name for p in archive.parent.iterdir()) == ["checkpoint.tar", "journal.json"]
    assert run(operations, StoreCheckpointRequest(uid=CHECKPOINT, container="web")) == stored
    assert driver.checkpoints == ["web"], "answered from the journal"


def test_a_stored_checkpoint_stays_in_clear_without_keys(tmp_path: Path) -> None:
    operations, _ = node(tmp_path, None)
    stored = store(operations)
    archive = operations.context.store.archive(CHECKPOINT)
    assert archive.read_bytes() == PLAIN
    assert (stored.sealing, stored.seal_seconds) == (None, None)
    assert stored.sha256 == hashlib.sha256(PLAIN).hexdigest()
    assert "sealing" not in stored.to_json()


def test_a_registry_image_is_refused_on_a_node_that_encrypts(tmp_path: Path) -> None:
    operations, driver = node(tmp_path, keys_at(tmp_path / "keys", KEY))
    request = StoreCheckpointRequest(
        uid=CHECKPOINT, container="web", runtime=Runtime.DOCKER, image_reference="reg.example/c:1"
    )
    refused = refusal(operations.run(request, Channel()))
    assert refused.reason == Reason.ENCRYPTION_UNSUPPORTED == "EncryptionUnsupported"
    assert "would not be encrypted" in refused.message
    assert "storage.type: Node" in refused.message
    assert driver.checkpoints == []
    assert operations.context.staging.holder(driver.web.id) is None, "nothing claimed"


def test_a_missing_or_broken_key_refuses_before_the_dump(tmp_path: Path) -> None:
    keys = keys_at(tmp_path / "keys", OTHER)
    operations, driver = node(tmp_path, keys)
    missing = refusal(
        operations.run(
            StoreCheckpointRequest(uid=CHECKPOINT, container="web", runtime=Runtime.DOCKER),
            Channel(),
        )
    )
    assert missing.reason == Reason.CHECKPOINT_KEY_MISSING
    assert "no checkpoint key 'key'" in missing.message
    assert "(the keys there: other)" in missing.message
    (tmp_path / "keys" / "key").write_bytes(b"not 32 bytes\n")
    request = StoreCheckpointRequest(uid=CHECKPOINT, container="web", runtime=Runtime.DOCKER)
    broken = refusal(operations.run(request, Channel()))
    assert broken.reason == Reason.CHECKPOINT_KEY_INVALID
    assert "holds 13 bytes; a key is exactly 32 raw bytes" in broken.message
    assert driver.checkpoints == []
    assert not operations.context.store.archive(CHECKPOINT).exists()


def test_a_key_rotated_in_the_secret_is_used_for_the_next_checkpoint(tmp_path: Path) -> None:
    keys = keys_at(tmp_path / "keys", KEY)
    operations, _ = node(tmp_path, keys)
    assert store(operations).sealing == Sealing(key_name="key", key_id=KEY.id)
    operations.context.store.remove(CHECKPOINT)
    (tmp_path / "keys" / "key").write_bytes(OTHER.secret)
    assert store(operations).sealing == Sealing(key_name="key", key_id=OTHER.id)


# -- restoring from this node's store


def test_a_sealed_checkpoint_is_restored_from_its_plaintext_which_is_then_removed(
    tmp_path: Path,
) -> None:
    operations, driver = node(tmp_path, keys_at(tmp_path / "keys", KEY))
    stored = store(operations)
    restored = run(operations, restore_stored(stored.sha256))
    assert isinstance(restored, Restored)
    assert restored.container_id == COPY_ID
    [(path, data)] = driver.restores
    assert data == PLAIN, "the runtime got the plaintext"
    assert path == operations.context.staging.opened_archive(RESTORE)
    assert not path.exists(), "and it is gone"
    assert is_sealed(operations.context.store.archive(CHECKPOINT)), "the store stays sealed"


def test_the_plaintext_is_removed_when_the_restore_fails(tmp_path: Path) -> None:
    operations, driver = node(
        tmp_path, keys_at(tmp_path / "keys", KEY), Checkpointing(fail_restore=True)
    )
    stored = store(operations)
    refused = refusal(operations.run(restore_stored(stored.sha256), Channel()))
    assert refused.reason == Reason.RESTORE_FAILED
    [(path, data)] = driver.restores
    assert data == PLAIN
    assert not path.exists()


@pytest.mark.parametrize("given", [True, False], ids=["operator's digest", "node's own record"])
def test_a_flipped_byte_is_refused_before_the_restore(tmp_path: Path, given: bool) -> None:
    operations, driver = node(tmp_path, keys_at(tmp_path / "keys", KEY))
    stored = store(operations)
    archive = operations.context.store.archive(CHECKPOINT)
    flip_a_byte(archive)
    request = restore_stored(stored.sha256 if given else None)
    refused = refusal(operations.run(request, Channel()))
    assert refused.reason == Reason.CHECKPOINT_TAMPERED == "CheckpointTampered"
    assert f"expected sha256 {stored.sha256}" in refused.message
    assert f"found {file_sha256(archive)}" in refused.message
    assert driver.restores == []
    assert not operations.context.staging.opened_archive(RESTORE).exists()
    assert operations.context.staging.recorded(RESTORE, "restore-started") is None


def test_a_clear_archive_is_checked_against_the_operators_digest_too(tmp_path: Path) -> None:
    operations, driver = node(tmp_path, None)
    stored = store(operations)
    refused = refusal(operations.run(restore_stored("0" * 64), Channel()))
    assert refused.reason == Reason.CHECKPOINT_TAMPERED
    assert "expected sha256 " + "0" * 64 in refused.message
    assert "ContainerCheckpoint" in refused.message
    assert driver.restores == []
    assert isinstance(run(operations, restore_stored(stored.sha256)), Restored)
    assert driver.restores[0][0] == operations.context.store.archive(CHECKPOINT), "used in place"


def test_a_chunk_that_does_not_authenticate_is_refused_even_with_its_journal_rewritten(
    tmp_path: Path,
) -> None:
    operations, driver = node(tmp_path, keys_at(tmp_path / "keys", KEY))
    stored = store(operations)
    archive = operations.context.store.archive(CHECKPOINT)
    flip_a_byte(archive)
    journal = operations.context.store
    forged = stored.model_copy(update={"sha256": file_sha256(archive)})
    journal.record_model(CHECKPOINT, "stored", forged)
    journal.forget(CHECKPOINT, "checkpoint")
    refused = refusal(operations.run(restore_stored(), Channel()))
    assert refused.reason == Reason.CHECKPOINT_TAMPERED
    assert "tampered or truncated: chunk 0 (the last) does not authenticate" in refused.message
    assert driver.restores == []
    assert not operations.context.staging.opened_archive(RESTORE).exists()


def test_a_key_this_node_lacks_is_refused_before_the_restore(tmp_path: Path) -> None:
    operations, driver = node(tmp_path, keys_at(tmp_path / "keys", KEY))
    stored = store(operations)
    keys_at(tmp_path / "keys", OTHER)  # the Secret now holds another key only
    refused = refusal(operations.run(restore_stored(stored.sha256), Channel()))
    assert refused.reason == Reason.CHECKPOINT_KEY_MISSING == "CheckpointKeyMissing"
    assert refused.message == (
        f"node node-a: the checkpoint was encrypted with key {KEY.id} (key); this node has "
        f"{OTHER.id} (other) (checkpoints.encryption.secretName)"
    )
    assert driver.restores == []


def test_an_old_key_kept_beside_the_new_one_still_restores(tmp_path: Path) -> None:
    operations, driver = node(tmp_path, keys_at(tmp_path / "keys", KEY))
    stored = store(operations)
    keys_at(tmp_path / "keys", KEY, Key("next", OTHER.secret), active="next")
    assert isinstance(run(operations, restore_stored(stored.sha256)), Restored)
    assert driver.restores[0][1] == PLAIN


def test_what_a_helper_that_died_left_in_clear_is_removed_at_its_start(tmp_path: Path) -> None:
    operations, _ = node(tmp_path, keys_at(tmp_path / "keys", KEY))
    stored = store(operations)
    staging, kept = operations.context.staging, operations.context.store
    opened = staging.opened_archive(RESTORE)
    opened.write_bytes(PLAIN)
    opening = opened.parent / ".checkpoint.opened.tar.x1y2.partial"
    opening.write_bytes(PLAIN[:100])
    unfinished = "2b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
    kept.archive(unfinished).write_bytes(PLAIN)
    sealing = kept.archive(unfinished).parent / ".checkpoint.tar.z9.partial"
    sealing.write_bytes(b"half")
    from_before = "3b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"  # stored in clear before keys were set
    kept.archive(from_before).write_bytes(PLAIN)
    kept.record_model(from_before, "stored", stored)
    removed = operations.sealed.sweep()
    assert sorted(removed) == sorted([opened, opening, kept.archive(unfinished), sealing])
    assert kept.archive(CHECKPOINT).exists()
    assert kept.archive(from_before).read_bytes() == PLAIN, "its digest is recorded: kept"
    assert operations.sealed.sweep() == []


# -- sending to another node, restored there


def send_stored(target: Any, sha256: str | None, **peer: Any) -> SendStoredRequest:
    return SendStoredRequest(
        uid=RESTORE,
        checkpoint_uid=CHECKPOINT,
        target=target.model_copy(update=peer),
        credential=PEER_KEY.export_private_key().decode(),
        sha256=sha256,
    )


def test_a_mismatched_digest_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    source, _ = node(tmp_path / "a", keys_at(tmp_path / "keys", KEY))
    stored = store(source)
    target, _ = node(tmp_path / "b", None, name="node-b")

    async def scenario() -> list[RemoteError]:
        async with serving(target) as (peer, _):
            target.grants.authorize(RESTORE, PEER_KEY, 60)
            refused = []
            for request in (send_stored(peer, "f" * 64), send_stored(peer, None, port=1)):
                with pytest.raises(RemoteError) as error:
                    await source.run(request, Channel())
                refused.append(error.value)
                flip_a_byte(source.context.store.archive(CHECKPOINT))
            return refused

    wrong_digest, tampered = asyncio.run(scenario())
    assert wrong_digest.reason == Reason.CHECKPOINT_TAMPERED
    assert "expected sha256 " + "f" * 64 in wrong_digest.message
    assert tampered.reason == Reason.CHECKPOINT_TAMPERED, "not TransferFailed: nothing was sent"
    assert f"expected sha256 {stored.sha256}" in tampered.message
    assert not target.context.staging.archive(RESTORE).exists()


def send_and_restore(tmp_path: Path, target_keys: KeyDirectory | None) -> tuple[Any, Any]:
    source, _ = node(tmp_path / "a", keys_at(tmp_path / "keys-a", KEY))
    stored = store(source)
    target, driver = node(tmp_path / "b", target_keys, name="node-b")

    async def scenario() -> Any:
        async with serving(target) as (peer, _):
            target.grants.authorize(RESTORE, PEER_KEY, 60)
            sent = await source.run(send_stored(peer, stored.sha256), Channel())
            assert isinstance(sent, Sent)
            assert sent.bytes == stored.size_bytes
            received = target.context.staging.archive(RESTORE)
            assert received.read_bytes().startswith(MAGIC), "sealed on the wire and there"
            request = RestoreRequest(uid=RESTORE, name="web-copy", runtime=Runtime.DOCKER)
            try:
                return await target.run(request, Channel())
            except RemoteError as error:
                return error

    return asyncio.run(scenario()), (target, driver)


def test_a_sealed_checkpoint_sent_to_another_node_is_opened_and_checked_there(
    tmp_path: Path,
) -> None:
    restored, (_, driver) = send_and_restore(tmp_path, keys_at(tmp_path / "keys-b", KEY))
    assert isinstance(restored, Restored), restored
    [(path, data)] = driver.restores
    assert data == PLAIN
    assert not path.exists()


def test_a_node_without_the_key_refuses_what_was_sent_to_it(tmp_path: Path) -> None:
    refused, (_, driver) = send_and_restore(tmp_path, None)
    assert isinstance(refused, RemoteError)
    assert refused.reason == Reason.CHECKPOINT_KEY_MISSING
    assert f"encrypted with key {KEY.id} (key); this node has no keys" in refused.message
    assert driver.restores == []


async def _fed(check: UnlessSealed, data: bytes, piece: int) -> int:
    for start in range(0, len(data), piece):
        await check.feed(data[start : start + piece])
    return await check.finish()


def test_the_receivers_check_lets_a_sealed_archive_in_and_checks_a_plain_one() -> None:
    sealed = UnlessSealed()
    assert asyncio.run(_fed(sealed, MAGIC + b"\0" * 5000, 3)) == 0
    assert sealed.sealed
    plain = UnlessSealed()
    assert asyncio.run(_fed(plain, PLAIN, 4)) > 0
    assert not plain.sealed
    with pytest.raises(UnsafeArchive, match="not a checkpoint archive"):
        asyncio.run(_fed(UnlessSealed(), b"FERRY", 2))


# -- checkpoint images pinned by digest

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("reference", "pinned"),
    [
        ("reg.example/cp:1", "reg.example/cp@" + DIGEST),
        ("reg.example:5000/team/cp:v2", "reg.example:5000/team/cp@" + DIGEST),
        ("reg.example:5000/team/cp", "reg.example:5000/team/cp@" + DIGEST),
        ("reg.example/cp:1@sha256:" + "b" * 64, "reg.example/cp@" + DIGEST),
    ],
)
def test_a_reference_is_pinned_to_its_digest(reference: str, pinned: str) -> None:
    assert registry.pinned(reference, DIGEST) == pinned


class Imaging(Checkpointing):
    """Restores checkpoint images, noting the reference it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []

    async def checkpoint_image(
        self, container: str, reference: str, options: CheckpointOptions, *, authfile: Path | None
    ) -> ImageCheckpoint:
        raise NotImplementedError

    async def restore_image(
        self,
        reference: str,
        *,
        name: str,
        tcp_established: bool = False,
        file_locks: bool = False,
        authfile: Path | None,
    ) -> RestoreResult:
        self.references.append(reference)
        self.copy = self.web.model_copy(update={"id": COPY_ID, "name": name})
        return RestoreResult(
            container_id=COPY_ID, name=name, seconds=0.1, statistics=CriuStatistics()
        )


def test_a_checkpoint_image_is_restored_by_its_digest_when_given(tmp_path: Path) -> None:
    driver = Imaging()
    assert isinstance(driver, CheckpointImageCapable)
    operations, _ = node(tmp_path, None, driver)
    for uid, digest in ((RESTORE, DIGEST), (CHECKPOINT, None)):
        request = RestoreImageRequest(
            uid=uid,
            name="web-copy",
            runtime=Runtime.DOCKER,
            reference="reg.example/cp:1",
            digest=digest,
        )
        assert isinstance(run(operations, request), Restored)
    assert driver.references == ["reg.example/cp@" + DIGEST, "reg.example/cp:1"]
    with pytest.raises(ValueError, match="digest"):
        RestoreImageRequest(uid=RESTORE, name="x", reference="r/c:1", digest="latest")


class ScriptedPodman(PodmanDriver):
    """podman's CLI answered from a script: each command noted, none run."""

    def __init__(self) -> None:
        super().__init__(podman="/nonexistent/podman")
        self.commands: list[list[str]] = []

    async def _run(self, args: Any, *, limit: float, tool: str | None = None) -> CommandOutput:
        self.commands.append(list(args))
        stdout = "e" * 64 + "\n" if args[0] == "pull" else ""
        return CommandOutput(command=list(args), returncode=0, stdout=stdout, stderr="")

    async def inspect(self, container: str) -> ContainerInfo | None:
        return DockerLike().web.model_copy(update={"id": COPY_ID, "name": container})


def test_podman_pulls_by_digest_and_restores_the_image_that_pull_verified() -> None:
    driver = ScriptedPodman()
    pinned = "reg.example/cp@" + DIGEST
    result = asyncio.run(driver.restore_image(pinned, name="web-copy", authfile=None))
    assert result.container_id == COPY_ID
    pull, restore, remove = driver.commands
    assert pull == ["pull", "--quiet", pinned]
    assert restore[:2] == ["container", "restore"]
    assert restore[-3:] == ["--name", "web-copy", "e" * 64], "by the ID the pull printed"
    assert remove == ["image", "rm", "--ignore", pinned]
