"""The one error policy: which failures are retried, which end a resource, and how they are named.

The SSH cases run a real asyncssh server on loopback (no root): the operator's
client must tell a helper that is down (retry) from one that refuses its key or
shows another host key (never retry).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncssh
import kopf
import pytest
from ferry_api.checkpoint import parse_container_checkpoint
from ferry_operator.checkpoint import CheckpointTaker
from ferry_operator.helperclient import HelperClient
from ferry_operator.policy import ApiError, Failure, Kind, as_failure, for_handler, kind_of
from ferry_operator.status import StatusRecorder
from ferry_wire import OPERATOR_USER, Peer, Reason, RemoteError
from ferry_wire.containers import InspectRequest
from ferry_wire.framing import encode, result
from ferry_wire.node import ProbeReply, ProbeRequest
from operator_fakes import SETTINGS, UID, Clock, FakeEvents, FakeHelpers, FakeKube


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RemoteError(Reason.HELPER_UNREACHABLE, "refused"), Kind.TRANSIENT),
        (RemoteError(Reason.HELPER_DISCONNECTED, "cut"), Kind.TRANSIENT),
        (RemoteError(Reason.HELPER_HOST_KEY_MISMATCH, "impostor"), Kind.UNTRUSTED),
        (RemoteError(Reason.HELPER_AUTHENTICATION_FAILED, "key refused"), Kind.UNTRUSTED),
        (RemoteError(Reason.RESTORE_FAILED, "crun said no"), Kind.PERMANENT),
        (ApiError(None, "connection reset"), Kind.TRANSIENT),
        (ApiError(503, "unavailable"), Kind.TRANSIENT),
        (ApiError(429, "slow down"), Kind.TRANSIENT),
        (ApiError(403, "forbidden"), Kind.PERMANENT),
        (ApiError(422, "invalid"), Kind.PERMANENT),
        (Failure(reason="TargetNameTaken", message="taken"), Kind.PERMANENT),
        (TimeoutError(), Kind.TRANSIENT),
        (ValueError("a bug"), Kind.PERMANENT),
    ],
)
def test_each_failure_has_one_kind(error: BaseException, kind: Kind) -> None:
    assert kind_of(error) is kind


def test_failures_keep_the_helpers_reason_for_the_condition() -> None:
    assert as_failure(RemoteError(Reason.CHECKPOINT_FAILED, "x")).reason == "CheckpointFailed"
    assert as_failure(ApiError(403, "no")).reason == "KubernetesApiError"
    assert as_failure(ValueError("boom")).reason == "OperatorError"


def test_a_handler_retries_what_is_transient_and_records_the_rest() -> None:
    with pytest.raises(kopf.TemporaryError):
        for_handler(RemoteError(Reason.HELPER_UNREACHABLE, "down"))
    untrusted = for_handler(RemoteError(Reason.HELPER_HOST_KEY_MISMATCH, "impostor"))
    assert untrusted.reason == "HelperHostKeyMismatch"


def test_a_status_write_rides_out_a_short_api_outage_but_not_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ferry_operator.status.backoff", lambda attempt: 0.0)
    kube = FakeKube(Clock())
    recorder: StatusRecorder[Any] = StatusRecorder(
        parse_container_checkpoint(_checkpoint()).status,
        kube=kube,  # type: ignore[arg-type]
        plural="containercheckpoints",
        namespace="team-a",
        name="snap",
        generation=1,
    )
    kube.patch_errors = [ApiError(503, "unavailable"), ApiError(None, "reset")]
    recorder.update(message="hello")
    asyncio.run(recorder.write())
    assert kube.last["message"] == "hello"
    kube.patch_errors = [ApiError(403, "forbidden")]
    with pytest.raises(ApiError):
        asyncio.run(recorder.write())


def _checkpoint() -> dict[str, Any]:
    return {
        "apiVersion": "ferry.dev/v1alpha1",
        "kind": "ContainerCheckpoint",
        "metadata": {"name": "snap", "namespace": "team-a", "uid": UID, "generation": 1},
        "spec": {"source": {"node": "node-a", "container": "web"}},
    }


def _taker(helpers: FakeHelpers, kube: FakeKube) -> CheckpointTaker:
    return CheckpointTaker(
        clock=kube.clock,
        resource=parse_container_checkpoint(_checkpoint()),
        events=FakeEvents(),
        kube=kube,  # type: ignore[arg-type]
        helpers=helpers,
        settings=SETTINGS,
    )


def test_a_checkpoint_whose_helper_is_down_is_retried_by_kopf_and_an_impostor_fails_it() -> None:
    clock = Clock()
    helpers, kube = FakeHelpers(), FakeKube(clock)
    helpers.answers[("node-a", InspectRequest)] = RemoteError(Reason.HELPER_UNREACHABLE, "down")
    with pytest.raises(kopf.TemporaryError):
        asyncio.run(_taker(helpers, kube).run())
    assert kube.last["phase"] == "Checkpointing", "a transient failure is not an ending"
    helpers.answers[("node-a", InspectRequest)] = RemoteError(
        Reason.HELPER_HOST_KEY_MISMATCH, "another host key"
    )
    asyncio.run(_taker(helpers, kube).run())
    assert kube.last["phase"] == "Failed"
    assert kube.last["conditions"][0]["reason"] == "HelperHostKeyMismatch"


# -- the real client against a real SSH server on loopback ------------------------------


class _Server(asyncssh.SSHServer):
    def __init__(self, allowed: asyncssh.SSHKey) -> None:
        self.allowed = allowed

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == OPERATOR_USER and key.get_fingerprint() == (
            self.allowed.get_fingerprint()
        )


async def _probe_answer(process: asyncssh.SSHServerProcess[bytes]) -> None:
    await process.stdin.readline()
    process.stdout.write(encode(result(ProbeReply.model_validate({"status": {"kernel": "6.18"}}))))
    process.exit(0)


async def _with_server(client_key: asyncssh.SSHKey | None, pinned: str | None) -> Any:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    allowed = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(
        lambda: _Server(allowed),
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        process_factory=_probe_answer,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    peer = Peer(
        node="node-a",
        address="127.0.0.1",
        port=port,
        host_key=pinned or host_key.export_public_key().decode(),
    )
    key = allowed if client_key is None else client_key
    try:
        return await HelperClient(key).call(peer, ProbeRequest())
    finally:
        server.close()
        await server.wait_closed()


def test_the_client_names_an_impostor_a_refused_key_and_a_helper_that_is_down() -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    with pytest.raises(RemoteError) as mismatch:
        asyncio.run(_with_server(None, impostor))
    assert mismatch.value.reason is Reason.HELPER_HOST_KEY_MISMATCH
    assert kind_of(mismatch.value) is Kind.UNTRUSTED

    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(RemoteError) as refused:
        asyncio.run(_with_server(stranger, None))
    assert refused.value.reason is Reason.HELPER_AUTHENTICATION_FAILED

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    nobody = Peer(node="node-a", address="127.0.0.1", port=port, host_key=impostor)
    with pytest.raises(RemoteError) as down:
        asyncio.run(HelperClient(stranger).call(nobody, ProbeRequest()))
    assert down.value.reason is Reason.HELPER_UNREACHABLE
    assert kind_of(down.value) is Kind.TRANSIENT


def test_the_client_reads_a_typed_reply_from_a_real_server() -> None:
    reply = asyncio.run(_with_server(None, None))
    assert isinstance(reply, ProbeReply)
    assert reply.status.kernel == "6.18"
