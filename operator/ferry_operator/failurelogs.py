"""Bringing the full logs of a failed step from the nodes to a ConfigMap beside the resource.

Users should not need a shell on a node to read why CRIU failed. The helpers
keep the logs of failed steps (``fetch-logs``); when a resource fails, the
operator collects them from every node the resource used, gzip-compressed,
and writes them into one ConfigMap in the resource's namespace, owned by the
resource (so garbage collection removes it with the resource; the operator
also deletes it itself on deletion, for clusters without a collector). Missing
logs or an unreachable helper only mean no ConfigMap: the failure is still
reported from the condition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ferry_api import constants
from ferry_api.diagnostics import (
    LOG_KEY_SUFFIX,
    LOGS_LABEL,
    MAX_CONFIGMAP_BYTES,
    FailureLogs,
    logs_config_map_name,
)
from ferry_wire import Peer, RemoteError
from ferry_wire.node import FetchLogsRequest, LogFile

from .helperclient import HelperClient
from .kube import Kube
from .policy import ApiError

log = logging.getLogger(__name__)

#: Longest wait for one helper's logs: a failure report must not hang on a dead node.
FETCH_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, kw_only=True)
class Owner:
    """The failed resource the logs belong to."""

    kind: str
    name: str
    namespace: str
    uid: str

    @property
    def config_map(self) -> str:
        return logs_config_map_name(self.kind.removeprefix("Container"), self.name)


async def _fetch(helpers: HelperClient, peer: Peer, uid: str, budget: int) -> tuple[LogFile, ...]:
    try:
        async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
            fetched = await helpers.call(peer, FetchLogsRequest(uid=uid, budget_bytes=budget))
    except (RemoteError, TimeoutError) as error:
        log.warning("no failure logs of %s from %s: %s", uid, peer.node, error)
        return ()
    return fetched.files


async def collect(
    *, kube: Kube, helpers: HelperClient, owner: Owner, peers: Sequence[Peer]
) -> FailureLogs | None:
    """Copy the kept logs of ``owner`` on ``peers`` into its ConfigMap; None if there are none."""
    unique = list({peer.node: peer for peer in peers}.values())
    if not unique:
        return None
    budget = MAX_CONFIGMAP_BYTES // len(unique)
    fetched = await asyncio.gather(*(_fetch(helpers, p, owner.uid, budget) for p in unique))
    # binaryData values go over the wire as they are: already base64, as the helper sent them.
    data: dict[str, str] = {}
    nodes: list[str] = []
    truncated = False
    for peer, files in zip(unique, fetched, strict=True):
        for file in files:
            data[f"{peer.node}.{file.name}{LOG_KEY_SUFFIX}"] = file.gzip_base64
            truncated = truncated or file.truncated
        if files:
            nodes.append(peer.node)
    if not data:
        return None
    try:
        await kube.put_config_map(
            owner.namespace,
            owner.config_map,
            labels={LOGS_LABEL: owner.kind.lower()},
            owner={
                "apiVersion": constants.API_VERSION,
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
            },
            binary_data=data,
        )
    except ApiError as error:
        log.warning("could not write %s/%s: %s", owner.namespace, owner.config_map, error)
        return None
    return FailureLogs(
        config_map=owner.config_map,
        nodes=tuple(nodes),
        files=tuple(sorted(key.removesuffix(LOG_KEY_SUFFIX) for key in data)),
        truncated=truncated,
    )
