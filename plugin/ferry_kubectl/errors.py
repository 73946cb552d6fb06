"""The one way a failure reaches the user: a ``PluginError`` told as one ``error: `` line.

API errors are translated here, naming the resource the user asked about, so
that no command shows a Python traceback or a raw HTTP reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError


class PluginError(Exception):
    """A failure the user can act on; its message is printed after ``error: ``."""


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
