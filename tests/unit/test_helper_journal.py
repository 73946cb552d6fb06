"""The helper's journal keeps typed replies, and reads what an earlier helper wrote.

Before the typed wire protocol, the helper journaled hand-made dicts with the
same camelCase keys (and CRIU's statistics in snake_case). A helper upgraded
mid-migration must still answer a repeated step from such a journal.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ferry_api.runtime import Runtime
from ferry_helper.operations.pages import CheckpointStarted, PagesOpened, PagesReceived
from ferry_helper.operations.restores import RestoreStarted
from ferry_helper.staging import Staging
from ferry_helper.transfer import failing_as
from ferry_wire import Reason, RemoteError
from ferry_wire.migration import Checkpointed, Restored
from ferry_wire.stored import Stored

UID = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
SHA = "ab" * 32
CONTAINER_ID = "c" * 64


def test_a_typed_reply_round_trips_through_the_journal(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    reply = Checkpointed.model_validate(
        {
            "sizeBytes": 1700000,
            "sha256": SHA,
            "seconds": 0.4,
            "statistics": {"frozenTime": 51628, "pagesLazy": 3},
            "containerId": CONTAINER_ID,
        }
    )
    staging.record_model(UID, "checkpoint", reply)
    raw = staging.recorded(UID, "checkpoint")
    assert raw is not None
    assert raw["sizeBytes"] == 1700000, "kept as it goes on the wire"
    assert raw["statistics"] == {"frozenTime": 51628, "pagesLazy": 3}
    assert staging.recorded_model(UID, "checkpoint", Checkpointed) == reply
    assert staging.recorded_model(UID, "restore", Restored) is None


def test_replies_an_earlier_helper_journaled_still_read(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    # As the untyped helper wrote them: CRIU's counters in snake_case, keys of its own.
    staging.record(
        UID,
        "checkpoint",
        {
            "sizeBytes": 30720,
            "sha256": SHA,
            "seconds": 0.33,
            "statistics": {"freezing_time": 100944, "frozen_time": 51628, "pages_lazy": 2},
            "containerId": CONTAINER_ID,
            "pageServer": False,
        },
    )
    staging.record(
        UID,
        "stored",
        {
            "sizeBytes": 30720,
            "sha256": SHA,
            "seconds": 0.33,
            "statistics": {},
            "containerId": CONTAINER_ID,
            "pageServer": False,
            "contents": {
                "processes": 1,
                "threads": 1,
                "memoryBytes": 4096,
                "openFiles": 3,
                "sockets": {
                    "tcpListening": 1,
                    "tcpEstablished": 0,
                    "udp": 0,
                    "unix": 0,
                    "other": 0,
                },
            },
            "containerName": "web",
            "imageId": "i" * 64,
            "imageName": "busybox",
        },
    )
    staging.record(
        UID,
        "restore",
        {"containerId": CONTAINER_ID, "name": "web", "seconds": 0.0, "statistics": {}},
    )

    checkpointed = staging.recorded_model(UID, "checkpoint", Checkpointed)
    assert checkpointed is not None
    assert checkpointed.statistics.frozen_time == 51628
    assert checkpointed.to_json()["statistics"]["pagesLazy"] == 2
    stored = staging.recorded_model(UID, "stored", Stored)
    assert stored is not None
    assert stored.container_name == "web"
    assert stored.contents is not None
    assert stored.contents.sockets.tcp_listening == 1
    restored = staging.recorded_model(UID, "restore", Restored)
    assert restored == Restored(container_id=CONTAINER_ID, name="web")


def test_the_helpers_own_notes_read_as_an_earlier_helper_wrote_them(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    staging.record(UID, "restore-started", {"name": "web", "preexisting": "old-id"})
    staging.record(UID, "checkpoint-started", {"containerId": CONTAINER_ID, "pageServer": True})
    staging.record(
        UID,
        "pages-open",
        {
            "address": "10.0.0.2",
            "port": 27000,
            "cert": None,
            "containerId": CONTAINER_ID,
            "directory": "/var/lib/containers/x/checkpoint",
        },
    )
    staging.record(
        UID, "pages-received", {"exitCode": 0, "bytes": 8192, "expired": False, "log": ""}
    )

    started = staging.recorded_model(UID, "restore-started", RestoreStarted)
    assert started == RestoreStarted(name="web", preexisting="old-id", runtime=Runtime.PODMAN)
    assert started.since is None
    dumped = staging.recorded_model(UID, "checkpoint-started", CheckpointStarted)
    assert dumped is not None
    assert (dumped.page_server, dumped.runtime) == (True, Runtime.PODMAN)
    opened = staging.recorded_model(UID, "pages-open", PagesOpened)
    assert opened is not None
    assert opened.link().to_json() == {"address": "10.0.0.2", "port": 27000}
    received = staging.recorded_model(UID, "pages-received", PagesReceived)
    assert received == PagesReceived(exit_code=0, bytes=8192)

    staging.record_model(UID, "restore-started", RestoreStarted(name="web", since=1.5))
    assert staging.recorded(UID, "restore-started") == {
        "name": "web",
        "since": 1.5,
        "runtime": "podman",
    }


@pytest.mark.parametrize(
    "failure",
    [
        RemoteError(Reason.HELPER_UNREACHABLE, "the helper on node-b could not be reached"),
        RemoteError(Reason.HELPER_DISCONNECTED, "node-b closed the stream"),
        RemoteError(Reason.HELPER_HOST_KEY_MISMATCH, "node-b presented another host key"),
        ConnectionResetError("reset by peer"),
    ],
)
def test_a_broken_stream_is_the_streams_failure_not_a_silent_helper(
    failure: BaseException,
) -> None:
    with (
        pytest.raises(RemoteError) as refused,
        failing_as(Reason.TRANSFER_FAILED, "streaming to node-b"),
    ):
        raise failure
    assert refused.value.reason == Reason.TRANSFER_FAILED
    assert refused.value.message.startswith("streaming to node-b: ")
    assert str(failure) in refused.value.message


def test_what_the_target_decided_passes_through_a_stream() -> None:
    mismatch = RemoteError(Reason.CHECKSUM_MISMATCH, "sha256 does not match")
    with (
        pytest.raises(RemoteError) as refused,
        failing_as(Reason.TRANSFER_FAILED, "streaming to node-b"),
    ):
        raise mismatch
    assert refused.value is mismatch
