"""The replacement pod: the source's spec on the target node, its containers from checkpoint images.

It keeps everything of the source's spec that decides how it runs (security
context, service account, resources, environment, probes), so the restored
processes run with the limits and identity of the spec, not of the archive.
What changes:

- ``nodeName`` is the target (validation checked it fits; no scheduler race);
- each container's image is its checkpoint image, never pulled;
- init containers are dropped: they ran before the checkpoint and their effect
  is in the restored processes;
- the labels its owner selects on are held back until it runs and is ready
  (kept in an annotation, :func:`adoption_labels`): a ReplicaSet adopting a pod
  that is not ready yet
  would count one too many and might delete the wrong one.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ferry_api import constants

#: The characters Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
#: What the pod-deletion-cost annotation says of the source once the replacement is
#: adopted: the ReplicaSet, scaling back to its count, deletes the source first.
DELETE_FIRST = "-2147483648"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
#: On the replacement until it is adopted: the labels it takes then (JSON), so a
#: restarted operator knows them even when the source is gone.
ADOPT_LABELS = f"{constants.GROUP}/adopt-labels"
#: containerd's words when it cannot pull the image a checkpoint was made on, and what to do.
BASE_IMAGE_PULL = "failed to pull checkpoint base image"
BASE_IMAGE_REMEDY = (
    "the target's containerd pulls the image the pod ran, by its digest, before it "
    "restores: run the pod from an image in a registry the target can pull from"
)


def replacement_name(source: Mapping[str, Any], uid: str) -> str:
    """A name that is the same every time for one migration (a repeated create finds
    its own pod), shaped like the names the source's owner generates."""
    meta = source["metadata"]
    base = meta.get("generateName") or f"{meta['name']}-"
    digest = hashlib.sha256(uid.encode()).digest()
    suffix = "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:5])
    return f"{base[: 253 - len(suffix)]}{suffix}"


def held_back(labels: Mapping[str, str], selector: Mapping[str, str]) -> dict[str, str]:
    """The labels of ``labels`` that ``selector`` (an owner's matchLabels) selects on."""
    return {k: v for k, v in labels.items() if k in selector}


def replacement_pod(
    source: Mapping[str, Any],
    *,
    uid: str,
    migration: str,
    target: str,
    images: Mapping[str, str],
    selector: Mapping[str, str],
) -> dict[str, Any]:
    """The body of the replacement pod (see the module's docstring)."""
    meta = source["metadata"]
    spec = copy.deepcopy(dict(source["spec"]))
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in selector}
    labels[constants.POD_MIGRATION_UID_LABEL] = uid
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != DELETION_COST}
    annotations[constants.MIGRATED_FROM_ANNOTATION] = f"{meta['namespace']}/{meta['name']}"
    annotations[f"{constants.GROUP}/pod-migration"] = migration
    annotations[ADOPT_LABELS] = json.dumps(held_back(meta.get("labels") or {}, selector))
    spec["nodeName"] = target
    spec.pop("initContainers", None)
    spec.pop("ephemeralContainers", None)
    spec.pop("schedulingGates", None)
    for container in spec["containers"]:
        container["image"] = images[container["name"]]
        container["imagePullPolicy"] = "Never"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": replacement_name(source, uid),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


def adoption_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    """The labels the replacement ``pod`` takes once it runs (see :data:`ADOPT_LABELS`)."""
    text = (pod["metadata"].get("annotations") or {}).get(ADOPT_LABELS) or "{}"
    labels = json.loads(text)
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def ready(pod: Mapping[str, Any] | None) -> bool:
    """Whether every container of ``pod`` runs and the pod is Ready."""
    if pod is None:
        return False
    status = pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return status.get("phase") == "Running" and conditions.get("Ready") == "True"


def broken(pod: Mapping[str, Any] | None) -> str | None:
    """Why the replacement will not become ready by itself (None: it may still)."""
    if pod is None:
        return "the replacement pod is gone"
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"the replacement pod is {status['phase']}: {status.get('message', '')}".rstrip(": ")
    for state in status.get("containerStatuses") or []:
        waiting = (state.get("state") or {}).get("waiting") or {}
        terminated = (state.get("state") or {}).get("terminated") or {}
        last = (state.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") in (
            "ErrImageNeverPull",
            "CreateContainerError",
            "CrashLoopBackOff",
            "RunContainerError",
        ):
            message = waiting.get("message", "")
            text = f"container {state['name']}: {waiting['reason']}: {message}"
            if BASE_IMAGE_PULL in message:
                text += f" ({BASE_IMAGE_REMEDY})"
            return text
        if terminated or last or state.get("restartCount", 0) > 0:
            ended = terminated or last
            return (
                f"container {state['name']} ended ({ended.get('reason', 'restarted')}, exit "
                f"{ended.get('exitCode')}): {ended.get('message', '')}"
            ).rstrip(": ")
    return None
