"""CRIU's statistics as podman reports them with ``--print-stats``.

``podman container checkpoint --print-stats`` and ``podman container restore
--print-stats`` print one JSON document on stdout instead of the container's
name (podman 5.4.2, crun 1.21, CRIU 4.2.1)::

    {
        "podman_checkpoint_duration": 366680,
        "container_statistics": [
            {
                "Id": "9066fe4d...",
                "runtime_checkpoint_duration": 195989,
                "criu_statistics": {
                    "freezing_time": 100944, "frozen_time": 51628,
                    "memdump_time": 724, "memwrite_time": 154,
                    "pages_scanned": 51, "pages_written": 35
                }
            }
        ]
    }

A restore has ``podman_restore_duration``, ``runtime_restore_duration`` and the
counters ``pages_compared``, ``pages_skipped_cow``, ``forking_time``,
``restore_time``, ``pages_restored``. All durations are microseconds. Counters
that are zero are left out (go-criu's ``omitempty``), so every field is
optional, and a failed run still prints the document, with
``"container_statistics": null``. Counters this module does not name (CRIU adds
some now and then) are kept as extra fields, so nothing CRIU reports is lost.

Statistics are a report, not a result: a checkpoint that succeeded is not failed
because its statistics could not be read, so parsing is lenient and says so in
the log instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ferry_api import migration
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import criu_images

logger = logging.getLogger(__name__)


class CriuStatistics(BaseModel):
    """What CRIU (and podman around it) measured for one dump or restore; microseconds."""

    model_config = ConfigDict(frozen=True, extra="allow")

    # NB: typing the extras makes pydantic validate unknown counters as ints too.
    __pydantic_extra__: dict[str, int] = Field(init=False)

    # Dump.
    freezing_time: int | None = None
    frozen_time: int | None = None
    memdump_time: int | None = None
    memwrite_time: int | None = None
    pages_scanned: int | None = None
    pages_skipped_parent: int | None = None
    pages_written: int | None = None
    pages_lazy: int | None = None
    irmap_resolve: int | None = None
    # Restore.
    pages_compared: int | None = None
    pages_skipped_cow: int | None = None
    pages_restored: int | None = None
    forking_time: int | None = None
    restore_time: int | None = None
    # Around CRIU: the whole podman command and the OCI runtime's part of it.
    podman_duration: int | None = None
    runtime_duration: int | None = None

    def as_dict(self) -> dict[str, int]:
        """The counters that were reported, by CRIU's (snake_case) names."""
        known = self.model_dump(exclude_none=True)
        return {key: int(value) for key, value in known.items()}

    def is_empty(self) -> bool:
        return not self.as_dict()

    def reported(self) -> migration.CriuStatistics:
        """The statistics as replies and statuses carry them (camelCase, extras kept)."""
        return migration.CriuStatistics.model_validate(self.as_dict())


def _as_int_counters(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}


def _load_document(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``; tolerates lines around it (a warning, a name)."""
    text = text.strip()
    if not text:
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            document = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            return None
    return document if isinstance(document, dict) else None


def parse_print_stats(
    text: str, *, container_id: str | None = None
) -> tuple[str | None, CriuStatistics]:
    """The container ID and statistics in podman's ``--print-stats`` output.

    With ``container_id`` (a full ID or a prefix) the matching entry is used, else
    the first. Output that cannot be read gives ``(None, CriuStatistics())``.
    """
    document = _load_document(text)
    if document is None:
        if text.strip():
            logger.warning("podman --print-stats output is not JSON: %.200s", text)
        return None, CriuStatistics()
    entries = [e for e in document.get("container_statistics") or [] if isinstance(e, dict)]
    entry: dict[str, Any] = {}
    if container_id:
        entry = next((e for e in entries if str(e.get("Id", "")).startswith(container_id)), {})
    if not entry and entries:
        entry = entries[0]
    podman_duration = document.get(
        "podman_checkpoint_duration", document.get("podman_restore_duration")
    )
    found_id = entry.get("Id")
    statistics = statistics_of_entry(entry, podman_duration=podman_duration)
    return (found_id if isinstance(found_id, str) and found_id else None), statistics


def statistics_of_entry(entry: dict[str, Any], *, podman_duration: Any = None) -> CriuStatistics:
    """The statistics of one container's entry: ``--print-stats``' or the REST API's report."""
    counters = _as_int_counters(entry.get("criu_statistics"))
    runtime_duration = entry.get(
        "runtime_checkpoint_duration", entry.get("runtime_restore_duration")
    )
    for key, value in (
        ("podman_duration", podman_duration),
        ("runtime_duration", runtime_duration),
    ):
        if isinstance(value, int) and not isinstance(value, bool):
            counters[key] = value
    try:
        return CriuStatistics.model_validate(counters)
    except ValidationError as error:  # an int counter validates; this is belt and braces
        logger.warning("unexpected CRIU statistics %s: %s", counters, error)
        return CriuStatistics()


# Field numbers of CRIU's images/stats.proto: stats_entry {dump = 1; restore = 2}.
_DUMP_FIELDS = {
    1: "freezing_time",
    2: "frozen_time",
    3: "memdump_time",
    4: "memwrite_time",
    5: "pages_scanned",
    6: "pages_skipped_parent",
    7: "pages_written",
    8: "irmap_resolve",
    9: "pages_lazy",
    10: "page_pipes",
    11: "page_pipe_bufs",
    12: "shpages_scanned",
    13: "shpages_skipped_parent",
    14: "shpages_written",
}
_RESTORE_FIELDS = {
    1: "pages_compared",
    2: "pages_skipped_cow",
    3: "forking_time",
    4: "restore_time",
    5: "pages_restored",
}


def parse_stats_image(image: bytes) -> CriuStatistics:
    """The statistics in CRIU's own ``stats-dump`` (or ``stats-restore``) image file.

    Where no ``--print-stats`` document exists (podman's REST API with export,
    docker) this is what CRIU measured. Zero counters are kept out, as go-criu
    does; an unreadable image gives empty statistics (logged).
    """
    counters: dict[str, int] = {}
    try:
        for entry in criu_images.entries(image):
            for number, part in criu_images.fields(entry):
                names = {1: _DUMP_FIELDS, 2: _RESTORE_FIELDS}.get(number)
                if names is None or not isinstance(part, bytes):
                    continue
                for field, value in criu_images.fields(part):
                    if field in names and isinstance(value, int) and value:
                        counters[names[field]] = value
    except ValueError as error:
        logger.warning("CRIU's stats image cannot be read: %s", error)
        return CriuStatistics()
    return CriuStatistics.model_validate(counters)
