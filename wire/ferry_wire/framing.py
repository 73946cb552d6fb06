"""How messages travel over one SSH exec channel: a request line in, JSON-line events out.

Standard input: one line of JSON (the request), then, for the receiving
operations, the raw bytes of an archive. Standard output: any number of
``progress`` events, then exactly one ``result`` (the reply) or ``error`` (a
reason and a message); the exit status is 0 after a result, 1 after an error.
``pages-out`` streams the other way: a ``progress`` event listing the files,
their raw bytes, then its ``result``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import asyncssh
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ferry_wire.base import Reply, Request, WireModel
from ferry_wire.errors import Reason, RemoteError, reason_of

ModelT = TypeVar("ModelT", bound=BaseModel)
ReplyT = TypeVar("ReplyT", bound=Reply)


class Event(BaseModel):
    """One line of an operation's standard output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["progress", "result", "error"]
    data: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""
    message: str = ""


def encode(event: Event) -> bytes:
    return (json.dumps(event.model_dump(mode="json"), separators=(",", ":")) + "\n").encode()


def decode(line: bytes | str) -> Event:
    return Event.model_validate_json(line)


def progress(data: WireModel) -> Event:
    return Event(type="progress", data=data.to_json())


def result(reply: Reply) -> Event:
    return Event(type="result", data=reply.to_json())


def error(failure: RemoteError) -> Event:
    return Event(type="error", reason=failure.reason.value, message=failure.message)


def request_line(request: WireModel) -> bytes:
    """The first line of an operation's standard input."""
    return json.dumps(request.to_json(), separators=(",", ":")).encode() + b"\n"


def problems(error: ValidationError) -> str:
    """A validation error, field by field, without the input (a request may hold a key)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(request)'}: {e['msg']}"
        for e in error.errors(include_input=False, include_url=False)
    )


def parse(model: type[ModelT], data: Any, *, what: str = "request") -> ModelT:
    """``data`` as ``model``; a ``BadRequest`` naming each wrong field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as invalid:
        raise RemoteError(Reason.BAD_REQUEST, f"{what}: {problems(invalid)}") from None


def parse_line(model: type[ModelT], line: bytes) -> ModelT:
    """The request line, parsed: ``BadRequest`` unless it is one JSON object fitting ``model``."""
    try:
        data = json.loads(line or b"{}")
    except ValueError:
        raise RemoteError(Reason.BAD_REQUEST, "the first line must be a JSON object") from None
    if not isinstance(data, dict):
        raise RemoteError(Reason.BAD_REQUEST, "the first line must be a JSON object")
    return parse(model, data)


def raise_error(event: Event) -> None:
    """Raise the RemoteError an ``error`` event carries (an unknown reason says so)."""
    reason = reason_of(event.reason)
    message = event.message
    if reason.value != event.reason:
        message = f"{event.reason or 'no reason'}: {message}"
    raise RemoteError(reason, message)


Progress = Callable[[dict[str, Any]], Awaitable[None]]


async def read_reply(
    reader: asyncssh.SSHReader[bytes],
    request: Request[ReplyT],
    *,
    on_progress: Progress | None = None,
    node: str = "the helper",
) -> ReplyT:
    """Read events until the final one: the reply to ``request``, or its RemoteError."""
    while True:
        line = await reader.readline()
        if not line:
            raise RemoteError(
                Reason.HELPER_DISCONNECTED,
                f"{node} closed the stream of {request.operation.value} before its answer",
            )
        event = decode(line)
        if event.type == "progress":
            if on_progress is not None:
                await on_progress(event.data)
            continue
        if event.type == "error":
            raise_error(event)
        try:
            return request.parse_reply(event.data)
        except ValidationError as invalid:
            raise RemoteError(
                Reason.HELPER_ERROR,
                f"{node} answered {request.operation.value} with a reply this side cannot "
                f"read: {problems(invalid)}",
            ) from None
