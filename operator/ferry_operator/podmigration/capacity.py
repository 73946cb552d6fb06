"""Whether a node has room for a pod: its allocatable CPU, memory and pod count against the
requests of the pods it runs, as the scheduler's NodeResourcesFit counts them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

_SUFFIXES = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def quantity(text: str | int | float) -> Decimal:
    """A Kubernetes quantity (``100m``, ``128Mi``, ``1.5``, ``2e3``) as a number."""
    found = _QUANTITY.match(str(text).strip())
    if found is None or found.group(2) not in _SUFFIXES:
        raise ValueError(f"not a quantity: {text!r}")
    return Decimal(found.group(1)) * _SUFFIXES[found.group(2)]


@dataclass(frozen=True)
class Resources:
    cpu: Decimal = Decimal(0)
    memory: Decimal = Decimal(0)
    pods: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.pods + other.pods)


def requests(pod: Mapping[str, Any], *, with_init: bool = True) -> Resources:
    """What ``pod`` asks of its node: its containers' requests summed, or its largest init
    container's when larger (``with_init``), plus its overhead; one pod."""
    spec = pod.get("spec") or {}

    def of(container: Mapping[str, Any]) -> Resources:
        asked = (container.get("resources") or {}).get("requests") or {}
        return Resources(quantity(asked.get("cpu", 0)), quantity(asked.get("memory", 0)))

    total = sum((of(c) for c in spec.get("containers") or []), Resources())
    if with_init:
        for init in spec.get("initContainers") or []:
            each = of(init)
            total = Resources(max(total.cpu, each.cpu), max(total.memory, each.memory))
    overhead = spec.get("overhead") or {}
    extra = Resources(quantity(overhead.get("cpu", 0)), quantity(overhead.get("memory", 0)))
    return total + extra + Resources(pods=1)


def used_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, Resources]:
    """The requests of the pods that hold their node's resources (not finished), by node."""
    used: dict[str, Resources] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        used[node] = used.get(node, Resources()) + requests(pod)
    return used


def no_room(node: Mapping[str, Any], pod: Mapping[str, Any], used: Resources | None) -> str | None:
    """Why ``node`` has no room for the replacement of ``pod`` (None: it has)."""
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    name = node["metadata"]["name"]
    wanted = requests(pod, with_init=False)  # the replacement has no init containers
    have = used or Resources()
    for what, limit, taken, asked in (
        ("cpu", allocatable.get("cpu"), have.cpu, wanted.cpu),
        ("memory", allocatable.get("memory"), have.memory, wanted.memory),
        ("pods", allocatable.get("pods"), Decimal(have.pods), Decimal(1)),
    ):
        if limit is not None and asked and taken + asked > quantity(limit):
            return (
                f"{name} has no room: the pod requests {what} {asked.normalize()} and "
                f"{taken.normalize()} of {quantity(limit).normalize()} allocatable are taken"
            )
    return None
