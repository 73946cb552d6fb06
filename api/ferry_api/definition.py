"""What a CRD needs beyond the schema: names, scope and printer columns.

Each resource module declares one ``ResourceDefinition`` next to its models, so
everything a user sees of a kind (fields, ``kubectl get`` columns, short names)
is defined in one place and ``crdgen`` only translates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel


@dataclass(frozen=True, kw_only=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry (``kubectl get`` column)."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    description: str
    priority: int = 0
    format: str | None = None


@dataclass(frozen=True, kw_only=True)
class ResourceDefinition:
    """A custom resource kind: its names, scope, models and columns."""

    kind: str
    list_kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    description: str
    spec: type[BaseModel] | None
    status: type[BaseModel]
    printer_columns: tuple[PrinterColumn, ...]
