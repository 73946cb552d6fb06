"""The plugin's only contact with the API server: client setup, reads, writes and watches.

Bodies travel as plain dicts (what the API server sent); the commands parse
them with the ``ferry_api`` models, so no field name is spelled here.
``apply`` is server-side apply under the field manager ``kubectl-ferry``, so
applying the same manifest twice changes nothing (and starts nothing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from ferry_api import constants
from kubernetes import client, watch
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3 import HTTPHeaderDict, HTTPResponse
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

from ferry_kubectl.errors import ApiError
from ferry_kubectl.follow import Event, Resync
from ferry_kubectl.kinds import Kind

Body = dict[str, Any]
Bodies = list[Body]

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
#: Who owns the fields the plugin sets (server-side apply, and creates).
FIELD_MANAGER = "kubectl-ferry"
APPLY_PATCH = "application/apply-patch+yaml"
#: The operator's Deployment, as the chart labels it.
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
OPERATOR_COMMAND = "ferry-operator"


def server_message(error: ApiException) -> str:
    """The API server's own explanation (its Status ``message``), or the HTTP reason."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(error.reason or f"HTTP {error.status}")


def immutable(kind: Kind, what: str) -> str:
    return (
        f"{what} exists with another spec, and a {kind.kind}'s spec is immutable (it is an "
        "action): apply the new one under another name, or cancel/delete the old one first"
    )


def translate(error: ApiException, *, action: str, what: str, not_found: str | None = None) -> str:
    """A sentence for ``error``, met while doing ``action`` (a verb) to ``what``."""
    if error.status == 404:
        return not_found or f"{what} not found"
    if error.status == 403:
        return f"forbidden: you may not {action} {what} ({server_message(error)})"
    if error.status == 401:
        return "unauthorized: the API server refused the credentials of your kubeconfig"
    if error.status == 409:
        if action == "apply":
            return f"cannot apply {what}: {server_message(error)}"
        return f"{what} already exists"
    if error.status == 422:
        return f"the API server refused {what}: {server_message(error)}"
    return f"cannot {action} {what}: {server_message(error)}"


@contextmanager
def api_errors(
    action: str, what: str, *, not_found: str | None = None, kind: Kind | None = None
) -> Iterator[None]:
    """Turn API, connection and kubeconfig failures inside the block into ``ApiError``."""
    try:
        yield
    except ApiException as error:
        message = server_message(error)
        spec_refused = error.status == 409 or "immutable" in message
        if kind is not None and error.status in (409, 422) and "spec" in message and spec_refused:
            raise ApiError(immutable(kind, what)) from error
        raise ApiError(translate(error, action=action, what=what, not_found=not_found)) from error
    except HTTPError as error:
        raise ApiError(f"cannot reach the API server: {error}") from error
    except ConfigException as error:
        raise ApiError(f"kubeconfig: {error}") from error


def config_file(kubeconfig: str | None) -> str | None:
    """``kubeconfig`` when it exists; None to let the client take $KUBECONFIG or the default.

    The client's own message for a missing file ("No configuration found") names none.
    """
    if kubeconfig is not None:
        if not Path(kubeconfig).is_file():
            raise ApiError(f"kubeconfig {kubeconfig}: no such file")
        return kubeconfig
    listed = os.environ.get("KUBECONFIG")
    paths = listed.split(os.pathsep) if listed else [DEFAULT_KUBECONFIG]
    if not any(Path(p).expanduser().is_file() for p in paths if p):
        raise ApiError(
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
            raise ApiError(f'context "{context}" is not in the kubeconfig')
    namespace = (chosen or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else None


class Impersonating:
    """The client's pool manager, adding kubectl's ``--as``/``--as-group`` headers.

    A default header holds one value, and the API server reads one group per
    ``Impersonate-Group`` header, so the headers are added here, on each request.
    """

    def __init__(self, inner: Any, user: str, groups: tuple[str, ...]) -> None:
        self.inner = inner
        self.user = user
        self.groups = groups

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        headers = HTTPHeaderDict(kwargs.pop("headers", None) or {})
        headers["Impersonate-User"] = self.user
        for group in self.groups:
            headers.add("Impersonate-Group", group)
        return self.inner.request(method, url, *args, headers=headers, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def api_client(
    kubeconfig: str | None,
    context: str | None,
    *,
    user: str | None = None,
    groups: tuple[str, ...] = (),
) -> client.ApiClient:
    """A client for the kubeconfig (``--kubeconfig``, else ``$KUBECONFIG``, else ~/.kube/config)."""
    with api_errors("read", "the kubeconfig"):
        # persist_config=False: a plugin never rewrites the user's kubeconfig.
        made = cast(
            client.ApiClient,
            kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=config_file(kubeconfig), context=context, persist_config=False
            ),
        )
    if user:
        rest = made.rest_client
        # A wrapper, whichever manager (a proxy's too) the client made.
        rest.pool_manager = Impersonating(rest.pool_manager, user, groups)  # type: ignore[assignment]
    return made


class Cluster:
    """Ferry's resources (and their logs' ConfigMaps) on one API server.

    NB: every call names group, version (and namespace) itself: the client's
    methods are typed, and a namespaced and a cluster-scoped call differ in arity.
    """

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def get(self, kind: Kind, name: str, namespace: str) -> Body:
        group, version, timeout = constants.GROUP, constants.VERSION, REQUEST_TIMEOUT_SECONDS
        with api_errors("get", kind.describe(name, namespace)):
            if kind.namespaced:
                body = self.custom.get_namespaced_custom_object(
                    group, version, namespace, kind.plural, name, _request_timeout=timeout
                )
            else:
                body = self.custom.get_cluster_custom_object(
                    group, version, kind.plural, name, _request_timeout=timeout
                )
        return cast(Body, body)

    def find(self, kind: Kind, name: str, namespace: str) -> Body | None:
        """The object, or None when there is none."""
        try:
            return self.get(kind, name, namespace)
        except ApiError as error:
            cause = error.__cause__
            if isinstance(cause, ApiException) and cause.status == 404:
                return None
            raise

    def list(self, kind: Kind, namespace: str | None, *, selector: str | None = None) -> Bodies:
        """Every object of ``kind`` in ``namespace`` (all namespaces when None)."""
        group, version, timeout = constants.GROUP, constants.VERSION, REQUEST_TIMEOUT_SECONDS
        where = ""
        if kind.namespaced:
            where = f' in namespace "{namespace}"' if namespace else " in any namespace"
        with api_errors("list", f"{kind.plural}{where}", not_found=kind.not_served()):
            if kind.namespaced and namespace:
                listed = self.custom.list_namespaced_custom_object(
                    group,
                    version,
                    namespace,
                    kind.plural,
                    label_selector=selector,
                    _request_timeout=timeout,
                )
            else:
                listed = self.custom.list_cluster_custom_object(
                    group, version, kind.plural, label_selector=selector, _request_timeout=timeout
                )
        return list(cast(Body, listed).get("items") or [])

    def create(self, kind: Kind, namespace: str, body: Body, *, dry_run: bool = False) -> Body:
        """POST ``body``; with ``dry_run`` the API server checks it (schema, CEL), keeps nothing."""
        group, version, timeout = constants.GROUP, constants.VERSION, REQUEST_TIMEOUT_SECONDS
        metadata = body.get("metadata", {})
        name = metadata.get("name") or f"{metadata.get('generateName', '')}*"
        dry = "All" if dry_run else None
        with api_errors("create", kind.describe(name, namespace), not_found=kind.not_served()):
            if kind.namespaced:
                created = self.custom.create_namespaced_custom_object(
                    group,
                    version,
                    namespace,
                    kind.plural,
                    body,
                    dry_run=dry,
                    field_manager=FIELD_MANAGER,
                    _request_timeout=timeout,
                )
            else:
                created = self.custom.create_cluster_custom_object(
                    group,
                    version,
                    kind.plural,
                    body,
                    dry_run=dry,
                    field_manager=FIELD_MANAGER,
                    _request_timeout=timeout,
                )
        return cast(Body, created)

    def apply(
        self, kind: Kind, namespace: str, body: Body, *, dry_run: bool = False
    ) -> tuple[Body, str]:
        """Server-side apply ``body``: the object, and ``created``, ``configured`` or ``unchanged``.

        No ``force``: a field another manager owns with another value is a
        conflict, told as such, never taken over. Only namespaced kinds.
        """
        name = str(body["metadata"]["name"])
        before = self.find(kind, name, namespace)
        with api_errors(
            "apply", kind.describe(name, namespace), not_found=kind.not_served(), kind=kind
        ):
            # NB: unparsed: the client reads a 200 only, and an apply that creates answers 201.
            response = self.custom.patch_namespaced_custom_object(
                constants.GROUP,
                constants.VERSION,
                namespace,
                kind.plural,
                name,
                body,
                dry_run="All" if dry_run else None,
                field_manager=FIELD_MANAGER,
                _content_type=APPLY_PATCH,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        after = cast(Body, json.loads(cast(HTTPResponse, response).data))
        return after, verdict(before, after)

    def delete(self, kind: Kind, name: str, namespace: str) -> None:
        """Ask for the object's deletion; its finalizer (the operator's cancel) may hold it."""
        with api_errors("delete", kind.describe(name, namespace)):
            self.custom.delete_namespaced_custom_object(
                constants.GROUP,
                constants.VERSION,
                namespace,
                kind.plural,
                name,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )

    def config_map(self, name: str, namespace: str) -> Body | None:
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
        return cast(Body, json.loads(cast(bytes, response.data)))

    def _plain(self, value: object) -> Any:
        return self.api.sanitize_for_serialization(value)  # type: ignore[no-untyped-call]

    def server_version(self) -> Body:
        """The API server's ``/version`` (gitVersion, platform...)."""
        with api_errors("read", "the API server's version"):
            info = client.VersionApi(self.api).get_code(_request_timeout=REQUEST_TIMEOUT_SECONDS)
        return cast(Body, self._plain(info))

    def operator_deployments(self) -> Bodies:
        """The Deployments that run Ferry's operator, in any namespace."""
        with api_errors("list", "deployments in any namespace"):
            listed = client.AppsV1Api(self.api).list_deployment_for_all_namespaces(
                label_selector=OPERATOR_SELECTOR, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        items: Bodies = cast(Body, self._plain(listed)).get("items") or []
        return [
            d
            for d in items
            if any(
                OPERATOR_COMMAND in (c.get("command") or [])
                for c in d["spec"]["template"]["spec"]["containers"]
            )
        ]

    def list_one(self, kind: Kind, name: str, namespace: str) -> tuple[Body | None, str]:
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
        found = cast(Body, listed)
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


def verdict(before: Body | None, after: Body) -> str:
    """What an apply did, in kubectl's words: ``created``, ``configured`` or ``unchanged``."""
    if before is None:
        return "created"

    def seen(body: Body) -> tuple[Any, ...]:
        metadata = body.get("metadata") or {}
        return (
            metadata.get("resourceVersion"),
            body.get("spec"),
            metadata.get("labels"),
            metadata.get("annotations"),
        )

    return "unchanged" if seen(before) == seen(after) else "configured"
