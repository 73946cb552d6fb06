"""Deleting a checkpoint image from its registry (OCI distribution API, basic auth).

podman can push and pull but not delete from a registry; a deleted
ContainerCheckpoint must not leave its image behind, so the helper asks the
registry itself: ``DELETE /v2/<repository>/manifests/<digest>``. It trusts what
podman trusts for that registry (``/etc/containers/certs.d/<host>/``) and uses
the credentials of podman's ``--authfile``.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

CERTS_D = Path("/etc/containers/certs.d")
HTTP_NOT_FOUND = 404


class RegistryError(RuntimeError):
    pass


def split_reference(reference: str) -> tuple[str, str]:
    """``host[:port]/repo/path:tag`` -> (``host[:port]``, ``repo/path``)."""
    host, _, rest = reference.partition("/")
    if not rest or ("." not in host and ":" not in host):
        raise RegistryError(f"{reference!r} names no registry host")
    repository = rest.split("@", 1)[0].rsplit(":", 1)[0] if ":" in rest else rest
    return host, repository


def pinned(reference: str, digest: str) -> str:
    """``host[:port]/repo/path[:tag]`` pinned to ``digest``: ``host[:port]/repo/path@digest``.

    The tag goes (a reference with both is not pulled by every version of
    containers/image): what is pulled is the manifest of that digest and
    nothing else.
    """
    name = reference.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"{name}@{digest}"


def _auth(host: str, authfile: Path | None) -> str | None:
    if authfile is None or not authfile.exists():
        return None
    auths = json.loads(authfile.read_text()).get("auths", {})
    entry = auths.get(host) or {}
    token = entry.get("auth")
    return f"Basic {token}" if isinstance(token, str) else None


def _context(host: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for ca in sorted((CERTS_D / host).glob("*.crt")):
        context.load_verify_locations(cafile=str(ca))
    return context


def delete_manifest(reference: str, digest: str, *, authfile: Path | None) -> bool:
    """Delete the manifest ``digest`` of ``reference``'s repository; False if already gone."""
    host, repository = split_reference(reference)
    headers = {}
    if (auth := _auth(host, authfile)) is not None:
        headers["Authorization"] = auth
    request = urllib.request.Request(
        f"https://{host}/v2/{repository}/manifests/{digest}", method="DELETE", headers=headers
    )
    try:
        with urllib.request.urlopen(request, context=_context(host), timeout=30):  # noqa: S310
            return True
    except urllib.error.HTTPError as error:
        if error.code == HTTP_NOT_FOUND:
            return False
        raise RegistryError(f"{host} refused to delete {repository}@{digest}: {error}") from None
    except OSError as error:
        raise RegistryError(f"{host} could not be reached: {error}") from None
