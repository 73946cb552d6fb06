"""Ferry's resources as the plugin names them, and how a user may name one on the command line.

``watch``, ``cancel`` and friends take ``NAME`` (a ContainerMigration) or
``KIND/NAME`` where KIND is what kubectl accepts: the singular, the plural, a
short name, or the fully qualified form that ``-o name`` prints
(``containermigration.ferry.dev/web-x7k2p``), so the output of one command
feeds the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry_api import constants

from ferry_kubectl.errors import PluginError


@dataclass(frozen=True)
class Kind:
    """One of Ferry's resources, as the plugin names and fetches it."""

    singular: str
    plural: str
    namespaced: bool = True
    kind: str = ""
    short_names: tuple[str, ...] = ()
    #: The phases following it ends at, and those of them that are a success.
    final: frozenset[str] = field(default_factory=frozenset)
    success: frozenset[str] = field(default_factory=frozenset)

    def describe(self, name: str, namespace: str | None) -> str:
        """How messages name one object: ``containermigration "web" in namespace "apps"``."""
        where = f' in namespace "{namespace}"' if self.namespaced and namespace else ""
        return f'{self.singular} "{name}"{where}'

    def resource_name(self, name: str) -> str:
        """``containermigration.ferry.dev/web``, as kubectl names what it created."""
        return f"{self.singular}.{constants.GROUP}/{name}"

    def not_served(self) -> str:
        return (
            f"the API server does not serve {self.plural}.{constants.GROUP}: "
            "is Ferry installed (its CRDs)?"
        )

    def is_final(self, body: Mapping[str, Any]) -> bool:
        return (body.get("status") or {}).get("phase") in self.final

    def succeeded(self, body: Mapping[str, Any]) -> bool:
        return (body.get("status") or {}).get("phase") in self.success

    def names(self) -> tuple[str, ...]:
        """Every way kubectl lets a user name this kind."""
        qualified = (f"{self.singular}.{constants.GROUP}", f"{self.plural}.{constants.GROUP}")
        return (self.singular, self.plural, *self.short_names, *qualified)


_MOVED = frozenset({"Succeeded", "Failed", "Cancelled"})
_SUCCEEDED = frozenset({"Succeeded"})

MIGRATION = Kind(
    constants.CONTAINER_MIGRATION_SINGULAR,
    constants.CONTAINER_MIGRATION_PLURAL,
    kind=constants.CONTAINER_MIGRATION_KIND,
    short_names=constants.CONTAINER_MIGRATION_SHORT_NAMES,
    final=_MOVED,
    success=_SUCCEEDED,
)
POD_MIGRATION = Kind(
    constants.POD_MIGRATION_SINGULAR,
    constants.POD_MIGRATION_PLURAL,
    kind=constants.POD_MIGRATION_KIND,
    short_names=constants.POD_MIGRATION_SHORT_NAMES,
    final=_MOVED,
    success=_SUCCEEDED,
)
CHECKPOINT = Kind(
    constants.CONTAINER_CHECKPOINT_SINGULAR,
    constants.CONTAINER_CHECKPOINT_PLURAL,
    kind=constants.CONTAINER_CHECKPOINT_KIND,
    short_names=constants.CONTAINER_CHECKPOINT_SHORT_NAMES,
    # A scheduled one makes its checkpoints at its times: following it ends once it is set up.
    final=frozenset({"Ready", "Failed", "Scheduled"}),
    success=frozenset({"Ready", "Scheduled"}),
)
RESTORE = Kind(
    constants.CONTAINER_RESTORE_SINGULAR,
    constants.CONTAINER_RESTORE_PLURAL,
    kind=constants.CONTAINER_RESTORE_KIND,
    short_names=constants.CONTAINER_RESTORE_SHORT_NAMES,
    final=frozenset({"Succeeded", "Failed"}),
    success=_SUCCEEDED,
)
NODE_HELPER = Kind(
    constants.NODE_HELPER_SINGULAR,
    constants.NODE_HELPER_PLURAL,
    namespaced=False,
    kind=constants.NODE_HELPER_KIND,
    short_names=constants.NODE_HELPER_SHORT_NAMES,
)
EVACUATION = Kind(
    constants.NODE_EVACUATION_SINGULAR,
    constants.NODE_EVACUATION_PLURAL,
    namespaced=False,
    kind=constants.NODE_EVACUATION_KIND,
    short_names=constants.NODE_EVACUATION_SHORT_NAMES,
    final=frozenset({"Succeeded", "Incomplete"}),
    success=_SUCCEEDED,
)
POLICY = Kind(
    constants.MIGRATION_POLICY_SINGULAR,
    constants.MIGRATION_POLICY_PLURAL,
    namespaced=False,
    kind=constants.MIGRATION_POLICY_KIND,
    short_names=constants.MIGRATION_POLICY_SHORT_NAMES,
)

#: What ``watch`` follows and ``apply`` accepts: the kinds that run to an end.
FOLLOWED = (MIGRATION, POD_MIGRATION, CHECKPOINT, RESTORE)
#: What ``cancel`` stops: deleting one in flight rolls it back.
CANCELLABLE = (MIGRATION, POD_MIGRATION)
ALL = (*FOLLOWED, NODE_HELPER, EVACUATION, POLICY)
BY_KIND = {k.kind: k for k in ALL}


def kind_of(body: Mapping[str, Any]) -> Kind:
    """The Kind of a body by its ``kind`` field."""
    found = BY_KIND.get(str(body.get("kind")))
    if found is None:
        raise PluginError(f"not a Ferry resource: kind {body.get('kind')}")
    return found


def reference(text: str, *, among: tuple[Kind, ...], default: Kind = MIGRATION) -> tuple[Kind, str]:
    """``NAME`` (of ``default``'s kind) or ``KIND/NAME``, as kubectl reads them."""
    if "/" not in text:
        return default, text
    kind_name, name = text.split("/", 1)
    for kind in among:
        if kind_name.lower() in kind.names():
            if not name:
                raise PluginError(f"{text!r}: no name after the kind")
            return kind, name
    known = ", ".join(k.singular for k in among)
    raise PluginError(f"{text!r}: {kind_name} is not one of {known}")
