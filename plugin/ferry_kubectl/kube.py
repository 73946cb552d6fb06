"""The plugin's only contact with the API server: client setup, reads, creates and watches.

Bodies travel as plain dicts (what the API server sent); the commands parse
them with the ``ferry_api`` models, so no field name is spelled here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ferry_api import constants
from kubernetes import client, watch
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

from ferry_kubectl.errors import PluginError
from ferry_kubectl.follow import Event, Resync

#: Longest wait for one request that is not a watch.
REQUEST_TIMEOUT_SECONDS = 30
#: The API server ends each watch after this long; the plugin then watches again
#: from the last resourceVersion it saw.
WATCH_SECONDS = 60
#: A watch connection silent for longer than this (a bookmark or an event comes
#: well before) is taken as dead.
WATCH_READ_TIMEOUT_SECONDS = WATCH_SECONDS + 15
DEFAULT_KUBECONFIG = "~/.kube/config"
#: What the API server answers for a resourceVersion it no longer keeps.
HTTP_GONE = 410


def server_message(error: ApiException) -> str:
    """The API server's own explanation (its Status ``message``), or the HTTP reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(error.reason or f"HTTP {error.status}")


def translate(error: ApiException, *, action: str, what: str, not_found: str | None = None) -> str:
    """A sentence for ``error``, met while doing ``action`` (a verb) to ``what``."""
    if error.status == 404:
        return not_found or f"{what} not found"
    if error.status == 403:
        return f"forbidden: you may not {action} {what} ({server_message(error)})"
    if error.status == 401:
        return "unauthorized: the API server refused the credentials of your kubeconfig"
    if error.status == 409:
        return f"{what} already exists"
    if error.status == 422:
        return f"the API server refused {what}: {server_message(error)}"
    return f"cannot {action} {what}: {server_message(error)}"


@contextmanager
def api_errors(action: str, what: str, *, not_found: str | None = None) -> Iterator[None]:
    """Turn API, connection and kubeconfig failures inside the block into ``PluginError``."""
    try:
        yield
    except ApiException as error:
        raise PluginError(
            translate(error, action=action, what=what, not_found=not_found)
        ) from error
    except HTTPError as error:
        raise PluginError(f"cannot reach the API server: {error}") from error
    except ConfigException as error:
        raise PluginError(f"kubeconfig: {error}") from error


@dataclass(frozen=True)
class Kind:
    """One of Ferry's resources, as the plugin names and fetches it."""

    singular: str
    plural: str
    namespaced: bool = True

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


MIGRATION = Kind(constants.CONTAINER_MIGRATION_SINGULAR, constants.CONTAINER_MIGRATION_PLURAL)
CHECKPOINT = Kind(constants.CONTAINER_CHECKPOINT_SINGULAR, constants.CONTAINER_CHECKPOINT_PLURAL)
RESTORE = Kind(constants.CONTAINER_RESTORE_SINGULAR, constants.CONTAINER_RESTORE_PLURAL)
POD_MIGRATION = Kind(constants.POD_MIGRATION_SINGULAR, constants.POD_MIGRATION_PLURAL)
NODE_HELPER = Kind(constants.NODE_HELPER_SINGULAR, constants.NODE_HELPER_PLURAL, namespaced=False)


def config_file(kubeconfig: str | None) -> str | None:
    """``kubeconfig`` when it exists; None to let the client take $KUBECONFIG or the default.

    The client's own message for a missing file ("No configuration found") names none.
    """
    if kubeconfig is not None:
        if not Path(kubeconfig).is_file():
            raise PluginError(f"kubeconfig {kubeconfig}: no such file")
        return kubeconfig
    listed = os.environ.get("KUBECONFIG")
    paths = listed.split(os.pathsep) if listed else [DEFAULT_KUBECONFIG]
    if not any(Path(p).expanduser().is_file() for p in paths if p):
        raise PluginError(
            f"no kubeconfig at {listed or DEFAULT_KUBECONFIG}: "
            "give --kubeconfig, set KUBECONFIG, or write ~/.kube/config"
        )
    return None


def context_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    """The namespace the kubeconfig's (current or named) context sets, if any."""
    with api_errors("read", "the kubeconfig"):
        contexts, current = kube_config.list_kube_config_contexts(
            config_file=config_file(kubeconfig)
        )  # type: ignore[no-untyped-call]
    chosen = current
    if context is not None:
        chosen = next((c for c in contexts if c.get("name") == context), None)
        if chosen is None:
            raise PluginError(f'context "{context}" is not in the kubeconfig')
    namespace = (chosen or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else None


def api_client(kubeconfig: str | None, context: str | None) -> client.ApiClient:
    """A client for the kubeconfig (``--kubeconfig``, else ``$KUBECONFIG``, else ~/.kube/config)."""
    with api_errors("read", "the kubeconfig"):
        # persist_config=False: a plugin never rewrites the user's kubeconfig.
        made = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=config_file(kubeconfig), context=context, persist_config=False
        )
    return cast(client.ApiClient, made)


class Cluster:
    """Ferry's resources (and their logs' ConfigMaps) on one API server."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def get(self, kind: Kind, name: str, namespace: str) -> dict[str, Any]:
        with api_errors("get", kind.describe(name, namespace)):
            if kind.namespaced:
                body = self.custom.get_namespaced_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    namespace,
                    kind.plural,
                    name,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            else:
                body = self.custom.get_cluster_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    kind.plural,
                    name,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
        return cast(dict[str, Any], body)

    def list(self, kind: Kind, namespace: str | None) -> list[dict[str, Any]]:
        """Every object of ``kind`` in ``namespace`` (all namespaces when None)."""
        where = ""
        if kind.namespaced:
            where = f' in namespace "{namespace}"' if namespace else " in any namespace"
        with api_errors("list", f"{kind.plural}{where}", not_found=kind.not_served()):
            if kind.namespaced and namespace is not None:
                listed = self.custom.list_namespaced_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    namespace,
                    kind.plural,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            else:
                listed = self.custom.list_cluster_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    kind.plural,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
        return list(cast(dict[str, Any], listed).get("items") or [])

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body.get("metadata", {})
        name = metadata.get("name") or f"{metadata.get('generateName', '')}*"
        with api_errors("create", kind.describe(name, namespace), not_found=kind.not_served()):
            if not kind.namespaced:
                created = self.custom.create_cluster_custom_object(
                    constants.GROUP,
                    constants.VERSION,
                    kind.plural,
                    body,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
                return cast(dict[str, Any], created)
            created = self.custom.create_namespaced_custom_object(
                constants.GROUP,
                constants.VERSION,
                namespace,
                kind.plural,
                body,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        return cast(dict[str, Any], created)

    def config_map(self, name: str, namespace: str) -> dict[str, Any] | None:
        """The ConfigMap as the API server sent it (binaryData still base64), None if absent."""
        with api_errors("get", f'configmap "{name}" in namespace "{namespace}"'):
            try:
                response = self.core.read_namespaced_config_map(
                    name,
                    namespace,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
        # Unparsed, so binaryData stays the base64 text the API server sent.
        return cast(dict[str, Any], json.loads(cast(bytes, response.data)))

    def list_one(self, kind: Kind, name: str, namespace: str) -> tuple[dict[str, Any] | None, str]:
        """The object (None when absent) and the resourceVersion to watch it from."""
        with api_errors("list", kind.describe(name, namespace), not_found=kind.not_served()):
            listed = self.custom.list_namespaced_custom_object(
                constants.GROUP,
                constants.VERSION,
                namespace,
                kind.plural,
                field_selector=f"metadata.name={name}",
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        found = cast(dict[str, Any], listed)
        items = found.get("items") or []
        return (items[0] if items else None), str(found["metadata"]["resourceVersion"])

    def watch_one(
        self, kind: Kind, name: str, namespace: str, resource_version: str
    ) -> Iterator[Event]:
        """Changes of one object from ``resource_version`` on, until the server ends the watch.

        Raises ``Resync`` when the watch cannot go on from there (the version
        expired, or the connection died): list again, then watch.
        """
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            self.custom.list_namespaced_custom_object,
            constants.GROUP,
            constants.VERSION,
            namespace,
            kind.plural,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=(REQUEST_TIMEOUT_SECONDS, WATCH_READ_TIMEOUT_SECONDS),
        )
        with api_errors("watch", kind.describe(name, namespace)):
            try:
                for event in stream:
                    body = event["raw_object"]
                    version = body.get("metadata", {}).get("resourceVersion", resource_version)
                    yield Event(type=event["type"], body=body, resource_version=str(version))
            except ApiException as error:
                if error.status == HTTP_GONE:
                    raise Resync("the resourceVersion expired") from error
                raise
            except (ReadTimeoutError, ProtocolError) as error:
                raise Resync("the watch connection died") from error
