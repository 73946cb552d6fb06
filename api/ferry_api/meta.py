"""The part of ``metadata`` the operator reads, parsed at the boundary like the rest.

Only what handlers use is modelled; everything else in ``metadata`` (managed
fields, owner references, kopf's annotations) is ignored on parse. The CRDs do
not describe ``metadata``: the API server owns its schema.
"""

from __future__ import annotations

from pydantic import AwareDatetime, Field

from ferry_api.base import StatusModel


class ObjectMeta(StatusModel):
    """Identity and lifecycle of a resource, as the API server reports them."""

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: tuple[str, ...] = ()
    creation_timestamp: AwareDatetime | None = None
    deletion_timestamp: AwareDatetime | None = None
