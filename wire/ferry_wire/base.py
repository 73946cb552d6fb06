"""Base classes of every message: frozen, camelCase on the wire, each request bound to its reply.

A request names its operation and the type of its reply, so a client's
``call(peer, CheckpointRequest(...))`` is typed ``CheckpointReply`` and the
helper's server finds the request model by the operation it was asked for.
Requests forbid unknown fields (a helper refuses what it does not understand:
``BadRequest``); replies ignore them, so an operator still reads a newer
helper's answer.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ferry_wire.operations import Operation

#: A Kubernetes object UID: migrations, checkpoints and restores are keyed by theirs.
UID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
#: A full container ID (podman and docker alike).
CONTAINER_ID_PATTERN = r"^[0-9a-f]{64}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class WireModel(BaseModel):
    """A value on the wire: frozen, snake_case in Python and camelCase in JSON."""

    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid"
    )

    def to_json(self) -> dict[str, Any]:
        """The JSON object this model is on the wire."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return data


class Reply(WireModel):
    """What an operation answers (the ``data`` of its ``result`` event)."""

    model_config = ConfigDict(extra="ignore")


ReplyT = TypeVar("ReplyT", bound=Reply)


class Request(WireModel, Generic[ReplyT]):
    """What an operation is asked with (the first line of its standard input)."""

    #: The operation this request is for.
    operation: ClassVar[Operation]
    #: The model of the operation's reply.
    reply: ClassVar[type[Reply]]

    def parse_reply(self, data: dict[str, Any]) -> ReplyT:
        """The reply to this request, from a ``result`` event's data."""
        parsed: ReplyT = self.reply.model_validate(data)  # type: ignore[assignment]
        return parsed


class Peer(WireModel):
    """Where and how to reach a node's helper, its host key pinned."""

    node: str
    address: str
    port: int = Field(gt=0, lt=65536)
    #: The helper's SSH host key (one OpenSSH public key line), from its NodeHelper.
    host_key: str


class Empty(Reply):
    """A reply with nothing to say but that the operation succeeded."""
