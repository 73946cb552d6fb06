"""Kubeconfig files: the admin's (client certificate) and a ServiceAccount's (token).

A ServiceAccount kubeconfig carries a token minted by the TokenRequest API, so a
process using it has exactly the rights RBAC grants that account: the operator
runs this way in the tests, which is what makes the chart's RBAC real.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def render(
    *, cluster: str, server: str, ca_cert: Path, user: dict[str, str], namespace: str = "default"
) -> dict[str, Any]:
    """A one-cluster, one-user, one-context kubeconfig as a dict."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [{"name": f"{cluster}-user", "user": user}],
        "contexts": [
            {
                "name": cluster,
                "context": {"cluster": cluster, "user": f"{cluster}-user", "namespace": namespace},
            }
        ],
        "current-context": cluster,
    }


def write(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def admin_user(cert: Path, key: Path) -> dict[str, str]:
    return {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}


def mint_service_account_token(
    api: client.CoreV1Api, *, namespace: str, name: str, seconds: int
) -> str:
    """Ask the TokenRequest API for a bound token of ``namespace/name``."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    response = api.create_namespaced_service_account_token(name, namespace, request)
    if response.status is None or not response.status.token:
        raise RuntimeError(f"the API server issued no token for {namespace}/{name}")
    return str(response.status.token)
