"""Base classes of the API models, and the one way a raw body becomes a model.

Specs are written by users and checked by the API server against the CRD that
``crdgen`` derives from these same classes, so the Python side forbids unknown
fields: a field the schema does not know is a bug on our side, not user input.
Statuses and metadata are read back from the API server, where other writers
(kopf's bookkeeping, an older operator) may have left fields: they ignore
extras. Everything is frozen: a parsed resource is a value, and a handler that
wants another status builds a new one (``model_copy(update=...)``).

Python names are snake_case and the wire is camelCase (``alias_generator``);
``populate_by_name`` lets Python code and tests use either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

ModelT = TypeVar("ModelT", bound=BaseModel)


class SpecModel(BaseModel):
    """A part of a spec: what a user declares."""

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, alias_generator=to_camel, extra="forbid"
    )


class StatusModel(BaseModel):
    """A part of a status or of metadata: what the cluster observed."""

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, alias_generator=to_camel, extra="ignore"
    )


def to_wire(model: BaseModel) -> dict[str, Any]:
    """The JSON body of ``model`` as the API server stores it: camelCase, no nulls.

    Unset optional fields are left out rather than sent as ``null``, so a merge
    patch built from this never erases a field another writer owns.
    """
    wire: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return wire


class InvalidResourceError(ValueError):
    """A resource body that does not fit its model; ``problems`` names each bad field."""

    def __init__(self, *, kind: str, name: str, problems: tuple[tuple[str, str], ...]) -> None:
        self.kind = kind
        self.name = name
        self.problems = problems
        listed = "; ".join(f"{path}: {message}" for path, message in problems)
        super().__init__(f"{kind} {name} is invalid: {listed}")


def _path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "(body)"


def parse_body(model: type[ModelT], body: Mapping[str, Any], *, kind: str) -> ModelT:
    """Validate a raw resource body (a dict from kopf or the client) into ``model``.

    Raises :class:`InvalidResourceError` (a ``ValueError``) whose message lists
    every wrong field by its wire path, e.g. ``spec.source.container: Field required``.
    """
    metadata = body.get("metadata")
    name = "(unnamed)"
    if isinstance(metadata, Mapping):
        namespace = metadata.get("namespace")
        name = str(metadata.get("name", name))
        if namespace:
            name = f"{namespace}/{name}"
    found_kind = body.get("kind")
    if found_kind is not None and found_kind != kind:
        raise InvalidResourceError(
            kind=kind, name=name, problems=(("kind", f"expected {kind}, got {found_kind}"),)
        )
    try:
        return model.model_validate(dict(body))
    except ValidationError as error:
        problems = tuple((_path(tuple(e["loc"])), e["msg"]) for e in error.errors())
        raise InvalidResourceError(kind=kind, name=name, problems=problems) from error
